"""One unlearning request: everything it owns, in one object that is checkpointed and restored as a whole."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_unlearn.functional.counting import SampleCounter
from lightning_unlearn.functional.stall import StallRule
from lightning_unlearn.plugins.base import UnlearningPlugin

if TYPE_CHECKING:
    import lightning as L

    from lightning_unlearn.module import UnlearningModule

ForgetPart = tuple[Tensor, Tensor, "Tensor | None"]


@dataclass
class RequestSummary:
    """What one request did.

    Attributes:
        request: index of the request (0 for the first ``fit`` with this callback).
        k: number of forget instances (over all processes).
        steps: optimizer steps taken.
        seconds: wall time of the request, anchors and importance included.
        samples: inputs pushed through the classifier by the request, over all processes: training steps, anchor
            generation (each PGD step), every plugin's batches, stop checks and the edit (a pass that also goes
            backward counts once; passes over the evaluation sets are not counted). Compare it with retraining's
            epochs x training-set size.
        setup_seconds: of which anchor generation and importance estimation.
        remaining_before: instances not yet unlearned at the start.
        remaining_after: instances not unlearned at the end (0 on success).
        unlearned: whether every instance was unlearned.
        restored: whether the original weights were put back (request failed and ``restore_on_failure``).
        failure: why the request failed (``None`` on success).
        anchors: number of anchors (over all processes).
        anchor_success_rate: share of anchors the pre-trained model labels with their attack target.
        finished_by: which result the request kept: ``"fisher_edit"`` (the closed-form edit of the last layers
            finished it before any step, see :class:`~lightning_unlearn.plugins.FisherEdit`), ``"steps"`` (the
            optimiser's), ``"steps+edit"`` (the
            closed-form last-layer edit of the weights the steps reached, see
            :class:`~lightning_unlearn.plugins.LastLayerEdit`), ``"edit"`` (the edit of the original weights),
            ``"none"`` (the edit could not improve on steps that fell short: the request fails) or ``None`` (no
            plugin finishes requests, e.g. ``edit=None``).
        before: metrics on the original weights (``forget/acc``, ``anchor/agreement``, ``{name}/acc``,
            ``mia/efficacy``, ...).
        after: the same metrics at the end.

    Examples:
        >>> RequestSummary(request=0, k=4).to_dict()["remaining_after"]
        0
    """

    request: int
    k: int
    steps: int = 0
    seconds: float = 0.0
    samples: int = 0
    setup_seconds: float = 0.0
    remaining_before: int = 0
    remaining_after: int = 0
    unlearned: bool = False
    restored: bool = False
    anchors: int = 0
    anchor_success_rate: float = float("nan")
    finished_by: str | None = None
    failure: str | None = None
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, ready for JSON."""
        return asdict(self)


class Request:
    """The state of one request: forget tensors, original weights, seed, plugins, reference metrics and counters.

    Created by :class:`~lightning_unlearn.InstanceUnlearning` at the start of a ``fit``; plugins receive it in
    :meth:`~lightning_unlearn.plugins.UnlearningPlugin.setup`. :meth:`state_dict` holds everything but the forget data
    (never written to checkpoints: a resumed request collects it again from the dataloader), the plugins' states
    included; :meth:`from_state` restores it all.

    Args:
        index: the request's number (0 for the first).
        k: forget instances over all processes.
        forget: this process's ``(inputs, labels, targets or None)``.
        original: the classifier's weights at the start (copied to CPU).
        seed: the seed of this request and process (see :meth:`generator`).
        plugins: the plugins this request runs, in order.
        stall_patience: see :class:`~lightning_unlearn.functional.stall.StallRule`.
        kept: earlier requests' forget sets still to be kept unlearned (``keep_forget_data=True``).

    Examples:
        >>> model = nn.Linear(2, 2)
        >>> request = Request(0, 1, (torch.rand(1, 2), torch.tensor([0]), None), model.state_dict(), seed=7)
        >>> int(torch.randint(0, 100, (1,), generator=request.generator(1)))
        23
        >>> sorted(request.state_dict())
        ['original', 'plugins', 'samples', 'seed', 'stall', 'steps', 'summary']
    """

    def __init__(
        self,
        index: int,
        k: int,
        forget: ForgetPart,
        original: dict[str, Tensor],
        seed: int,
        plugins: Sequence[UnlearningPlugin] = (),
        stall_patience: int | None = None,
        kept: list[ForgetPart] | None = None,
    ) -> None:
        self.forget = forget
        self.kept = list(kept or [])
        self.original = {n: v.detach().to("cpu", copy=True) for n, v in original.items()}
        self.seed = int(seed)
        self.plugins = list(plugins)
        self.summary = RequestSummary(request=index, k=int(k))
        self.steps = 0
        self.remaining = -1
        self.stall = StallRule(stall_patience)
        self.started = time.perf_counter()
        self.protected: list[Tensor] = []  # inputs whose outputs should change least (added by plugins in setup)
        self.counter = SampleCounter()  # inputs through the classifier (this process), from start to end
        self._plugin_states: dict[str, dict[str, Any]] = {}
        self._resumed = False

    @property
    def parts(self) -> list[ForgetPart]:
        """This request's forget set, then the kept ones: everything the stop rule checks."""
        return [self.forget, *self.kept]

    @property
    def elapsed(self) -> float:
        """Seconds since the request started (in this process)."""
        return time.perf_counter() - self.started

    @property
    def before(self) -> dict[str, float]:
        """The reference metrics, measured on the original weights."""
        return self.summary.before

    @property
    def reference_accuracy(self) -> dict[str, float]:
        """``{name: accuracy}`` of each evaluation set on the original weights (what ``max_drop`` guards)."""
        return {n[:-4]: v for n, v in self.before.items() if n.endswith("/acc") and not n.startswith("forget/")}

    def generator(self, offset: int) -> torch.Generator:
        """A CPU generator seeded with ``seed + offset``: each consumer of randomness takes its own offset."""
        return torch.Generator().manual_seed(self.seed + offset)

    def restore(self, model: nn.Module) -> None:
        """Put the original weights back into ``model``."""
        model.load_state_dict(self.original)

    def start(self, module: UnlearningModule, trainer: L.Trainer) -> None:
        """Set up every plugin with the classifier at its original weights, register their loss terms, and measure the
        reference metrics there (a resumed request keeps its checkpointed ones and goes back to its current weights);
        hands ``module`` the reference accuracy of ``{name}/drop``. Every process calls it together.
        """
        classifier = module.classifier
        if not self._resumed:  # a resumed request's count comes from its checkpoint: its setup is not counted twice
            self.counter.attach(classifier)
        current = {n: v.detach().clone() for n, v in classifier.state_dict().items()} if self._resumed else None
        if current is not None:
            self.restore(classifier)
        for plugin in self.plugins:
            plugin.load_state_dict(self._plugin_states.get(plugin.name, {}))
            plugin.setup(self, module, trainer)
            if plugin.adds_loss():
                module.add_loss_term(plugin.name, partial(plugin.loss_term, module))
        summary = self.summary
        if current is None:
            summary.before = self.measure(module)
            self.remaining = summary.remaining_before = int(summary.before["forget/remaining"])
            begins = [p for p in self.plugins if type(p).begin is not UnlearningPlugin.begin]
            if self.remaining > 0 and begins:
                for plugin in begins:
                    plugin.begin(self, module, trainer)
                self.remaining = int(module.check_forget(self.parts, log=False)["forget/remaining"])
            summary.setup_seconds = self.elapsed
            rank_zero_info(
                f"Unlearning request {summary.request}: {summary.k} instances, {summary.remaining_before} still"
                f" remembered; setup {summary.setup_seconds:.2f}s, {self.remaining} left for the steps."
            )
        else:
            classifier.load_state_dict(current)
            self.remaining = int(module.check_forget(self.parts, log=False)["forget/remaining"])
            self.counter.attach(classifier)
            rank_zero_info(f"Resumed unlearning request {summary.request} at step {self.steps}.")
        module.reference_accuracy = self.reference_accuracy

    def measure(self, module: UnlearningModule) -> dict[str, float]:
        """Forget metrics, the plugins' values, and one pass over the evaluation sets (accuracy and MIA)."""
        values = module.check_forget(self.parts, log=False)
        for plugin in self.plugins:
            values.update(plugin.measure(module))
        with self.counter.paused():
            evaluation = module.evaluate(self.forget)
        return {**values, **evaluation}

    def failure(self, max_drop: float | None = None) -> str | None:
        """Why the request failed, judged on ``summary.after``: instances still remembered, or an evaluation set's
        accuracy more than ``max_drop`` below its reference; ``None`` on success.
        """
        after = self.summary.after
        self.remaining = int(after["forget/remaining"])
        if self.remaining > 0:
            return f"{self.remaining} of {self.summary.k} instances still remembered after {self.steps} steps"
        for name, reference in self.reference_accuracy.items():
            drop = reference - after[f"{name}/acc"]
            if max_drop is not None and drop > max_drop:
                return f"{name} accuracy dropped by {drop:.4f} > max_drop={max_drop}"
        return None

    def close(self, module: UnlearningModule, failure: str | None, restore: bool = True) -> RequestSummary:
        """Fill in the summary's closing counts and outcome; on failure put the original weights back if ``restore``
        (the summary's ``after`` then equals ``before``). Says what happened; returns the summary.
        """
        summary = self.summary
        summary.steps, summary.seconds, summary.remaining_after = self.steps, self.elapsed, max(self.remaining, 0)
        summary.samples = max(summary.samples, self.counter.count)  # the total over processes, where it was reduced
        summary.unlearned, summary.failure = failure is None, failure
        if failure is not None and restore:
            self.restore(module.classifier)
            summary.restored, summary.after = True, {**summary.after, **summary.before}
            rank_zero_warn(
                f"Unlearning request {summary.request} failed ({failure}); the original weights were restored (pass"
                " restore_on_failure=False to keep the partial result, or raise max_steps / the Trainer's max_epochs)."
            )
        elif failure is not None:
            rank_zero_warn(f"Unlearning request {summary.request} failed ({failure}); keeping the partial result.")
        else:
            rank_zero_info(
                f"Unlearning request {summary.request}: {summary.k}/{summary.k} instances unlearned in"
                f" {summary.steps} steps, {summary.seconds:.2f}s, {summary.samples:,} samples through the classifier."
            )
        return summary

    def check(self, module: UnlearningModule) -> dict[str, float]:
        """The stop check: forget metrics on every part (logged), then the stall rule and the plugins' step values."""
        values = module.check_forget(self.parts, log=True)
        self.remaining = int(values["forget/remaining"])
        if self.stall.update(self.remaining, self.steps):
            for plugin in self.plugins:
                scale = plugin.scale_protection(0.5)
                if scale is not None:  # said once per change, not again at the floor
                    rank_zero_info(
                        f"Unlearning stalled at {self.remaining} remembered instances for {self.stall.patience}"
                        f" steps: {plugin.name} weight scaled to {scale:g}."
                    )
        if module.logging_step():
            for plugin in self.plugins:
                for name, value in plugin.step_metrics().items():
                    module.log(name, value, on_step=True, on_epoch=False, batch_size=1)
        return values

    def finish(self, module: UnlearningModule, trainer: L.Trainer) -> None:
        """Let every plugin change the final weights (:meth:`UnlearningPlugin.finish`), once the steps are over."""
        for plugin in self.plugins:
            plugin.finish(self, module, trainer)

    def end(self, module: UnlearningModule) -> None:
        """Unregister the plugins' loss terms and tear them down."""
        for plugin in self.plugins:
            module.remove_loss_term(plugin.name)
            plugin.teardown(module)
        self.protected = []
        self.counter.detach()

    def state_dict(self) -> dict[str, Any]:
        """Everything but the forget data: plain values and CPU tensors."""
        return {
            "seed": self.seed,
            "steps": self.steps,
            "samples": self.counter.count,
            "summary": self.summary.to_dict(),
            "original": self.original,
            "stall": {"best": self.stall.best, "best_step": self.stall.best_step},
            "plugins": {p.name: p.state_dict() for p in self.plugins},
        }

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        forget: ForgetPart,
        plugins: Sequence[UnlearningPlugin],
        stall_patience: int | None,
        kept: list[ForgetPart],
    ) -> Request:
        """The request of a checkpoint, with its forget data collected again; the plugins' states are applied in
        :meth:`start`.
        """
        summary = RequestSummary(**state["summary"])
        request = cls(
            summary.request, summary.k, forget, state["original"], state["seed"], plugins, stall_patience, kept
        )
        request.summary = summary
        request.steps = int(state["steps"])
        request.counter.count = int(state.get("samples", 0))
        request.stall.best, request.stall.best_step = int(state["stall"]["best"]), int(state["stall"]["best_step"])
        request._plugin_states, request._resumed = dict(state.get("plugins", {})), True
        return request
