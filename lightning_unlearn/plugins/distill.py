"""Distillation of the pre-trained outputs on a sample of retained training data, for users who still hold some."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from lightning_unlearn.plugins.held import HeldOutputs

if TYPE_CHECKING:
    from lightning_unlearn.request import RequestContext

RetainSource = Tensor | Dataset | DataLoader | Iterable[Any]


class RetainDistillation(HeldOutputs):
    """Hold the pre-trained outputs on a sample of the rest of the training data (logged as ``train/retain_distill``).

    The default request needs nothing but the forget set; a user who still has some of the other training data (it
    is in their DataModule) passes a sample here and the request keeps more accuracy: on digits, 5 % of the rest took
    the cost of forgetting 32 instances from 1.7 / 4.2 to 0.8 / 0.5 points (seeds 0 and 1, ``docs/benchmarks.md``).
    No labels are needed: the targets are the pre-trained model's own outputs. The inputs are read once at the start
    of each request, split across processes under DDP (each process reads only its share of a ``Dataset``), and never
    written to checkpoints, logs or receipts: receipts hold :attr:`size`, the number of retained inputs.

    Args:
        retain: the retained sample: a tensor of inputs, a ``Dataset`` or an iterable of batches (a ``DataLoader``)
            whose items or batches are inputs or ``(inputs, labels, ...)``.
        weight: weight of the KL term.
        batch_size: retained inputs drawn per training step.

    Raises:
        ValueError: if an argument is outside its valid range.

    Examples:
        >>> from lightning_unlearn import InstanceUnlearning
        >>> callback = InstanceUnlearning(retain=torch.rand(70, 1, 8, 8))
        >>> type(callback.retain).__name__, callback.retain.weight, callback.retain.size
        ('RetainDistillation', 10.0, 70)
    """

    name = "retain_distill"

    def __init__(self, retain: RetainSource, weight: float = 10.0, batch_size: int = 64) -> None:
        super().__init__(weight=weight, batch_size=batch_size, generator_offset=30)
        self._source = retain
        #: retained inputs over all processes (written into receipts; ``None`` until a ``DataLoader`` source is read)
        self.size: int | None = _length(retain)

    @override
    def make_inputs(self, ctx: RequestContext) -> Tensor:
        trainer = ctx.trainer
        inputs, self.size = _read(self._source, trainer.global_rank, max(trainer.world_size, 1))
        return inputs.to(ctx.module.device)


def retained_inputs(source: RetainSource, rank: int = 0, world_size: int = 1) -> Tensor:
    """The inputs of ``source`` stacked into one tensor (see :class:`RetainDistillation` for what it may be): under
    DDP, process ``rank``'s share (every ``world_size``-th input from ``rank``), so the shards are disjoint and cover
    the sample. A ``Dataset`` is read for this share only.

    Raises:
        ValueError: if ``source`` holds no input tensors, or ``rank`` is not in ``[0, world_size)``.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> retained_inputs(TensorDataset(torch.rand(5, 3), torch.zeros(5))).shape
        torch.Size([5, 3])
        >>> retained_inputs(torch.arange(5.0), rank=1, world_size=2).tolist()
        [1.0, 3.0]
    """
    return _read(source, rank, world_size)[0]


def _read(source: RetainSource, rank: int, world_size: int) -> tuple[Tensor, int]:
    """Process ``rank``'s share of the inputs of ``source`` and their number over all processes."""
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"`rank` must be in [0, world_size={world_size}), got {rank}.")
    size = _length(source)
    if size == 0:
        raise ValueError("`retain` holds no inputs: pass a non-empty tensor, Dataset or DataLoader.")
    if isinstance(source, Tensor):
        return source.detach()[rank::world_size], len(source)
    if size is not None:  # a sized Dataset: read only this process's share
        dataset: Any = source
        share = range(rank, size, world_size)
        if not share:  # fewer inputs than processes: an empty pool shaped like the inputs
            return _first(dataset[0]).unsqueeze(0)[:0].detach(), size
        return torch.stack([_first(dataset[i]) for i in share]).detach(), size
    parts = [_first(batch) for batch in source]  # type: ignore[union-attr]
    if not parts:
        raise ValueError("`retain` holds no inputs: pass a non-empty tensor, Dataset or DataLoader.")
    inputs = torch.cat(parts).detach()
    return inputs[rank::world_size], len(inputs)


def _length(source: RetainSource) -> int | None:
    """The number of inputs of a tensor or a sized ``Dataset``; ``None`` for a ``DataLoader`` or other iterable."""
    if isinstance(source, Tensor):
        return len(source)
    if isinstance(source, Dataset) and not isinstance(source, DataLoader) and hasattr(source, "__len__"):
        return len(source)
    return None


def _first(item: Any) -> Tensor:
    value = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(value, Tensor):
        raise ValueError(f"`retain` must yield tensors or (inputs, labels, ...) tuples, got {type(value).__name__}.")
    return value
