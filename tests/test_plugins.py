"""The plugin interface: a user plugin inside a request, its lifecycle, names, state and errors."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, UnlearningModule
from lightning_unlearn.plugins import UnlearningPlugin
from lightning_unlearn.request import RequestContext
from tests.conftest import forget_indices, quiet_trainer_kwargs


class HoldHead(UnlearningPlugin):
    """Keeps the last layer near its original weights; records its lifecycle."""

    name = "hold_head"
    adds_loss = True

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight
        self._reference: list[Tensor] | None = None
        self._calls: list[str] = []  # private: kept out of hparams()
        self._setup_request: object = None

    def setup(self, ctx) -> None:
        self._calls.append("setup")
        self._setup_request = ctx.request
        self._reference = [p.detach().clone() for p in ctx.module.classifier[-1].parameters()]

    def loss_term(self, ctx) -> Tensor:
        assert self._reference is not None
        head = ctx.module.classifier[-1].parameters()
        return self.weight * sum((p - r).pow(2).sum() for p, r in zip(head, self._reference))

    def before_optimizer_step(self, ctx) -> None:
        if self._calls[-1] != "step":
            self._calls.append("step")

    def measure(self, ctx) -> dict[str, float]:
        return {
            "head/moved": float(
                sum((p - r).abs().sum() for p, r in zip(ctx.module.classifier[-1].parameters(), self._reference or []))
            )
        }

    def teardown(self, ctx) -> None:
        self._calls.append("teardown")
        self._reference = None


class _Terms(L.Callback):
    def __init__(self) -> None:
        self.terms: list[tuple[str, ...]] = []

    def on_train_batch_start(self, trainer, pl_module, *args: object) -> None:
        self.terms.append(pl_module.loss_terms)


def test_a_user_plugin_runs_inside_the_request(digits, digits_cnn) -> None:
    index = forget_indices(len(digits.y_train), 4, seed=2)
    plugin, spy = HoldHead(weight=0.1), _Terms()
    callback = InstanceUnlearning(
        anchors=None, shifted_copies=None, fisher_edit=None, edit=None, max_steps=200, seed=0, plugins=[plugin]
    )
    assert callback.plugins == [plugin] and plugin.adds_loss
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback, spy], **quiet_trainer_kwargs())
    module = UnlearningModule(digits_cnn, num_classes=10)
    trainer.fit(module, DataLoader(ForgetSet(digits.x_train[index], digits.y_train[index]), batch_size=4))
    summary = callback.summary
    assert summary is not None and summary.unlearned
    assert plugin._calls == ["setup", "step", "teardown"]
    assert spy.terms[0] == ("hold_head",) and module.loss_terms == ()
    assert summary.before["head/moved"] == 0.0 and summary.after["head/moved"] > 0.0
    assert plugin.hparams() == {"weight": 0.1}  # per-request state stays out of receipts


def test_plugin_names_must_be_unique_and_plugins_typed() -> None:
    with pytest.raises(ValueError, match=re.escape("plugin names must be unique (they name the loss terms)")):
        InstanceUnlearning(plugins=[HoldHead(), HoldHead()])
    with pytest.raises(ValueError, match=re.escape("`plugins` must hold UnlearningPlugin instances, got int.")):
        InstanceUnlearning(plugins=[3])  # type: ignore[list-item]


def test_the_base_plugin_does_nothing(digits_cnn) -> None:
    plugin = UnlearningPlugin()
    module = UnlearningModule(digits_cnn, num_classes=10)
    ctx = RequestContext(None, module, None)  # type: ignore[arg-type]
    assert not plugin.adds_loss and not plugin.edits_at_begin and plugin.loss_term(ctx) is None
    assert plugin.measure(ctx) == {} and plugin.step_metrics(ctx) == {} and plugin.state_dict() == {}
    assert plugin.on_stall(ctx) is None
    before = [p.detach().clone() for p in digits_cnn.parameters()]
    plugin.before_optimizer_step(ctx)
    assert all(torch.equal(a, b) for a, b in zip(before, digits_cnn.parameters()))


def test_receipts_name_extra_plugins_with_their_plain_settings(digits, digits_cnn, tmp_path) -> None:
    from lightning_unlearn.baselines import L1Sparse, RetainLoss
    from lightning_unlearn.receipts import read_receipt

    index = forget_indices(len(digits.y_train), 4, seed=2)
    retain = DataLoader(ForgetSet(digits.x_train[:32], digits.y_train[:32]), batch_size=16)
    plugins = [L1Sparse(strength=1e-5), RetainLoss(retain, weight=0.5)]
    callback = InstanceUnlearning(anchors=None, max_steps=200, seed=0, plugins=plugins, receipt_dir=tmp_path)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    module = UnlearningModule(digits_cnn, num_classes=10, lr=1e-3)
    trainer.fit(module, DataLoader(ForgetSet(digits.x_train[index], digits.y_train[index]), batch_size=4))
    method = read_receipt(callback.receipts[0]).method
    assert sorted(method["plugins"]) == ["fisher_edit", "l1", "last_layer_edit", "retain_loss", "shifted_copies"]
    assert method["plugins"]["l1"] == {"strength": 1e-5} and method["plugins"]["retain_loss"] == {"weight": 0.5}


def test_the_fisher_edit_finishes_a_default_request_before_any_step(digits, digits_cnn) -> None:
    from lightning_unlearn.functional.evaluation import accuracy

    idx = forget_indices(len(digits.y_train), 16)
    callback = InstanceUnlearning(seed=0)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    before = accuracy(digits_cnn, digits.x_test, digits.y_test)
    forget = DataLoader(ForgetSet(digits.x_train[idx], digits.y_train[idx]), batch_size=16)
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), forget)
    summary = callback.summary
    assert summary is not None and summary.unlearned and summary.finished_by == "fisher_edit"
    assert summary.steps == 0 and trainer.global_step == 0
    # anchors (16 x 21 x 11 passes) and three passes over the protected inputs dominate; no step of 544 inputs
    assert summary.samples < 20_000
    assert accuracy(digits_cnn, digits.x_test, digits.y_test) >= before - 0.02


def test_without_the_fisher_edit_the_request_takes_steps(digits, digits_cnn) -> None:
    idx = forget_indices(len(digits.y_train), 4)
    callback = InstanceUnlearning(seed=0, fisher_edit=None)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    forget = DataLoader(ForgetSet(digits.x_train[idx], digits.y_train[idx]), batch_size=4)
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), forget)
    assert [p.name for p in callback.plugins] == ["anchor_loss", "shifted_copies", "last_layer_edit"]
    assert callback.summary is not None and callback.summary.steps > 0 and callback.summary.unlearned


def test_one_factory_orders_every_plugin_and_declares_what_each_does() -> None:
    from lightning_unlearn import MASImportance
    from lightning_unlearn.baselines import L1Sparse

    with pytest.warns(UserWarning, match="keep_forget_data=True"):
        callback = InstanceUnlearning(
            importance=MASImportance(use="mask"),
            retain=torch.rand(5, 1, 8, 8),
            keep_forget_data=True,
            plugins=[L1Sparse()],
        )
    names = [p.name for p in callback.plugins]
    assert names == [
        "anchor_loss", "importance_penalty", "shifted_copies", "retain_distill", "fisher_edit", "last_layer_edit",
        "replay", "l1",
    ]  # fmt: skip
    assert callback.plugins[:6] == [p for p in callback.parts if p is not None]
    assert callback.anchors is callback.plugins[0] and callback.retain is callback.plugins[3]
    adds = [p.name for p in callback.plugins if p.adds_loss]
    assert adds == ["anchor_loss", "shifted_copies", "retain_distill", "replay", "l1"]  # a mask adds no term
    assert [p.name for p in callback.plugins if p.edits_at_begin] == ["fisher_edit"]


def test_the_fisher_edit_restores_toward_the_weights_of_its_first_request(digits, digits_cnn) -> None:
    from lightning_unlearn import FisherEdit

    pretrained = {n: v.clone() for n, v in digits_cnn.state_dict().items()}
    fisher = FisherEdit(restore=16)
    assert fisher.reference is None and fisher.hparams()["restore"] == 16
    callback = InstanceUnlearning(seed=0, fisher_edit=fisher, retain=digits.x_train[-40:])
    module = UnlearningModule(digits_cnn, num_classes=10)
    for seed in (0, 1):
        idx = forget_indices(len(digits.y_train) - 40, 8, seed=seed)
        trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
        trainer.fit(module, DataLoader(ForgetSet(digits.x_train[idx], digits.y_train[idx]), batch_size=8))
        assert callback.summary is not None and callback.summary.unlearned
        assert fisher.reference is not None
        assert all(torch.equal(fisher.reference[n], v) for n, v in pretrained.items())  # not request 1's result
    assert any(not torch.equal(v, pretrained[n]) for n, v in digits_cnn.state_dict().items())  # edited


def test_the_fisher_edit_refuses_a_negative_restore_and_an_unknown_reference() -> None:
    from lightning_unlearn import FisherEdit

    with pytest.raises(ValueError, match=re.escape("`restore` must be >= 0, got -1.")):
        FisherEdit(restore=-1)
    with pytest.raises(
        ValueError, match=re.escape("`restore_toward` must be one of ('auto', 'pretrained', 'request')")
    ):
        FisherEdit(restore_toward="first")
