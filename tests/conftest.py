"""Shared fixtures: real data (scikit-learn digits) and a small CNN pre-trained on it once per session."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lightning_unlearn.datasets import Split, load_digits_split
from lightning_unlearn.pretrain import pretrained_digits_cnn

torch.set_num_threads(1)  # tiny models: one thread is fastest and keeps two test processes from oversubscribing


@pytest.fixture(scope="session")
def digits() -> Split:
    return load_digits_split()


@pytest.fixture(scope="session")
def _pretrained_digits() -> nn.Module:
    return pretrained_digits_cnn()


@pytest.fixture
def digits_cnn(_pretrained_digits: nn.Module) -> nn.Module:
    """A fresh copy of the pre-trained digits CNN (about 99 % test accuracy), in eval mode."""
    return copy.deepcopy(_pretrained_digits).eval()


def forget_indices(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """The benchmark's choice of forget set: the first ``k`` of a seeded permutation of the training indices."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]


def quiet_trainer_kwargs() -> dict[str, object]:
    return {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
        "devices": 1,
    }
