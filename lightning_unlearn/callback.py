"""The callback that runs an unlearning request inside an ordinary ``Trainer.fit``."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data.distributed import DistributedSampler
from typing_extensions import override

from lightning_unlearn.anchors import AnchorPool, PGDAnchors
from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.functional.losses import forget_loss
from lightning_unlearn.importance import MASImportance, snapshot
from lightning_unlearn.metrics import MIAEfficacy
from lightning_unlearn.module import UnlearningModule
from lightning_unlearn.receipts import make_receipt, model_hash, write_receipt
from lightning_unlearn.spawn import SpawnSafeGenerators, register_receiver, return_to_main_process

_UNSUPPORTED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


@dataclass
class RequestSummary:
    """What one request did.

    Attributes:
        request: index of the request (0 for the first ``fit`` with this callback).
        k: number of forget instances (over all processes).
        steps: optimizer steps taken.
        seconds: wall time of the request, anchors and importance included.
        setup_seconds: of which anchor generation and importance estimation.
        remaining_before: instances not yet unlearned at the start.
        remaining_after: instances not unlearned at the end (0 on success).
        unlearned: whether every instance was unlearned.
        restored: whether the original weights were put back (request failed and ``restore_on_failure``).
        failure: why the request failed (``None`` on success).
        anchors: number of anchors (over all processes).
        anchor_success_rate: share of anchors the pre-trained model labels with their attack target.
        before: metrics at the start (``forget/acc``, ``anchor/agreement``, ``{name}/acc``, ``mia/efficacy``, ...).
        after: the same metrics at the end.
    """

    request: int
    k: int
    steps: int = 0
    seconds: float = 0.0
    setup_seconds: float = 0.0
    remaining_before: int = 0
    remaining_after: int = 0
    unlearned: bool = False
    restored: bool = False
    anchors: int = 0
    anchor_success_rate: float = float("nan")
    failure: str | None = None
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, ready for JSON."""
        return asdict(self)


class InstanceUnlearning(SpawnSafeGenerators, Callback):  # holds torch.Generators: see spawn.py
    """Unlearn the instances a ``Trainer`` is fitted on, protecting the rest of the model's knowledge.

    At the start of each ``fit`` (one *request*) it collects the forget instances from the training dataloader,
    generates adversarial anchors around them, estimates weight importance and registers the anchor loss and the
    importance penalty with the :class:`~lightning_unlearn.UnlearningModule` (or masks gradients in
    ``on_before_optimizer_step``). After every optimizer step it checks, on the whole forget set, which instances are
    unlearned and stops the Trainer as soon as all are; ``max_steps`` caps the request. If the request ends with
    instances still remembered, raises, or breaks the ``max_drop`` guard, the original weights are restored
    (``restore_on_failure=True``).

    Args:
        anchors: anchor generator; ``None`` disables anchors, ``"default"`` uses ``PGDAnchors()``.
        importance: importance estimator (``MASImportance(use="penalty")`` or ``MASImportance(use="mask")``); ``None``
            (the default) disables it: with the default anchors it slowed forgetting and cost accuracy in our benchmark
            (docs/benchmarks.md).
        max_steps: optimizer steps at most per request.
        check_every_n_steps: run the stop check every this many steps.
        restore_on_failure: put the original weights back if a request fails (see above).
        max_drop: optional guard: the request fails if accuracy on an evaluation set (``val_dataloaders``) ends more
            than this much (a fraction, e.g. ``0.05``) below its value at the start.
        stall_patience: when the number of instances still remembered has not fallen for this many steps, halve the
            weight of the anchor loss (strong anchors protect best but can stall forgetting; this trades protection for
            progress only where needed). ``None`` keeps the weight fixed.
        keep_forget_data: keep earlier requests' forget instances in memory, keep them unlearned during later
            requests and include them in the stop check (in memory only; opting in warns). Off by default: the deleted
            data is dropped at the end of its request. Forget data is never written to checkpoints, logs or receipts.
        receipt_dir: folder where a deletion receipt (JSON, plus a line in ``receipts.jsonl``) is written for each
            request; ``None`` writes none.
        seed: seed of the anchors' randomness; ``None`` derives it from ``torch.initial_seed()`` (set by
            ``L.seed_everything``). Each process adds its rank, so shards get different, reproducible draws.

    Raises:
        ValueError: if an argument is outside its valid range or of the wrong type.

    Logged values (see :mod:`lightning_unlearn.metrics`): ``forget/acc``, ``forget/target_acc``, ``forget/remaining``
    after every stop check; ``anchor/agreement`` and, with evaluation dataloaders, ``{name}/acc`` and ``{name}/drop``
    every validation epoch; ``mia/efficacy`` at the end of a request when evaluation sets named ``retain`` and
    ``test`` are given. :attr:`summary` holds the before/after values of the last request.

    Checkpoints taken during a request hold the callback's state (original weights, importance, step counter, the
    anchor sampler's RNG state), never forget inputs or anchors: on ``fit(..., ckpt_path=...)`` the anchors are
    regenerated from the original weights with the same seed, so a resumed request continues exactly.

    Examples:
        >>> callback = InstanceUnlearning(anchors=PGDAnchors(eps=1.0), importance=MASImportance(use="mask"))
        >>> callback.max_steps
        1000
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
    ) -> None:
        if anchors == "default":
            anchors = PGDAnchors()
        if anchors is not None and not isinstance(anchors, PGDAnchors):
            raise ValueError(f"`anchors` must be a PGDAnchors, 'default' or None, got {type(anchors).__name__}.")
        if importance is not None and not isinstance(importance, MASImportance):
            raise ValueError(f"`importance` must be a MASImportance or None, got {type(importance).__name__}.")
        if max_steps <= 0:
            raise ValueError(f"`max_steps` must be > 0, got {max_steps}.")
        if check_every_n_steps <= 0:
            raise ValueError(f"`check_every_n_steps` must be > 0, got {check_every_n_steps}.")
        if stall_patience is not None and stall_patience <= 0:
            raise ValueError(f"`stall_patience` must be > 0 or None, got {stall_patience}.")
        if max_drop is not None and not 0.0 <= max_drop <= 1.0:
            raise ValueError(f"`max_drop` must be in [0, 1] or None, got {max_drop}.")
        self.anchors: PGDAnchors | None = anchors
        self.importance: MASImportance | None = importance
        self.max_steps = int(max_steps)
        self.check_every_n_steps = int(check_every_n_steps)
        self.restore_on_failure = restore_on_failure
        self.max_drop = max_drop
        self.stall_patience = stall_patience
        self.keep_forget_data = keep_forget_data
        self.receipt_dir = Path(receipt_dir) if receipt_dir is not None else None
        self.seed = seed
        self.history: list[RequestSummary] = []
        self.trace: list[dict[str, float]] = []
        self.receipts: list[Path] = []
        # state of the request in progress
        self._forget: tuple[Tensor, Tensor, Tensor | None] | None = None
        self._kept: list[tuple[Tensor, Tensor, Tensor | None]] = []
        self._pool: AnchorPool | None = None
        self._importance: dict[str, Tensor] | None = None
        self._mask: dict[str, Tensor] | None = None
        self._backup: dict[str, Tensor] | None = None
        self._summary: RequestSummary | None = None
        self._anchor_generator = torch.Generator()
        self._batch_generator = torch.Generator()
        self._seed = 0
        self._started = 0.0
        self._steps = 0
        self._remaining = -1
        self._resume: dict[str, Any] | None = None
        if keep_forget_data:
            rank_zero_warn(
                "`keep_forget_data=True` keeps the forget instances of every request in this process's memory (never"
                " in checkpoints, logs or receipts) until the callback is deleted; the default drops them at the end"
                " of each request."
            )
        self._anchor_scale = 1.0
        self._best_remaining = -1
        self._best_step = 0
        self._receiver_key = uuid.uuid4().hex  # ddp_spawn/ddp_fork: rank 0's results come back to this object
        register_receiver(self, self._receiver_key)

    @property
    def summary(self) -> RequestSummary | None:
        """The summary of the last request (``None`` before the first one ends); after ``ddp_spawn``/``ddp_fork``, rank
        0's, brought back to the main process with :attr:`history`, :attr:`trace` and :attr:`receipts`.
        """
        return self.history[-1] if self.history else None

    @property
    def importance_scores(self) -> dict[str, Tensor] | None:
        """Normalised importance of the request in progress or just ended (identical on every process)."""
        return self._importance

    @property
    def anchor_pool(self) -> AnchorPool | None:
        """This process's anchors while a request runs (dropped when it ends)."""
        return self._pool

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
        if name in _UNSUPPORTED_STRATEGIES:
            raise ValueError(
                f"InstanceUnlearning does not support strategy {name}; use a data-parallel strategy ('ddp',"
                " 'ddp_spawn', 'ddp_fork') or a single device."
            )
        return_to_main_process(trainer, self._receiver_key, self._returned_state)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, UnlearningModule)
        self._started = time.perf_counter()
        pl_module.load_eval_data()
        x, y, t = self._collect(trainer, pl_module)
        self._forget = (x, y, t)
        resume, self._resume = self._resume, None
        current: dict[str, Tensor] | None = None
        if resume is not None and resume.get("in_progress"):
            # continue a checkpointed request: anchors and importance come from the original weights, as before
            current = {n: v.detach().clone() for n, v in pl_module.classifier.state_dict().items()}
            self._backup = resume["original"]
            pl_module.classifier.load_state_dict(self._backup)
            self._steps = int(resume["steps"])
            self._seed = int(resume["seed"])
            self._summary = RequestSummary(**resume["summary"])
        else:
            self._steps = 0
            self._backup = {n: v.detach().to("cpu", copy=True) for n, v in pl_module.classifier.state_dict().items()}
            k = trainer.strategy.reduce(torch.tensor(float(x.shape[0]), device=pl_module.device), reduce_op="sum")
            self._summary = RequestSummary(request=len(self.history), k=int(k))
            seed = self.seed if self.seed is not None else torch.initial_seed() % (2**31)
            self._seed = seed + 1_000_003 * len(self.history) + 7919 * trainer.global_rank
        self._anchor_generator.manual_seed(self._seed)
        self._anchor_scale = float(resume.get("anchor_scale", 1.0)) if resume and current is not None else 1.0
        self._best_remaining, self._best_step = -1, self._steps
        self._batch_generator.manual_seed(self._seed + 1)
        if self.anchors is not None:
            self._setup_anchors(trainer, pl_module, x, y)
        if self.importance is not None:
            stored = resume.get("importance") if resume else None
            self._setup_importance(trainer, pl_module, x, stored)
        if self._kept:
            pl_module.add_loss_term("replay", self._replay_term(pl_module))
        summary = self._summary
        if current is not None:
            pl_module.classifier.load_state_dict(current)
            self._batch_generator.set_state(resume["batch_generator"])  # type: ignore[index]
            self._remaining = self._count_remaining(trainer, pl_module)
            rank_zero_info(f"Resumed unlearning request {summary.request} at step {self._steps}.")
        else:
            summary.setup_seconds = time.perf_counter() - self._started
            summary.before = self._measure(trainer, pl_module)
            self._remaining = int(summary.before["forget/remaining"])
            summary.remaining_before = self._remaining
            rank_zero_info(
                f"Unlearning request {summary.request}: {summary.k} instances, {self._remaining} still remembered;"
                f" setup {summary.setup_seconds:.2f}s."
            )
        if self._remaining == 0:
            trainer.should_stop = True

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._mask is not None and self.importance is not None:
            self.importance.apply_mask(pl_module.classifier, self._mask)  # type: ignore[arg-type]

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        assert isinstance(pl_module, UnlearningModule)
        self._steps += 1
        if self._steps % self.check_every_n_steps == 0 or self._steps >= self.max_steps:
            values = pl_module.check_forget(self._forget_parts(), log=True)
            self._remaining = int(values["forget/remaining"])
            self._update_anchor_scale(pl_module)
            self.trace.append({"request": float(len(self.history)), "step": float(self._steps), **values})
        if self._remaining == 0 or self._steps >= self.max_steps:
            trainer.should_stop = True

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, UnlearningModule)
        if self._summary is None:
            return
        after = self._measure(trainer, pl_module)
        after.update({f"{n}/acc": v for n, v in pl_module.measure_eval_accuracy().items()})
        self._summary.before.update({f"{n}/acc": v for n, v in pl_module.reference_accuracy.items()})
        self._remaining = int(after["forget/remaining"])
        failure = None
        if self._remaining > 0:
            failure = f"{self._remaining} of {self._summary.k} instances still remembered after {self._steps} steps"
        elif self.max_drop is not None:
            for name, reference in pl_module.reference_accuracy.items():
                drop = reference - after[f"{name}/acc"]
                if drop > self.max_drop:
                    failure = f"{name} accuracy dropped by {drop:.4f} > max_drop={self.max_drop}"
                    break
        self._summary.after = after
        self._finish(trainer, pl_module, failure)
        mia = self.history[-1].after.get("mia/efficacy")
        if mia is not None and mia == mia:
            for logger in trainer.loggers:
                logger.log_metrics({"mia/efficacy": mia}, step=trainer.global_step)

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._summary is None:
            return
        assert isinstance(pl_module, UnlearningModule)
        point = {"request": float(len(self.history)), "step": float(self._steps)}
        if self._pool is not None:
            point["anchor/agreement"] = self._anchor_agreement(pl_module)
            pl_module.log("anchor/agreement", point["anchor/agreement"], batch_size=1)
        for name, value in trainer.callback_metrics.items():
            if name.endswith("/acc") and not name.startswith("forget/"):
                point[name] = float(value)
        self.trace.append(point)

    def save_summary(self, path: str | Path) -> Path:
        """Write the summaries of all requests and the trace of logged values as JSON (call it on rank zero)."""
        from lightning_unlearn.receipts import _json_safe, atomic_write_text

        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        payload = {"requests": [s.to_dict() for s in self.history], "trace": self.trace}
        atomic_write_text(file, json.dumps(_json_safe(payload), indent=1) + "\n")
        return file

    def plot(self, path: str | Path) -> Path:
        """Plot forget accuracy, evaluation accuracies and anchor agreement against steps as a PNG (needs
        matplotlib: ``pip install 'lightning-unlearn[demo]'``).
        """
        from lightning_unlearn.report import plot_trace

        return plot_trace(self.trace, path)

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(pl_module, UnlearningModule) and self._summary is not None and self._backup is not None:
            reason = f"interrupted by {type(exception).__name__}" + (f": {exception}" if str(exception) else "")
            self._finish(trainer, pl_module, reason, receipt=False)

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"history": [s.to_dict() for s in self.history], "in_progress": False}
        if self._summary is not None and self._backup is not None:
            state.update(
                in_progress=True,
                steps=self._steps,
                seed=self._seed,
                summary=self._summary.to_dict(),
                original={n: v.detach().cpu() for n, v in self._backup.items()},
                importance=None if self._importance is None else {n: v.cpu() for n, v in self._importance.items()},
                batch_generator=self._batch_generator.get_state(),
                anchor_scale=self._anchor_scale,
            )
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [RequestSummary(**s) for s in state_dict.get("history", [])]
        self._resume = dict(state_dict) if state_dict.get("in_progress") else None

    # ------------------------------------------------------------------------------------------------- internals
    def _returned_state(self) -> dict[str, Any]:
        """What rank 0's worker hands back to this callback in the main process (``ddp_spawn``, ``ddp_fork``)."""
        return {"history": self.history, "trace": self.trace, "receipts": self.receipts}

    def _collect(self, trainer: L.Trainer, pl_module: UnlearningModule) -> tuple[Tensor, Tensor, Tensor | None]:
        loader = trainer.train_dataloader
        if loader is None:
            raise ValueError("InstanceUnlearning needs the forget set as the training dataloader of `fit`.")
        xs, ys, ts = [], [], []
        any_target = False
        for batch in loader:
            x, y, t = pl_module.split_batch(batch)
            xs.append(x)
            ys.append(y)
            ts.append(t if t is not None else torch.full_like(y, -1))
            any_target = any_target or t is not None
        if not xs:
            raise ValueError("the forget set is empty: `fit` needs at least one instance to unlearn.")
        device = pl_module.device
        x_all = torch.cat(xs).to(device)
        y_all = torch.cat(ys).to(device).long()
        t_all = torch.cat(ts).to(device).long() if any_target else None
        keep = _unpadded_shard_size(loader)
        if keep is not None:  # DistributedSampler repeats instances to even out shards: count each one once
            x_all, y_all = x_all[:keep], y_all[:keep]
            t_all = t_all[:keep] if t_all is not None else None
        if y_all.numel() == 0:
            return x_all, y_all, t_all
        c = pl_module.num_classes
        if int(y_all.min()) < 0 or int(y_all.max()) >= c:
            raise ValueError(
                f"forget labels must lie in [0, {c}) (num_classes={c}), got values up to {int(y_all.max())}."
            )
        if t_all is not None and int(t_all.max()) >= c:
            raise ValueError(f"relabel targets must lie in [0, {c}) (num_classes={c}), got {int(t_all.max())}.")
        pl_module.check_output(x_all)
        return x_all, y_all, t_all

    def _setup_anchors(self, trainer: L.Trainer, pl_module: UnlearningModule, x: Tensor, y: Tensor) -> None:
        anchors = self.anchors
        assert anchors is not None and self._summary is not None
        pool = anchors.generate(pl_module.classifier, x, y, pl_module.num_classes, generator=self._anchor_generator)
        self._pool = pool
        count = trainer.strategy.reduce(torch.tensor(float(len(pool)), device=pl_module.device), reduce_op="sum")
        self._summary.anchors = int(count)
        successes = torch.tensor(pool.success_rate * len(pool), device=pl_module.device)
        self._summary.anchor_success_rate = float(trainer.strategy.reduce(successes, reduce_op="sum")) / max(
            int(count), 1
        )
        batch_generator = self._batch_generator

        def anchor_term() -> Tensor:
            if len(pool) == 0:  # an empty shard: a zero that still touches every parameter (DDP needs all grads)
                return 0.0 * torch.stack([p.sum() for p in pl_module.classifier.parameters() if p.requires_grad]).sum()
            index = torch.randint(0, len(pool), (min(anchors.batch_size, len(pool)),), generator=batch_generator)
            index = index.to(pool.inputs.device)
            return self._anchor_scale * anchors.weight * anchors.loss_on(pl_module(pool.inputs[index]), pool, index)

        pl_module.add_loss_term("anchor_loss", anchor_term)

    def _setup_importance(
        self, trainer: L.Trainer, pl_module: UnlearningModule, x: Tensor, stored: dict[str, Tensor] | None
    ) -> None:
        importance = self.importance
        assert importance is not None
        if stored is not None:
            self._importance = {n: v.to(pl_module.device) for n, v in stored.items()}
        else:
            sums = importance.estimate_sum(pl_module.classifier, x)
            count = trainer.strategy.reduce(torch.tensor(float(x.shape[0]), device=pl_module.device), reduce_op="sum")
            sums = {n: trainer.strategy.reduce(s, reduce_op="sum") for n, s in sums.items()}
            self._importance = importance.normalize(sums, float(count))
        if importance.use == "mask":
            self._mask = importance.mask(self._importance)
            return
        reference, scores = snapshot(pl_module.classifier), self._importance

        def penalty_term() -> Tensor:
            return importance.penalty(pl_module.classifier, reference, scores)

        pl_module.add_loss_term("importance_penalty", penalty_term)

    def _replay_term(self, pl_module: UnlearningModule) -> Any:
        kept = self._kept

        def replay() -> Tensor:
            total = torch.zeros((), device=pl_module.device)
            for x, y, t in kept:
                total = total + forget_loss(
                    pl_module(x), y, t, kind=pl_module.forget_loss_kind, margin=pl_module.margin
                )
            return pl_module.forget_weight * total

        return replay

    def _update_anchor_scale(self, pl_module: UnlearningModule) -> None:
        if self._best_remaining < 0 or self._remaining < self._best_remaining:
            self._best_remaining, self._best_step = self._remaining, self._steps
        elif self.stall_patience is not None and self._steps - self._best_step >= self.stall_patience:
            scale = max(self._anchor_scale / 2, 1.0 / 1024)
            self._best_step = self._steps
            if scale != self._anchor_scale:  # said once per change, not again at the floor
                rank_zero_info(
                    f"Unlearning stalled at {self._remaining} remembered instances for {self.stall_patience} steps:"
                    f" anchor weight scaled to {scale:g}."
                )
            self._anchor_scale = scale
        if self._pool is not None and pl_module.logging_step():
            pl_module.log("train/anchor_scale", self._anchor_scale, on_step=True, on_epoch=False, batch_size=1)

    def _forget_parts(self) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        return [] if self._forget is None else [self._forget, *self._kept]

    def _count_remaining(self, trainer: L.Trainer, pl_module: UnlearningModule, log: bool = False) -> int:
        if self._forget is None:
            return 0
        return int(pl_module.check_forget(self._forget_parts(), log=log)["forget/remaining"])

    def _anchor_agreement(self, pl_module: UnlearningModule) -> float:
        assert self._pool is not None
        metric = pl_module.anchor_agreement
        metric.reset()
        metric.update(predict(pl_module.classifier, self._pool.inputs), self._pool.labels)
        value = float(metric.compute())
        metric.reset()
        return value

    def _measure(self, trainer: L.Trainer, pl_module: UnlearningModule) -> dict[str, float]:
        """Forget metrics, anchor agreement and membership-inference efficacy (all processes call it together)."""
        assert self._forget is not None
        values = pl_module.check_forget([self._forget, *self._kept], log=False)
        if self._pool is not None:
            values["anchor/agreement"] = self._anchor_agreement(pl_module)
        loaders = trainer.val_dataloaders
        if isinstance(loaders, dict) and {"retain", "test"} <= set(loaders):
            metric = MIAEfficacy().to(pl_module.device)
            x, y, _ = self._forget
            metric.update(predict(pl_module.classifier, x), y, group="forget")
            for group, name in (("member", "retain"), ("nonmember", "test")):
                for batch in loaders[name]:
                    xb, yb = batch[0].to(pl_module.device), batch[1].to(pl_module.device)
                    metric.update(predict(pl_module.classifier, xb), yb, group=group)
            values["mia/efficacy"] = float(metric.compute())
        return values

    def _finish(
        self, trainer: L.Trainer, pl_module: UnlearningModule, failure: str | None, receipt: bool = True
    ) -> None:
        summary = self._summary
        assert summary is not None and self._backup is not None and self._forget is not None
        summary.steps = self._steps
        summary.seconds = time.perf_counter() - self._started
        summary.remaining_after = max(self._remaining, 0)
        summary.unlearned = failure is None
        summary.failure = failure
        if failure is not None and self.restore_on_failure:
            pl_module.classifier.load_state_dict(self._backup)
            summary.restored = True
            summary.after = {**summary.after, **summary.before}
            rank_zero_warn(
                f"Unlearning request {summary.request} failed ({failure}); the original weights were restored (pass"
                " restore_on_failure=False to keep the partial result, or raise max_steps / the Trainer's max_epochs)."
            )
        elif failure is not None:
            rank_zero_warn(f"Unlearning request {summary.request} failed ({failure}); keeping the partial result.")
        else:
            rank_zero_info(
                f"Unlearning request {summary.request}: {summary.k}/{summary.k} instances unlearned in"
                f" {summary.steps} steps, {summary.seconds:.2f}s."
            )
        for name in ("anchor_loss", "importance_penalty", "replay"):
            pl_module.remove_loss_term(name)
        if self.receipt_dir is not None and receipt:
            self._write_receipt(trainer, pl_module, summary)
        if self.keep_forget_data and not summary.restored:
            self._kept.append(self._forget)
        self.history.append(summary)
        self._forget = None
        self._pool = None
        self._mask = None
        self._backup = None
        self._summary = None

    def _write_receipt(self, trainer: L.Trainer, pl_module: UnlearningModule, summary: RequestSummary) -> None:
        assert self._forget is not None and self._backup is not None and self.receipt_dir is not None
        x, y, t = self._forget
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            shards: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, (x.cpu(), y.cpu()))
            x = torch.cat([s[0] for s in shards])
            y = torch.cat([s[1] for s in shards])
        if trainer.global_rank != 0:
            return
        method = {
            "module": dict(pl_module.hparams),
            "anchors": None if self.anchors is None else dict(vars(self.anchors)),
            "importance": None if self.importance is None else dict(vars(self.importance)),
            "max_steps": self.max_steps,
            "seed": self.seed,
        }
        receipt = make_receipt(
            x,
            y,
            mode="relabel" if t is not None else "misclassify",
            model_before=model_hash(self._backup),
            model_after=model_hash(pl_module.classifier),
            method=method,
            summary=summary.to_dict(),
        )
        self.receipts.append(write_receipt(receipt, self.receipt_dir))


def _unpadded_shard_size(loader: object) -> int | None:
    """This process's share of the dataset without the repeats a padding ``DistributedSampler`` adds."""
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):
        sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))  # type: ignore[arg-type]
