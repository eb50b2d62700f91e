"""MASImportance: argument checks, estimation, penalty, and the gradient mask inside a real fit."""

from __future__ import annotations

import copy
import re

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, MASImportance, UnlearningModule
from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.importance import gradient_mask, mas_importance_sum
from lightning_unlearn.functional.pgd import eval_mode
from tests.conftest import forget_indices, quiet_trainer_kwargs
from tests.helpers import snapshot, zeros_like_params


def _forget(digits: Split, k: int = 8) -> tuple[Tensor, Tensor]:
    idx = forget_indices(len(digits.y_train), k)
    return digits.x_train[idx], digits.y_train[idx]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"use": "clip"}, "`use` must be one of ('penalty', 'mask'), got 'clip'."),
        ({"strength": -1.0}, "`strength` must be >= 0, got -1.0."),
        ({"top_fraction": 0.0}, "`top_fraction` must be in (0, 1] or None, got 0.0."),
        ({"top_fraction": 1.5}, "`top_fraction` must be in (0, 1] or None, got 1.5."),
        ({"chunk_size": 0}, "`chunk_size` must be > 0, got 0."),
    ],
)
def test_argument_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MASImportance(**kwargs)  # type: ignore[arg-type]


def test_estimate_sum_restores_modes_and_uses_eval(digits: Split, digits_cnn: nn.Module) -> None:
    x, _ = _forget(digits)
    digits_cnn.train()
    digits_cnn[1].eval()
    before = [m.training for m in digits_cnn.modules()]
    stats = digits_cnn[1].running_mean.clone()
    sums = MASImportance(chunk_size=3).estimate_sum(digits_cnn, x)
    assert [m.training for m in digits_cnn.modules()] == before
    assert torch.equal(digits_cnn[1].running_mean, stats)
    with eval_mode(digits_cnn):
        expected = mas_importance_sum(digits_cnn, x)
    for name, value in expected.items():
        torch.testing.assert_close(sums[name], value)


def test_normalize_divides_by_count(digits: Split, digits_cnn: nn.Module) -> None:
    x, _ = _forget(digits)
    sums = MASImportance().estimate_sum(digits_cnn, x)
    scores = MASImportance.normalize(sums, count=len(x))
    for name, value in scores.items():
        assert float(value.min()) == 0.0 and float(value.max()) == 1.0, name
        torch.testing.assert_close(value, MASImportance.normalize(sums)[name])  # min-max is scale-free
    assert MASImportance.normalize({"w": torch.tensor([0.0, 4.0, 2.0])}, count=0)["w"].tolist() == [0.0, 1.0, 0.5]


def test_penalty_value(digits_cnn: nn.Module) -> None:
    importance = MASImportance(strength=2.0)
    reference = snapshot(digits_cnn)
    scores = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(0)) for n, p in reference.items()}
    assert importance.penalty(digits_cnn, reference, scores).item() == 0.0
    with torch.no_grad():
        digits_cnn[12].bias.add_(0.5)
    # only the last bias moved, by 0.5 everywhere: lambda / 2 * sum((1 - imp) * 0.25)
    expected = 1.0 * float(((1 - scores["12.bias"]) * 0.25).sum())
    assert importance.penalty(digits_cnn, reference, scores).item() == pytest.approx(expected, rel=1e-5)


def test_snapshot_and_zeros(digits_cnn: nn.Module) -> None:
    digits_cnn[0].weight.requires_grad_(False)
    snap = snapshot(digits_cnn)
    assert "0.weight" not in snap and "0.bias" in snap
    assert snap["0.bias"] is not digits_cnn[0].bias and torch.equal(snap["0.bias"], digits_cnn[0].bias)
    assert not snap["0.bias"].requires_grad
    assert list(snapshot(digits_cnn, names=lambda n: n.startswith("12."))) == ["12.weight", "12.bias"]
    zeros = zeros_like_params(digits_cnn)
    assert sorted(zeros) == sorted(snap) and all(float(z.abs().sum()) == 0 for z in zeros.values())


# ---------------------------------------------------------------------------------------------- mask inside a fit
class _GradRecorder(L.Callback):
    """Copies the classifier's gradients in ``on_before_optimizer_step`` (before or after the unlearning callback)."""

    def __init__(self) -> None:
        self.grads: list[dict[str, Tensor]] = []
        self.terms: list[tuple[str, ...]] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: object) -> None:
        assert isinstance(pl_module, UnlearningModule)
        self.grads.append({n: p.grad.clone() for n, p in pl_module.classifier.named_parameters() if p.grad is not None})
        self.terms.append(pl_module.loss_terms)


def _fit_recording(
    digits: Split, classifier: nn.Module, importance: MASImportance
) -> tuple[InstanceUnlearning, _GradRecorder, _GradRecorder]:
    x, y = _forget(digits)
    before, after = _GradRecorder(), _GradRecorder()
    callback = InstanceUnlearning(
        fisher_edit=None, anchors=None, importance=importance, edit=None, max_steps=3, restore_on_failure=False, seed=0
    )
    trainer = L.Trainer(max_epochs=-1, callbacks=[before, callback, after], **quiet_trainer_kwargs())
    trainer.fit(UnlearningModule(classifier, num_classes=10), DataLoader(ForgetSet(x, y), batch_size=len(y)))
    assert len(before.grads) == len(after.grads) == 3
    return callback, before, after


@pytest.mark.parametrize("top_fraction", [None, 0.1])
def test_mask_scales_gradients_inside_fit(digits: Split, digits_cnn: nn.Module, top_fraction: float | None) -> None:
    x, _ = _forget(digits)
    importance = MASImportance(use="mask", top_fraction=top_fraction)
    expected_scores = importance.normalize(importance.estimate_sum(copy.deepcopy(digits_cnn), x), len(x))
    pretrained = {n: p.detach().clone() for n, p in digits_cnn.named_parameters()}
    callback, before, after = _fit_recording(digits, digits_cnn, importance)
    assert callback.importance is not None
    scores = callback.importance.scores
    assert scores is not None
    for name, value in expected_scores.items():
        torch.testing.assert_close(scores[name], value)
    mask = gradient_mask(scores, top_fraction)
    for step in range(3):
        assert "importance_penalty" not in before.terms[step]
        assert sorted(after.grads[step]) == sorted(mask)
        for name, m in mask.items():
            assert torch.equal(after.grads[step][name], before.grads[step][name] * m), (step, name)
    if top_fraction is not None:
        zeroed = sum(int((m == 0).sum()) for m in mask.values())
        total = sum(m.numel() for m in mask.values())
        assert zeroed >= 0.85 * total
        # and the weights outside the mask did not move (Adam without weight decay: zero gradient, zero step)
        current = dict(digits_cnn.named_parameters())
        for name, m in mask.items():
            moved = current[name].detach() != pretrained[name]
            assert not bool((moved & (m == 0)).any()), name
        assert any(bool((current[n].detach() != pretrained[n]).any()) for n in mask)


def test_penalty_is_a_loss_term_and_leaves_gradients_alone(digits: Split, digits_cnn: nn.Module) -> None:
    callback, before, after = _fit_recording(digits, digits_cnn, MASImportance(use="penalty", strength=1.0))
    assert callback.importance is not None and callback.importance.scores is not None
    for step in range(3):
        assert "importance_penalty" in before.terms[step]
        for name, grad in before.grads[step].items():
            assert torch.equal(after.grads[step][name], grad)
