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


# variables a distributed launcher may have left in the environment: a child must start as a fresh launch
DDP_ENV = {
    "MASTER_ADDR",
    "MASTER_PORT",
    "LOCAL_RANK",
    "NODE_RANK",
    "GLOBAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "PL_GLOBAL_SEED",
    "PL_TRAINER_GPUS",
}


def fresh_launch_env() -> dict[str, str]:
    """The environment without :data:`DDP_ENV`, with the repository on ``PYTHONPATH``, for script subprocesses."""
    import os
    from pathlib import Path

    env = {key: value for key, value in os.environ.items() if key not in DDP_ENV}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def quiet_trainer_kwargs() -> dict[str, object]:
    return {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
        "devices": 1,
    }
