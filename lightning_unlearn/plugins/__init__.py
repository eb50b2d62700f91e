"""Plugins: each part of an unlearning method, run by :class:`~lightning_unlearn.InstanceUnlearning`.

Every part is a plugin here, one file each: the method's own (:class:`PGDAnchors` in ``anchors.py``,
:class:`MASImportance` in ``importance.py``, :class:`ShiftedCopies`, :class:`RetainDistillation`, :class:`FisherEdit`,
:class:`LastLayerEdit`), the replay of kept forget data and the baselines. ``factory.py`` turns
:class:`~lightning_unlearn.InstanceUnlearning`'s arguments into the ordered list a request runs. Write your own by
subclassing :class:`UnlearningPlugin` and pass it with ``InstanceUnlearning(plugins=[...])``.
"""

from lightning_unlearn.plugins.anchors import AnchorPool, PGDAnchors
from lightning_unlearn.plugins.base import UnlearningPlugin
from lightning_unlearn.plugins.distill import RetainDistillation
from lightning_unlearn.plugins.edit import LastLayerEdit
from lightning_unlearn.plugins.fisher import FisherEdit
from lightning_unlearn.plugins.held import HeldOutputs
from lightning_unlearn.plugins.importance import MASImportance
from lightning_unlearn.plugins.l1 import L1Sparse
from lightning_unlearn.plugins.mask import WeightScores
from lightning_unlearn.plugins.replay import ForgetReplay
from lightning_unlearn.plugins.retain import RetainLoss
from lightning_unlearn.plugins.saliency import SaliencyMask
from lightning_unlearn.plugins.shifted import ShiftedCopies

__all__ = [
    "AnchorPool",
    "FisherEdit",
    "ForgetReplay",
    "HeldOutputs",
    "L1Sparse",
    "LastLayerEdit",
    "MASImportance",
    "PGDAnchors",
    "RetainDistillation",
    "RetainLoss",
    "SaliencyMask",
    "ShiftedCopies",
    "UnlearningPlugin",
    "WeightScores",
]
