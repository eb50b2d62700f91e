"""UnlearningProgressBar: one bar per request, its total the step budget, no validation bars inside a request."""

from __future__ import annotations

import pickle
import re

import lightning as L
import pytest
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn import ForgetSet, InstanceUnlearning, UnlearningModule, progress
from lightning_unlearn.progress import UnlearningProgressBar
from tests.conftest import forget_indices


def _trainer(callback: InstanceUnlearning, bar: UnlearningProgressBar, **kwargs: object) -> L.Trainer:
    return L.Trainer(
        max_epochs=-1,
        callbacks=[callback, bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        check_val_every_n_epoch=2,
        num_sanity_val_steps=2,
        **kwargs,  # type: ignore[arg-type]
    )


def test_one_bar_per_request_with_unlearned_count_budget_and_accuracies(
    digits, digits_cnn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)  # a terminal: the bar redraws its line
    index = forget_indices(len(digits.y_train), 8)
    callback = InstanceUnlearning(fisher_edit=None, anchors=None, max_steps=200, seed=0)
    module = UnlearningModule(digits_cnn, num_classes=10)
    test = {"test": DataLoader(TensorDataset(digits.x_test, digits.y_test), batch_size=512)}
    requests = [index[:4], index[4:]]
    bars = []
    for part in requests:
        bar = UnlearningProgressBar()
        trainer = _trainer(callback, bar)
        forget = ForgetSet(digits.x_train[part], digits.y_train[part])
        trainer.fit(module, DataLoader(forget, batch_size=4), val_dataloaders=test)
        bars.append(bar)
    out = capsys.readouterr().out
    assert [s.unlearned for s in callback.history] == [True, True]
    lines = out.rstrip("\n").split("\n")  # each bar redraws its own line with "\r"
    finals = [line.split("\r")[-1] for line in lines]
    assert len(lines) == 2 and finals[0].startswith("request 0: ") and finals[1].startswith("request 1: "), lines
    for final, summary in zip(finals, callback.history):
        assert f"| {summary.steps}/200 [" in final and "unlearned=4/4" in final, final
    for final, summary in zip(finals, callback.history):
        if summary.steps >= 2:  # evaluated every 2 steps: the bar shows the latest test accuracy
            assert "test/acc=0." in final, final
    assert "Validation" not in out and "Sanity" not in out and "Epoch" not in out


def test_budget_is_capped_by_the_trainer(digits, digits_cnn) -> None:
    callback = InstanceUnlearning(fisher_edit=None, anchors=None, max_steps=1000, seed=0)
    bar = UnlearningProgressBar()
    trainer = _trainer(callback, bar, max_steps=3)
    forget = ForgetSet(digits.x_train[:2], digits.y_train[:2])
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(forget, batch_size=1))
    assert bar.train_progress_bar.total == 3
    bar2 = UnlearningProgressBar()
    callbacks = [InstanceUnlearning(fisher_edit=None, anchors=None, seed=0), bar2]
    trainer = L.Trainer(max_epochs=2, callbacks=callbacks, logger=False, enable_checkpointing=False)
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(forget, batch_size=1))
    assert bar2.train_progress_bar.total == 4  # two epochs of two batches


def test_not_a_terminal_prints_a_line_every_tenth_of_the_budget_and_the_final_line(
    digits, digits_cnn, capsys: pytest.CaptureFixture[str]
) -> None:
    """Standard output captured (a log file, CI): no carriage-return redraws, at most ``log_lines`` lines and the
    final one. The request cannot finish early (a vanishing learning rate, no last-layer edit): it fails at 100."""
    callback = InstanceUnlearning(fisher_edit=None, anchors=None, shifted_copies=None, edit=None, max_steps=100, seed=0)
    test = {"test": DataLoader(TensorDataset(digits.x_test, digits.y_test), batch_size=512)}
    forget = ForgetSet(digits.x_train[:2], digits.y_train[:2])
    trainer = _trainer(callback, UnlearningProgressBar(log_lines=10))
    module = UnlearningModule(digits_cnn, num_classes=10, lr=1e-30)
    trainer.fit(module, DataLoader(forget, batch_size=2), val_dataloaders=test)
    out = capsys.readouterr().out
    assert callback.summary is not None and callback.summary.steps == 100 and not callback.summary.unlearned
    assert "\r" not in out
    lines = out.rstrip("\n").split("\n")
    assert [line.split("| ")[1].split(" [")[0] for line in lines] == [f"{n}/100" for n in range(10, 101, 10)]
    for line in lines:
        assert line.startswith("request 0: ") and "unlearned=0/2" in line and "test/acc=0.9" in line, line
    assert "Validation" not in out and "Sanity" not in out


def test_not_a_terminal_with_log_lines_0_prints_the_final_line_only(digits, digits_cnn, capsys) -> None:
    callback = InstanceUnlearning(fisher_edit=None, anchors=None, max_steps=200, seed=0)
    forget = ForgetSet(digits.x_train[:2], digits.y_train[:2])
    trainer = _trainer(callback, UnlearningProgressBar(log_lines=0))
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(forget, batch_size=2))
    out = capsys.readouterr().out
    summary = callback.summary
    assert summary is not None and summary.unlearned
    assert out.count("\n") == 1 and "\r" not in out
    assert out.startswith("request 0: ") and f"| {summary.steps}/200 [" in out and "unlearned=2/2" in out, out


def test_log_lines_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match=re.escape("`log_lines` must be an integer >= 0, got -1.")):
        UnlearningProgressBar(log_lines=-1)


def test_a_bar_that_wrote_lines_still_pickles(digits, digits_cnn, capsys) -> None:
    """After a request with lines (not a terminal), the same bar can be pickled into ``ddp_spawn`` workers."""
    bar = UnlearningProgressBar()
    trainer = _trainer(InstanceUnlearning(fisher_edit=None, anchors=None, max_steps=20, seed=0), bar)
    forget = ForgetSet(digits.x_train[:1], digits.y_train[:1])
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(forget))
    assert capsys.readouterr().out.startswith("request 0: ")
    copy = pickle.loads(pickle.dumps(bar))
    assert copy.log_lines == 20 and copy._log is None
