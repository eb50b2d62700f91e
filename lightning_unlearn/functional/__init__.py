"""Functional core: plain tensor code (losses, targeted PGD, MAS importance, membership inference).

Nothing here imports Lightning; every piece is a pure function of tensors and modules.
"""

from lightning_unlearn.functional.importance import (
    apply_gradient_mask,
    gradient_mask,
    importance_penalty,
    mas_importance_sum,
    normalize_importance,
)
from lightning_unlearn.functional.losses import anchor_loss, forget_loss, runner_up_classes
from lightning_unlearn.functional.metrics import is_unlearned
from lightning_unlearn.functional.pgd import eval_mode, other_classes, targeted_pgd

__all__ = [
    "anchor_loss",
    "apply_gradient_mask",
    "eval_mode",
    "forget_loss",
    "gradient_mask",
    "importance_penalty",
    "is_unlearned",
    "mas_importance_sum",
    "normalize_importance",
    "other_classes",
    "runner_up_classes",
    "targeted_pgd",
]
