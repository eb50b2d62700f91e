"""Targeted projected gradient descent (PGD), L2 and L-inf: the built-in anchor generator.

Plain tensor code with no Lightning import and no global side effects: the model's train/eval modes are saved and
restored module by module, gradients are taken with respect to the inputs only, and all randomness comes from the
``generator`` argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Norm = Literal["l2", "linf"]
NORMS: tuple[str, ...] = ("l2", "linf")


def other_classes(labels: Tensor, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw, for each label, a class uniformly from the ``num_classes - 1`` other classes.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.zeros(1000, dtype=torch.long)
        >>> drawn = other_classes(labels, 3, g)
        >>> bool((drawn != labels).all()), sorted(drawn.unique().tolist())
        (True, [1, 2])
    """
    shift = torch.randint(1, num_classes, labels.shape, generator=generator, device="cpu").to(labels.device)
    return (labels + shift) % num_classes


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own mode afterwards (not ``model.train()``)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def targeted_pgd(
    model: Callable[[Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    norm: Norm = "l2",
    eps: float = 1.0,
    step_size: float = 0.1,
    steps: int = 20,
    random_start: bool = True,
    input_range: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Move ``inputs`` toward ``targets`` by targeted PGD inside an ``eps`` ball, clamped to ``input_range``.

    The caller chooses the model's mode (use :func:`eval_mode`); no parameter gradient is accumulated.

    Args:
        model: maps ``[B, ...]`` inputs to ``[B, C]`` logits.
        inputs: ``[B, ...]`` clean inputs.
        targets: ``[B]`` classes to move toward.
        norm: ``"l2"`` or ``"linf"``.
        eps: radius of the ball around each input.
        step_size: length of each step (L2) or per-coordinate step (L-inf).
        steps: number of steps.
        random_start: start from a random point in the ball.
        input_range: ``(low, high)`` the inputs live in.
        generator: source of the random start (CPU generator; draws are moved to the inputs' device).

    Returns:
        Detached adversarial inputs, same shape and dtype as ``inputs``.

    Raises:
        ValueError: if ``norm`` is unknown or ``eps``, ``step_size`` or ``steps`` is not positive.

    Examples:
        >>> model = nn.Linear(2, 2)
        >>> x = torch.zeros(4, 2) + 0.5
        >>> adv = targeted_pgd(model, x, torch.ones(4, dtype=torch.long), eps=0.1, step_size=0.05, steps=5)
        >>> bool(((adv - x).flatten(1).norm(dim=1) <= 0.1 + 1e-6).all())
        True
    """
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
    for name, value in (("eps", eps), ("step_size", step_size), ("steps", steps)):
        if value <= 0:
            raise ValueError(f"`{name}` must be > 0, got {value}.")
    low, high = input_range
    x = inputs.detach()
    adv = x.clone()
    if random_start:
        adv = _project(adv + _random_delta(x, norm, eps, generator), x, norm, eps).clamp(low, high)
    for _ in range(int(steps)):
        adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(adv), targets)
            (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv.detach() - step_size * _direction(grad, norm)
            adv = _project(adv, x, norm, eps).clamp(low, high)
    return adv.detach()


def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _direction(grad: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return grad.sign()
    return grad / _flat_norm(grad).clamp_min(1e-12)


def _project(adv: Tensor, x: Tensor, norm: str, eps: float) -> Tensor:
    delta = adv - x
    if norm == "linf":
        return x + delta.clamp(-eps, eps)
    factor = (eps / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return x + delta * factor


def _random_delta(x: Tensor, norm: str, eps: float, generator: torch.Generator | None) -> Tensor:
    if norm == "linf":
        return ((torch.rand(x.shape, generator=generator) * 2 - 1) * eps).to(x)
    direction = torch.randn(x.shape, generator=generator)
    direction = direction / _flat_norm(direction).clamp_min(1e-12)
    radius = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator)
    return (direction * radius * eps).to(x)
