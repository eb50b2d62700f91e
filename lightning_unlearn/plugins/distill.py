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
    import lightning as L

    from lightning_unlearn.module import UnlearningModule
    from lightning_unlearn.request import Request

RetainSource = Tensor | Dataset | DataLoader | Iterable[Any]


class RetainDistillation(HeldOutputs):
    """Hold the pre-trained outputs on a sample of the rest of the training data (logged as ``train/retain_distill``).

    The default request needs nothing but the forget set; a user who still has some of the other training data (it
    is in their DataModule) passes a sample here and the request keeps more accuracy: on digits, 5 % of the rest took
    the cost of forgetting 32 instances from 1.7 / 4.2 to 0.8 / 0.5 points (seeds 0 and 1, ``docs/benchmarks.md``).
    No labels are needed: the targets are the pre-trained model's own outputs. The inputs are read once at the start
    of each request, split across processes under DDP, and never written to checkpoints, logs or receipts.

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
        >>> type(callback.retain).__name__, callback.retain.weight
        ('RetainDistillation', 10.0)
    """

    name = "retain_distill"

    def __init__(self, retain: RetainSource, weight: float = 10.0, batch_size: int = 64) -> None:
        super().__init__(weight=weight, batch_size=batch_size, generator_offset=30)
        self._source = retain

    @override
    def make_inputs(self, request: Request, module: UnlearningModule, trainer: L.Trainer) -> Tensor:
        inputs = retained_inputs(self._source)
        return inputs[trainer.global_rank :: max(trainer.world_size, 1)].to(module.device)


def retained_inputs(source: RetainSource) -> Tensor:
    """The inputs of ``source`` stacked into one tensor (see :class:`RetainDistillation` for what it may be).

    Raises:
        ValueError: if ``source`` holds no input tensors.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> retained_inputs(TensorDataset(torch.rand(5, 3), torch.zeros(5))).shape
        torch.Size([5, 3])
    """
    if isinstance(source, Tensor):
        return source.detach()
    if isinstance(source, Dataset) and not isinstance(source, DataLoader) and hasattr(source, "__len__"):
        parts = [_first(source[i]).unsqueeze(0) for i in range(len(source))]
    else:
        parts = [_first(batch) for batch in source]  # type: ignore[union-attr]
    if not parts:
        raise ValueError("`retain` holds no inputs: pass a non-empty tensor, Dataset or DataLoader.")
    return torch.cat(parts).detach()


def _first(item: Any) -> Tensor:
    value = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(value, Tensor):
        raise ValueError(f"`retain` must yield tensors or (inputs, labels, ...) tuples, got {type(value).__name__}.")
    return value
