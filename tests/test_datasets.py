"""Readers of the datasets that the benchmarks use: CIFAR-10's python batches from a local folder."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from lightning_unlearn.datasets import CIFAR10_FILES, load_cifar10_split


def write_cifar10_folder(root: Path, per_batch: int) -> dict[str, tuple[torch.Tensor, list[int]]]:
    """A ``cifar-10-batches-py`` folder in the format of the real one (rows of 3,072 bytes: the red plane, then green,
    then blue, each 32x32 row-major; labels a list of ints), with ``per_batch`` images per file; returns what was
    written per file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for offset, name in enumerate(CIFAR10_FILES["train"] + CIFAR10_FILES["test"]):
        data = (torch.arange(per_batch * 3072) * 7 + offset).remainder(256).to(torch.uint8).view(per_batch, 3072)
        labels = [(i + offset) % 10 for i in range(per_batch)]
        with (folder / name).open("wb") as handle:
            pickle.dump({"data": data.numpy(), "labels": labels, "batch_label": name}, handle)
        written[name] = (data, labels)
    return written


def test_cifar10_reader_keeps_pixels_channels_and_labels(tmp_path: Path) -> None:
    written = write_cifar10_folder(tmp_path, per_batch=4)
    split = load_cifar10_split(tmp_path)
    assert split.x_train.shape == (20, 3, 32, 32) and split.x_test.shape == (4, 3, 32, 32)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    first, labels = written["data_batch_1"]
    # pixel (channel c, row r, column q) of image i is byte c * 1024 + r * 32 + q of row i
    assert torch.equal(split.x_train[1, 2, 3, 4], first[1, 2 * 1024 + 3 * 32 + 4].float() / 255)
    assert torch.equal(split.x_train[:4] * 255, first.view(4, 3, 32, 32).float())
    assert split.y_train[:4].tolist() == labels
    test_data, test_labels = written["test_batch"]
    assert torch.equal(split.x_test * 255, test_data.view(4, 3, 32, 32).float())
    assert split.y_test.tolist() == test_labels


def test_cifar10_reader_names_the_missing_file(tmp_path: Path) -> None:
    expected = str(tmp_path / "cifar-10-batches-py" / "data_batch_1")
    message = f"CIFAR-10 batch {expected!r} not found: `data_dir` must hold the extracted 'cifar-10-batches-py'"
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        load_cifar10_split(tmp_path)
