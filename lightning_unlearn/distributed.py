"""Collective helpers for plugins: values every process must agree on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from torch import Tensor

if TYPE_CHECKING:
    import lightning as L

    from lightning_unlearn.plugins.base import UnlearningPlugin
    from lightning_unlearn.request import Request

#: sharded strategies: each process holds a part of the weights, which the request's edits and checks cannot see whole
UNSUPPORTED_STRATEGIES = (FSDPStrategy, DeepSpeedStrategy, ModelParallelStrategy)


def check_strategy(trainer: L.Trainer) -> None:
    """Raise if the trainer's strategy shards the weights (:data:`UNSUPPORTED_STRATEGIES`).

    Raises:
        ValueError: naming the strategy and the ones supported.
    """
    if isinstance(trainer.strategy, UNSUPPORTED_STRATEGIES):
        raise ValueError(
            f"InstanceUnlearning does not support strategy {type(trainer.strategy).__name__}; use a data-parallel"
            " strategy ('ddp', 'ddp_spawn', 'ddp_fork') or a single device."
        )


def check_plugins_distributed(trainer: L.Trainer, plugins: list[UnlearningPlugin]) -> None:
    """Raise if the trainer runs several processes and a plugin does not support it.

    Raises:
        ValueError: naming the plugins and the world size.
    """
    single = [type(p).__name__ for p in plugins if not p.supports_distributed]
    if trainer.world_size > 1 and single:
        raise ValueError(f"plugins {single} do not support distributed training (world_size={trainer.world_size}).")


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
