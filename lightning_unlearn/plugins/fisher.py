"""The Fisher-metric edit of the last layers: unlearns a request in closed form before any optimiser step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_unlearn.distributed import gather_request, gather_rows
from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.functional.fisher import editable_layers, fisher_edit, margins
from lightning_unlearn.plugins.base import UnlearningPlugin
from lightning_unlearn.plugins.distill import RetainDistillation

if TYPE_CHECKING:
    from torch import Tensor

    from lightning_unlearn.request import RequestContext


class FisherEdit(UnlearningPlugin):
    """Unlearn the request before the first step with a few closed-form edits of the classifier's last ``layers``
    linear/convolutional layers, each the smallest change in the K-FAC Fisher metric of the request's protected inputs
    (anchors, shifted copies, a retained sample) that puts every forget instance ``margin`` past the boundary and
    leaves the instances already there in place (:func:`~lightning_unlearn.functional.fisher.fisher_edit`).

    When it unlearns every instance (``summary.finished_by == "fisher_edit"``) the request takes no optimiser step; the
    instances it leaves go on to the steps and :class:`~lightning_unlearn.plugins.LastLayerEdit`. At k = 32 (3 seeds,
    docs/benchmarks.md, "Every classifier") it took the test-accuracy cost of a request from 9.7 to 2.8 points on a
    digits CNN without normalisation, 6.8 to 2.9 on a 1-D signal CNN, 10.2 to 8.2 on an MLP and 8.3 to 6.6 on a
    tabular MLP, at about 2 % of the samples of the 1,000 steps it replaces, with every instance unlearned.

    The edit runs on every process with the same gathered forget set and protected inputs and the same seed, so the
    weights stay identical under DDP.

    Args:
        layers: how many of the last editable layers change (3 by default: with 2 a LeNet without normalisation lost
            9.3 points at k = 32 against 1.8).
        margin: how far past the boundary (in logits) each instance is put.
        lam: damping of the Kronecker factors, relative to their mean eigenvalue.
        iterations: Gauss-Newton iterations at most.
        restore: how many inputs the edit also moves back to the *reference* model's margins (0: none): the retained
            sample's first inputs when the callback has one, else a seeded draw of the request's protected inputs.
            The reference is ``reference``, or the weights this plugin first saw (the pre-trained model, for a
            callback that serves a whole sequence of requests): each request then also repairs what earlier
            requests cost there, so the damage of a sequence does not become the next request's baseline.
        reference: the weights to restore toward (a ``state_dict`` of the classifier; kept on the CPU), or ``None``
            for the weights at this plugin's first request.

    Raises:
        ValueError: if an argument is outside its valid range.

    Examples:
        >>> from lightning_unlearn import InstanceUnlearning
        >>> InstanceUnlearning(fisher_edit=FisherEdit(layers=2)).fisher_edit.layers
        2
    """

    name = "fisher_edit"
    edits_at_begin = True

    def __init__(
        self,
        layers: int = 3,
        margin: float = 0.1,
        lam: float = 1e-2,
        iterations: int = 20,
        restore: int = 0,
        reference: dict[str, Tensor] | None = None,
    ) -> None:
        for arg, value in (("layers", layers), ("iterations", iterations)):
            if value <= 0:
                raise ValueError(f"`{arg}` must be > 0, got {value}.")
        if restore < 0:
            raise ValueError(f"`restore` must be >= 0, got {restore}.")
        if lam <= 0:
            raise ValueError(f"`lam` must be > 0, got {lam}.")
        if margin < 0:
            raise ValueError(f"`margin` must be >= 0, got {margin}.")
        self.layers = int(layers)
        self.margin = float(margin)
        self.lam = float(lam)
        self.iterations = int(iterations)
        self.restore = int(restore)
        self._reference = None if reference is None else {n: v.detach().cpu().clone() for n, v in reference.items()}

    @property
    def reference(self) -> dict[str, Tensor] | None:
        """The weights the edit restores toward (``None`` until the first request, or with ``restore=0``)."""
        return self._reference

    @override
    def setup(self, ctx: RequestContext) -> None:
        if self.restore and self._reference is None:  # the classifier holds its original weights here
            self._reference = {
                n: v.detach().to("cpu", copy=True) for n, v in ctx.module.classifier.state_dict().items()
            }

    @override
    def begin(self, ctx: RequestContext) -> None:
        request, module, trainer = ctx.request, ctx.module, ctx.trainer
        if not editable_layers(module.classifier, self.layers):
            rank_zero_warn(
                "FisherEdit needs nn.Linear or nn.Conv1d/nn.Conv2d layers; the classifier has none: it is off."
            )
            return
        x, y, t, protected = gather_request(trainer, request)
        if len(y) == 0:
            return
        seed = int(trainer.strategy.broadcast(request.seed))  # the same draws on every process
        restore = self._restore_targets(ctx, protected, torch.Generator().manual_seed(seed + 61))
        left = fisher_edit(
            module.classifier,
            x,
            y,
            protected,
            t,
            layers=self.layers,
            margin=self.margin,
            lam=self.lam,
            iterations=self.iterations,
            generator=torch.Generator().manual_seed(seed + 60),
            restore=restore,
        )
        if left == 0:
            request.summary.record(self.name, finished_by="fisher_edit")
        rank_zero_info(
            f"Unlearning request {request.summary.request}: the Fisher edit of the last {self.layers} layers left"
            f" {left} of {len(y)} instances for the steps."
        )

    def _restore_targets(
        self, ctx: RequestContext, protected: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(inputs, labels, margins)`` of the reference model on the inputs to restore (the same on every process)."""
        if not self.restore or self._reference is None:
            return None
        retained = next((p.inputs for p in ctx.request.plugins if isinstance(p, RetainDistillation)), None)
        if retained is not None:
            retained = gather_rows(ctx.trainer, retained)
        if retained is not None and len(retained):
            inputs = retained[: self.restore]
        else:
            inputs = protected[torch.randperm(len(protected), generator=generator)[: self.restore].to(protected.device)]
        if len(inputs) == 0:
            return None
        classifier = ctx.module.classifier
        current = {n: v.detach().clone() for n, v in classifier.state_dict().items()}
        classifier.load_state_dict(self._reference)
        logits = predict(classifier, inputs)
        classifier.load_state_dict(current)
        labels = logits.argmax(-1)
        return inputs, labels, margins(logits.float(), labels)
