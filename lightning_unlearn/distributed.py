"""Collective helpers for plugins: values every process must agree on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    import lightning as L


def gather_rows(trainer: L.Trainer, tensor: Tensor) -> Tensor:
    """``tensor`` from every process, concatenated along the first axis in rank order (itself on a single process).

    Every process must call it together. Shards may differ in length (a forget set split unevenly).

    Examples:
        >>> import lightning as L
        >>> trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
        >>> gather_rows(trainer, torch.ones(2, 3)).shape
        torch.Size([2, 3])
    """
    if trainer.world_size <= 1 or not torch.distributed.is_initialized():
        return tensor
    parts: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts).to(tensor.device)
