"""The closed-form last-layer edit: finishes every request, and replaces the optimiser's result where it is gentler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_unlearn.distributed import gather_request
from lightning_unlearn.functional.edit import edit_last_layer, last_linear
from lightning_unlearn.functional.evaluation import predict, with_weights
from lightning_unlearn.functional.metrics import is_unlearned
from lightning_unlearn.functional.neighbours import neighbour_copies
from lightning_unlearn.plugins.base import UnlearningPlugin

if TYPE_CHECKING:
    import lightning as L

    from lightning_unlearn.module import UnlearningModule
    from lightning_unlearn.request import RequestContext


class LastLayerEdit(UnlearningPlugin):
    """Finish a request whose steps ran out: edit the classifier's last linear layer in closed form so that every
    forget instance is unlearned, changing the layer's outputs on the request's protected inputs least
    (:func:`~lightning_unlearn.functional.edit.edit_last_layer`). A request whose budget runs out is then finished,
    unless even the edit cannot (``finished_by="none"``).

    Which weights are edited, when the step budget ends with instances still remembered: both the weights the steps
    reached (for the instances still remembered: a small change finishes what the optimiser nearly did) and the
    original weights (the steps may have cost more than they bought: typically on classifiers without BatchNorm, and
    MLPs) are edited, and the request keeps the one that moves the pre-trained outputs least on held-out copies of the
    forget instances (shifted images or signals, feature vectors with swapped features:
    :func:`~lightning_unlearn.functional.neighbours.neighbour_copies`; KL divergence to the pre-trained softmax, a
    data-free proxy of the damage); the original weights are a candidate only when the edit can be exact (``k < d / 2``
    for a head with ``d`` inputs). For inputs of other shapes, the reached weights are edited when the steps unlearned
    at least half of the instances, the original ones otherwise.

    Up to ``rounds`` solves, each on the instances still remembered (the features need not be linearly independent).
    ``summary.finished_by`` says which result the request kept: ``"steps"``, ``"steps+edit"``, ``"edit"`` or
    ``"none"`` (instances left even after the edit). The protected inputs are those the other plugins hold
    (anchors, shifted copies, a retained sample).

    Args:
        margin: how far past the boundary (in logits) the edit puts each instance.
        lam: ridge term of the protected feature covariance, relative to its mean eigenvalue.
        rounds: solves at most.
        select: also compute the edit of the original weights when the steps *did* unlearn every instance, and keep it
            if it moves the pre-trained outputs less on held-out copies of the forget instances (KL divergence
            to the pre-trained softmax). Off by default: on digits that proxy picked the worse result at k = 8.
        proxy_copies: held-out shifted copies per forget image for the proxy.

    Raises:
        ValueError: if an argument is outside its valid range.

    Examples:
        >>> from lightning_unlearn import InstanceUnlearning
        >>> InstanceUnlearning(edit=LastLayerEdit(margin=0.5)).edit.margin
        0.5
    """

    name = "last_layer_edit"

    def __init__(
        self, margin: float = 0.1, lam: float = 1e-3, rounds: int = 3, select: bool = False, proxy_copies: int = 8
    ) -> None:
        if margin < 0:
            raise ValueError(f"`margin` must be >= 0, got {margin}.")
        if lam <= 0:
            raise ValueError(f"`lam` must be > 0, got {lam}.")
        for name, value in (("rounds", rounds), ("proxy_copies", proxy_copies)):
            if value <= 0:
                raise ValueError(f"`{name}` must be > 0, got {value}.")
        self.margin = float(margin)
        self.lam = float(lam)
        self.rounds = int(rounds)
        self.select = select
        self.proxy_copies = int(proxy_copies)
        self._proxy: tuple[Tensor, Tensor] | None = None
        self._ready = False

    @override
    def setup(self, ctx: RequestContext) -> None:
        request, module = ctx.request, ctx.module
        self._ready = last_linear(module.classifier) is not None
        if not self._ready:
            rank_zero_warn("LastLayerEdit needs an nn.Linear classification head; the classifier has none: it is off.")
            return
        x = request.forget[0]
        self._proxy = None
        if x.dim() in (2, 3, 4) and len(x) > 0:
            probe = neighbour_copies(x, self.proxy_copies, generator=request.generator(40))
            self._proxy = (probe, predict(module.classifier, probe))

    @override
    def finish(self, ctx: RequestContext) -> None:
        if not self._ready:
            return
        request, module, trainer = ctx.request, ctx.module, ctx.trainer
        classifier = module.classifier
        x, y, t, protected = gather_request(trainer, request)
        remaining = int((~is_unlearned(predict(classifier, x), y, t)).sum())
        if remaining == 0 and not (self.select and request.steps > 0 and self._proxy is not None):
            if request.steps > 0 or request.summary.finished_by is None:  # else: finished before any step, kept
                request.summary.record(self.name, finished_by="steps")
            return
        stepped = {n: v.detach().clone() for n, v in classifier.state_dict().items()}
        head = last_linear(classifier)
        assert head is not None
        exact = len(y) < (head.in_features + 1) / 2
        candidates = ["original"] if remaining == 0 else ["reached", *(["original"] if exact else [])]
        if remaining > 0 and exact and self._proxy is None:  # no proxy: judge by the steps' progress
            candidates = ["reached"] if remaining <= len(y) / 2 else ["original"]
        results = []
        for start in candidates:
            classifier.load_state_dict(stepped if start == "reached" else request.original)
            left = self._edit(classifier, x, y, t, protected)
            damage = self._damage(trainer, module) if len(candidates) > 1 or remaining == 0 else 0.0
            results.append((left, damage, start, {n: v.detach().clone() for n, v in classifier.state_dict().items()}))
        left, damage, start, weights = min(results, key=lambda r: (r[0], r[1]))
        if remaining == 0 and (left > 0 or damage >= self._damage(trainer, module, stepped)):
            start, left, weights = "steps", 0, stepped  # select: the steps' result moves the outputs less
        elif remaining > 0 and left >= remaining:
            start, left, weights = "none", remaining, stepped  # the edit did not help: keep what the steps reached
        classifier.load_state_dict(weights)
        request.summary.record(self.name, finished_by={"reached": "steps+edit", "original": "edit"}.get(start, start))
        if remaining > 0:
            rank_zero_info(
                f"Unlearning request {request.summary.request}: {remaining} of {len(y)} instances were still remembered"
                f" after {request.steps} steps; kept {request.summary.finished_by!r}, {left} left."
            )

    def _edit(self, classifier: nn.Module, x: Tensor, y: Tensor, t: Tensor | None, protected: Tensor) -> int:
        """Up to ``rounds`` solves on the current weights; returns how many instances are still remembered."""
        left = len(y)
        for _ in range(self.rounds):
            edit_last_layer(classifier, x, y, protected if len(protected) else x, t, margin=self.margin, lam=self.lam)
            left = int((~is_unlearned(predict(classifier, x), y, t)).sum())
            if left == 0:
                break
        return left

    def _damage(self, trainer: L.Trainer, module: UnlearningModule, weights: dict[str, Any] | None = None) -> float:
        """Mean KL divergence of the classifier's outputs on the proxy inputs from the pre-trained ones (reduced
        across processes); with ``weights`` loaded for the measurement, the current ones put back after.
        """
        assert self._proxy is not None
        probe, reference = self._proxy
        with with_weights(module.classifier, weights) as classifier:
            log_p = F.log_softmax(predict(classifier, probe), -1)
        total = F.kl_div(log_p, F.log_softmax(reference, -1), reduction="sum", log_target=True)
        sums = torch.stack([total, torch.tensor(float(len(probe)), device=total.device)])
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
        return float(sums[0] / sums[1].clamp_min(1))

    @override
    def teardown(self, ctx: RequestContext) -> None:
        self._proxy = None
