"""Gradient projection (PCGrad, Yu et al., 2020): remove from the forget gradient the part that fights the protection.

Plain tensor code with no Lightning import.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def project_conflicting(forget: Tensor, protect: Tensor) -> Tensor:
    """If ``forget . protect < 0``, remove from ``forget`` its component along ``protect``; else return it unchanged.

    Both are flat gradient vectors.

    Examples:
        >>> project_conflicting(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])).tolist()
        [1.0, 0.0]
        >>> project_conflicting(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])).tolist()
        [1.0, 1.0]
    """
    dot = torch.dot(forget, protect)
    if dot >= 0:
        return forget
    return forget - dot / protect.pow(2).sum().clamp_min(1e-20) * protect


def flat_gradient(loss: Tensor, params: Sequence[Tensor], retain_graph: bool = False) -> Tensor:
    """The gradient of ``loss`` with respect to ``params`` as one flat float32 vector (zeros where unused)."""
    grads = torch.autograd.grad(loss, list(params), retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten().float() for g, p in zip(grads, params)])


def linear_surrogate(params: Sequence[Tensor], gradient: Tensor) -> Tensor:
    """A scalar whose gradient with respect to ``params`` is ``gradient`` (flat): ``sum(p * g)``.

    Returning it from a ``training_step`` lets the framework's backward (precision plugins, accumulation, DDP) apply a
    gradient that was computed by hand.

    Examples:
        >>> p = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> linear_surrogate([p], torch.tensor([3.0, -1.0])).backward()
        >>> p.grad.tolist()
        [3.0, -1.0]
    """
    total: Tensor | None = None
    offset = 0
    for p in params:
        n = p.numel()
        term = (p * gradient[offset : offset + n].view_as(p).to(p.dtype)).sum()
        total = term if total is None else total + term
        offset += n
    assert total is not None
    return total


def projected_surrogate(forget: Tensor, protect: Tensor, params: Sequence[Tensor]) -> Tensor:
    """PCGrad on two losses: a scalar whose gradient is the forget gradient without its component against the
    protective gradient, plus the protective gradient (one extra backward pass).

    Examples:
        >>> p = torch.tensor([1.0, 1.0], requires_grad=True)
        >>> projected_surrogate((p * torch.tensor([1.0, -1.0])).sum(), p[1], [p]).backward()
        >>> p.grad.tolist()
        [1.0, 1.0]
    """
    g_forget = flat_gradient(forget, params, retain_graph=True)
    g_protect = flat_gradient(protect, params)
    return linear_surrogate(params, project_conflicting(g_forget, g_protect) + g_protect)
