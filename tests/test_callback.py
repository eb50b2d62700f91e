"""InstanceUnlearning on the pre-trained digits CNN: forgetting, the stop rule, failures and repeated requests."""

from __future__ import annotations

import copy
import logging
import re
import signal
import warnings

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, MASImportance, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.evaluation import accuracy, predict
from tests.conftest import forget_indices, quiet_trainer_kwargs


def _pick(digits: Split, k: int, skip: int = 0) -> tuple[Tensor, Tensor]:
    idx = forget_indices(len(digits.y_train), k + skip)[skip:]
    return digits.x_train[idx], digits.y_train[idx]


def _anchors(per_instance: int = 4, steps: int = 20) -> PGDAnchors:
    """Few anchors per instance (the default is 20) so each request runs in seconds on a CPU."""
    return PGDAnchors(per_instance=per_instance, steps=steps, backend="builtin")


def _fit(
    classifier: nn.Module | UnlearningModule,
    forget: ForgetSet,
    callback: InstanceUnlearning,
    *extra: L.Callback,
    **module_kwargs: object,
) -> tuple[L.Trainer, UnlearningModule]:
    module = (
        classifier
        if isinstance(classifier, UnlearningModule)
        else UnlearningModule(classifier, num_classes=10, **module_kwargs)  # type: ignore[arg-type]
    )
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback, *extra], **quiet_trainer_kwargs())
    trainer.fit(module, DataLoader(forget, batch_size=len(forget)))
    return trainer, module


#: the forget loss alone: no anchors, shifted copies or edit (tests of the stop rule's mechanics)
_BARE = {"anchors": None, "importance": None, "shifted_copies": None, "fisher_edit": None, "edit": None}


class _StepLog(L.Callback):
    """After each step (after InstanceUnlearning's own check): whether every instance is unlearned, and the terms."""

    def __init__(self, forget: ForgetSet) -> None:
        self.forget = forget
        self.all_unlearned: list[bool] = []
        self.terms: list[tuple[str, ...]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        assert isinstance(pl_module, UnlearningModule)
        t = None if self.forget.mode == "misclassify" else self.forget.targets
        self.all_unlearned.append(bool(pl_module.unlearned(self.forget.inputs, self.forget.labels, t).all()))
        self.terms.append(pl_module.loss_terms)

    @property
    def first_all_unlearned(self) -> int:
        """1-based step at which every instance was first unlearned."""
        return self.all_unlearned.index(True) + 1


def _same_state(model: nn.Module, state: dict[str, Tensor]) -> bool:
    current = model.state_dict()
    return current.keys() == state.keys() and all(torch.equal(current[n], v) for n, v in state.items())


# ---------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"anchors": "pgd"}, "`anchors` must be a PGDAnchors, 'default' or None, got str."),
        ({"importance": MASImportance}, "`importance` must be a MASImportance or None, got type."),
        ({"stall_patience": 0}, "`stall_patience` must be > 0 or None, got 0."),
        ({"max_drop": 1.5}, "`max_drop` must be in [0, 1] or None, got 1.5."),
        ({"max_steps": 0}, "`max_steps` must be > 0, got 0."),
        ({"check_every_n_steps": -1}, "`check_every_n_steps` must be > 0, got -1."),
    ],
)
def test_argument_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        InstanceUnlearning(fisher_edit=None, **kwargs)  # type: ignore[arg-type]


def test_defaults() -> None:
    callback = InstanceUnlearning()
    assert isinstance(callback.anchors, PGDAnchors) and callback.importance is None
    assert callback.anchors.weight == 10.0 and callback.anchors.eps is None
    assert callback.stall_patience == 100
    assert (callback.max_steps, callback.check_every_n_steps) == (1000, 1)
    assert callback.restore_on_failure and not callback.keep_forget_data
    assert callback.summary is None and callback.history == []
    bare = InstanceUnlearning(fisher_edit=None, anchors=None, importance=None)
    assert bare.anchors is None and bare.importance is None


def test_needs_an_unlearning_module(digits: Split, digits_cnn: nn.Module) -> None:
    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = digits_cnn

        def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
            return self.net(batch[0]).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = _pick(digits, 4)
    trainer = L.Trainer(max_steps=1, callbacks=[InstanceUnlearning()], **quiet_trainer_kwargs())
    message = (
        "InstanceUnlearning needs an UnlearningModule, got Plain: wrap the classifier with"
        " `UnlearningModule(classifier, num_classes=...)`."
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        trainer.fit(Plain(), DataLoader(ForgetSet(x, y), batch_size=4))


def test_labels_and_targets_must_fit_num_classes(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _pick(digits, 40)
    x, y = x[y < 7][:6], y[y < 7][:6]
    callback = InstanceUnlearning(fisher_edit=None, anchors=None, importance=None, max_steps=2)
    y_big = y.clone()
    y_big[2] = 9
    with pytest.raises(
        ValueError, match=re.escape("forget labels must lie in [0, 7) (num_classes=7), got values up to 9.")
    ):
        _fit(UnlearningModule(digits_cnn, num_classes=7), ForgetSet(x, y_big), callback)
    targets = (y + 1) % 7
    targets[0] = 8 if int(y[0]) != 8 else 9
    with pytest.raises(ValueError, match=re.escape("relabel targets must lie in [0, 7) (num_classes=7), got 8.")):
        _fit(UnlearningModule(digits_cnn, num_classes=7), ForgetSet(x, y, targets), callback)


# ---------------------------------------------------------------------------------------------- requests on digits
def test_misclassify_forgets_every_instance_and_keeps_test_accuracy(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _pick(digits, 16)
    test_before = accuracy(digits_cnn, digits.x_test, digits.y_test)
    forget = ForgetSet(x, y)
    log = _StepLog(forget)
    callback = InstanceUnlearning(
        fisher_edit=None, anchors=_anchors(), seed=0, edit=None
    )  # the steps alone, default budget
    trainer, module = _fit(digits_cnn, forget, callback, log)
    summary = callback.summary
    assert summary is not None
    test_after = accuracy(digits_cnn, digits.x_test, digits.y_test)
    retain = torch.ones(len(digits.y_train), dtype=torch.bool)
    retain[forget_indices(len(digits.y_train), 16)] = False
    retain_after = accuracy(digits_cnn, digits.x_train[retain], digits.y_train[retain])
    print(
        f"\nmisclassify k=16: {summary.steps} steps, {summary.seconds:.1f}s; test acc {test_before:.4f} ->"
        f" {test_after:.4f}, retain acc {retain_after:.4f}, anchor success {summary.anchor_success_rate:.3f}"
    )
    assert summary.unlearned and not summary.restored and summary.failure is None
    assert (summary.k, summary.remaining_before, summary.remaining_after) == (16, 16, 0)
    assert accuracy(digits_cnn, x, y) == 0.0
    assert summary.anchors == 16 * 4
    assert summary.before["forget/acc"] == 1.0 and summary.before["forget/remaining"] == 16
    assert summary.after["forget/acc"] == 0.0 and summary.after["forget/remaining"] == 0
    assert test_after >= test_before - 0.10
    # stopped at the first step where every instance was unlearned
    assert summary.steps == trainer.global_step == log.first_all_unlearned == len(log.all_unlearned)
    assert log.terms[0] == ("anchor_loss", "shifted_copies")
    # the request's plugins and data are gone afterwards
    assert module.loss_terms == () and callback.anchors is not None and callback.anchors.pool is None
    assert len(callback.history) == 1 and callback.summary.to_dict()["request"] == 0


def test_importance_penalty_is_registered_and_forgets(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _pick(digits, 8)
    forget = ForgetSet(x, y)
    log = _StepLog(forget)
    callback = InstanceUnlearning(
        fisher_edit=None, anchors=_anchors(), importance=MASImportance(strength=1.0), max_steps=600, seed=0
    )
    callback.anchors.weight = 1.0  # type: ignore[union-attr]
    _fit(digits_cnn, forget, callback, log)
    assert log.terms[0] == ("anchor_loss", "importance_penalty", "shifted_copies")
    assert callback.summary is not None and callback.summary.unlearned
    assert accuracy(digits_cnn, x, y) == 0.0


def test_relabel_mode_reaches_every_target(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _pick(digits, 8)
    test_before = accuracy(digits_cnn, digits.x_test, digits.y_test)
    # relabel toward the pre-trained model's second choice
    with torch.no_grad():
        logits = predict(digits_cnn, x)
    targets = logits.scatter(1, y[:, None], float("-inf")).argmax(-1)
    forget = ForgetSet(x, y, targets=targets)
    log = _StepLog(forget)
    callback = InstanceUnlearning(fisher_edit=None, anchors=_anchors(), max_steps=600, seed=0)
    trainer, _ = _fit(digits_cnn, forget, callback, log, mode="relabel")
    summary = callback.summary
    assert summary is not None
    test_after = accuracy(digits_cnn, digits.x_test, digits.y_test)
    print(f"\nrelabel k=8: {summary.steps} steps; test acc {test_before:.4f} -> {test_after:.4f}")
    assert summary.unlearned and summary.remaining_after == 0
    assert accuracy(digits_cnn, x, targets) == 1.0
    assert summary.steps == trainer.global_step == log.first_all_unlearned


@pytest.mark.parametrize("kind", ["neg_ce", "runner_up", "margin"])
def test_baseline_without_anchors_or_importance(digits: Split, digits_cnn: nn.Module, kind: str) -> None:
    """The plain negative-gradient baseline (``neg_ce``) and the other forget losses alone: stop once all unlearned."""
    x, y = _pick(digits, 16)
    forget = ForgetSet(x, y)
    log = _StepLog(forget)
    callback = InstanceUnlearning(**_BARE, max_steps=300, seed=0)
    trainer, _ = _fit(digits_cnn, forget, callback, log, forget_loss=kind)
    summary = callback.summary
    assert summary is not None
    assert summary.unlearned and accuracy(digits_cnn, x, y) == 0.0
    assert summary.anchors == 0 and summary.anchor_success_rate != summary.anchor_success_rate  # nan
    assert callback.importance is None
    assert all(terms == () for terms in log.terms)
    assert summary.steps == trainer.global_step == log.first_all_unlearned == len(log.all_unlearned)


def test_anchors_without_importance(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _pick(digits, 8)
    forget = ForgetSet(x, y)
    log = _StepLog(forget)
    callback = InstanceUnlearning(
        fisher_edit=None,
        anchors=_anchors(per_instance=2),
        importance=None,
        shifted_copies=None,
        edit=None,
        max_steps=600,
        seed=0,
    )
    trainer, _ = _fit(digits_cnn, forget, callback, log)
    summary = callback.summary
    assert summary is not None and summary.unlearned
    assert accuracy(digits_cnn, x, y) == 0.0
    assert summary.anchors == 16 and callback.importance is None
    assert log.terms[0] == ("anchor_loss",)
    assert summary.steps == trainer.global_step == log.first_all_unlearned


def test_check_every_n_steps_stops_at_first_check_after_success(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _pick(digits, 16)
    forget = ForgetSet(x, y)
    log = _StepLog(forget)
    callback = InstanceUnlearning(**_BARE, max_steps=300, check_every_n_steps=4, seed=0)
    trainer, _ = _fit(digits_cnn, forget, callback, log)
    summary = callback.summary
    assert summary is not None and summary.unlearned
    # first multiple of 4 at which all are unlearned (an instance may come back between checks)
    checks = [step for step in range(4, len(log.all_unlearned) + 1, 4) if log.all_unlearned[step - 1]]
    assert summary.steps == trainer.global_step == checks[0]
    assert summary.steps % 4 == 0


@pytest.mark.parametrize("restore", [True, False])
def test_max_steps_cap(digits: Split, digits_cnn: nn.Module, restore: bool) -> None:
    x, y = _pick(digits, 16)
    original = copy.deepcopy(digits_cnn.state_dict())
    callback = InstanceUnlearning(
        fisher_edit=None,
        anchors=_anchors(per_instance=2, steps=5),
        max_steps=3,
        restore_on_failure=restore,
        seed=0,
        edit=None,
    )
    trainer, _ = _fit(digits_cnn, ForgetSet(x, y), callback)
    summary = callback.summary
    assert summary is not None
    assert trainer.global_step == summary.steps == 3
    assert not summary.unlearned
    assert summary.remaining_after > 0
    assert summary.failure == f"{summary.remaining_after} of 16 instances still remembered after 3 steps"
    assert summary.restored is restore
    if restore:
        assert _same_state(digits_cnn, original)  # bit-identical weights and buffers
        assert accuracy(digits_cnn, x, y) == 1.0
    else:
        assert not _same_state(digits_cnn, original)
        changed = [n for n, p in digits_cnn.named_parameters() if not torch.equal(p.detach(), original[n])]
        assert changed


class _Boom(L.Callback):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == 2:
            raise self.error


@pytest.mark.parametrize(
    ("error", "raised", "failure"),
    [
        (RuntimeError("disk full"), RuntimeError, "interrupted by RuntimeError: disk full"),
        # Ctrl-C: Lightning catches it, calls on_exception and exits (Lightning 2.6) after a graceful shutdown
        (KeyboardInterrupt(), SystemExit, "interrupted by KeyboardInterrupt"),
    ],
)
def test_exception_or_interrupt_restores_weights(
    digits: Split, digits_cnn: nn.Module, error: BaseException, raised: type[BaseException], failure: str
) -> None:
    x, y = _pick(digits, 16)
    original = copy.deepcopy(digits_cnn.state_dict())
    callback = InstanceUnlearning(fisher_edit=None, anchors=None, max_steps=100, seed=0)
    module = UnlearningModule(digits_cnn, num_classes=10)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback, _Boom(error)], **quiet_trainer_kwargs())
    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores further Ctrl-C during its shutdown
    try:
        with pytest.raises(raised):
            trainer.fit(module, DataLoader(ForgetSet(x, y), batch_size=16))
    finally:
        signal.signal(signal.SIGINT, sigint)
    summary = callback.summary
    assert summary is not None
    assert summary.restored and not summary.unlearned
    assert summary.failure == failure
    assert _same_state(digits_cnn, original)
    assert module.loss_terms == ()


def test_several_batches_per_epoch(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _pick(digits, 12)
    forget = ForgetSet(x, y)
    log = _StepLog(forget)
    callback = InstanceUnlearning(**_BARE, max_steps=300, seed=0)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback, log], **quiet_trainer_kwargs())
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(forget, batch_size=5, shuffle=True))
    summary = callback.summary
    assert summary is not None and summary.k == 12 and summary.unlearned
    assert accuracy(digits_cnn, x, y) == 0.0
    assert summary.steps == trainer.global_step == log.first_all_unlearned == len(log.all_unlearned)


def test_nothing_to_do_stops_immediately(digits: Split, digits_cnn: nn.Module) -> None:
    x, _ = _pick(digits, 8)
    with torch.no_grad():
        wrong = (predict(digits_cnn, x).argmax(-1) + 1) % 10  # "labels" the model already gets wrong
    original = copy.deepcopy(digits_cnn.state_dict())
    forget = ForgetSet(x, wrong)
    log = _StepLog(forget)
    callback = InstanceUnlearning(fisher_edit=None, anchors=_anchors(per_instance=2, steps=5), max_steps=50, seed=0)
    trainer, module = _fit(digits_cnn, forget, callback, log)
    summary = callback.summary
    assert summary is not None
    assert trainer.global_step == 0 and summary.steps == 0 and log.all_unlearned == []
    assert (summary.remaining_before, summary.remaining_after) == (0, 0)
    assert summary.unlearned and not summary.restored
    assert _same_state(digits_cnn, original)
    assert module.loss_terms == ()


# ---------------------------------------------------------------------------------------------- repeated requests
def test_second_request_keeps_first_request_unlearned(digits: Split, digits_cnn: nn.Module) -> None:
    """Continual unlearning keeps earlier requests unlearned when they are kept in memory (the opt-in); without it a
    later request can re-teach earlier instances (measured in test_keep_forget_data_...[False] and the docs)."""
    x1, y1 = _pick(digits, 8)
    x2, y2 = _pick(digits, 8, skip=8)
    with pytest.warns(UserWarning, match=r"`keep_forget_data=True` keeps the forget instances of every request"):
        callback = InstanceUnlearning(
            fisher_edit=None, anchors=_anchors(), max_steps=600, keep_forget_data=True, seed=0
        )
    module = UnlearningModule(digits_cnn, num_classes=10)
    _fit(module, ForgetSet(x1, y1), callback)
    assert accuracy(digits_cnn, x1, y1) == 0.0
    _fit(module, ForgetSet(x2, y2), callback)
    assert [s.request for s in callback.history] == [0, 1]
    assert all(s.unlearned for s in callback.history)
    assert accuracy(digits_cnn, x2, y2) == 0.0
    relearned = int((predict(digits_cnn, x1).argmax(-1) == y1).sum())
    print(f"\nsecond request: {relearned} of 8 first-request instances remembered again")
    assert relearned == 0


@pytest.mark.parametrize("keep", [True, False])
def test_keep_forget_data_keeps_earlier_instances_in_the_check(
    digits: Split, digits_cnn: nn.Module, keep: bool
) -> None:
    x1, y1 = _pick(digits, 8)
    x2, y2 = _pick(digits, 8, skip=8)
    pretrained = copy.deepcopy(digits_cnn.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback = InstanceUnlearning(
            fisher_edit=None, anchors=None, importance=None, max_steps=300, keep_forget_data=keep, seed=0
        )
    assert any("keep_forget_data=True" in str(w.message) for w in caught) == keep  # the opt-in warns, the default not
    module = UnlearningModule(digits_cnn, num_classes=10)
    _fit(module, ForgetSet(x1, y1), callback)
    assert callback.history[0].unlearned
    # put the pre-trained weights back: the first request's instances are remembered again
    digits_cnn.load_state_dict(pretrained)
    assert accuracy(digits_cnn, x1, y1) == 1.0
    forget2 = ForgetSet(x2, y2)
    log = _StepLog(forget2)
    _fit(module, forget2, callback, log)
    second = callback.history[1]
    assert second.k == 8
    if keep:
        assert second.remaining_before == 16  # the first request's 8 count again
        assert second.unlearned and second.remaining_after == 0
        assert accuracy(digits_cnn, x1, y1) == 0.0 and accuracy(digits_cnn, x2, y2) == 0.0
        assert "replay" in log.terms[0]
    else:
        assert second.remaining_before == 8  # the deleted data is gone
        assert second.unlearned and accuracy(digits_cnn, x2, y2) == 0.0
        assert all("replay" not in terms for terms in log.terms)
    assert module.loss_terms == ()


def test_stall_rule_halves_the_anchor_weight_down_to_its_floor(
    digits: Split, digits_cnn: nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    """Anchors so heavy that nothing is forgotten: every ``stall_patience`` steps without progress the anchor weight
    halves, down to 1/1024, and each change is said once."""
    x, y = _pick(digits, 4)
    anchors = PGDAnchors(eps=1.0, per_instance=2, steps=2, weight=1e9, backend="builtin")
    callback = InstanceUnlearning(
        fisher_edit=None, anchors=anchors, max_steps=45, stall_patience=3, seed=0, shifted_copies=None, edit=None
    )
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    with caplog.at_level(logging.INFO):
        trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(ForgetSet(x, y), batch_size=4))
    said = [r.getMessage() for r in caplog.records if "anchor_loss weight scaled to" in r.getMessage()]
    assert [m.rsplit(" ", 1)[-1] for m in said] == [f"{2.0**-i:g}." for i in range(1, 11)]
    assert callback.anchors is not None and callback.anchors.scale == 1 / 1024
    summary = callback.summary
    assert summary is not None and not summary.unlearned and summary.restored


def test_samples_count_every_input_through_the_classifier_but_not_the_evaluation(
    digits: Split, digits_cnn: nn.Module
) -> None:
    idx = forget_indices(len(digits.y_train), 8)
    forget = DataLoader(ForgetSet(digits.x_train[idx], digits.y_train[idx]), batch_size=8)
    evaluation = {"test": DataLoader(ForgetSet(digits.x_test, digits.y_test), batch_size=128)}
    counts = []
    for val in (None, evaluation):
        callback = InstanceUnlearning(
            fisher_edit=None, anchors=None, shifted_copies=None, edit=None, max_steps=3, seed=0
        )
        trainer = L.Trainer(max_epochs=-1, callbacks=[callback], check_val_every_n_epoch=1, **quiet_trainer_kwargs())
        module = UnlearningModule(copy.deepcopy(digits_cnn), num_classes=10, lr=1e-6)  # too slow to finish in 3 steps
        trainer.fit(module, forget, val_dataloaders=val)
        assert callback.summary is not None and callback.summary.steps == 3
        counts.append(callback.summary.samples)
    # the reference check (8), 3 training steps (3 x 8), 3 stop checks (3 x 8) and the final check (8)
    assert counts == [64, 64]


def test_samples_include_anchor_generation_and_the_plugins_batches(digits: Split, digits_cnn: nn.Module) -> None:
    idx = forget_indices(len(digits.y_train), 4)
    forget = DataLoader(ForgetSet(digits.x_train[idx], digits.y_train[idx]), batch_size=4)
    anchors = PGDAnchors(per_instance=3, steps=5, batch_size=10, backend="builtin")
    callback = InstanceUnlearning(
        fisher_edit=None, anchors=anchors, shifted_copies=None, edit=None, max_steps=2, seed=0
    )
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    trainer.fit(UnlearningModule(copy.deepcopy(digits_cnn), num_classes=10, lr=1e-6), forget)
    assert callback.summary is not None and callback.summary.steps == 2
    pgd = 4 * 3 * (5 + 1)  # 12 anchors: 5 PGD steps and one pass for their pre-trained logits
    measures = 2 * (4 + 12)  # forget check and anchor agreement, at the start and at the end
    steps = 2 * (4 + 10 + 4)  # forget batch, anchor batch, stop check
    assert callback.summary.samples == pgd + measures + steps
