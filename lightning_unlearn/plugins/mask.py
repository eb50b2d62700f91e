"""Weight scores estimated on the forget set at the start of a request, used as a gradient mask."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from typing_extensions import override

from lightning_unlearn.functional.importance import apply_gradient_mask, gradient_mask, normalize_importance
from lightning_unlearn.plugins.base import UnlearningPlugin

if TYPE_CHECKING:
    from lightning_unlearn.request import RequestContext


class WeightScores(UnlearningPlugin):
    """Base of the plugins that score each weight on the forget set (MAS importance, SalUn saliency).

    :meth:`setup` sums per-weight scores with :meth:`score_sums` (implement it), sums them and the instance count over
    processes, takes the mean (unless ``score_sums`` returns no count), min-max normalises each tensor to ``[0, 1]``
    and, if :meth:`masks_gradients`, builds the gradient mask (keeping :meth:`mask_fraction` of the weights) that
    :meth:`before_optimizer_step` applies. Resumed requests reuse the checkpointed scores instead of estimating them
    again.

    Examples:
        >>> class Magnitude(WeightScores):
        ...     def score_sums(self, ctx):
        ...         return {n: p.detach().abs() for n, p in ctx.module.classifier.named_parameters()}, None
        >>> Magnitude().masks_gradients(), Magnitude().mask_fraction()
        (True, None)
    """

    def __init__(self) -> None:
        self._scores: dict[str, Tensor] | None = None
        self._mask: dict[str, Tensor] | None = None
        self._stash: dict[str, Tensor] | None = None

    def score_sums(self, ctx: RequestContext) -> tuple[dict[str, Tensor], float | None]:
        """Per-parameter score sums over this process's forget instances, and how many there were (``None``: the
        sums are used as they are, not averaged).
        """
        raise NotImplementedError

    def masks_gradients(self) -> bool:
        """Whether the scores mask gradients (else they are only kept, e.g. for a penalty)."""
        return True

    def mask_fraction(self) -> float | None:
        """Share of weights whose gradients are kept; ``None`` scales every gradient by its score."""
        return None

    @property
    def scores(self) -> dict[str, Tensor] | None:
        """Normalised scores of the request in progress or just ended (identical on every process)."""
        return self._scores

    @override
    def setup(self, ctx: RequestContext) -> None:
        module, trainer = ctx.module, ctx.trainer
        if self._stash is not None:
            self._scores = {n: v.to(module.device) for n, v in self._stash.items()}
            self._stash = None
        else:
            sums, count = self.score_sums(ctx)
            sums = {n: trainer.strategy.reduce(s, reduce_op="sum") for n, s in sums.items()}
            if count is not None:
                total = trainer.strategy.reduce(torch.tensor(float(count), device=module.device), reduce_op="sum")
                sums = {n: s / max(float(total), 1.0) for n, s in sums.items()}
            self._scores = normalize_importance(sums)
        if self.masks_gradients():
            self._mask = gradient_mask(self._scores, self.mask_fraction())

    @override
    def before_optimizer_step(self, ctx: RequestContext) -> None:
        if self._mask is not None:
            apply_gradient_mask(dict(ctx.module.classifier.named_parameters()), self._mask)

    @override
    def teardown(self, ctx: RequestContext) -> None:
        self._mask = None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {} if self._scores is None else {"scores": {n: v.cpu() for n, v in self._scores.items()}}

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._stash = state.get("scores")
