"""Forget requests as datasets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

NO_TARGET = -1
"""The target stored for an instance that is to be misclassified rather than relabelled."""


class ForgetSet(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """The instances of one unlearning request: inputs, their labels and, in relabel mode, their new targets.

    Items are ``(input, label, target)`` triples; ``target`` is ``-1`` (:data:`NO_TARGET`) in misclassify mode, so the
    default collate function batches both modes alike.

    Args:
        inputs: ``[k, ...]`` floating-point inputs, finite.
        labels: ``[k]`` integer labels (the training labels, or the pre-trained model's predictions).
        targets: optional ``[k]`` integer targets, each different from its label (relabel mode).

    Raises:
        ValueError: if the set is empty, shapes disagree, labels or targets are not 1-D integers, inputs are not
            finite floats, or a target is negative or equal to its label.

    Examples:
        >>> forget = ForgetSet(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
        >>> len(forget), forget.mode
        (4, 'misclassify')
        >>> forget[0][2].item()
        -1
        >>> ForgetSet(torch.rand(2, 3), torch.tensor([0, 1]), targets=torch.tensor([1, 0])).mode
        'relabel'
    """

    def __init__(self, inputs: Tensor, labels: Tensor, targets: Tensor | None = None) -> None:
        inputs, labels, targets = _validated(inputs, labels, targets)
        self.inputs = inputs
        self.labels = labels
        self.targets = targets if targets is not None else torch.full_like(labels, NO_TARGET)
        self.mode = "misclassify" if targets is None else "relabel"

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset[Any],
        indices: Sequence[int] | Tensor,
        targets: Sequence[int] | Tensor | None = None,
    ) -> ForgetSet:
        """Build a request from any map-style dataset whose items are ``(input, label, ...)``.

        Args:
            dataset: the training dataset.
            indices: positions of the instances to forget.
            targets: optional new labels, one per index (relabel mode).

        Raises:
            ValueError: if ``indices`` is empty, has duplicates or points outside the dataset, plus the checks of
                :class:`ForgetSet`.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.rand(10, 3), torch.arange(10) % 2)
            >>> ForgetSet.from_dataset(data, [1, 4]).labels.tolist()
            [1, 0]
        """
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        if idx.numel() == 0:
            raise ValueError("`indices` must name at least one instance, got an empty sequence.")
        if idx.unique().numel() != idx.numel():
            raise ValueError(f"`indices` must not repeat an instance, got {idx.tolist()}.")
        size = len(dataset)  # type: ignore[arg-type]
        if int(idx.min()) < 0 or int(idx.max()) >= size:
            raise ValueError(
                f"`indices` must lie in [0, {size}), got values from {int(idx.min())} to {int(idx.max())}."
            )
        items = [dataset[int(i)] for i in idx]
        inputs = torch.stack([torch.as_tensor(item[0]) for item in items])
        labels = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
        return cls(inputs, labels, None if targets is None else torch.as_tensor(targets))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.inputs[index], self.labels[index], self.targets[index]


def _validated(inputs: Tensor, labels: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        raise ValueError(f"`inputs` must be a floating-point tensor, got {_describe(inputs)}.")
    if inputs.shape[0] == 0:
        raise ValueError("`inputs` must hold at least one instance, got an empty tensor: a request needs instances.")
    if not torch.isfinite(inputs).all():
        raise ValueError("`inputs` must be finite, got NaN or infinite values.")
    labels = _integer_vector("labels", labels, inputs.shape[0])
    if int(labels.min()) < 0:
        raise ValueError(f"`labels` must be >= 0, got {int(labels.min())}.")
    if targets is not None:
        targets = _integer_vector("targets", targets, inputs.shape[0])
        if int(targets.min()) < 0:
            raise ValueError(f"`targets` must be >= 0, got {int(targets.min())}.")
        same = (targets == labels).nonzero().flatten()
        if same.numel():
            raise ValueError(
                f"`targets` must differ from `labels`; positions {same.tolist()} have target equal to label."
            )
    return inputs, labels, targets


def _integer_vector(name: str, value: Tensor, length: int) -> Tensor:
    value = torch.as_tensor(value)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"`{name}` must be an integer tensor, got dtype {value.dtype}.")
    if value.dim() != 1:
        raise ValueError(f"`{name}` must be 1-D ([k]), got shape {tuple(value.shape)}.")
    if value.shape[0] != length:
        raise ValueError(f"`{name}` must have one entry per input ({length}), got {value.shape[0]}.")
    return value.long()


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of dtype {value.dtype}"
    return type(value).__name__


def unpadded_shard_size(loader: object) -> int | None:
    """This process's share of the dataset without the repeats a padding ``DistributedSampler`` adds (``None`` when
    the loader has no such sampler).

    Examples:
        >>> from torch.utils.data import DataLoader
        >>> data = list(range(5))
        >>> unpadded_shard_size(DataLoader(data, sampler=DistributedSampler(data, num_replicas=2, rank=1)))
        2
    """
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):
        sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))  # type: ignore[arg-type]
