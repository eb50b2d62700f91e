"""The Fisher-metric edit of the last layers: unlearns a request in closed form before any optimiser step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_unlearn.distributed import gather_request, gather_rows
from lightning_unlearn.functional.evaluation import predict, with_weights
from lightning_unlearn.functional.fisher import editable_layers, fisher_edit, margins
from lightning_unlearn.plugins.base import UnlearningPlugin
from lightning_unlearn.plugins.distill import RetainDistillation

if TYPE_CHECKING:
    from torch import Tensor

    from lightning_unlearn.request import RequestContext

#: the valid ``restore_toward`` values of :class:`FisherEdit`
RESTORE_TOWARD = ("auto", "pretrained", "request")


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
        margin: how far past the boundary (in logits) each instance is put; ``None``: 1.0 when the edit restores
            toward the pre-trained model (deep enough that later requests' edits do not bring the instances back),
            0.1 otherwise.
        lam: damping of the Kronecker factors, relative to their mean eigenvalue.
        iterations: Gauss-Newton iterations at most.
        restore: how many inputs (0: none) the edit also constrains, each to the margin a model gives it: the
            retained sample's first inputs when the callback has one, else a seeded draw of the request's protected
            inputs. With a 5 % retained sample and the defaults, a sequence of 5 requests of 16 ended 8-9 points
            higher in test accuracy on two digits CNNs than without (1-3 on a 1-D CNN and an MLP), with fewer
            earlier instances re-learned on all four.
        restore_toward: which model's margins: ``"request"`` (the weights this request started from: the inputs
            are held where they are), ``"pretrained"`` (``reference``: each request also repairs what earlier
            requests cost there, so the damage of a sequence does not become the next request's baseline), or
            ``"auto"`` (``"pretrained"`` with a retained sample, no constraint without one: on the request's own
            protected inputs, restoring toward the pre-trained model undid earlier requests' forgetting and holding
            them lost accuracy on an MLP and brought back more earlier instances on a 1-D CNN; docs/benchmarks.md,
            "Restoring toward the pre-trained model").
        reference: the weights to restore toward (a ``state_dict`` of the classifier; kept on the CPU), or ``None``
            for the weights at the first request of this plugin that restores toward them (the pre-trained model,
            for a callback that serves a whole sequence; a new callback, or a request resumed from a checkpoint in
            a new process, starts from the weights it is given).

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
        margin: float | None = None,
        lam: float = 1e-2,
        iterations: int = 20,
        restore: int = 64,
        restore_toward: str = "auto",
        reference: dict[str, Tensor] | None = None,
    ) -> None:
        if restore_toward not in RESTORE_TOWARD:
            raise ValueError(f"`restore_toward` must be one of {RESTORE_TOWARD}, got {restore_toward!r}.")
        for arg, value in (("layers", layers), ("iterations", iterations)):
            if value <= 0:
                raise ValueError(f"`{arg}` must be > 0, got {value}.")
        if restore < 0:
            raise ValueError(f"`restore` must be >= 0, got {restore}.")
        if lam <= 0:
            raise ValueError(f"`lam` must be > 0, got {lam}.")
        if margin is not None and margin < 0:
            raise ValueError(f"`margin` must be >= 0 or None, got {margin}.")
        self.layers = int(layers)
        self.margin = None if margin is None else float(margin)
        self.lam = float(lam)
        self.iterations = int(iterations)
        self.restore = int(restore)
        self.restore_toward = restore_toward
        self._reference: dict[str, Tensor] | None = None
        if reference is not None:
            self.use_reference(reference)

    @property
    def reference(self) -> dict[str, Tensor] | None:
        """The weights the edit restores toward (``None`` until the first request that restores toward them)."""
        return self._reference

    def use_reference(self, weights: dict[str, Tensor]) -> None:
        """Restore toward ``weights`` (a ``state_dict`` of the classifier, copied to the CPU) from now on; a sequence
        resumed from a checkpoint gets its reference back this way.
        """
        self._reference = {n: v.detach().to("cpu", copy=True) for n, v in weights.items()}

    @override
    def setup(self, ctx: RequestContext) -> None:
        if self.restore and self._toward_pretrained(ctx) and self._reference is None:
            self.use_reference(ctx.module.classifier.state_dict())  # the classifier holds its original weights here

    @override
    def sequence_state(self) -> dict[str, Any]:
        return {} if self._reference is None else {"reference": self._reference}

    @override
    def load_sequence_state(self, state: dict[str, Any]) -> None:
        if state.get("reference") is not None:
            self.use_reference(state["reference"])

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
        restore, pretrained = self._restore_targets(ctx, protected, torch.Generator().manual_seed(seed + 61))
        margin = self.margin if self.margin is not None else (1.0 if pretrained else 0.1)
        left = fisher_edit(
            module.classifier,
            x,
            y,
            protected,
            t,
            layers=self.layers,
            margin=margin,
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

    def _toward_pretrained(self, ctx: RequestContext) -> bool:
        """Whether the restored margins are the reference model's (else this request's start)."""
        return self.restore_toward == "pretrained" or (
            self.restore_toward == "auto" and _retained_sample(ctx) is not None
        )

    def _restore_targets(
        self, ctx: RequestContext, protected: Tensor, generator: torch.Generator
    ) -> tuple[tuple[Tensor, Tensor, Tensor] | None, bool]:
        """``(inputs, labels, margins)`` to restore (the same on every process), or ``None``; and whether they are the
        reference model's (``restore_toward`` "pretrained", or "auto" with a retained sample) rather than this
        request's start.
        """
        sample = _retained_sample(ctx)
        if not self.restore or (self.restore_toward == "auto" and sample is None):
            return None, False
        pretrained = self._toward_pretrained(ctx)
        retained = gather_rows(ctx.trainer, sample.inputs) if sample is not None and sample.inputs is not None else None
        if retained is not None and len(retained):
            inputs = retained[: self.restore]
        else:
            inputs = protected[torch.randperm(len(protected), generator=generator)[: self.restore].to(protected.device)]
        if len(inputs) == 0:
            return None, pretrained
        with with_weights(ctx.module.classifier, self._reference if pretrained else None) as classifier:
            logits = predict(classifier, inputs)
        labels = logits.argmax(-1)
        return (inputs, labels, margins(logits.float(), labels)), pretrained


def _retained_sample(ctx: RequestContext) -> RetainDistillation | None:
    """The request's retained-sample plugin, if the callback has one."""
    return next((p for p in ctx.request.plugins if isinstance(p, RetainDistillation)), None)
