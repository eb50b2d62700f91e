"""The plugin interface: one part of a method (anchors, importance, replay, a baseline) per plugin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from lightning_unlearn.module import UnlearningModule
    from lightning_unlearn.request import RequestContext


class UnlearningPlugin:
    """One part of an unlearning method, run by :class:`~lightning_unlearn.InstanceUnlearning` inside each request.

    Every hook receives the same :class:`~lightning_unlearn.request.RequestContext` ``ctx``: ``ctx.request`` (the
    :class:`~lightning_unlearn.request.Request`: forget set, seed, protected inputs, summary), ``ctx.module`` (the
    :class:`~lightning_unlearn.UnlearningModule`) and ``ctx.trainer``. The lifecycle of a request, and what a plugin
    may do at each point (override only what you need):

    1. :meth:`setup` once at the start, with the classifier holding its **original** weights (also when a request
       resumes from a checkpoint): generate, estimate or cache what the plugin needs from the forget set
       (``ctx.request.forget``; ``ctx.request.kept`` holds earlier requests' sets with ``keep_forget_data``) and the
       model. Reduce across processes through ``ctx.trainer.strategy`` where a value must agree on every process; draw
       randomness from ``ctx.request.generator(offset)`` (seeded per request and process;
       :class:`~lightning_unlearn.PGDAnchors` takes offsets 0 and 1, pick others). The reference metrics
       (``ctx.request.before``) are measured after every plugin's setup, so they include your :meth:`measure`.
    2. :meth:`begin` once, after the reference metrics were measured and before the first step, for plugins that
       declare :attr:`edits_at_begin`: a chance to change the weights in closed form (the Fisher edit lives here; a
       request it finishes takes no step).
    3. :meth:`loss_term` at every training step, for plugins that declare :attr:`adds_loss`: a scalar (already
       weighted) added to the forget loss and logged as ``train/{name}``, or ``None`` for no term. Its gradient counts
       as *protection* (``UnlearningModule(project_gradients=True)`` removes the part of the forget gradient that
       fights it).
    4. :meth:`before_optimizer_step` after backward (gradients unscaled and all-reduced): edit gradients in place.
    5. :meth:`measure` at the start and end of the request and at each validation: values for the summary and logs;
       :meth:`step_metrics` at each logging step; :meth:`on_stall` when forgetting stalls.
    6. :meth:`finish` once the steps are over (budget spent or every instance unlearned), before the verdict: a last
       chance to change the weights (the closed-form edit that finishes a request lives here).
    7. :meth:`teardown` at the end (success, failure or exception): drop per-request state.

    Outcomes of the request (counts, rates, which result was kept) go into the plugin's own part of the summary:
    ``ctx.request.summary.record(self.name, key=value)`` (read back as ``summary.plugins[name]``). :meth:`state_dict`
    / :meth:`load_state_dict` save and restore what a resumed request needs (``load_state_dict`` runs before
    :meth:`setup`: keep the values and apply them there). :meth:`hparams` (public attributes by default) goes into
    deletion receipts under the plugin's :attr:`name`; keep per-request state in ``_private`` attributes so it stays
    out of them.

    Attributes:
        name: the plugin's name (its loss term is logged as ``train/{name}``); unique among a callback's plugins.
        adds_loss: whether :meth:`loss_term` is registered with the module (declare it in your subclass).
        edits_at_begin: whether :meth:`begin` may change the weights (the request then checks the forget set again
            before the first step).
        supports_distributed: whether the plugin is correct under data-parallel strategies (DDP).

    Examples:
        A plugin that keeps the final layer's bias near its original value:

        >>> import torch
        >>> class HoldBias(UnlearningPlugin):
        ...     name = "hold_bias"
        ...     adds_loss = True
        ...
        ...     def __init__(self, weight: float = 1.0) -> None:
        ...         self.weight = weight
        ...         self._reference: torch.Tensor | None = None
        ...
        ...     def setup(self, ctx):
        ...         self._reference = ctx.module.classifier[-1].bias.detach().clone()
        ...
        ...     def loss_term(self, ctx):
        ...         return self.weight * (ctx.module.classifier[-1].bias - self._reference).pow(2).sum()
        ...
        ...     def teardown(self, ctx):
        ...         self._reference = None
        >>> from lightning_unlearn import InstanceUnlearning
        >>> callback = InstanceUnlearning(plugins=[HoldBias(weight=0.1)])
        >>> [type(p).__name__ for p in callback.plugins]
        ['PGDAnchors', 'ShiftedCopies', 'FisherEdit', 'LastLayerEdit', 'HoldBias']
        >>> HoldBias(weight=0.1).hparams()
        {'weight': 0.1}
    """

    name: str = "plugin"
    adds_loss: bool = False
    edits_at_begin: bool = False
    supports_distributed: bool = True

    def setup(self, ctx: RequestContext) -> None:
        """Prepare for the request (classifier at its original weights; every process calls it together)."""

    def begin(self, ctx: RequestContext) -> None:
        """Change the weights before the first step (with :attr:`edits_at_begin`; every process calls it together;
        not called again when a request resumes from a checkpoint).
        """

    def loss_term(self, ctx: RequestContext) -> Tensor | None:
        """This step's loss term (a weighted scalar), or ``None`` for none (with :attr:`adds_loss`)."""
        return None

    def before_optimizer_step(self, ctx: RequestContext) -> None:
        """Edit the gradients of ``ctx.module.classifier`` in place before the optimizer step."""

    def measure(self, ctx: RequestContext) -> dict[str, float]:
        """Values to report in the request summary (``before``/``after``) and at each validation."""
        return {}

    def step_metrics(self, ctx: RequestContext) -> dict[str, float]:
        """Values to log at each logging step (e.g. ``train/anchor_scale``)."""
        return {}

    def on_stall(self, ctx: RequestContext) -> float | None:
        """Forgetting has stalled (the stall rule): lower this plugin's protective weight if it has one; returns the
        new scale, or ``None`` if nothing changed.
        """
        return None

    def finish(self, ctx: RequestContext) -> None:
        """Change the final weights, if the plugin does so (every process calls it together, after the last step)."""

    def teardown(self, ctx: RequestContext) -> None:
        """Drop per-request state at the end of the request."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed request needs (plain values and CPU tensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep ``state`` for the next :meth:`setup`."""

    def sequence_state(self) -> dict[str, Any]:
        """What the plugin carries from one request to the next (weights or plain values, never forget data); the
        callback's checkpoint holds it, so a sequence resumed in a new process gets it back through
        :meth:`load_sequence_state`.
        """
        return {}

    def load_sequence_state(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`sequence_state` returned (called when the callback's checkpoint is loaded)."""

    def hparams(self) -> dict[str, Any]:
        """The configuration (public attributes of plain types), written into deletion receipts."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and _plain(v)}


def zero_term(module: UnlearningModule) -> Tensor:
    """A zero loss that still touches every trainable parameter: the term of a plugin with nothing to hold on this
    process (an empty shard), so that DDP finds a gradient for every parameter on every process.
    """
    return 0.0 * sum(p.sum() for p in module.classifier.parameters() if p.requires_grad)  # type: ignore[return-value]


class ScaledProtection(UnlearningPlugin):
    """A plugin with a protective weight that the stall rule can lower (anchors, held outputs): :attr:`scale` starts
    at 1 in each request and is halved down to :attr:`MIN_SCALE`; it and the plugin's batch generator are saved with a
    resumed request.
    """

    #: the lowest scale the stall rule can bring the weight to
    MIN_SCALE = 1.0 / 1024
    _scale: float = 1.0
    _stash: dict[str, Any] | None = None

    @property
    def scale(self) -> float:
        """The factor the stall rule has applied to the weight in the current (or last) request."""
        return self._scale

    def on_stall(self, ctx: RequestContext) -> float | None:
        """Halve the weight (at least :attr:`MIN_SCALE`); the new scale if it changed."""
        return self.scale_protection(0.5)

    def scale_protection(self, factor: float) -> float | None:
        """Multiply the weight by ``factor`` (at least :attr:`MIN_SCALE`); the new scale if it changed."""
        scale = max(self._scale * factor, self.MIN_SCALE)
        changed, self._scale = scale != self._scale, scale
        return scale if changed else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._stash = dict(state) if state else None

    def _start_scale(self, generator: Any) -> None:
        """At setup: scale 1, or the checkpointed scale and generator state of a resumed request."""
        self._scale = 1.0
        if self._stash is not None:
            generator.set_state(self._stash["generator"])
            self._scale = float(self._stash["scale"])
            self._stash = None

    def _scale_state(self, generator: Any) -> dict[str, Any]:
        return {"generator": generator.get_state(), "scale": self._scale}


def check_plugins(plugins: Sequence[Any], *reserved: UnlearningPlugin) -> list[UnlearningPlugin]:
    """``plugins`` as a list, checked: all plugins, their names unique and none taken by ``reserved`` plugins.

    Raises:
        ValueError: naming the values that are not plugins, or the names.

    Examples:
        >>> check_plugins([3])
        Traceback (most recent call last):
        ...
        ValueError: `plugins` must hold UnlearningPlugin instances, got int.
    """
    bad = [type(p).__name__ for p in plugins if not isinstance(p, UnlearningPlugin)]
    if bad:
        raise ValueError(f"`plugins` must hold UnlearningPlugin instances, got {', '.join(bad)}.")
    names = [p.name for p in [*plugins, *reserved]]
    if len(set(names)) != len(names):
        raise ValueError(f"plugin names must be unique (they name the loss terms), got {names[: len(plugins)]}.")
    return list(plugins)


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))
