"""MAS weight importance on the forget instances, used as a quadratic penalty or as a gradient mask."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from torch import Tensor, nn
from typing_extensions import override

from lightning_unlearn.functional.importance import importance_penalty, mas_importance_sum, normalize_importance
from lightning_unlearn.functional.pgd import eval_mode
from lightning_unlearn.plugins.mask import WeightScores

if TYPE_CHECKING:
    from lightning_unlearn.request import RequestContext

ImportanceUse = Literal["penalty", "mask"]
IMPORTANCE_USES: tuple[str, ...] = ("penalty", "mask")


class MASImportance(WeightScores):
    """Memory-aware-synapses importance of each weight for the forget instances.

    Importance is the mean over the forget set of ``|d ||f(x)||_2 / d theta|``, min-max normalised per tensor to
    ``[0, 1]``. Weights that matter most for the forget set are free to move; the others are

    - held near their values at the start of the request by ``strength / 2 * sum((1 - imp) * (theta - theta_0)^2)``
      (``use="penalty"``, the paper's choice), or
    - given gradients scaled by their importance, or zeroed outside the ``top_fraction`` most important weights
      (``use="mask"``; no extra memory for ``theta_0`` and no extra term in the loss).

    As an :class:`~lightning_unlearn.plugins.UnlearningPlugin` it estimates the importance at the start of a request
    (summed over processes) and adds the penalty as ``train/importance_penalty`` or masks gradients before each step.

    Args:
        use: ``"penalty"`` or ``"mask"``.
        strength: the penalty's ``lambda`` (``use="penalty"``).
        top_fraction: with ``use="mask"``, keep only this fraction of weights (by importance, one threshold over all
            tensors); ``None`` scales every gradient by its importance.
        chunk_size: instances per vectorised gradient pass.

    Raises:
        ValueError: if ``use`` is unknown, ``strength`` is negative, ``top_fraction`` is outside ``(0, 1]`` or
            ``chunk_size`` is not positive.

    Examples:
        >>> import torch
        >>> imp = MASImportance(use="mask", top_fraction=0.5)
        >>> model = nn.Linear(3, 2)
        >>> scores = imp.normalize(imp.estimate_sum(model, torch.rand(5, 3)))
        >>> sorted(scores), float(scores["weight"].max())
        (['bias', 'weight'], 1.0)
    """

    def __init__(
        self,
        use: ImportanceUse = "penalty",
        strength: float = 1.0,
        top_fraction: float | None = None,
        chunk_size: int = 64,
    ) -> None:
        if use not in IMPORTANCE_USES:
            raise ValueError(f"`use` must be one of {IMPORTANCE_USES}, got {use!r}.")
        if strength < 0:
            raise ValueError(f"`strength` must be >= 0, got {strength}.")
        if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"`top_fraction` must be in (0, 1] or None, got {top_fraction}.")
        if chunk_size <= 0:
            raise ValueError(f"`chunk_size` must be > 0, got {chunk_size}.")
        super().__init__()
        self.use = use
        self.strength = float(strength)
        self.top_fraction = top_fraction
        self.chunk_size = int(chunk_size)
        self._reference: dict[str, Tensor] | None = None

    name = "importance_penalty"

    @override
    def score_sums(self, ctx: RequestContext) -> tuple[dict[str, Tensor], float | None]:
        x = ctx.request.forget[0]
        return self.estimate_sum(ctx.module.classifier, x), float(x.shape[0])

    @override
    def masks_gradients(self) -> bool:
        return self.use == "mask"

    @override
    def mask_fraction(self) -> float | None:
        return self.top_fraction

    @override
    def setup(self, ctx: RequestContext) -> None:
        super().setup(ctx)
        if self.use == "penalty":
            self._reference = {
                n: p.detach().clone() for n, p in ctx.module.classifier.named_parameters() if p.requires_grad
            }

    @property
    def adds_loss(self) -> bool:  # type: ignore[override]
        """Whether the importance is a penalty term (``use="penalty"``); a mask adds none."""
        return self.use == "penalty"

    @override
    def loss_term(self, ctx: RequestContext) -> Tensor | None:
        if self._reference is None or self._scores is None:
            return None
        return self.penalty(ctx.module.classifier, self._reference, self._scores)

    @override
    def teardown(self, ctx: RequestContext) -> None:
        super().teardown(ctx)
        self._reference = None

    def estimate_sum(self, model: nn.Module, inputs: Tensor) -> dict[str, Tensor]:
        """Per-parameter sums of absolute per-instance gradients (eval mode; each submodule's mode restored)."""
        with eval_mode(model):
            return mas_importance_sum(model, inputs, chunk_size=self.chunk_size)

    @staticmethod
    def normalize(sums: Mapping[str, Tensor], count: int | float = 1) -> dict[str, Tensor]:
        """Mean over ``count`` instances, then per-tensor min-max normalisation to ``[0, 1]``."""
        return normalize_importance({n: s / max(float(count), 1.0) for n, s in sums.items()})

    def penalty(self, model: nn.Module, reference: Mapping[str, Tensor], importance: Mapping[str, Tensor]) -> Tensor:
        """The quadratic penalty for ``model``'s current parameters."""
        params = dict(model.named_parameters())
        return importance_penalty(params, reference, importance, self.strength)
