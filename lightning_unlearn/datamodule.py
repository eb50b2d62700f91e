"""A LightningDataModule that serves a forget request: the forget set for training, retain/test sets for evaluation,
and a retained sample of the rest of the training set for the request to distil on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_unlearn.data import ForgetSet


def read_indices(path: str | os.PathLike[str]) -> list[int]:
    """Read forget indices from a file: a JSON list, or integers separated by whitespace or commas.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it holds anything but integers.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"indices file {str(file)!r} does not exist.")
    text = file.read_text().strip()
    try:
        values = json.loads(text) if text.startswith("[") else [int(v) for v in text.replace(",", " ").split()]
    except ValueError as error:
        raise ValueError(f"indices file {str(file)!r} must hold integers: {error}") from error
    return [int(v) for v in values]


def sample_retained_indices(
    size: int, forget_indices: Sequence[int], fraction: float, max_samples: int | None = None, seed: int = 0
) -> list[int]:
    """A seeded sample of the positions of a training set of ``size`` instances outside ``forget_indices``:
    ``fraction`` of them (at least one if ``fraction`` > 0), at most ``max_samples``, in increasing order.

    Raises:
        ValueError: if ``fraction`` is outside [0, 1] or ``max_samples`` is not positive.

    Examples:
        >>> sample_retained_indices(10, [0, 1, 2], fraction=0.5, seed=0)
        [3, 6, 7, 8]
        >>> sample_retained_indices(10, [0, 1, 2], fraction=0.0)
        []
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"`retain_fraction` must be in [0, 1], got {fraction}.")
    if max_samples is not None and max_samples <= 0:
        raise ValueError(f"`retain_max_samples` must be > 0 or None, got {max_samples}.")
    forget = set(int(i) for i in forget_indices)
    rest = [i for i in range(size) if i not in forget]
    count = min(max(round(fraction * len(rest)), 1), len(rest)) if fraction > 0 else 0
    count = count if max_samples is None else min(count, max_samples)
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))[:count]
    return sorted(rest[i] for i in order.tolist())


class InputsOnly(Dataset[Tensor]):
    """The inputs of a dataset's items ``(input, label, ...)``, without the labels.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> InputsOnly(TensorDataset(torch.zeros(3, 2), torch.arange(3)))[1]
        tensor([0., 0.])
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tensor:
        item = self.dataset[index]
        return item[0] if isinstance(item, (tuple, list)) else item


class ForgetRequestDataModule(L.LightningDataModule):
    """Serves one unlearning request built from any map-style dataset and the indices to forget.

    ``train_dataloader`` yields the forget set (a :class:`~lightning_unlearn.ForgetSet`); ``val_dataloader`` yields a
    dict ``{"retain": rest of the dataset, "test": test_dataset}`` (each optional) for the retain/test metrics. Under
    DDP, Lightning shards every loader with its distributed sampler.

    Because it holds the training set, it also offers a retained sample (:meth:`retain_sample`): the inputs of
    ``retain_fraction`` of the training instances outside the forget set, at most ``retain_max_samples``, drawn with
    ``retain_seed``. :class:`~lightning_unlearn.InstanceUnlearning` without a ``retain`` argument picks it up and
    distils the pre-trained outputs on it (each process reads its own share); ``retain_fraction=0``
    (``--data.retain_fraction 0``) turns it off for a forget-set-only request. The sample is read at the start of each
    request, never written to checkpoints, logs or receipts (receipts hold its size).

    Args:
        dataset: the training dataset (items ``(input, label, ...)``).
        forget_indices: the positions to forget, or the path of a file of indices (JSON list or whitespace-separated).
        targets: optional relabel targets, one per index.
        test_dataset: optional held-out dataset for ``test/acc``.
        evaluate_retain: serve the rest of ``dataset`` as the ``retain`` evaluation set.
        batch_size: forget batch size (``None``: the whole request in one batch).
        eval_batch_size: batch size of the evaluation loaders.
        num_workers: dataloader workers.
        retain_fraction: share of the training instances outside the forget set in the retained sample (0: none).
        retain_max_samples: the most instances in the retained sample (``None``: no cap).
        retain_seed: seed of the draw of the retained sample (the same on every process).

    Raises:
        ValueError: if ``batch_size`` or ``eval_batch_size`` is not positive, ``retain_fraction`` is outside [0, 1]
            or ``retain_max_samples`` is not positive.

    Examples:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.rand(10, 3), torch.arange(10) % 2)
        >>> dm = ForgetRequestDataModule(data, forget_indices=[0, 3])
        >>> dm.setup("fit")
        >>> len(dm.forget_set), sorted(dm.val_dataloader())
        (2, ['retain'])
        >>> dm.retain_indices, dm.retain_sample()[0].shape
        ([6], torch.Size([3]))
    """

    def __init__(
        self,
        dataset: Dataset,
        forget_indices: Sequence[int] | str,
        targets: Sequence[int] | None = None,
        test_dataset: Dataset | None = None,
        evaluate_retain: bool = True,
        batch_size: int | None = None,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        retain_fraction: float = 0.05,
        retain_max_samples: int | None = 1000,
        retain_seed: int = 0,
    ) -> None:
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"`batch_size` must be > 0 or None, got {batch_size}.")
        if eval_batch_size <= 0:
            raise ValueError(f"`eval_batch_size` must be > 0, got {eval_batch_size}.")
        sample_retained_indices(0, [], retain_fraction, retain_max_samples)  # checks the arguments
        super().__init__()
        self.dataset = dataset
        self.forget_indices = read_indices(forget_indices) if isinstance(forget_indices, str) else list(forget_indices)
        self.targets = None if targets is None else list(targets)
        self.test_dataset = test_dataset
        self.evaluate_retain = evaluate_retain
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.retain_fraction = retain_fraction
        self.retain_max_samples = retain_max_samples
        self.retain_seed = retain_seed
        self.forget_set: ForgetSet | None = None
        self._retain_indices: list[int] | None = None

    @property
    def train_size(self) -> int:
        """The number of instances in the training set (forget set included)."""
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def retain_indices(self) -> list[int]:
        """The positions of the retained sample in ``dataset`` (empty when ``retain_fraction`` is 0); never a forget
        index, the same on every process.
        """
        if self._retain_indices is None:
            self._retain_indices = sample_retained_indices(
                self.train_size, self.forget_indices, self.retain_fraction, self.retain_max_samples, self.retain_seed
            )
        return self._retain_indices

    def retain_sample(self) -> Dataset[Tensor] | None:
        """The inputs (no labels) of the retained sample, read lazily from ``dataset``; ``None`` without one.

        Pass it yourself with ``InstanceUnlearning(retain=datamodule.retain_sample())``; a callback without ``retain``
        picks it up from the Trainer's DataModule.
        """
        indices = self.retain_indices
        return InputsOnly(Subset(self.dataset, indices)) if indices else None

    def setup(self, stage: str) -> None:
        if self.forget_set is None:
            self.forget_set = ForgetSet.from_dataset(self.dataset, self.forget_indices, self.targets)

    def train_dataloader(self) -> DataLoader[Any]:
        assert self.forget_set is not None, "call setup() first"
        size = self.batch_size or len(self.forget_set)
        return DataLoader(self.forget_set, batch_size=size, shuffle=False, num_workers=self.num_workers)

    def val_dataloader(self) -> dict[str, DataLoader[Any]]:
        loaders: dict[str, DataLoader[Any]] = {}
        if self.evaluate_retain:
            forget = set(self.forget_indices)
            rest = [i for i in range(len(self.dataset)) if i not in forget]  # type: ignore[arg-type]
            loaders["retain"] = self._eval_loader(Subset(self.dataset, rest))
        if self.test_dataset is not None:
            loaders["test"] = self._eval_loader(self.test_dataset)
        return loaders

    def _eval_loader(self, dataset: Dataset[Any]) -> DataLoader[Any]:
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers)
