"""SalUn's gradient-saliency mask (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency", ICLR 2024).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from typing_extensions import override

from lightning_unlearn.functional.pgd import eval_mode
from lightning_unlearn.plugins.mask import WeightScores

if TYPE_CHECKING:
    from lightning_unlearn.request import RequestContext


class SaliencyMask(WeightScores):
    """Updates only the weights most salient for forgetting.

    At the start of a request the saliency of each weight is ``|d CE(f(x), y) / d theta|`` summed over the forget set
    (eval mode), normalised per tensor; gradients of all but the ``fraction`` most salient weights are zeroed before
    each optimizer step. Pair it with ``UnlearningModule(forget_loss="random_label")`` for SalUn.

    Args:
        fraction: share of weights left free, in ``(0, 1]``.

    Raises:
        ValueError: if ``fraction`` is outside ``(0, 1]``.

    Examples:
        >>> SaliencyMask(fraction=0.5).fraction
        0.5
    """

    name = "saliency_mask"

    def __init__(self, fraction: float = 0.5) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"`fraction` must be in (0, 1], got {fraction}.")
        super().__init__()
        self.fraction = float(fraction)

    @property
    def mask(self) -> dict[str, Tensor] | None:
        """The gradient mask while a request runs (``None`` otherwise)."""
        return self._mask

    @override
    def mask_fraction(self) -> float | None:
        return self.fraction

    @override
    def score_sums(self, ctx: RequestContext) -> tuple[dict[str, Tensor], float | None]:
        x, y, _ = ctx.request.forget
        module = ctx.module
        named = {n: p for n, p in module.classifier.named_parameters() if p.requires_grad}
        sums = {n: torch.zeros_like(p) for n, p in named.items()}
        with eval_mode(module.classifier), torch.enable_grad():
            loss = F.cross_entropy(module.classifier(x), y, reduction="sum")
            grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
        for (name, _p), g in zip(named.items(), grads):
            if g is not None:
                sums[name] += g.abs()
        return sums, None
