"""Baseline unlearning methods from the literature, as plugins on the same Trainer path.

Each is an :class:`~lightning_unlearn.plugins.UnlearningPlugin` that adds one idea (a loss term or a gradient mask);
none knows about the others, so they compose with each other and with the method's own plugins. Pass them to
``InstanceUnlearning(plugins=[...])``, which supplies the stop rule, restore-on-failure and the summary. To run a
baseline alone, turn the method's own parts off:
``InstanceUnlearning(anchors=None, shifted_copies=None, fisher_edit=None, edit=None)`` (``bare`` below); every row of
the table assumes it.

| method | how to run it | source |
|---|---|---|
| negative gradient | ``UnlearningModule(forget_loss="neg_ce")`` | Golatkar et al., 2020 |
| random-label fine-tuning | ``UnlearningModule(forget_loss="random_label")`` | Golatkar et al., 2020 |
| SalUn (saliency mask + random labels) | ``forget_loss="random_label"`` + :class:`SaliencyMask` | Fan et al., 2024 |
| l1-sparse fine-tuning | :class:`L1Sparse` (with retained data: + :class:`RetainLoss`) | Jia et al., NeurIPS 2023 |
| fine-tuning on retained data | ``UnlearningModule(forget_weight=0)`` + :class:`RetainLoss` | Warnecke et al., 2023 |
| negative gradient + retained loss | ``forget_loss="neg_ce"`` + :class:`RetainLoss` | Kurmanji et al. (SCRUB), 2023 |

Examples:
    >>> from lightning_unlearn import InstanceUnlearning
    >>> bare = {"anchors": None, "shifted_copies": None, "fisher_edit": None, "edit": None}  # the baseline alone
    >>> callback = InstanceUnlearning(**bare, plugins=[SaliencyMask(fraction=0.5)])
    >>> [p.name for p in callback.plugins]
    ['saliency_mask']
"""

from __future__ import annotations

from lightning_unlearn.plugins.l1 import L1Sparse
from lightning_unlearn.plugins.retain import RetainLoss
from lightning_unlearn.plugins.saliency import SaliencyMask

__all__ = ["L1Sparse", "RetainLoss", "SaliencyMask"]
