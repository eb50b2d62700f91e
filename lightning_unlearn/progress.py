"""A progress bar that follows an unlearning request instead of epochs of a one-batch loader."""

from __future__ import annotations

import io
import math
import sys
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities.types import STEP_OUTPUT
from typing_extensions import override

from lightning_unlearn.callback import InstanceUnlearning
from lightning_unlearn.evaluation import accuracies


class UnlearningProgressBar(TQDMProgressBar):
    """One bar per unlearning request (one ``fit``): its total is the request's step budget, its postfix shows how many
    instances are unlearned out of ``k`` and the latest evaluation accuracies; the evaluation passes inside a request
    print no bars of their own.

    Pass it with the :class:`~lightning_unlearn.InstanceUnlearning` callback; Lightning then uses it instead of its
    default bar::

        trainer = L.Trainer(callbacks=[InstanceUnlearning(), UnlearningProgressBar()], max_epochs=-1)

    In a LightningCLI config, list ``class_path: lightning_unlearn.progress.UnlearningProgressBar`` under
    ``trainer.callbacks``. A finished request leaves one line, e.g.
    ``request 0: 100%|####| 190/1000 [00:40, unlearned=32/32, retain/acc=0.991, test/acc=0.983]`` (the bar stops
    at the step where every instance is unlearned; ``190/1000`` is step / budget).

    Values come from ``trainer.callback_metrics`` (``forget/remaining`` after every stop check, ``{name}/acc`` after
    every evaluation) and from the ``InstanceUnlearning`` callback in ``trainer.callbacks`` (``max_steps``, and the
    request's summary in ``history`` once it has ended); while it runs, ``k`` is the size of the training (forget)
    dataset. Outside ``fit`` (``trainer.validate``) it
    behaves as Lightning's :class:`~lightning.pytorch.callbacks.TQDMProgressBar`.

    When standard output is not a terminal (a log file, CI, a pipe; a Jupyter kernel counts as a terminal), the bar
    is not redrawn with carriage returns: the same text is printed as a new line every ``budget / log_lines`` steps
    (every 100 steps when nothing bounds the request) and once when the request ends, e.g. ``request 0:  10%|#  |
    100/1000 [00:05, unlearned=0/32, test/acc=0.991]``.

    Args:
        refresh_rate: update the bar every this many steps.
        process_position: as in ``TQDMProgressBar`` (for several bars in one terminal).
        log_lines: when standard output is not a terminal, at most this many lines per request before its final
            line; ``0`` prints the final line only.

    Raises:
        ValueError: if ``log_lines`` is negative.

    Examples:
        >>> UnlearningProgressBar(log_lines=10).log_lines
        10
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, log_lines: int = 20) -> None:
        if isinstance(log_lines, bool) or not isinstance(log_lines, int) or log_lines < 0:
            raise ValueError(f"`log_lines` must be an integer >= 0, got {log_lines!r}.")
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=False)
        self.log_lines = log_lines
        self._first_step = 0
        self._k: int | None = None
        self._request: int | None = None
        self._log: TextIO | None = None  # where lines go when standard output is not a terminal
        self._log_every = 0

    def __getstate__(self) -> dict:
        """As ``TQDMProgressBar``'s (without the bars), and without the output stream: pickles for ``ddp_spawn``."""
        return {**super().__getstate__(), "_log": None}

    # ------------------------------------------------------------------------------------------------- hooks
    @override
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit":
            super().on_sanity_check_start(trainer, pl_module)

    @override
    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit":
            super().on_sanity_check_end(trainer, pl_module)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_step = 0 if trainer.ckpt_path else trainer.global_step  # a resumed request counts from its start
        self._k = self._forget_size(trainer)
        unlearning = self._unlearning(trainer)
        self._request = None if unlearning is None else len(unlearning.history)
        budget = self.step_budget(trainer)
        self._log = None if _is_terminal(sys.stdout) else sys.stdout
        self._log_every = math.ceil(budget / self.log_lines) if budget and self.log_lines else 100
        self.train_progress_bar = Tqdm(
            desc="request" if unlearning is None else f"request {len(unlearning.history)}",
            total=budget,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=self._log is None,
            file=sys.stdout if self._log is None else _Discard(),  # not a terminal: lines are written below instead
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """One bar for the whole request: nothing to reset per epoch."""

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: STEP_OUTPUT, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step - self._first_step
        bar = self.train_progress_bar
        if self._log is not None:
            bar.n = step
            if self.log_lines and step % self._log_every == 0 and not trainer.should_stop and not bar.disable:
                bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
                self._write_line()  # the final line comes from on_train_end
        elif self._should_update(step, bar.total or 0) or trainer.should_stop:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The postfix is set after each step and each evaluation."""

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bar = self.train_progress_bar
        if not bar.disable:
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()
            if self._log is not None:
                self._write_line()
        bar.close()

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit":
            super().on_validation_start(trainer, pl_module)

    @override
    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if trainer.state.fn != "fit":
            super().on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: STEP_OUTPUT,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.state.fn != "fit":
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit":
            super().on_validation_end(trainer, pl_module)
        elif self._train_progress_bar is not None and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    @override
    def get_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        """``unlearned`` (``done/k``) and the latest ``{name}/acc`` of each evaluation set (not ``forget/acc``)."""
        metrics = trainer.callback_metrics
        values: dict[str, int | str | float | dict[str, float]] = {}
        remaining = metrics.get("forget/remaining")
        k = "?" if self._k is None else str(self._k)
        unlearning = self._unlearning(trainer)
        ended = None
        if unlearning is not None and self._request is not None and len(unlearning.history) > self._request:
            ended = unlearning.history[self._request]  # the request has ended (possibly before any step)
            values["unlearned"] = f"{ended.k - ended.remaining_after}/{ended.k}"
        elif remaining is not None and self._k is not None:
            values["unlearned"] = f"{self._k - int(remaining)}/{k}"
        else:
            values["unlearned"] = f"-/{k}"
        logged = accuracies({name: float(value) for name, value in metrics.items() if value.numel() == 1})
        final = accuracies(ended.after) if ended is not None else {}  # also when no validation ran (done at step 0)
        values.update({f"{name}/acc": f"{number:.3f}" for name, number in {**logged, **final}.items()})
        return values

    # ------------------------------------------------------------------------------------------------- helpers
    def step_budget(self, trainer: L.Trainer) -> int | None:
        """The most steps the request can take: the callback's ``max_steps``, capped by the Trainer's ``max_steps``
        and ``max_epochs`` (``None`` when nothing bounds it).
        """
        bounds = []
        unlearning = self._unlearning(trainer)
        if unlearning is not None:
            bounds.append(unlearning.max_steps)
        if trainer.max_steps is not None and trainer.max_steps >= 0:
            bounds.append(trainer.max_steps - self._first_step)
        batches = self.total_train_batches
        if (
            trainer.max_epochs is not None
            and trainer.max_epochs >= 0
            and batches == batches
            and batches != float("inf")
        ):
            bounds.append(int(trainer.max_epochs * batches))
        return min(bounds) if bounds else None

    def _write_line(self) -> None:
        """The bar's text as one line of ``self._log`` (standard output that is not a terminal)."""
        assert self._log is not None
        self._log.write(f"{self.train_progress_bar}\n")
        self._log.flush()

    @staticmethod
    def _unlearning(trainer: L.Trainer) -> InstanceUnlearning | None:
        found = [c for c in trainer.callbacks if isinstance(c, InstanceUnlearning)]  # type: ignore[attr-defined]
        return found[0] if found else None

    @staticmethod
    def _forget_size(trainer: L.Trainer) -> int | None:
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        try:
            return len(dataset)  # type: ignore[arg-type]
        except TypeError:
            return None


def _is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` shows a redrawn bar: a terminal, or a Jupyter kernel's output (not a file or a pipe)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty()) or type(stream).__module__.startswith("ipykernel")


class _Discard(io.TextIOBase):
    """A text stream that drops what is written (the bar's redraws when lines are printed instead)."""

    def write(self, text: str) -> int:
        return len(text)
