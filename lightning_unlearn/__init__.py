"""lightning-unlearn: instance-wise unlearning for pre-trained classifiers, inside PyTorch Lightning."""

from lightning_unlearn._version import __version__
from lightning_unlearn.callback import InstanceUnlearning
from lightning_unlearn.data import ForgetSet
from lightning_unlearn.module import UnlearningModule
from lightning_unlearn.plugins import (
    AnchorPool,
    FisherEdit,
    LastLayerEdit,
    MASImportance,
    PGDAnchors,
    RetainDistillation,
    ShiftedCopies,
)
from lightning_unlearn.summary import RequestSummary

__all__ = [
    "AnchorPool",
    "FisherEdit",
    "ForgetSet",
    "InstanceUnlearning",
    "LastLayerEdit",
    "MASImportance",
    "PGDAnchors",
    "RetainDistillation",
    "RequestSummary",
    "ShiftedCopies",
    "UnlearningModule",
    "__version__",
]
