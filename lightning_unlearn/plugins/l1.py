"""l1-sparse unlearning (Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from typing_extensions import override

from lightning_unlearn.plugins.base import UnlearningPlugin

if TYPE_CHECKING:
    from lightning_unlearn.request import RequestContext


class L1Sparse(UnlearningPlugin):
    """Adds ``strength * sum(|theta|)`` over the trainable weights to the loss (logged as ``train/l1``).

    Args:
        strength: the l1 coefficient.

    Raises:
        ValueError: if ``strength`` is negative.

    Examples:
        >>> L1Sparse(strength=1e-4).strength
        0.0001
    """

    name = "l1"
    adds_loss = True

    def __init__(self, strength: float = 5e-4) -> None:
        if strength < 0:
            raise ValueError(f"`strength` must be >= 0, got {strength}.")
        self.strength = float(strength)

    @override
    def loss_term(self, ctx: RequestContext) -> Tensor:
        params = [p for p in ctx.module.classifier.parameters() if p.requires_grad]
        return self.strength * torch.stack([p.abs().sum() for p in params]).sum()
