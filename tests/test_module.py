"""UnlearningModule: argument checks, wrapping by reference, BatchNorm handling, batch and output checks."""

from __future__ import annotations

import copy
import re

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.losses import forget_loss
from tests.conftest import forget_indices, quiet_trainer_kwargs


def _forget(digits: Split, k: int = 8) -> tuple[Tensor, Tensor]:
    idx = forget_indices(len(digits.y_train), k)
    return digits.x_train[idx], digits.y_train[idx]


def _bn_state(model: nn.Module) -> dict[str, Tensor]:
    return {n: b.clone() for n, b in model.named_buffers()}


# ---------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "`num_classes` must be an integer >= 2, got 1."),
        ({"num_classes": True}, "`num_classes` must be an integer >= 2, got True."),
        ({"num_classes": 10.0}, "`num_classes` must be an integer >= 2, got 10.0."),
        ({"mode": "forget"}, "`mode` must be one of ('misclassify', 'relabel') or None, got 'forget'."),
        (
            {"forget_loss": "ce"},
            "`forget_loss` must be one of ('runner_up', 'margin', 'neg_ce', 'random_label'), got 'ce'.",
        ),
        ({"optimizer": "rmsprop"}, "`optimizer` must be one of ('adam', 'sgd'), got 'rmsprop'."),
        ({"batchnorm": "frozen"}, "`batchnorm` must be one of ('eval', 'train'), got 'frozen'."),
        ({"lr": 0.0}, "`lr` must be > 0, got 0.0."),
        ({"lr": -1e-3}, "`lr` must be > 0, got -0.001."),
        ({"margin": -1.0}, "`margin` must be >= 0, got -1.0."),
        ({"forget_weight": -0.5}, "`forget_weight` must be >= 0, got -0.5."),
        ({"weight_decay": -1e-4}, "`weight_decay` must be >= 0, got -0.0001."),
        ({"momentum": -0.9}, "`momentum` must be >= 0, got -0.9."),
    ],
)
def test_argument_errors(digits_cnn: nn.Module, kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        UnlearningModule(digits_cnn, **arguments)  # type: ignore[arg-type]


def test_classifier_errors(digits_cnn: nn.Module) -> None:
    for p in digits_cnn.parameters():
        p.requires_grad_(False)
    message = "`classifier` has no trainable parameters (requires_grad=True): nothing can be unlearned."
    with pytest.raises(ValueError, match=re.escape(message)):
        UnlearningModule(digits_cnn, num_classes=10)
    with pytest.raises(ValueError, match=re.escape(message)):
        UnlearningModule(nn.ReLU(), num_classes=10)
    with pytest.raises(ValueError, match=re.escape("`classifier` must be a torch.nn.Module, got function.")):
        UnlearningModule(lambda x: x, num_classes=10)  # type: ignore[arg-type]
    # partly frozen is fine, and only trainable parameters reach the optimizer
    digits_cnn[12].weight.requires_grad_(True)
    optimizer = UnlearningModule(digits_cnn, num_classes=10).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert [p for g in optimizer.param_groups for p in g["params"]] == [digits_cnn[12].weight]


def test_optimizers(digits_cnn: nn.Module) -> None:
    sgd = UnlearningModule(digits_cnn, 10, optimizer="sgd", lr=1e-3, momentum=0.5, weight_decay=1e-4)
    opt = sgd.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-3, 0.5, 1e-4)
    assert len(group["params"]) == len(list(digits_cnn.parameters()))
    adam = UnlearningModule(digits_cnn, 10, lr=3e-4).configure_optimizers()
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 3e-4


def test_forward_and_hparams(digits: Split, digits_cnn: nn.Module) -> None:
    module = UnlearningModule(digits_cnn, num_classes=10, mode="misclassify", margin=0.5)
    x, _ = _forget(digits, 3)
    assert torch.equal(module(x), digits_cnn(x))
    assert module.classifier is digits_cnn
    assert module.hparams["num_classes"] == 10 and module.hparams["margin"] == 0.5
    assert "classifier" not in module.hparams


# ---------------------------------------------------------------------------------------------- batches and outputs
def test_split_batch(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 4)
    t = (y + 1) % 10
    none = torch.full_like(y, -1)
    follow = UnlearningModule(digits_cnn, 10)
    assert follow.split_batch((x, y))[2] is None
    assert follow.split_batch([x, y, none])[2] is None
    assert torch.equal(follow.split_batch((x, y, t))[2], t)
    mixed = torch.tensor([-1, 3, -1, 5])
    assert torch.equal(follow.split_batch((x, y, mixed))[2], mixed)
    assert UnlearningModule(digits_cnn, 10, mode="misclassify").split_batch((x, y, t))[2] is None
    relabel = UnlearningModule(digits_cnn, 10, mode="relabel")
    assert torch.equal(relabel.split_batch((x, y, t))[2], t)
    message = "`mode='relabel'` needs a target for every forget instance; the batch has none for some."
    for batch in ((x, y), (x, y, none), (x, y, mixed)):
        with pytest.raises(ValueError, match=re.escape(message)):
            relabel.split_batch(batch)
    prefix = "a forget batch must be (inputs, labels) or (inputs, labels, targets), got "
    for batch, kind in ((x, "Tensor"), ([x, y, t, t], "a list of 4 items"), ((x,), "a tuple of 1 items")):
        with pytest.raises(ValueError, match=re.escape(prefix + kind + ".")):
            follow.split_batch(batch)
    with pytest.raises(ValueError, match=re.escape(prefix + "dict.")):
        follow.split_batch({"x": x, "y": y})


def test_check_output(digits: Split, digits_cnn: nn.Module) -> None:
    x, _ = _forget(digits, 4)
    UnlearningModule(digits_cnn, num_classes=10).check_output(x)
    message = (
        "`classifier` must return [B, num_classes] logits, i.e. [2, 5] here, got (2, 10); check `num_classes` or the"
        " classifier's output."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        UnlearningModule(digits_cnn, num_classes=5).check_output(x)
    with pytest.raises(ValueError, match=re.escape("i.e. [1, 12] here, got (1, 10);")):
        UnlearningModule(digits_cnn, num_classes=12).check_output(x[:1])

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = digits_cnn

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            out = self.inner(x)
            return out, out

    with pytest.raises(ValueError, match=re.escape("i.e. [2, 10] here, got tuple;")):
        UnlearningModule(Pair(), num_classes=10).check_output(x)


def test_fit_rejects_wrong_output_shape(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 40)
    x, y = x[y < 7][:4], y[y < 7][:4]  # labels valid for 7 classes: the output check is what fails
    callback = InstanceUnlearning(fisher_edit=None, anchors=None, importance=None, max_steps=2)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    before = copy.deepcopy(digits_cnn.state_dict())
    with pytest.raises(ValueError, match=re.escape("i.e. [2, 7] here, got (2, 10);")):
        trainer.fit(UnlearningModule(digits_cnn, num_classes=7), DataLoader(ForgetSet(x, y), batch_size=4))
    for name, value in before.items():
        assert torch.equal(digits_cnn.state_dict()[name], value)


def test_loss_terms_and_training_step(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 4)
    module = UnlearningModule(digits_cnn, num_classes=10, forget_weight=2.0, project_gradients=False)
    module.add_loss_term("constant", lambda: torch.tensor(0.75))
    with pytest.raises(ValueError, match=re.escape("a loss term named 'constant' is already registered; remove it")):
        module.add_loss_term("constant", lambda: torch.tensor(1.0))
    assert module.loss_terms == ("constant",)
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no Trainer attached
    loss = module.training_step((x, y, torch.full_like(y, -1)), 0)
    expected = 2.0 * forget_loss(digits_cnn(x), y, kind="margin") + 0.75
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    module.remove_loss_term("constant")
    module.remove_loss_term("absent")
    assert module.loss_terms == ()


def test_constant_loss_term_with_projection(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 4)
    module = UnlearningModule(digits_cnn, num_classes=10)
    module.add_loss_term("constant", lambda: torch.tensor(0.75))
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no Trainer attached
    module.training_step((x, y), 0).backward()
    # a constant adds nothing to the gradient: the forget gradient alone
    expected = torch.autograd.grad(forget_loss(digits_cnn(x), y, kind="margin"), list(digits_cnn.parameters()))
    for p, g in zip(digits_cnn.parameters(), expected):
        torch.testing.assert_close(p.grad, g)


def test_unlearned_restores_modes(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 4)
    digits_cnn.train()
    digits_cnn[4].eval()
    before = [m.training for m in digits_cnn.modules()]
    stats = _bn_state(digits_cnn)
    module = UnlearningModule(digits_cnn, num_classes=10)
    assert module.unlearned(x, y).tolist() == [False] * 4  # pre-trained: all remembered
    assert module.unlearned(x, (y + 1) % 10).tolist() == [True] * 4
    assert module.unlearned(x, (y + 1) % 10, y).tolist() == [True] * 4  # relabel "to" the true class
    assert [m.training for m in digits_cnn.modules()] == before
    assert all(torch.equal(v, stats[n]) for n, v in digits_cnn.named_buffers())


# ---------------------------------------------------------------------------------------------- fits
def test_wraps_classifier_by_reference(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 8)
    before = copy.deepcopy(digits_cnn.state_dict())
    module = UnlearningModule(digits_cnn, num_classes=10, lr=1e-3)
    trainer = L.Trainer(max_steps=3, **quiet_trainer_kwargs())
    trainer.fit(module, DataLoader(ForgetSet(x, y), batch_size=8))
    assert trainer.global_step == 3
    assert module.classifier is digits_cnn
    changed = [n for n, p in digits_cnn.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(list(digits_cnn.parameters()))


class _LitClassifier(L.LightningModule):
    """A user's own LightningModule (with its own training_step and optimizer) used as the classifier."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        raise AssertionError("the classifier's own training_step must not run")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=10.0)


def test_classifier_that_is_a_lightning_module(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 8)
    lit = _LitClassifier(digits_cnn)
    before = copy.deepcopy(lit.state_dict())
    # MAS importance goes through torch.func.functional_call on the LightningModule; anchors are tested elsewhere
    callback = InstanceUnlearning(fisher_edit=None, anchors=None, max_steps=200, seed=0)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    trainer.fit(UnlearningModule(lit, num_classes=10), DataLoader(ForgetSet(x, y), batch_size=8))
    assert callback.summary is not None and callback.summary.unlearned
    with torch.no_grad():
        assert bool((lit(x).argmax(-1) != y).all())
    assert any(not torch.equal(v, before[n]) for n, v in lit.state_dict().items())


class _BatchNormModes(L.Callback):
    """Records the BatchNorm layers' modes while the loss is computed (between forward and backward)."""

    def __init__(self) -> None:
        self.modes: list[list[bool]] = []

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        self.modes.append([m.training for m in pl_module.modules() if isinstance(m, _BatchNorm)])


def _fit_batchnorm(digits: Split, classifier: nn.Module, batchnorm: str) -> _BatchNormModes:
    x, y = _forget(digits, 8)
    recorder = _BatchNormModes()
    callback = InstanceUnlearning(
        fisher_edit=None,
        anchors=PGDAnchors(per_instance=2, steps=3, backend="builtin"),
        importance=None,
        max_steps=4,
        restore_on_failure=False,
        seed=0,
        edit=None,  # the edit would start again from the original weights (and running statistics)
    )
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback, recorder], **quiet_trainer_kwargs())
    module = UnlearningModule(classifier, num_classes=10, batchnorm=batchnorm)  # type: ignore[arg-type]
    trainer.fit(module, DataLoader(ForgetSet(x, y), batch_size=8))
    assert len(recorder.modes) >= 1
    return recorder


def test_batchnorm_eval_freezes_running_stats(digits: Split, digits_cnn: nn.Module) -> None:
    digits_cnn.train()  # even a classifier handed over in train mode
    stats = _bn_state(digits_cnn)
    weights = {n: p.detach().clone() for n, p in digits_cnn.named_parameters()}
    recorder = _fit_batchnorm(digits, digits_cnn, "eval")
    assert all(not any(modes) for modes in recorder.modes)
    for name, value in digits_cnn.named_buffers():
        assert torch.equal(value, stats[name]), name
    assert any(not torch.equal(p.detach(), weights[n]) for n, p in digits_cnn.named_parameters())


def test_batchnorm_train_updates_running_stats(digits: Split, digits_cnn: nn.Module) -> None:
    digits_cnn.train()
    stats = _bn_state(digits_cnn)
    recorder = _fit_batchnorm(digits, digits_cnn, "train")
    assert all(all(modes) for modes in recorder.modes)
    assert not torch.equal(digits_cnn[1].running_mean, stats["1.running_mean"])
    assert int(digits_cnn[1].num_batches_tracked) > int(stats["1.num_batches_tracked"])


def test_batchnorm_train_updates_running_stats_of_an_eval_mode_classifier(digits: Split, digits_cnn: nn.Module) -> None:
    stats = _bn_state(digits_cnn)  # digits_cnn comes in eval mode
    recorder = _fit_batchnorm(digits, digits_cnn, "train")
    assert all(all(modes) for modes in recorder.modes)
    assert not torch.equal(digits_cnn[1].running_mean, stats["1.running_mean"])
