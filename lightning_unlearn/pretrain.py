"""Pre-training of the small reference classifiers (demo, benchmarks, tests), cached on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.io import atomic_save


def train_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` with Adam and cross-entropy (a plain loop: the thing unlearning starts from); returns it in
    eval mode. Each batch is moved to the device of the model's parameters (``x`` and ``y`` may stay on the CPU).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[index].to(device)), y[index].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def cache_dir() -> Path:
    """Where pre-trained demo models are cached: ``$LIGHTNING_UNLEARN_CACHE`` or ``~/.cache/lightning-unlearn``."""
    root = os.environ.get("LIGHTNING_UNLEARN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "lightning-unlearn"
    )
    return Path(root)


def cached_classifier(
    name: str,
    make_model: Callable[[], nn.Module],
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    cache: bool = True,
) -> nn.Module:
    """``make_model()`` (built after ``torch.manual_seed(seed)``) trained by :func:`train_classifier` on ``(x, y)``
    and saved as ``cache_dir() / name`` (written atomically); loaded from there instead when the file exists. Returned
    on ``device``, in eval mode.
    """
    torch.manual_seed(seed)
    model = make_model()
    path = cache_dir() / name
    if cache and path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.to(device).eval()
    train_classifier(model.to(device), x, y, epochs=epochs, seed=seed)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(model.state_dict(), path)
    return model


def pretrained_digits_cnn(seed: int = 0, epochs: int = 30, cache: bool = True) -> nn.Module:
    """The small CNN pre-trained on the digits training split (about 99 % test accuracy), cached after the first
    call.
    """
    from lightning_unlearn.datasets import load_digits_split
    from lightning_unlearn.models import small_cnn

    split = load_digits_split()
    name = f"digits_small_cnn_seed{seed}_ep{epochs}.pt"
    return cached_classifier(name, small_cnn, split.x_train, split.y_train, epochs=epochs, seed=seed, cache=cache)


def pretrained_signal_cnn(seed: int = 0, epochs: int = 20, cache: bool = True) -> nn.Module:
    """The small 1-D CNN (:func:`~lightning_unlearn.models.cnn1d`) pre-trained on the Cylinder-Bell-Funnel signals of
    :func:`~lightning_unlearn.datasets.load_cbf_split` (about 95 % test accuracy), cached after the first call.
    """
    from lightning_unlearn.datasets import load_cbf_split
    from lightning_unlearn.models import cnn1d

    split = load_cbf_split()
    name = f"cbf_cnn1d_seed{seed}_ep{epochs}.pt"
    return cached_classifier(name, cnn1d, split.x_train, split.y_train, epochs=epochs, seed=seed, cache=cache)


def pretrained_tabular_mlp(name: str = "digits_flat", seed: int = 0, epochs: int = 30, cache: bool = True) -> nn.Module:
    """The perceptron :func:`~lightning_unlearn.models.tabular_mlp` pre-trained on the standardised tabular set
    ``name`` of :func:`~lightning_unlearn.datasets.load_tabular_split` (``digits_flat``: about 97 % test accuracy;
    ``breast_cancer``: about 96 %), cached after the first call.
    """
    from lightning_unlearn.datasets import load_tabular_split
    from lightning_unlearn.models import tabular_mlp

    split = load_tabular_split(name)
    features, classes = split.x_train.shape[1], split.num_classes
    return cached_classifier(
        f"tabular_{name}_mlp_seed{seed}_ep{epochs}.pt",
        lambda: tabular_mlp(features, classes),
        split.x_train,
        split.y_train,
        epochs=epochs,
        seed=seed,
        cache=cache,
    )
