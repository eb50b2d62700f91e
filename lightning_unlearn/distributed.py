"""Collective helpers for plugins: values every process must agree on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    import lightning as L

    from lightning_unlearn.request import Request


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


def gather_request(trainer: L.Trainer, request: Request) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Every forget part of ``request`` (this one and any kept) and its protected inputs, from every process:
    ``(inputs, labels, targets or None, protected)``, so that a closed-form edit computes the same change everywhere.
    """
    xs, ys, ts = zip(*((x, y, t if t is not None else torch.full_like(y, -1)) for x, y, t in request.parts))
    x, y, t = (gather_rows(trainer, torch.cat(parts)) for parts in (xs, ys, ts))
    protected = gather_rows(trainer, torch.cat(request.protected) if request.protected else x[:0]).to(x.device)
    return x, y, (t if bool((t >= 0).any()) else None), protected
