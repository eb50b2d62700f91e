"""The callback that runs an unlearning request inside an ordinary ``Trainer.fit``: collect, step, stop, finish."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_unlearn.data import collect_forget
from lightning_unlearn.distributed import check_plugins_distributed, check_strategy
from lightning_unlearn.evaluation import EvaluationHooks
from lightning_unlearn.module import UnlearningModule
from lightning_unlearn.plugins.anchors import PGDAnchors
from lightning_unlearn.plugins.base import UnlearningPlugin
from lightning_unlearn.plugins.distill import RetainDistillation, RetainSource
from lightning_unlearn.plugins.edit import LastLayerEdit
from lightning_unlearn.plugins.factory import MethodParts, build_plugins, method_parts, with_datamodule_sample
from lightning_unlearn.plugins.fisher import FisherEdit
from lightning_unlearn.plugins.importance import MASImportance
from lightning_unlearn.plugins.shifted import ShiftedCopies
from lightning_unlearn.receipts import write_request_receipt
from lightning_unlearn.report import RequestRecord
from lightning_unlearn.request import ForgetPart, Request
from lightning_unlearn.spawn import SpawnSafeGenerators, register_receiver, return_to_main_process
from lightning_unlearn.summary import RequestSummary

__all__ = ["InstanceUnlearning", "RequestSummary"]


class InstanceUnlearning(SpawnSafeGenerators, RequestRecord, EvaluationHooks, Callback):  # generators: spawn.py
    """Unlearn the instances a ``Trainer`` is fitted on, protecting the rest of the model's knowledge.

    Each ``fit`` is one :class:`~lightning_unlearn.request.Request`: the callback collects the forget instances from
    the training dataloader and runs its plugins (:class:`~lightning_unlearn.plugins.UnlearningPlugin`, in the order
    :func:`~lightning_unlearn.plugins.factory.build_plugins` makes from the arguments below: anchors, importance,
    shifted copies, retained sample, the two edits, replay of kept forget data, then yours); the request's
    :class:`~lightning_unlearn.evaluation.RequestEvaluator` measures the forget set, the plugins, the evaluation sets
    (the validation dataloaders of ``fit`` or of the DataModule) and membership inference on the original weights and
    at the end. Every ``check_every_n_steps`` steps it checks the whole forget set and stops the Trainer once every
    instance is unlearned; ``max_steps`` caps the request. A request that ends with instances remembered, raises, or
    breaks ``max_drop`` fails, and the original weights are restored (``restore_on_failure=True``).

    Args:
        anchors: anchor plugin; ``None`` disables anchors, ``"default"`` uses ``PGDAnchors()``.
        importance: ``MASImportance(use="penalty")`` or ``MASImportance(use="mask")``; ``None`` (the default)
            disables it: with the default anchors it slowed forgetting and cost accuracy (docs/benchmarks.md).
        max_steps: optimizer steps at most per request.
        check_every_n_steps: run the stop check every this many steps.
        restore_on_failure: put the original weights back if a request fails (see above).
        max_drop: optional guard: the request fails if accuracy on an evaluation set ends more than this much (a
            fraction, e.g. ``0.05``) below its value on the original weights.
        stall_patience: when the count of instances still remembered has not fallen for this many steps, halve the
            plugins' protective weight (:meth:`~lightning_unlearn.plugins.UnlearningPlugin.on_stall`: the anchor
            loss), down to 1/1024. ``None`` keeps it fixed.
        keep_forget_data: keep earlier requests' forget instances in memory and keep them unlearned during later
            requests (opting in warns). Forget data is never written to checkpoints, logs or receipts.
        receipt_dir: folder for a deletion receipt per request (JSON, plus a line in ``receipts.jsonl``).
        seed: seed of the plugins' randomness; ``None`` derives it from ``torch.initial_seed()``. Each process adds
            its rank, so shards get different, reproducible draws.
        shifted_copies: plugin holding the pre-trained outputs on shifted copies of the forget images (data-free
            stand-ins for the images that look like them); ``"default"`` uses ``ShiftedCopies()``, ``None`` disables.
        retain: a sample of the retained training data (a tensor of inputs, a ``Dataset`` or a ``DataLoader``; no
            labels needed) or a configured ``RetainDistillation``: the pre-trained outputs on it are distilled. ``None``
            (the default) uses the DataModule's ``retain_sample()`` where it offers one, else nothing.
        edit: the closed-form last-layer edit that finishes a request whose steps ran out
            (:class:`~lightning_unlearn.plugins.LastLayerEdit`); ``"default"`` uses ``LastLayerEdit()``, ``None``
            disables it (a request whose budget runs out then fails).
        plugins: further plugins, run after the ones above (e.g. ``lightning_unlearn.baselines``).
        fisher_edit: the closed-form edit of the last layers that unlearns the request before the first step
            (:class:`~lightning_unlearn.plugins.FisherEdit`); ``"default"`` uses ``FisherEdit()``, ``None`` disables it.

    Raises:
        ValueError: if an argument is outside its valid range or of the wrong type, or two plugins share a name.

    Logs ``forget/*`` at stop checks, the plugins' values, ``{name}/acc`` and ``{name}/drop`` at validation and all of
    them with ``mia/efficacy`` at the end (see :mod:`lightning_unlearn.metrics`). Checkpoints hold the request without
    its forget data; a resumed request sets its plugins up on the original weights again and continues exactly.

    Examples:
        >>> callback = InstanceUnlearning(anchors=PGDAnchors(eps=1.0), importance=MASImportance(use="mask"))
        >>> callback.max_steps, [p.name for p in callback.plugins]
        (1000, ['anchor_loss', 'importance_penalty', 'shifted_copies', 'fisher_edit', 'last_layer_edit'])
    """

    def __init__(
        self,
        anchors: PGDAnchors | Literal["default"] | None = "default",
        importance: MASImportance | None = None,
        max_steps: int = 1000,
        check_every_n_steps: int = 1,
        restore_on_failure: bool = True,
        max_drop: float | None = None,
        stall_patience: int | None = 100,
        keep_forget_data: bool = False,
        receipt_dir: str | Path | None = None,
        seed: int | None = None,
        shifted_copies: ShiftedCopies | Literal["default"] | None = "default",
        retain: RetainDistillation | RetainSource | None = None,
        edit: LastLayerEdit | Literal["default"] | None = "default",
        plugins: Sequence[UnlearningPlugin] = (),
        fisher_edit: FisherEdit | Literal["default"] | None = "default",
    ) -> None:
        for name, value in (("max_steps", max_steps), ("check_every_n_steps", check_every_n_steps)):
            if value <= 0:
                raise ValueError(f"`{name}` must be > 0, got {value}.")
        if stall_patience is not None and stall_patience <= 0:
            raise ValueError(f"`stall_patience` must be > 0 or None, got {stall_patience}.")
        if max_drop is not None and not 0.0 <= max_drop <= 1.0:
            raise ValueError(f"`max_drop` must be in [0, 1] or None, got {max_drop}.")
        #: the method's own plugins (``None`` when off): ``parts.anchors``, ``parts.retain``, ...
        self.parts: MethodParts = method_parts(anchors, importance, shifted_copies, retain, fisher_edit, edit)
        self._extra = list(plugins)
        #: the plugins every request runs, in order (see :func:`~lightning_unlearn.plugins.factory.build_plugins`)
        self.plugins = build_plugins(self.parts, keep_forget_data, self._extra)
        self.max_steps, self.check_every_n_steps = int(max_steps), int(check_every_n_steps)
        self.restore_on_failure, self.max_drop, self.stall_patience = restore_on_failure, max_drop, stall_patience
        self.keep_forget_data = keep_forget_data
        self.receipt_dir = Path(receipt_dir) if receipt_dir is not None else None
        self.seed = seed
        self.history: list[RequestSummary] = []
        self.trace: list[dict[str, float]] = []
        self.receipts: list[Path] = []
        self._kept: list[ForgetPart] = []
        self._request: Request | None = None
        self._resume: dict[str, Any] | None = None
        self._retain_from_datamodule = False
        if keep_forget_data:
            rank_zero_warn(
                "`keep_forget_data=True` keeps the forget instances of every request in this process's memory (never"
                " in checkpoints, logs or receipts) until the callback is deleted; the default drops them at the end"
                " of each request."
            )
        self._receiver_key = uuid.uuid4().hex  # ddp_spawn/ddp_fork: rank 0's results come back to this object
        register_receiver(self, self._receiver_key)

    anchors = property(lambda self: self.parts.anchors, doc="The anchors (``PGDAnchors``) or ``None``.")
    importance = property(lambda self: self.parts.importance, doc="The importance (``MASImportance``) or ``None``.")
    shifted_copies = property(lambda self: self.parts.shifted_copies, doc="The ``ShiftedCopies`` or ``None``.")
    retain = property(lambda self: self.parts.retain, doc="The ``RetainDistillation`` or ``None``.")
    fisher_edit = property(lambda self: self.parts.fisher_edit, doc="The ``FisherEdit`` or ``None``.")
    edit = property(lambda self: self.parts.edit, doc="The ``LastLayerEdit`` or ``None``.")

    @property
    def request(self) -> Request | None:
        """The request in progress (``None`` between requests)."""
        return self._request

    @property
    def state_key(self) -> str:
        return self._generate_state_key(max_steps=self.max_steps, seed=self.seed)

    # ------------------------------------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, UnlearningModule):
            raise TypeError(
                f"InstanceUnlearning needs an UnlearningModule, got {type(pl_module).__name__}: wrap the classifier"
                " with `UnlearningModule(classifier, num_classes=...)`."
            )
        check_strategy(trainer)
        self._use_datamodule_sample(trainer)
        check_plugins_distributed(trainer, self.plugins)
        return_to_main_process(trainer, self._receiver_key, self._returned_state)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, UnlearningModule)
        forget = collect_forget(pl_module, trainer.train_dataloader)
        resume, self._resume = self._resume, None
        if resume is not None:
            request = Request.from_state(resume["request"], forget, self.plugins, self.stall_patience, self._kept)
        else:
            for optimizer in trainer.optimizers:  # a new request starts fresh, also after `fit(ckpt_path=...)`
                optimizer.state.clear()
            args = (len(self.history), forget, pl_module, trainer, self.seed, self.plugins, self.stall_patience)
            request = Request.new(*args, self._kept)
        self._request = request
        request.start(pl_module, trainer)
        trainer.should_stop = trainer.should_stop or request.remaining == 0

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._request is not None:
            self._request.before_optimizer_step()

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        assert self._request is not None
        request = self._request
        request.steps += 1
        if request.steps % self.check_every_n_steps == 0 or request.steps >= self.max_steps:
            values = request.check()
            self.trace.append({"request": float(request.summary.request), "step": float(request.steps), **values})
        if request.remaining == 0 or request.steps >= self.max_steps:
            trainer.should_stop = True

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        request = self._request
        if request is None:
            return
        request.finish()
        self._finish(trainer, request.failure(self.max_drop))
        request.evaluator.log_outcome(request.summary)

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(pl_module, UnlearningModule) and self._request is not None:
            reason = f"interrupted by {type(exception).__name__}" + (f": {exception}" if str(exception) else "")
            self._finish(trainer, reason, receipt=False)

    # ------------------------------------------------------------------------------------------------- internals
    def _use_datamodule_sample(self, trainer: L.Trainer) -> None:
        """Without ``retain``, distil on the retained sample the Trainer's DataModule offers (``retain_sample()``)."""
        if self.parts.retain is None or self._retain_from_datamodule:
            self.parts, self._retain_from_datamodule = with_datamodule_sample(
                self.parts, getattr(trainer, "datamodule", None)
            )
            self.plugins = build_plugins(self.parts, self.keep_forget_data, self._extra)

    def _finish(self, trainer: L.Trainer, failure: str | None, receipt: bool = True) -> None:
        request, self._request = self._request, None
        assert request is not None
        summary = request.close(failure, restore=self.restore_on_failure)
        module = request.ctx.module
        request.end()
        if self.receipt_dir is not None and receipt:
            method = {
                "module": dict(module.hparams),
                "max_steps": self.max_steps,
                "seed": self.seed,
                "plugins": {plugin.name: plugin.hparams() for plugin in request.plugins},
            }
            args = (request.forget, request.original, module.classifier, method, summary.to_dict())
            path = write_request_receipt(self.receipt_dir, *args, trainer.world_size, trainer.global_rank)
            self.receipts += [path] if path is not None else []
        if self.keep_forget_data and not summary.restored:
            self._kept.append(request.forget)
        self.history.append(summary)
