"""The callback that runs an unlearning request inside an ordinary ``Trainer.fit``: collect, step, stop, finish."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_unlearn.anchors import AnchorPool, PGDAnchors
from lightning_unlearn.importance import MASImportance
from lightning_unlearn.module import UnlearningModule
from lightning_unlearn.plugins.base import UnlearningPlugin, check_plugins
from lightning_unlearn.plugins.distill import RetainDistillation, RetainSource
from lightning_unlearn.plugins.edit import LastLayerEdit
from lightning_unlearn.plugins.fisher import FisherEdit
from lightning_unlearn.plugins.replay import ForgetReplay
from lightning_unlearn.plugins.shifted import ShiftedCopies
from lightning_unlearn.receipts import write_request_receipt
from lightning_unlearn.report import plot_trace, write_summary
from lightning_unlearn.request import ForgetPart, Request, RequestSummary
from lightning_unlearn.spawn import SpawnSafeGenerators, register_receiver, return_to_main_process

#: sharded strategies: each process holds a part of the weights, which the request's edits and checks cannot see whole
_UNSUPPORTED_STRATEGIES = (FSDPStrategy, DeepSpeedStrategy, ModelParallelStrategy)

__all__ = ["InstanceUnlearning", "RequestSummary"]


class InstanceUnlearning(SpawnSafeGenerators, Callback):  # its plugins hold torch.Generators: see spawn.py
    """Unlearn the instances a ``Trainer`` is fitted on, protecting the rest of the model's knowledge.

    Each ``fit`` is one :class:`~lightning_unlearn.request.Request`: the callback collects the forget instances from
    the training dataloader, sets up its plugins (:class:`~lightning_unlearn.plugins.UnlearningPlugin`: anchors,
    importance, replay of kept forget data, baselines, your own) on the original weights, and measures the reference
    metrics there once (forget set, plugins, evaluation sets and membership inference from the same predictions).
    Every ``check_every_n_steps`` steps it checks the whole forget set and stops the Trainer once every instance is
    unlearned; ``max_steps`` caps the request. A request that ends with instances remembered, raises, or breaks
    ``max_drop`` is a failure, and the original weights are restored (``restore_on_failure=True``).

    Args:
        anchors: anchor plugin; ``None`` disables anchors, ``"default"`` uses ``PGDAnchors()``.
        importance: ``MASImportance(use="penalty")`` or ``MASImportance(use="mask")``; ``None`` (the default)
            disables it: with the default anchors it slowed forgetting and cost accuracy (docs/benchmarks.md).
        max_steps: optimizer steps at most per request.
        check_every_n_steps: run the stop check every this many steps.
        restore_on_failure: put the original weights back if a request fails (see above).
        max_drop: optional guard: the request fails if accuracy on an evaluation set (``val_dataloaders``) ends more
            than this much (a fraction, e.g. ``0.05``) below its value on the original weights.
        stall_patience: when the count of instances still remembered has not fallen for this many steps, halve the
            plugins' protective weight (:meth:`~lightning_unlearn.plugins.UnlearningPlugin.scale_protection`: the
            anchor loss), down to 1/1024. ``None`` keeps it fixed.
        keep_forget_data: keep earlier requests' forget instances in memory and keep them unlearned during later
            requests (opting in warns). Forget data is never written to checkpoints, logs or receipts.
        receipt_dir: folder for a deletion receipt per request (JSON, plus a line in ``receipts.jsonl``).
        seed: seed of the plugins' randomness; ``None`` derives it from ``torch.initial_seed()``. Each process adds
            its rank, so shards get different, reproducible draws.
        shifted_copies: plugin holding the pre-trained outputs on shifted copies of the forget images (data-free
            stand-ins for the images that look like them); ``"default"`` uses ``ShiftedCopies()``, ``None`` disables.
        retain: a sample of the retained training data, if you have one (a tensor of inputs, a ``Dataset`` or a
            ``DataLoader``; labels are not needed), or a configured ``RetainDistillation``: the pre-trained outputs
            on it are distilled during the request. ``None`` (the default) needs nothing but the forget set, or uses
            the Trainer's DataModule's ``retain_sample()`` where it offers one (``ForgetRequestDataModule`` does).
        edit: the closed-form last-layer edit that finishes a request whose steps ran out, and replaces the steps'
            result where it is gentler (:class:`~lightning_unlearn.plugins.LastLayerEdit`); ``"default"`` uses
            ``LastLayerEdit()``, ``None`` disables it (a request whose budget runs out then fails).
        plugins: further plugins, run after the ones above (e.g. ``lightning_unlearn.baselines``).
        fisher_edit: the closed-form edit of the last layers that unlearns the request before the first step
            (:class:`~lightning_unlearn.plugins.FisherEdit`); ``"default"`` uses ``FisherEdit()``, ``None`` disables
            it (the request is then all optimiser steps, finished by ``edit``).

    Raises:
        ValueError: if an argument is outside its valid range or of the wrong type, or two plugins share a name.

    Logs ``forget/acc``, ``forget/target_acc``, ``forget/remaining`` at stop checks, the plugins' values
    (``anchor/agreement``), ``{name}/acc`` and ``{name}/drop`` at validation, ``mia/efficacy`` at the end (with
    evaluation sets named ``retain`` and ``test``; see :mod:`lightning_unlearn.metrics`). Checkpoints hold the request
    without its forget data; a resumed request sets its plugins up on the original weights again and continues
    exactly.

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
        if anchors == "default":
            anchors = PGDAnchors()
        if shifted_copies == "default":
            shifted_copies = ShiftedCopies()
        if edit == "default":
            edit = LastLayerEdit()
        if fisher_edit == "default":
            fisher_edit = FisherEdit()
        if retain is not None and not isinstance(retain, RetainDistillation):
            retain = RetainDistillation(retain)
        parts = (
            ("shifted_copies", shifted_copies, ShiftedCopies),
            ("edit", edit, LastLayerEdit),
            ("fisher_edit", fisher_edit, FisherEdit),
        )
        for name, part, kind in parts:
            if part is not None and not isinstance(part, kind):
                raise ValueError(f"`{name}` must be a {kind.__name__}, 'default' or None, got {type(part).__name__}.")
        if anchors is not None and not isinstance(anchors, PGDAnchors):
            raise ValueError(f"`anchors` must be a PGDAnchors, 'default' or None, got {type(anchors).__name__}.")
        if importance is not None and not isinstance(importance, MASImportance):
            raise ValueError(f"`importance` must be a MASImportance or None, got {type(importance).__name__}.")
        for name, value in (("max_steps", max_steps), ("check_every_n_steps", check_every_n_steps)):
            if value <= 0:
                raise ValueError(f"`{name}` must be > 0, got {value}.")
        if stall_patience is not None and stall_patience <= 0:
            raise ValueError(f"`stall_patience` must be > 0 or None, got {stall_patience}.")
        if max_drop is not None and not 0.0 <= max_drop <= 1.0:
            raise ValueError(f"`max_drop` must be in [0, 1] or None, got {max_drop}.")
        self.anchors: PGDAnchors | None = anchors
        self.importance: MASImportance | None = importance
        self.shifted_copies: ShiftedCopies | None = shifted_copies
        self.retain: RetainDistillation | None = retain
        self.edit: LastLayerEdit | None = edit
        self.fisher_edit: FisherEdit | None = fisher_edit
        self.plugins = check_plugins(self._builtin_parts() + list(plugins), ForgetReplay())
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

    @property
    def summary(self) -> RequestSummary | None:
        """The summary of the last request (``None`` before the first one ends); after ``ddp_spawn``/``ddp_fork``, rank
        0's, brought back to the main process with :attr:`history`, :attr:`trace` and :attr:`receipts`.
        """
        return self.history[-1] if self.history else None

    @property
    def request(self) -> Request | None:
        """The request in progress (``None`` between requests)."""
        return self._request

    @property
    def importance_scores(self) -> dict[str, Tensor] | None:
        """Normalised importance of the request in progress or just ended (identical on every process)."""
        return None if self.importance is None else self.importance.scores

    @property
    def anchor_pool(self) -> AnchorPool | None:
        """This process's anchors while a request runs (dropped when it ends)."""
        return None if self.anchors is None else self.anchors.pool

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
        name = type(trainer.strategy).__name__
        if isinstance(trainer.strategy, _UNSUPPORTED_STRATEGIES):
            raise ValueError(
                f"InstanceUnlearning does not support strategy {name}; use a data-parallel strategy ('ddp',"
                " 'ddp_spawn', 'ddp_fork') or a single device."
            )
        self._use_datamodule_sample(trainer)
        single = [type(p).__name__ for p in self.plugins if not p.supports_distributed]
        if trainer.world_size > 1 and single:
            raise ValueError(f"plugins {single} do not support distributed training (world_size={trainer.world_size}).")
        return_to_main_process(trainer, self._receiver_key, self._returned_state)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, UnlearningModule)
        pl_module.load_eval_data()
        forget = pl_module.collect_forget(trainer.train_dataloader)
        n = self._builtin
        plugins = [*self.plugins[:n], *([ForgetReplay()] if self._kept else []), *self.plugins[n:]]
        resume, self._resume = self._resume, None
        if resume is not None:
            request = Request.from_state(resume["request"], forget, plugins, self.stall_patience, self._kept)
        else:
            for optimizer in trainer.optimizers:  # a new request starts fresh, also after `fit(ckpt_path=...)`
                optimizer.state.clear()
            k = trainer.strategy.reduce(torch.tensor(float(len(forget[1])), device=pl_module.device), reduce_op="sum")
            seed = self.seed if self.seed is not None else torch.initial_seed() % (2**31)
            seed += 1_000_003 * len(self.history) + 7919 * trainer.global_rank
            original = pl_module.classifier.state_dict()
            request = Request(
                len(self.history), int(k), forget, original, seed, plugins, self.stall_patience, self._kept
            )
        self._request = request
        request.start(pl_module, trainer)
        if request.remaining == 0:
            trainer.should_stop = True

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        for plugin in self._request.plugins if self._request is not None else ():
            plugin.before_optimizer_step(pl_module)  # type: ignore[arg-type]

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        assert isinstance(pl_module, UnlearningModule) and self._request is not None
        request = self._request
        request.steps += 1
        if request.steps % self.check_every_n_steps == 0 or request.steps >= self.max_steps:
            values = request.check(pl_module)
            self.trace.append({"request": float(request.summary.request), "step": float(request.steps), **values})
        if request.remaining == 0 or request.steps >= self.max_steps:
            trainer.should_stop = True

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, UnlearningModule)
        request = self._request
        if request is None:
            return
        request.finish(pl_module, trainer)
        request.summary.after = request.measure(pl_module)
        count = torch.tensor(float(request.counter.count), device=pl_module.device)
        request.summary.samples = int(trainer.strategy.reduce(count, reduce_op="sum"))
        failure = request.failure(self.max_drop)
        self._finish(trainer, pl_module, failure)
        self._log_final_values(trainer)

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._request is not None:  # monitoring on the user's data is not the request's cost
            self._request.counter.pause()

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._request is not None:
            self._request.counter.resume()

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._request is None:
            return
        assert isinstance(pl_module, UnlearningModule)
        point = {"request": float(self._request.summary.request), "step": float(self._request.steps)}
        for plugin in self._request.plugins:
            for name, value in plugin.measure(pl_module).items():
                point[name] = value
                pl_module.log(name, value, batch_size=1)
        for key, metric in trainer.callback_metrics.items():
            if key.endswith("/acc") and not key.startswith("forget/"):
                point[key] = float(metric)
        self.trace.append(point)

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(pl_module, UnlearningModule) and self._request is not None:
            reason = f"interrupted by {type(exception).__name__}" + (f": {exception}" if str(exception) else "")
            self._finish(trainer, pl_module, reason, receipt=False)

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"history": [s.to_dict() for s in self.history], "in_progress": False}
        if self._request is not None:
            state.update(in_progress=True, request=self._request.state_dict())
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [RequestSummary(**s) for s in state_dict.get("history", [])]
        self._resume = dict(state_dict) if state_dict.get("in_progress") else None
        if self.keep_forget_data and self.history and not self._kept:
            rank_zero_warn(
                f"`keep_forget_data=True`: the forget sets of this checkpoint's {len(self.history)} earlier requests"
                " are not in it (checkpoints never hold forget data), so later requests do not keep them unlearned."
            )

    def save_summary(self, path: str | Path) -> Path:
        """Write the summaries of all requests and the trace of logged values as JSON (call it on rank zero)."""
        return write_summary([s.to_dict() for s in self.history], self.trace, path)

    def plot(self, path: str | Path) -> Path:
        """Plot the trace against steps as a PNG (needs matplotlib: ``pip install 'lightning-unlearn[demo]'``)."""
        return plot_trace(self.trace, path)

    # ------------------------------------------------------------------------------------------------- internals
    def _log_final_values(self, trainer: L.Trainer) -> None:
        """Write the request's outcome (every ``forget/*``, plugin value, ``{name}/acc``, ``{name}/drop`` and
        ``mia/efficacy``) to every logger at the last step, whatever ``log_every_n_steps`` is: the last point of each
        curve is the request's result.
        """
        summary = self.history[-1]
        final = {name: value for name, value in summary.after.items() if math.isfinite(value)}
        for name, value in summary.before.items():
            if name.endswith("/acc") and not name.startswith("forget/") and name in final:
                final[f"{name[:-4]}/drop"] = value - final[name]
        for logger in trainer.loggers:
            logger.log_metrics(final, step=trainer.global_step)
            logger.save()

    def _use_datamodule_sample(self, trainer: L.Trainer) -> None:
        """Without ``retain``, distil on the retained sample the Trainer's DataModule offers (``retain_sample()``)."""
        if self.retain is not None and not self._retain_from_datamodule:
            return
        extra = self.plugins[self._builtin :]
        offer = getattr(getattr(trainer, "datamodule", None), "retain_sample", None)
        sample = offer() if callable(offer) else None
        self.retain = RetainDistillation(sample) if sample is not None else None
        self._retain_from_datamodule = sample is not None
        self.plugins = check_plugins(self._builtin_parts() + extra, ForgetReplay())

    def _returned_state(self) -> dict[str, Any]:
        """What rank 0's worker hands back to this callback in the main process (``ddp_spawn``, ``ddp_fork``)."""
        return {"history": self.history, "trace": self.trace, "receipts": self.receipts}

    @property
    def _optional_parts(self) -> dict[str, UnlearningPlugin | None]:
        return {"shifted_copies": self.shifted_copies, "retain": self.retain, "edit": self.edit}

    def _builtin_parts(self) -> list[UnlearningPlugin]:
        """The built-in parts that are on, in the order they run (the one place that lists them)."""
        parts = (self.anchors, self.importance, self.shifted_copies, self.retain, self.fisher_edit, self.edit)
        return [p for p in parts if p is not None]

    @property
    def _builtin(self) -> int:
        return len(self._builtin_parts())

    def _finish(
        self, trainer: L.Trainer, pl_module: UnlearningModule, failure: str | None, receipt: bool = True
    ) -> None:
        request, self._request = self._request, None
        assert request is not None
        summary = request.close(pl_module, failure, restore=self.restore_on_failure)
        request.end(pl_module)
        if self.receipt_dir is not None and receipt:
            extra = self.plugins[self._builtin :]
            method = {
                "module": dict(pl_module.hparams),
                "anchors": None if self.anchors is None else self.anchors.hparams(),
                "importance": None if self.importance is None else self.importance.hparams(),
                **{
                    name: None if plugin is None else plugin.hparams()
                    for name, plugin in (
                        ("shifted_copies", self.shifted_copies),
                        ("retain", self.retain),
                        ("fisher_edit", self.fisher_edit),
                        ("edit", self.edit),
                    )
                },
                "max_steps": self.max_steps,
                "seed": self.seed,
                **({"plugins": {p.name: p.hparams() for p in extra}} if extra else {}),
            }
            args = (request.forget, request.original, pl_module.classifier, method, summary.to_dict())
            path = write_request_receipt(self.receipt_dir, *args, trainer.world_size, trainer.global_rank)
            self.receipts += [path] if path is not None else []
        if self.keep_forget_data and not summary.restored:
            self._kept.append(request.forget)
        self.history.append(summary)
