"""Plugins: each part of an unlearning method, run by :class:`~lightning_unlearn.InstanceUnlearning`.

The method's own parts live next to what they wrap (:class:`~lightning_unlearn.PGDAnchors` in ``anchors.py``,
:class:`~lightning_unlearn.MASImportance` in ``importance.py``); the baselines and the replay of kept forget data live
here. Write your own by subclassing :class:`UnlearningPlugin`.
"""

from lightning_unlearn.plugins.base import UnlearningPlugin
from lightning_unlearn.plugins.distill import RetainDistillation
from lightning_unlearn.plugins.edit import LastLayerEdit
from lightning_unlearn.plugins.fisher import FisherEdit
from lightning_unlearn.plugins.held import HeldOutputs
from lightning_unlearn.plugins.l1 import L1Sparse
from lightning_unlearn.plugins.mask import WeightScores
from lightning_unlearn.plugins.replay import ForgetReplay
from lightning_unlearn.plugins.retain import RetainLoss
from lightning_unlearn.plugins.saliency import SaliencyMask
from lightning_unlearn.plugins.shifted import ShiftedCopies

__all__ = [
    "FisherEdit",
    "ForgetReplay",
    "HeldOutputs",
    "L1Sparse",
    "LastLayerEdit",
    "RetainDistillation",
    "RetainLoss",
    "SaliencyMask",
    "ShiftedCopies",
    "UnlearningPlugin",
    "WeightScores",
]
