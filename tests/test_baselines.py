"""Baselines as plugins of InstanceUnlearning, on digits."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn import ForgetSet, InstanceUnlearning, UnlearningModule
from lightning_unlearn.baselines import L1Sparse, RetainLoss, SaliencyMask
from lightning_unlearn.functional import forget_loss
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.request import RequestContext
from tests.conftest import forget_indices, quiet_trainer_kwargs


class _Terms(Callback):
    def __init__(self) -> None:
        self.terms: list[tuple[str, ...]] = []
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        assert isinstance(pl_module, UnlearningModule)
        self.terms.append(pl_module.loss_terms)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        assert isinstance(pl_module, UnlearningModule)
        self.grads.append({n: p.grad.clone() for n, p in pl_module.classifier.named_parameters() if p.grad is not None})


def _fit(digits, model, plugins, callbacks=(), k=8, **module_kwargs):
    index = forget_indices(len(digits.y_train), k, seed=1)
    x, y = digits.x_train[index], digits.y_train[index]
    module = UnlearningModule(model, num_classes=10, **module_kwargs)
    bare = {"anchors": None, "shifted_copies": None, "fisher_edit": None, "edit": None}  # the baselines alone
    unlearning = InstanceUnlearning(**bare, max_steps=300, seed=0, plugins=plugins)
    trainer = L.Trainer(max_epochs=-1, callbacks=[unlearning, *callbacks], **quiet_trainer_kwargs())
    trainer.fit(module, DataLoader(ForgetSet(x, y), batch_size=k))
    return unlearning, module, x, y


def test_random_label_loss_never_targets_the_label() -> None:
    labels = torch.arange(200) % 10
    logits = (2.0 * torch.nn.functional.one_hot(labels, 10).float()).requires_grad_(True)  # all still remembered
    forget_loss(logits, labels, kind="random_label", generator=torch.Generator().manual_seed(0)).backward()
    assert logits.grad is not None
    # the gradient pulls the label's logit down (it is never the target) and one other class up
    assert bool((logits.grad[torch.arange(200), labels] > 0).all())
    assert int((logits.grad < 0).sum()) == 200


def test_salun_style_random_labels_with_saliency_mask(digits, digits_cnn) -> None:
    spy = _Terms()
    mask = SaliencyMask(fraction=0.3)
    unlearning, _, x, y = _fit(digits, digits_cnn, [mask], [spy], forget_loss="random_label", lr=1e-3)
    assert unlearning.summary is not None and unlearning.summary.unlearned
    assert accuracy(digits_cnn, x, y) == 0.0
    kept = sum(int(m.sum()) for m in spy_mask(spy))
    total = sum(p.numel() for p in digits_cnn.parameters())
    assert kept == pytest.approx(0.3 * total, rel=0.02)
    assert mask.mask is None  # dropped at the end of the request


def spy_mask(spy: _Terms) -> list[torch.Tensor]:
    # the gradients after masking: zero outside the kept weights at every step
    first = spy.grads[0]
    return [(g != 0).float() for g in first.values()]


def test_l1_sparse_term_is_added_and_forgets(digits, digits_cnn) -> None:
    spy = _Terms()
    l1 = L1Sparse(strength=1e-4)
    expected = 1e-4 * sum(float(p.abs().sum()) for p in digits_cnn.parameters())
    module = UnlearningModule(digits_cnn, num_classes=10)
    assert l1.adds_loss and l1.name == "l1"
    ctx = RequestContext(None, module, None)  # type: ignore[arg-type]  # the term reads only the module
    assert float(l1.loss_term(ctx)) == pytest.approx(expected, rel=1e-5)
    unlearning, module, _, _ = _fit(digits, digits_cnn, [l1], [spy], lr=1e-3)
    assert spy.terms[0] == ("l1",) and module.loss_terms == ()
    assert unlearning.summary is not None and unlearning.summary.unlearned


def test_retain_loss_keeps_accuracy_better_than_negative_gradient_alone(digits, digits_cnn) -> None:
    index = forget_indices(len(digits.y_train), 16, seed=1)
    keep = torch.ones(len(digits.y_train), dtype=torch.bool)
    keep[index] = False
    retain = DataLoader(TensorDataset(digits.x_train[keep], digits.y_train[keep]), batch_size=128, shuffle=True)
    plain = pytest.importorskip("copy").deepcopy(digits_cnn)
    _fit(digits, plain, [], k=16, forget_loss="neg_ce", project_gradients=False, lr=1e-3)
    spy = _Terms()
    _fit(digits, digits_cnn, [RetainLoss(retain)], [spy], k=16, forget_loss="neg_ce", project_gradients=False, lr=1e-3)
    assert spy.terms[0] == ("retain_loss",)
    with_retain = accuracy(digits_cnn, digits.x_test, digits.y_test)
    alone = accuracy(plain, digits.x_test, digits.y_test)
    print(f"\nneg-grad test acc {alone:.3f}; with retained-data loss {with_retain:.3f}")
    assert with_retain > alone


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: L1Sparse(strength=-1.0), "`strength` must be >= 0, got -1.0."),
        (lambda: SaliencyMask(fraction=0.0), "`fraction` must be in (0, 1], got 0.0."),
        (lambda: RetainLoss([], weight=-0.5), "`weight` must be >= 0, got -0.5."),
    ],
)
def test_argument_errors(factory, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        factory()
