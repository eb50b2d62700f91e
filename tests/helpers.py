"""Test-only helpers on parameters (they used to live in the package)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def snapshot(model: nn.Module, names: Callable[[str], bool] | None = None) -> dict[str, Tensor]:
    """Detached copies of the trainable parameters (``theta_0`` of the penalty)."""
    return {
        n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and (names is None or names(n))
    }


def zeros_like_params(model: nn.Module) -> dict[str, Tensor]:
    """Float32 zeros shaped like each trainable parameter."""
    return {n: torch.zeros_like(p, dtype=torch.float32) for n, p in model.named_parameters() if p.requires_grad}
