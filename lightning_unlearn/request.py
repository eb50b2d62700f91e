"""One unlearning request: everything it owns, in one object that is checkpointed and restored as a whole."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_unlearn.evaluation import RequestEvaluator, drops
from lightning_unlearn.functional.counting import SampleCounter
from lightning_unlearn.functional.stall import StallRule
from lightning_unlearn.summary import RequestSummary

if TYPE_CHECKING:
    import lightning as L

    from lightning_unlearn.module import UnlearningModule
    from lightning_unlearn.plugins.base import UnlearningPlugin

ForgetPart = tuple[Tensor, Tensor, "Tensor | None"]

__all__ = ["ForgetPart", "Request", "RequestContext", "RequestSummary"]


@dataclass
class RequestContext:
    """What every plugin hook receives (one object per request, the same for every hook).

    Attributes:
        request: the :class:`Request` running (forget set, seed, protected inputs, summary).
        module: the :class:`~lightning_unlearn.UnlearningModule` (its ``classifier`` is the model being unlearned).
        trainer: the running ``Trainer`` (``trainer.strategy`` reduces values across processes).
    """

    request: Request
    module: UnlearningModule
    trainer: L.Trainer


class Request:
    """The state of one request: forget tensors, original weights, seed, plugins, reference metrics and counters.

    Created by :class:`~lightning_unlearn.InstanceUnlearning` at the start of a ``fit``; :meth:`start` gives it ``ctx``
    (the :class:`RequestContext` every plugin hook receives) and ``evaluator`` (its
    :class:`~lightning_unlearn.evaluation.RequestEvaluator`). :meth:`state_dict` holds all but the forget data (never
    checkpointed: a resumed request collects it again), the plugins' states included; :meth:`from_state` restores it.

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
        >>> request = Request(0, 1, (torch.rand(1, 2), torch.tensor([0]), None), nn.Linear(2, 2).state_dict(), seed=7)
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

    def generator(self, offset: int) -> torch.Generator:
        """A CPU generator seeded with ``seed + offset``: each consumer of randomness takes its own offset."""
        return torch.Generator().manual_seed(self.seed + offset)

    def restore(self, model: nn.Module) -> None:
        """Put the original weights back into ``model``."""
        model.load_state_dict(self.original)

    def start(self, module: UnlearningModule, trainer: L.Trainer) -> None:
        """Set up every plugin with the classifier at its original weights, register their loss terms, and measure the
        reference metrics there (a resumed request keeps its checkpointed ones and goes back to its current weights);
        the evaluator keeps them as the reference of ``{name}/drop``. Every process calls it together.
        """
        self.ctx = ctx = RequestContext(self, module, trainer)
        self.evaluator = evaluator = RequestEvaluator(module, trainer)
        module.use_evaluator(evaluator)
        classifier = module.classifier
        if not self._resumed:  # a resumed request's count comes from its checkpoint: its setup is not counted twice
            self.counter.attach(classifier)
        current = {n: v.detach().clone() for n, v in classifier.state_dict().items()} if self._resumed else None
        if current is not None:
            self.restore(classifier)
        for plugin in self.plugins:
            plugin.load_state_dict(self._plugin_states.get(plugin.name, {}))
            plugin.setup(ctx)
            if plugin.adds_loss:
                module.add_loss_term(plugin.name, partial(plugin.loss_term, ctx))
        summary = self.summary
        if current is None:
            summary.before = evaluator.measure(self)
            self.remaining = summary.remaining_before = int(summary.before["forget/remaining"])
            begins = [p for p in self.plugins if p.edits_at_begin]
            if self.remaining > 0 and begins:
                for plugin in begins:
                    plugin.begin(ctx)
                self.remaining = int(evaluator.check_forget(self.parts)["forget/remaining"])
            summary.setup_seconds = self.elapsed
            rank_zero_info(
                f"Unlearning request {summary.request}: {summary.k} instances, {summary.remaining_before} still"
                f" remembered; setup {summary.setup_seconds:.2f}s, {self.remaining} left for the steps."
            )
        else:
            classifier.load_state_dict(current)
            self.remaining = int(evaluator.check_forget(self.parts)["forget/remaining"])
            self.counter.attach(classifier)
            rank_zero_info(f"Resumed unlearning request {summary.request} at step {self.steps}.")
        evaluator.reference = summary.before

    def plugin_values(self) -> dict[str, float]:
        """Every plugin's :meth:`~lightning_unlearn.plugins.UnlearningPlugin.measure`."""
        values: dict[str, float] = {}
        for plugin in self.plugins:
            values.update(plugin.measure(self.ctx))
        return values

    def failure(self, max_drop: float | None = None) -> str | None:
        """Why the request failed, judged on ``summary.after``: instances still remembered, or an evaluation set's
        accuracy more than ``max_drop`` below its reference; ``None`` on success.
        """
        after = self.summary.after
        self.remaining = int(after["forget/remaining"])
        if self.remaining > 0:
            return f"{self.remaining} of {self.summary.k} instances still remembered after {self.steps} steps"
        for name, drop in drops(self.before, after).items():
            if max_drop is not None and drop > max_drop:
                return f"{name[: -len('/drop')]} accuracy dropped by {drop:.4f} > max_drop={max_drop}"
        return None

    def close(self, failure: str | None, restore: bool = True) -> RequestSummary:
        """Fill in the summary's closing counts and outcome; on failure put the original weights back if ``restore``
        (the summary's ``after`` then equals ``before``). Says what happened; returns the summary.
        """
        summary = self.summary
        summary.steps, summary.seconds, summary.remaining_after = self.steps, self.elapsed, max(self.remaining, 0)
        summary.samples = max(summary.samples, self.counter.count)  # the total over processes, where it was reduced
        summary.unlearned, summary.failure = failure is None, failure
        if failure is not None and restore:
            self.restore(self.ctx.module.classifier)
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

    def check(self) -> dict[str, float]:
        """The stop check: forget metrics on every part (logged), then the stall rule and the plugins' step values."""
        module = self.ctx.module
        values = self.evaluator.check_forget(self.parts, log=True)
        self.remaining = int(values["forget/remaining"])
        if self.stall.update(self.remaining, self.steps):
            for plugin in self.plugins:
                scale = plugin.on_stall(self.ctx)
                if scale is not None:  # said once per change, not again at the floor
                    rank_zero_info(
                        f"Unlearning stalled at {self.remaining} remembered instances for {self.stall.patience}"
                        f" steps: {plugin.name} weight scaled to {scale:g}."
                    )
        if module.logging_step():
            for plugin in self.plugins:
                for name, value in plugin.step_metrics(self.ctx).items():
                    module.log(name, value, on_step=True, on_epoch=False, batch_size=1)
        return values

    def before_optimizer_step(self) -> None:
        """Let every plugin edit the gradients (:meth:`UnlearningPlugin.before_optimizer_step`)."""
        for plugin in self.plugins:
            plugin.before_optimizer_step(self.ctx)

    def finish(self) -> None:
        """Once the steps are over: let every plugin change the final weights (:meth:`UnlearningPlugin.finish`), then
        measure ``summary.after`` and count the samples over all processes.
        """
        for plugin in self.plugins:
            plugin.finish(self.ctx)
        self.summary.after = self.evaluator.measure(self)
        count = torch.tensor(float(self.counter.count), device=self.ctx.module.device)
        self.summary.samples = int(self.ctx.trainer.strategy.reduce(count, reduce_op="sum"))

    def end(self) -> None:
        """Unregister the plugins' loss terms and tear them down."""
        self.ctx.module.use_evaluator(None)
        for plugin in self.plugins:
            self.ctx.module.remove_loss_term(plugin.name)
            plugin.teardown(self.ctx)
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
    def new(
        cls,
        index: int,
        forget: ForgetPart,
        module: UnlearningModule,
        trainer: L.Trainer,
        seed: int | None,
        plugins: Sequence[UnlearningPlugin],
        stall_patience: int | None,
        kept: list[ForgetPart],
    ) -> Request:
        """Request ``index``: ``k`` over all processes, the current weights as original, a seed per index and rank."""
        k = trainer.strategy.reduce(torch.tensor(float(len(forget[1])), device=module.device), reduce_op="sum")
        seed = (seed if seed is not None else torch.initial_seed() % (2**31)) + 1_000_003 * index
        seed += 7919 * trainer.global_rank
        original = module.classifier.state_dict()
        return cls(index, int(k), forget, original, seed, plugins, stall_patience, kept)

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
        summary = RequestSummary.from_dict(state["summary"])
        request = cls(
            summary.request, summary.k, forget, state["original"], state["seed"], plugins, stall_patience, kept
        )
        request.summary = summary
        request.steps = int(state["steps"])
        request.counter.count = int(state.get("samples", 0))
        request.stall.best, request.stall.best_step = int(state["stall"]["best"]), int(state["stall"]["best_step"])
        request._plugin_states, request._resumed = dict(state.get("plugins", {})), True
        return request
