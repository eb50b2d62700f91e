"""Readers of the datasets that the benchmarks use: CIFAR-10's python batches from a local folder, MNIST-5k, the
Cylinder-Bell-Funnel signals and scikit-learn's tabular sets (shapes, ranges, determinism, and how hard each is)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from lightning_unlearn.datasets import (
    CIFAR10_FILES,
    TABULAR,
    cylinder_bell_funnel,
    load_cbf_split,
    load_cifar10_split,
    load_digits_split,
    load_mnist5k_split,
    load_tabular_split,
)
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.models import cnn1d, tabular_mlp
from lightning_unlearn.pretrain import train_classifier


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


def test_mnist5k_split_is_stratified_scaled_and_padded() -> None:
    split = load_mnist5k_split()
    assert split.x_train.shape == (4000, 1, 28, 28) and split.x_test.shape == (1000, 1, 28, 28)
    assert split.y_test.bincount().tolist() == [100] * 10  # 20 % of each class's 500
    assert float(split.x_train.min()) == 0.0 and float(split.x_train.max()) == 1.0
    padded = load_mnist5k_split(size=32)
    assert padded.x_train.shape == (4000, 1, 32, 32)
    assert torch.equal(padded.x_train[:, :, 2:30, 2:30], split.x_train)
    assert float(padded.x_train[:, :, :2].abs().sum()) == 0.0


def test_cbf_shapes_are_the_classic_ones_without_noise() -> None:
    x, y = cylinder_bell_funnel(300, noise=0.0, seed=3)
    assert x.shape == (300, 1, 128) and y.tolist() == [0, 1, 2] * 100
    for series, label in zip(x[:, 0], y.tolist()):
        support = (series != 0).nonzero().flatten()
        # the bell is 0 at its start a, the funnel at its end b
        a, b = int(support[0]) - (label == 1), int(support[-1]) + (label == 2)
        assert 16 <= a <= 32 and 32 <= b - a <= 96  # a ~ U{16..32}, b - a ~ U{32..96}
        plateau = series[a : b + 1]
        if label == 0:  # cylinder: flat
            assert torch.allclose(plateau, plateau[0].expand_as(plateau))
        elif label == 1:  # bell: rising
            assert bool((plateau.diff() >= 0).all()) and float(plateau[-1]) > float(plateau[0])
        else:  # funnel: falling
            assert bool((plateau.diff() <= 0).all()) and float(plateau[-1]) < float(plateau[0])


def test_cbf_warp_bends_time_but_keeps_each_shape_monotone() -> None:
    x, _ = cylinder_bell_funnel(30, noise=0.0, seed=1)
    warped, _ = cylinder_bell_funnel(30, noise=0.0, warp=1.0, seed=1)
    assert not torch.equal(x, warped)
    for i, series in enumerate(warped[:, 0]):
        plateau = series[series != 0]
        if i % 3 == 1:
            assert bool((plateau.diff() >= 0).all())
        elif i % 3 == 2:
            assert bool((plateau.diff() <= 0).all())


def test_cbf_split_is_balanced_standardised_and_deterministic() -> None:
    split = load_cbf_split()
    assert split.x_train.shape == (1500, 1, 128) and split.x_test.shape == (500, 1, 128)
    assert split.num_classes == 3 and split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.y_train.bincount().tolist() == [500, 500, 500] and split.y_test.bincount().tolist() == [167, 167, 166]
    everything = torch.cat([split.x_train, split.x_test])
    assert torch.allclose(everything.mean(dim=-1), torch.zeros(2000, 1), atol=1e-5)
    assert torch.allclose(everything.std(dim=-1), torch.ones(2000, 1), atol=1e-5)
    assert -5.0 < float(everything.min()) < -2.0 and 2.0 < float(everything.max()) < 5.0  # roughly [-4, 4]
    again, other = load_cbf_split(), load_cbf_split(seed=1)
    assert torch.equal(again.x_train, split.x_train) and torch.equal(again.x_test, split.x_test)
    assert not torch.equal(other.x_train, split.x_train)


def test_cbf_split_names_bad_sizes() -> None:
    with pytest.raises(ValueError, match=re.escape("`n_train` and `n_test` must be >= 3, got 2 and 10.")):
        load_cbf_split(n_train=2, n_test=10)
    with pytest.raises(ValueError, match=re.escape("`length` must be >= 16, got 8.")):
        load_cbf_split(length=8)


def test_cbf_default_noise_is_harder_than_the_classic_task() -> None:
    """The same brief training of a small 1-D CNN: the classic task (noise 1) is nearly solved, the default (2.5) is
    not, so a pre-trained classifier keeps room to show damage (the full recipe reaches about 95 %)."""
    accuracies = []
    for noise in (1.0, 2.5):
        split = load_cbf_split(n_train=300, n_test=300, noise=noise)
        torch.manual_seed(0)
        model = train_classifier(cnn1d(width=16), split.x_train, split.y_train, epochs=10, lr=3e-3)
        accuracies.append(accuracy(model, split.x_test, split.y_test))
    assert accuracies[0] >= 0.9
    assert 0.5 <= accuracies[1] < accuracies[0]


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [("wine", (142, 13), 3), ("breast_cancer", (455, 30), 2), ("digits_flat", (1437, 64), 10)],
)
def test_tabular_split_is_stratified_and_standardised(name: str, shape: tuple[int, int], classes: int) -> None:
    split = load_tabular_split(name)
    assert split.x_train.shape == shape and split.x_test.shape[1] == shape[1] and split.num_classes == classes
    assert len(split.y_train) + len(split.y_test) == {"wine": 178, "breast_cancer": 569, "digits_flat": 1797}[name]
    counts = split.y_train.bincount().float() + split.y_test.bincount().float()
    assert torch.allclose(split.y_test.bincount().float() / counts, torch.full((classes,), 0.2), atol=0.03)
    varying = split.x_train.std(dim=0) > 0
    assert torch.allclose(split.x_train.mean(dim=0), torch.zeros(shape[1]), atol=1e-5)
    assert torch.allclose(split.x_train.std(dim=0)[varying], torch.ones(int(varying.sum())), atol=1e-5)
    assert torch.equal(load_tabular_split(name).x_test, split.x_test)
    assert not torch.equal(load_tabular_split(name, seed=1).y_train, split.y_train)


def test_tabular_digits_keep_the_image_split() -> None:
    flat, images = load_tabular_split("digits_flat"), load_digits_split()
    assert torch.equal(flat.y_train, images.y_train) and torch.equal(flat.y_test, images.y_test)
    # standardising is increasing per feature: the order of each pixel's values is the order of the images' values
    pixel = 20
    assert torch.equal(
        flat.x_train[:, pixel].argsort(stable=True), images.x_train.flatten(1)[:, pixel].argsort(stable=True)
    )


def test_tabular_split_names_the_valid_sets() -> None:
    with pytest.raises(ValueError, match=re.escape(f"`name` must be one of {TABULAR}, got 'iris'.")):
        load_tabular_split("iris")


@pytest.mark.parametrize(
    ("name", "epochs", "least"), [("wine", 20, 0.95), ("breast_cancer", 20, 0.93), ("digits_flat", 10, 0.93)]
)
def test_tabular_mlp_learns_each_set(name: str, epochs: int, least: float) -> None:
    split = load_tabular_split(name)
    torch.manual_seed(0)
    model = train_classifier(
        tabular_mlp(split.x_train.shape[1], split.num_classes), split.x_train, split.y_train, epochs=epochs
    )
    assert accuracy(model, split.x_test, split.y_test) >= least
