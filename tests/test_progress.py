"""UnlearningProgressBar: one bar per request, its total the step budget, no validation bars inside a request."""

from __future__ import annotations

import lightning as L
import pytest
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn import ForgetSet, InstanceUnlearning, UnlearningModule
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
    digits, digits_cnn, capsys: pytest.CaptureFixture[str]
) -> None:
    index = forget_indices(len(digits.y_train), 8)
    callback = InstanceUnlearning(anchors=None, max_steps=200, seed=0)
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
    callback = InstanceUnlearning(anchors=None, max_steps=1000, seed=0)
    bar = UnlearningProgressBar()
    trainer = _trainer(callback, bar, max_steps=3)
    forget = ForgetSet(digits.x_train[:2], digits.y_train[:2])
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(forget, batch_size=1))
    assert bar.train_progress_bar.total == 3
    bar2 = UnlearningProgressBar()
    callbacks = [InstanceUnlearning(anchors=None, seed=0), bar2]
    trainer = L.Trainer(max_epochs=2, callbacks=callbacks, logger=False, enable_checkpointing=False)
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(forget, batch_size=1))
    assert bar2.train_progress_bar.total == 4  # two epochs of two batches
