"""Targeted PGD, ``other_classes`` and ``eval_mode`` on the pre-trained digits CNN."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.pgd import eval_mode, other_classes, targeted_pgd
from tests.conftest import forget_indices


def _forget(digits: Split, k: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    idx = forget_indices(len(digits.y_train), k)
    return digits.x_train[idx], digits.y_train[idx]


def _mixed_modes(model: nn.Module) -> list[bool]:
    """Put alternate submodules in train mode (the root in train mode) and return every submodule's mode."""
    model.train()
    for i, module in enumerate(model.modules()):
        if i % 2:
            module.eval()
    return [m.training for m in model.modules()]


# ---------------------------------------------------------------------------------------------- other_classes
def test_other_classes_never_returns_the_label_and_covers_all_others() -> None:
    labels = torch.arange(10).repeat_interleave(300)
    drawn = other_classes(labels, 10, torch.Generator().manual_seed(0))
    assert drawn.shape == labels.shape
    assert drawn.dtype == labels.dtype
    assert bool((drawn != labels).all())
    for c in range(10):
        counts = torch.bincount(drawn[labels == c], minlength=10)
        assert counts[c] == 0
        others = torch.cat([counts[:c], counts[c + 1 :]])
        assert bool((others > 0).all()), f"class {c} misses a target: {counts.tolist()}"
        # uniform over the 9 others: about 33 each out of 300
        assert int(others.min()) >= 15 and int(others.max()) <= 55


def test_other_classes_two_classes_and_determinism() -> None:
    labels = torch.tensor([0, 1, 1, 0])
    assert other_classes(labels, 2).tolist() == [1, 0, 0, 1]
    first = other_classes(torch.arange(10).repeat(5), 10, torch.Generator().manual_seed(3))
    second = other_classes(torch.arange(10).repeat(5), 10, torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


# ---------------------------------------------------------------------------------------------- eval_mode
def test_eval_mode_restores_each_submodule(digits_cnn: nn.Module) -> None:
    before = _mixed_modes(digits_cnn)
    with eval_mode(digits_cnn):
        assert not any(m.training for m in digits_cnn.modules())
    assert [m.training for m in digits_cnn.modules()] == before
    with pytest.raises(RuntimeError, match="boom"), eval_mode(digits_cnn):
        raise RuntimeError("boom")
    assert [m.training for m in digits_cnn.modules()] == before


# ---------------------------------------------------------------------------------------------- targeted_pgd
def _targets(y: torch.Tensor) -> torch.Tensor:
    return other_classes(y, 10, torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("norm", "eps", "step_size"), [("l2", 1.0, 0.25), ("linf", 0.1, 0.025)])
def test_targeted_pgd_stays_in_ball_and_range(
    digits: Split, digits_cnn: nn.Module, norm: str, eps: float, step_size: float
) -> None:
    x, y = _forget(digits)
    with eval_mode(digits_cnn):
        adv = targeted_pgd(
            digits_cnn,
            x,
            _targets(y),
            norm=norm,
            eps=eps,
            step_size=step_size,
            steps=10,
            generator=torch.Generator().manual_seed(0),
        )  # type: ignore[arg-type]
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert not adv.requires_grad
    delta = (adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert bool((size <= eps + 1e-5).all()), size.max()
    assert bool((size > 0).all())
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_targeted_pgd_respects_a_narrow_input_range(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 8)
    x = x.clamp(0.2, 0.7)
    adv = targeted_pgd(
        digits_cnn,
        x,
        _targets(y),
        eps=5.0,
        step_size=1.0,
        steps=5,
        input_range=(0.2, 0.7),
        generator=torch.Generator().manual_seed(0),
    )
    assert float(adv.min()) >= 0.2 and float(adv.max()) <= 0.7
    assert bool(((adv - x).flatten(1).norm(dim=1) <= 5.0 + 1e-5).all())


def test_targeted_pgd_moves_toward_target(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 32)
    targets = _targets(y)
    with eval_mode(digits_cnn), torch.no_grad():
        clean_pred = digits_cnn(x).argmax(-1)
        clean_target_logp = digits_cnn(x).log_softmax(-1).gather(1, targets[:, None])
    assert bool((clean_pred == y).all())  # pre-trained model knows these training instances
    with eval_mode(digits_cnn):
        adv = targeted_pgd(
            digits_cnn,
            x,
            targets,
            norm="l2",
            eps=1.0,
            step_size=0.25,
            steps=20,
            generator=torch.Generator().manual_seed(0),
        )
        with torch.no_grad():
            out = digits_cnn(adv)
    success = float((out.argmax(-1) == targets).float().mean())
    print(f"targeted PGD success on digits (L2, eps 1.0, 20 steps): {success:.3f}")
    assert success > 0.7
    # and every single input moved toward its target
    assert bool((out.log_softmax(-1).gather(1, targets[:, None]) > clean_target_logp).all())


def test_targeted_pgd_without_random_start_is_deterministic(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 8)
    a = targeted_pgd(digits_cnn.eval(), x, _targets(y), random_start=False, steps=3)
    b = targeted_pgd(digits_cnn, x, _targets(y), random_start=False, steps=3)
    assert torch.equal(a, b)


def test_targeted_pgd_seeded_generator_is_deterministic(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 8)
    t = _targets(y)
    runs = [
        targeted_pgd(digits_cnn, x, t, steps=5, generator=torch.Generator().manual_seed(seed)) for seed in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    # the global RNG is neither used nor advanced
    state = torch.get_rng_state()
    targeted_pgd(digits_cnn, x, t, steps=2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)


def test_targeted_pgd_leaves_modes_and_parameter_gradients_alone(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 8)
    before = _mixed_modes(digits_cnn)
    with eval_mode(digits_cnn):
        targeted_pgd(digits_cnn, x, _targets(y), steps=3, generator=torch.Generator().manual_seed(0))
    assert [m.training for m in digits_cnn.modules()] == before
    assert all(p.grad is None for p in digits_cnn.parameters())
    # called without eval_mode, PGD itself changes no mode either
    targeted_pgd(digits_cnn, x, _targets(y), steps=1, generator=torch.Generator().manual_seed(0))
    assert [m.training for m in digits_cnn.modules()] == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"norm": "l1"}, "`norm` must be one of ('l2', 'linf'), got 'l1'."),
        ({"eps": 0.0}, "`eps` must be > 0, got 0.0."),
        ({"step_size": -0.1}, "`step_size` must be > 0, got -0.1."),
        ({"steps": 0}, "`steps` must be > 0, got 0."),
    ],
)
def test_targeted_pgd_errors(kwargs: dict[str, object], message: str) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=re.escape(message)):
        targeted_pgd(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), **kwargs)  # type: ignore[arg-type]
