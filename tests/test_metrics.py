"""Metrics: hand computations, the standalone membership inference on digits, logging through CSVLogger."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn import ForgetSet, InstanceUnlearning, PGDAnchors, UnlearningModule
from lightning_unlearn.functional.metrics import agreement, forget_accuracy, remaining, target_accuracy
from lightning_unlearn.functional.mia import fit_membership_attack, membership_signals
from lightning_unlearn.metrics import (
    AnchorAgreement,
    ForgetAccuracy,
    ForgetRemaining,
    ForgetTargetAccuracy,
    MIAEfficacy,
    mia_efficacy,
)
from lightning_unlearn.models import small_cnn
from lightning_unlearn.pretrain import train_classifier
from tests.conftest import forget_indices, quiet_trainer_kwargs

PREDS = torch.tensor([0, 1, 2, 3, 4, 5])
LABELS = torch.tensor([0, 1, 1, 3, 0, 0])
TARGETS = torch.tensor([-1, 2, 2, 4, -1, 5])  # two misclassify, four relabel


def test_forget_metrics_by_hand_in_two_partial_batches() -> None:
    acc, tgt, rem = ForgetAccuracy(), ForgetTargetAccuracy(), ForgetRemaining()
    for metric in (acc, tgt, rem):
        metric.update(PREDS[:4], LABELS[:4], TARGETS[:4])
        metric.update(PREDS[4:], LABELS[4:], TARGETS[4:])
    # still predicted as the label: positions 0, 1, 3 -> 3 of 6
    assert float(acc.compute()) == pytest.approx(3 / 6)
    # relabel positions 1, 2, 3, 5 with targets 2, 2, 4, 5: on target at 2 and 5 -> 2 of 4
    assert float(tgt.compute()) == pytest.approx(2 / 4)
    # to go: misclassify 0 (pred == label) and 4 (done); relabel 1 and 3 not on target -> 3
    assert int(rem.compute()) == 3
    assert float(forget_accuracy(PREDS, LABELS)) == pytest.approx(0.5)
    assert float(target_accuracy(PREDS, TARGETS)) == pytest.approx(0.5)
    assert int(remaining(PREDS, LABELS, TARGETS)) == 3


def test_metrics_on_empty_and_misclassify_only_batches() -> None:
    empty = torch.zeros(0, dtype=torch.long)
    acc, tgt, rem, agree = ForgetAccuracy(), ForgetTargetAccuracy(), ForgetRemaining(), AnchorAgreement()
    acc.update(empty, empty)
    tgt.update(empty, empty)
    rem.update(empty, empty)
    agree.update(empty, empty)
    assert torch.isnan(acc.compute()) and torch.isnan(tgt.compute()) and int(rem.compute()) == 0
    assert torch.isnan(agree.compute())
    tgt.update(PREDS, LABELS)  # misclassify mode: no targets at all
    assert torch.isnan(tgt.compute())
    logits = torch.nn.functional.one_hot(PREDS, 6).float()
    acc.update(logits, LABELS)  # logits work like predictions
    assert float(acc.compute()) == pytest.approx(0.5)
    assert float(agreement(PREDS, torch.tensor([0, 1, 2, 0, 0, 0]))) == pytest.approx(3 / 6)


def test_metric_input_errors() -> None:
    with pytest.raises(ValueError, match=r"`preds` and `labels` must be 1-D tensors of the same length, got \(6,\)"):
        ForgetAccuracy().update(PREDS, LABELS[:3])
    with pytest.raises(ValueError, match=r"`group` must be one of \('member', 'nonmember', 'forget'\), got 'x'."):
        MIAEfficacy().update(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), group="x")
    with pytest.raises(
        ValueError, match="`member_signals` and `nonmember_signals` must both be non-empty, got 0 and 2"
    ):
        fit_membership_attack(torch.zeros(0, 3), torch.zeros(2, 3))


def test_membership_signals_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    signals = membership_signals(logits, torch.tensor([0, 1]))
    p = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(signals[0], torch.tensor([0.5, float(torch.log(torch.tensor(2.0))), 0.6931472]))
    torch.testing.assert_close(signals[1, 0], 1 - p)
    torch.testing.assert_close(signals[1, 2], -torch.log(1 - p))


def test_mia_separates_an_overfit_models_training_data_and_moves_after_unlearning(digits) -> None:
    torch.manual_seed(0)
    members = torch.arange(150)
    model = train_classifier(small_cnn(), digits.x_train[members], digits.y_train[members], epochs=60, seed=0)
    x_m, y_m = digits.x_train[members], digits.y_train[members]
    held = torch.arange(150, 450)
    x_h, y_h = digits.x_train[held], digits.y_train[held]
    attack_members, attack_out = (x_m[:100], y_m[:100]), (x_h[:200], y_h[:200])
    forget = (x_m[100:120], y_m[100:120])  # members the attack has not seen
    unseen = (x_h[200:], y_h[200:])
    before_forget = mia_efficacy(model, [attack_members], [attack_out], [forget])
    before_unseen = mia_efficacy(model, [attack_members], [attack_out], [unseen])
    print(f"\nMIA efficacy before: training members {before_forget:.3f}, held-out {before_unseen:.3f}")
    assert before_unseen - before_forget >= 0.3  # members look like members, held-out data does not
    fs = ForgetSet(*forget)
    callback = InstanceUnlearning(
        fisher_edit=None, anchors=PGDAnchors(eps=1.0, per_instance=4, steps=5, weight=1.0), seed=0
    )
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    trainer.fit(UnlearningModule(model, num_classes=10), DataLoader(fs, batch_size=len(fs)))
    assert callback.summary is not None and callback.summary.unlearned
    after_forget = mia_efficacy(model, [attack_members], [attack_out], [forget])
    print(f"MIA efficacy on the forget set after unlearning: {after_forget:.3f}")
    assert abs(after_forget - before_unseen) < abs(before_forget - before_unseen)


def _evaluation_sets(digits, forget_index: torch.Tensor) -> dict[str, DataLoader]:
    """``retain`` (the training set without the forget instances) and ``test`` loaders."""
    rest = torch.ones(len(digits.y_train), dtype=torch.bool)
    rest[forget_index] = False
    return {
        "retain": DataLoader(TensorDataset(digits.x_train[rest], digits.y_train[rest]), batch_size=1024),
        "test": DataLoader(TensorDataset(digits.x_test, digits.y_test), batch_size=1024),
    }


def test_csv_logger_gets_every_documented_name(digits, digits_cnn, tmp_path: Path) -> None:
    index = forget_indices(len(digits.y_train), 6, seed=3)
    evaluation = _evaluation_sets(digits, index)
    targets = (digits.y_train[index] + 1) % 10
    targets[:3] = -1  # half relabel, half misclassify: every forget metric is defined
    forget = ForgetSet(digits.x_train[index], digits.y_train[index])
    forget.targets = targets
    callback = InstanceUnlearning(
        fisher_edit=None, anchors=PGDAnchors(eps=1.0, per_instance=4, steps=5, weight=1.0), seed=0
    )
    kwargs = {**quiet_trainer_kwargs(), "logger": CSVLogger(tmp_path), "log_every_n_steps": 1}
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], check_val_every_n_epoch=1, **kwargs)
    trainer.fit(
        UnlearningModule(copy.deepcopy(digits_cnn), 10), DataLoader(forget, batch_size=6), val_dataloaders=evaluation
    )
    with open(next(tmp_path.rglob("metrics.csv"))) as handle:
        names = set(next(csv.reader(handle)))
    documented = {
        "forget/acc", "forget/target_acc", "forget/remaining", "anchor/agreement", "retain/acc", "retain/drop",
        "test/acc", "test/drop", "mia/efficacy",
    }  # fmt: skip
    assert documented <= names, documented - names


def test_the_last_logged_point_is_the_request_outcome_whatever_log_every_n_steps(
    digits, digits_cnn, tmp_path: Path
) -> None:
    """With the Trainer's default ``log_every_n_steps=50``, a request that ends between logging steps still writes its
    final values: the last row of every documented name holds the summary's ``after`` value."""
    index = forget_indices(len(digits.y_train), 8, seed=5)
    evaluation = _evaluation_sets(digits, index)
    callback = InstanceUnlearning(fisher_edit=None, anchors=PGDAnchors(eps=1.0, per_instance=4, steps=5), seed=0)
    kwargs = {**quiet_trainer_kwargs(), "logger": CSVLogger(tmp_path)}
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], check_val_every_n_epoch=1000, **kwargs)
    forget = ForgetSet(digits.x_train[index], digits.y_train[index])
    trainer.fit(
        UnlearningModule(copy.deepcopy(digits_cnn), 10), DataLoader(forget, batch_size=8), val_dataloaders=evaluation
    )
    summary = callback.summary
    assert summary is not None and summary.unlearned and summary.steps % 50 != 0
    with open(next(tmp_path.rglob("metrics.csv"))) as handle:
        rows = list(csv.DictReader(handle))
    last = {
        name: [float(r[name]) for r in rows if r.get(name)][-1] for name in rows[0] if name not in ("epoch", "step")
    }
    assert last["forget/acc"] == summary.after["forget/acc"] == 0.0
    assert last["forget/remaining"] == 0.0
    for name in ("retain/acc", "test/acc", "mia/efficacy", "anchor/agreement"):
        assert last[name] == pytest.approx(summary.after[name])
    assert last["test/drop"] == pytest.approx(summary.before["test/acc"] - summary.after["test/acc"])


class _Validated(L.Callback):
    """After each validation (after InstanceUnlearning's hooks): the logged accuracy and drop of ``test``."""

    def __init__(self) -> None:
        self.logged: list[tuple[float, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            metrics = trainer.callback_metrics
            self.logged.append((float(metrics["test/acc"]), float(metrics["test/drop"])))


def test_each_validation_logs_and_traces_its_own_accuracy_and_drop(digits, digits_cnn) -> None:
    """The request's evaluator turns each validation's logits into ``{name}/acc`` and ``{name}/drop`` (reference: the
    original weights); the trace holds the same validation's accuracy. With ``num_sanity_val_steps=0`` and a first
    epoch that does not validate, the reference is still measured at the start."""
    index = forget_indices(len(digits.y_train), 8, seed=1)
    evaluation = {"test": _evaluation_sets(digits, index)["test"]}
    callback = InstanceUnlearning(fisher_edit=None, anchors=None, shifted_copies=None, edit=None, max_steps=6, seed=0)
    spy = _Validated()
    kwargs = {**quiet_trainer_kwargs(), "num_sanity_val_steps": 0, "check_val_every_n_epoch": 2}
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback, spy], **kwargs)
    module = UnlearningModule(copy.deepcopy(digits_cnn), num_classes=10, lr=3e-5)  # slow: all six steps run
    forget = ForgetSet(digits.x_train[index], digits.y_train[index])
    with pytest.warns(UserWarning, match="still remembered after 6 steps"):
        trainer.fit(module, DataLoader(forget, batch_size=8), val_dataloaders=evaluation)
    summary = callback.summary
    assert summary is not None and summary.steps == 6 and "test/acc" in summary.before
    traced = [point["test/acc"] for point in callback.trace if "test/acc" in point]
    assert len(spy.logged) == len(traced) == 3  # validations after steps 2, 4 and 6
    assert [acc for acc, _ in spy.logged] == pytest.approx(traced)
    assert [drop for _, drop in spy.logged] == pytest.approx([summary.before["test/acc"] - acc for acc in traced])
    assert not any(name.endswith("/drop") for point in callback.trace for name in point)
