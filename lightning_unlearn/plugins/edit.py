"""The closed-form last-layer edit: finishes every request, and replaces the optimiser's result where it is gentler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_unlearn.functional.edit import edit_last_layer, last_linear
from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.functional.metrics import is_unlearned
from lightning_unlearn.functional.neighbours import default_max_shift, shifted_copies
from lightning_unlearn.plugins.base import UnlearningPlugin

if TYPE_CHECKING:
    import lightning as L

    from lightning_unlearn.module import UnlearningModule
    from lightning_unlearn.request import Request


class LastLayerEdit(UnlearningPlugin):
    """At the end of a request, edit the classifier's last linear layer in closed form so that every forget instance
    is unlearned, changing the layer's outputs on the request's protected inputs least
    (:func:`~lightning_unlearn.functional.edit.edit_last_layer`).

    Two uses, both on by default:

    - **Finisher.** If the optimiser's steps end with instances still remembered (the step budget ran out), the
      request does not fail and restore the original weights: the edit, applied to the original weights, unlearns
      them all in one solve (up to ``rounds`` solves when the forget features are not linearly independent, e.g.
      more instances than the layer has inputs).
    - **Selection.** If the steps did unlearn everything, the edit of the original weights is computed too and kept
      instead when it moves the pre-trained outputs less on held-out shifted copies of the forget images (a
      data-free proxy for the damage: KL divergence to the pre-trained softmax). On classifiers where gradient
      steps are costly (no BatchNorm, MLPs) the edit is both faster and gentler (``docs/benchmarks.md``).

    ``summary.finished_by`` says which result the request kept: ``"steps"``, ``"edit"`` or ``"none"``. The protected
    inputs are those the other plugins hold (anchors, shifted copies, a retained sample).

    Args:
        margin: how far past the boundary (in logits) the edit puts each instance.
        lam: ridge term of the protected feature covariance, relative to its mean eigenvalue.
        rounds: solves at most, each on the instances still remembered.
        select: also replace a successful optimiser result by the edit when the proxy prefers it.
        proxy_copies: held-out shifted copies per forget image for the proxy.

    Raises:
        ValueError: if an argument is outside its valid range.

    Examples:
        >>> from lightning_unlearn import InstanceUnlearning
        >>> InstanceUnlearning(edit=LastLayerEdit(select=False)).edit.select
        False
    """

    name = "last_layer_edit"

    def __init__(
        self, margin: float = 0.1, lam: float = 1e-3, rounds: int = 3, select: bool = True, proxy_copies: int = 8
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

    @override
    def setup(self, request: Request, module: UnlearningModule, trainer: L.Trainer) -> None:
        x = request.forget[0]
        if last_linear(module.classifier) is None:
            rank_zero_warn("LastLayerEdit needs an nn.Linear classification head; the classifier has none: it is off.")
            self._proxy = None
            return
        if x.dim() == 4 and len(x) > 0:
            probe = shifted_copies(x, self.proxy_copies, default_max_shift(x), generator=request.generator(40))
        else:
            probe = x
        self._proxy = (probe, predict(module.classifier, probe))

    @override
    def finish(self, request: Request, module: UnlearningModule, trainer: L.Trainer) -> None:
        if self._proxy is None:
            return
        classifier = module.classifier
        x, y, t = _gather_parts(trainer, request)
        protected = _gather(trainer, torch.cat(request.protected) if request.protected else x[:0]).to(x.device)
        stepped = {n: v.detach().clone() for n, v in classifier.state_dict().items()}
        remaining = int((~is_unlearned(predict(classifier, x), y, t)).sum())
        if remaining == 0 and not (self.select and request.steps > 0):
            request.summary.finished_by = "steps"
            return
        request.restore(classifier)
        for _ in range(self.rounds):
            edit_last_layer(classifier, x, y, protected if len(protected) else x, t, margin=self.margin, lam=self.lam)
            edited = int((~is_unlearned(predict(classifier, x), y, t)).sum())
            if edited == 0:
                break
        keep_edit = edited < remaining or (
            edited == 0 and self._damage(trainer, module) < self._damage(trainer, module, stepped)
        )
        if not keep_edit:
            classifier.load_state_dict(stepped)
        request.summary.finished_by = "edit" if keep_edit else ("steps" if remaining == 0 else "none")
        if keep_edit:
            why = "the steps left instances remembered" if remaining else "it moves the pre-trained outputs less"
            rank_zero_info(f"Unlearning request {request.summary.request}: kept the last-layer edit ({why}).")

    def _damage(self, trainer: L.Trainer, module: UnlearningModule, weights: dict[str, Any] | None = None) -> float:
        """Mean KL divergence of the classifier's outputs on the proxy inputs from the pre-trained ones (reduced
        across processes); with ``weights`` loaded for the measurement, the current ones put back after.
        """
        assert self._proxy is not None
        probe, reference = self._proxy
        current = None
        if weights is not None:
            current = {n: v.detach().clone() for n, v in module.classifier.state_dict().items()}
            module.classifier.load_state_dict(weights)
        log_p = F.log_softmax(predict(module.classifier, probe), -1)
        total = F.kl_div(log_p, F.log_softmax(reference, -1), reduction="sum", log_target=True)
        if current is not None:
            module.classifier.load_state_dict(current)
        sums = torch.stack([total, torch.tensor(float(len(probe)), device=total.device)])
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
        return float(sums[0] / sums[1].clamp_min(1))

    @override
    def teardown(self, module: UnlearningModule) -> None:
        self._proxy = None


def _gather(trainer: L.Trainer, tensor: Tensor) -> Tensor:
    """``tensor`` from every process, concatenated in rank order (itself on a single process)."""
    if trainer.world_size <= 1 or not torch.distributed.is_initialized():
        return tensor
    parts: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts).to(tensor.device)


def _gather_parts(trainer: L.Trainer, request: Request) -> tuple[Tensor, Tensor, Tensor | None]:
    """Every forget part of the request (this one and any kept), from every process: inputs, labels, targets."""
    xs, ys, ts = zip(*((x, y, t if t is not None else torch.full_like(y, -1)) for x, y, t in request.parts))
    x, y, t = (_gather(trainer, torch.cat(parts)) for parts in (xs, ys, ts))
    return x, y, (t if bool((t >= 0).any()) else None)
