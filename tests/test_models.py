"""The reference classifiers: every one ends in a linear head; the ones without normalisation have none; each learns
its data when trained briefly."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_unlearn.datasets import load_digits_split
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.models import cnn1d, cnn_no_bn, lenet, lenet_bn, mlp, small_cnn, tabular_mlp
from lightning_unlearn.pretrain import train_classifier

NORMALISATION = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)

MODELS = {
    "small_cnn": (small_cnn, (2, 1, 8, 8), 10, True),
    "cnn_no_bn": (cnn_no_bn, (2, 1, 8, 8), 10, False),
    "mlp": (mlp, (2, 1, 8, 8), 10, False),
    "lenet_bn": (lenet_bn, (2, 1, 28, 28), 10, True),
    "lenet": (lenet, (2, 1, 28, 28), 10, False),
    "cnn1d": (cnn1d, (2, 1, 128), 3, False),
    "tabular_mlp": (lambda: tabular_mlp(13, 3), (2, 13), 3, False),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_models_end_in_a_linear_head_and_normalise_as_documented(name: str) -> None:
    make, shape, classes, normalised = MODELS[name]
    model = make()
    assert isinstance(list(model.modules())[-1], nn.Linear)
    assert model(torch.randn(*shape)).shape == (shape[0], classes)
    assert any(isinstance(m, NORMALISATION) for m in model.modules()) == normalised


def test_lenet_is_lenet_bn_without_its_batchnorm() -> None:
    plain = [tuple(p.shape) for p in lenet().parameters()]
    with_bn = [
        tuple(p.shape)
        for m in lenet_bn().modules()
        if not isinstance(m, nn.BatchNorm2d)
        for p in m.parameters(recurse=False)
    ]
    assert plain == with_bn


def test_cnn1d_takes_any_length_and_channels() -> None:
    model = cnn1d(num_classes=5, in_channels=3, width=8)
    assert model(torch.randn(4, 3, 8)).shape == (4, 5) and model(torch.randn(4, 3, 300)).shape == (4, 5)
    assert model[-1].in_features == 16


def test_tabular_mlp_depth() -> None:
    assert sum(isinstance(m, nn.Linear) for m in tabular_mlp(30, 2, hidden=16, depth=3).modules()) == 4
    with pytest.raises(ValueError, match=re.escape("`depth` must be >= 1, got 0.")):
        tabular_mlp(30, 2, depth=0)


def test_lenet_learns_digits_briefly() -> None:
    """LeNet without normalisation on the digits upsampled to 28x28: above 90 % after 5 short epochs (the benchmark
    trains it on MNIST-5k)."""
    split = load_digits_split()
    up = lambda x: F.interpolate(x, size=28, mode="bilinear", align_corners=False)  # noqa: E731
    torch.manual_seed(0)
    model = train_classifier(lenet(), up(split.x_train), split.y_train, epochs=5, lr=3e-3)
    assert accuracy(model, up(split.x_test), split.y_test) >= 0.9
