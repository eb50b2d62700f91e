"""lightning-unlearn: instance-wise unlearning for pre-trained classifiers, inside PyTorch Lightning."""

from lightning_unlearn._version import __version__
from lightning_unlearn.anchors import AnchorPool, PGDAnchors
from lightning_unlearn.callback import InstanceUnlearning, RequestSummary
from lightning_unlearn.data import ForgetSet
from lightning_unlearn.importance import MASImportance
from lightning_unlearn.module import UnlearningModule
from lightning_unlearn.plugins import FisherEdit, LastLayerEdit, RetainDistillation, ShiftedCopies

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
