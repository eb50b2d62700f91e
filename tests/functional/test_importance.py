"""MAS importance, its normalisation, penalty and gradient mask."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor, nn

import lightning_unlearn.functional.importance as importance_module
from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.importance import (
    apply_gradient_mask,
    gradient_mask,
    importance_penalty,
    mas_importance_sum,
    normalize_importance,
)
from lightning_unlearn.functional.pgd import eval_mode
from tests.conftest import forget_indices


def _forget_x(digits: Split, k: int = 8) -> Tensor:
    return digits.x_train[forget_indices(len(digits.y_train), k)]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.Tanh(), nn.Linear(12, 10))


def _hand_loop(model: nn.Module, inputs: Tensor) -> dict[str, Tensor]:
    """Sum over instances of |d ||f(x)||_2 / d theta|, one torch.autograd.grad call per instance."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    totals = {n: torch.zeros_like(p) for n, p in named}
    for x in inputs:
        norm = model(x.unsqueeze(0)).norm(p=2)
        grads = torch.autograd.grad(norm, [p for _, p in named])
        for (n, _), g in zip(named, grads):
            totals[n] += g.abs()
    return totals


def _assert_close(found: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert sorted(found) == sorted(expected)
    for name in expected:
        assert found[name].shape == expected[name].shape, name
        assert found[name].dtype == torch.float32
        torch.testing.assert_close(found[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------- mas_importance_sum
def test_mas_importance_sum_equals_hand_loop_on_small_model(digits: Split) -> None:
    model, x = _mlp(), _forget_x(digits)
    sums = mas_importance_sum(model, x, chunk_size=3)  # several chunks, the last one partial
    _assert_close(sums, _hand_loop(model, x))
    assert all(p.grad is None for p in model.parameters())


def test_mas_importance_sum_equals_hand_loop_on_digits_cnn(digits: Split, digits_cnn: nn.Module) -> None:
    x = _forget_x(digits, 4)
    with eval_mode(digits_cnn):  # BatchNorm with running statistics (buffers passed through functional_call)
        sums = mas_importance_sum(digits_cnn, x)
        expected = _hand_loop(digits_cnn, x)
    assert {n: s.shape for n, s in sums.items()} == {n: p.shape for n, p in digits_cnn.named_parameters()}
    _assert_close(sums, expected)
    assert all(float(s.sum()) > 0 for s in sums.values())


def test_mas_importance_sum_skips_frozen_parameters(digits: Split) -> None:
    model, x = _mlp(), _forget_x(digits, 4)
    model[1].weight.requires_grad_(False)
    sums = mas_importance_sum(model, x)
    assert sorted(sums) == ["1.bias", "3.bias", "3.weight"]
    _assert_close(sums, _hand_loop(model, x))


def test_mas_importance_sum_loop_fallback_matches(digits: Split, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _mlp(), _forget_x(digits, 5)
    expected = mas_importance_sum(model, x)

    def no_vmap(*args: object, **kwargs: object) -> object:
        raise RuntimeError("vmap unsupported")

    monkeypatch.setattr(importance_module, "vmap", no_vmap)
    _assert_close(mas_importance_sum(model, x), expected)
    assert all(p.grad is None for p in model.parameters())


def test_mas_importance_sum_empty_inputs() -> None:
    model = _mlp()
    sums = mas_importance_sum(model, torch.zeros(0, 1, 8, 8))
    assert all(float(s.abs().sum()) == 0.0 for s in sums.values())
    assert {n: s.shape for n, s in sums.items()} == {n: p.shape for n, p in model.named_parameters()}


# ---------------------------------------------------------------------------------------------- normalize
def test_normalize_importance_range(digits: Split, digits_cnn: nn.Module) -> None:
    with eval_mode(digits_cnn):
        sums = mas_importance_sum(digits_cnn, _forget_x(digits))
    norm = normalize_importance(sums)
    for name, value in norm.items():
        assert value.shape == sums[name].shape
        assert float(value.min()) == 0.0 and float(value.max()) == 1.0, name
        # order is kept
        flat_in, flat_out = sums[name].flatten(), value.flatten()
        assert flat_out.argmax() == flat_in.argmax() and flat_out.argmin() == flat_in.argmin()
    constant = normalize_importance({"w": torch.full((3,), 2.5)})
    assert constant["w"].tolist() == [0.0, 0.0, 0.0]
    assert normalize_importance({"w": torch.tensor([2.0, 4.0, 3.0])})["w"].tolist() == [0.0, 1.0, 0.5]


# ---------------------------------------------------------------------------------------------- penalty
def test_importance_penalty_value() -> None:
    params = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([[0.5]])}
    reference = {"a": torch.tensor([0.0, 2.0, 1.0]), "b": torch.tensor([[1.5]])}
    importance = {"a": torch.tensor([0.25, 1.0, 0.5]), "b": torch.tensor([[0.0]])}
    # 0.75 * 1 + 0 * 0 + 0.5 * 4 + 1 * 1 = 3.75; times strength / 2 = 3 / 2
    value = importance_penalty(params, reference, importance, strength=3.0)
    assert value.item() == pytest.approx(1.5 * 3.75)
    assert importance_penalty(params, params, importance, strength=3.0).item() == 0.0
    assert importance_penalty(params, reference, {}, strength=3.0).item() == 0.0


def test_importance_penalty_gradient() -> None:
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    importance_penalty({"w": theta}, {"w": torch.zeros(2)}, {"w": torch.tensor([0.5, 1.0])}, 2.0).backward()
    # d/dtheta (lambda / 2 * (1 - imp) * theta^2) = lambda * (1 - imp) * theta
    assert theta.grad is not None
    assert theta.grad.tolist() == [1.0, 0.0]


# ---------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.5, 1.0])
def test_gradient_mask_top_fraction_keeps_right_count(digits: Split, digits_cnn: nn.Module, fraction: float) -> None:
    with eval_mode(digits_cnn):
        importance = normalize_importance(mas_importance_sum(digits_cnn, _forget_x(digits)))
    mask = gradient_mask(importance, top_fraction=fraction)
    total = sum(v.numel() for v in importance.values())
    kept = sum(int(m.sum()) for m in mask.values())
    flat = torch.cat([v.flatten() for v in importance.values()])
    ties = int((flat == flat.topk(round(fraction * total)).values.min()).sum())
    # the right count, up to entries tied with the threshold
    assert round(fraction * total) <= kept <= round(fraction * total) + ties - 1
    for name, m in mask.items():
        assert m.shape == importance[name].shape and m.dtype == importance[name].dtype
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        # the kept entries are the most important ones
        if 0 < int(m.sum()) < m.numel():
            assert float(importance[name][m == 1].min()) >= float(importance[name][m == 0].max())


def test_gradient_mask_exact_count_without_ties() -> None:
    importance = {"a": torch.linspace(0, 1, 50), "b": torch.linspace(0.005, 0.995, 50).view(5, 10)}
    for fraction, count in ((0.1, 10), (0.25, 25), (0.01, 1), (0.001, 1)):
        mask = gradient_mask(importance, top_fraction=fraction)
        assert sum(int(m.sum()) for m in mask.values()) == count


def test_gradient_mask_without_fraction_is_a_copy_of_importance() -> None:
    importance = {"w": torch.tensor([0.0, 0.3, 1.0])}
    mask = gradient_mask(importance)
    assert torch.equal(mask["w"], importance["w"])
    mask["w"][0] = 5.0
    assert importance["w"][0] == 0.0


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_gradient_mask_errors(fraction: float) -> None:
    with pytest.raises(ValueError, match=re.escape(f"`top_fraction` must be in (0, 1], got {fraction}.")):
        gradient_mask({"w": torch.ones(3)}, top_fraction=fraction)


def test_apply_gradient_mask_scales_grad_in_place(digits: Split) -> None:
    model, x = _mlp(), _forget_x(digits, 4)
    model[1].weight.requires_grad_(False)  # has no .grad: skipped
    nn.functional.cross_entropy(model(x), digits.y_train[forget_indices(len(digits.y_train), 4)]).backward()
    params = dict(model.named_parameters())
    before = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
    grad_objects = {n: p.grad for n, p in params.items() if p.grad is not None}
    mask = {
        n: torch.rand(p.shape, generator=torch.Generator().manual_seed(i)) for i, (n, p) in enumerate(params.items())
    }
    apply_gradient_mask(params, mask)
    assert params["1.weight"].grad is None
    for name, grad in before.items():
        assert params[name].grad is grad_objects[name]  # in place
        assert torch.equal(params[name].grad, grad * mask[name])
