"""A LightningDataModule that serves a forget request: the forget set for training, retain/test sets for evaluation."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
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


class ForgetRequestDataModule(L.LightningDataModule):
    """Serves one unlearning request built from any map-style dataset and the indices to forget.

    ``train_dataloader`` yields the forget set (a :class:`~lightning_unlearn.ForgetSet`); ``val_dataloader`` yields a
    dict ``{"retain": rest of the dataset, "test": test_dataset}`` (each optional) for the retain/test metrics. Under
    DDP, Lightning shards every loader with its distributed sampler.

    Args:
        dataset: the training dataset (items ``(input, label, ...)``).
        forget_indices: the positions to forget, or the path of a file of indices (JSON list or whitespace-separated).
        targets: optional relabel targets, one per index.
        test_dataset: optional held-out dataset for ``test/acc``.
        evaluate_retain: serve the rest of ``dataset`` as the ``retain`` evaluation set.
        batch_size: forget batch size (``None``: the whole request in one batch).
        eval_batch_size: batch size of the evaluation loaders.
        num_workers: dataloader workers.

    Raises:
        ValueError: if ``batch_size`` or ``eval_batch_size`` is not positive.

    Examples:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.rand(10, 3), torch.arange(10) % 2)
        >>> dm = ForgetRequestDataModule(data, forget_indices=[0, 3])
        >>> dm.setup("fit")
        >>> len(dm.forget_set), sorted(dm.val_dataloader())
        (2, ['retain'])
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
    ) -> None:
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"`batch_size` must be > 0 or None, got {batch_size}.")
        if eval_batch_size <= 0:
            raise ValueError(f"`eval_batch_size` must be > 0, got {eval_batch_size}.")
        super().__init__()
        self.dataset = dataset
        self.forget_indices = read_indices(forget_indices) if isinstance(forget_indices, str) else list(forget_indices)
        self.targets = None if targets is None else list(targets)
        self.test_dataset = test_dataset
        self.evaluate_retain = evaluate_retain
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.forget_set: ForgetSet | None = None

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
