"""Small reference classifiers used by the demo, the benchmarks and the tests."""

from __future__ import annotations

from torch import nn


def small_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> nn.Sequential:
    """A three-convolution CNN with BatchNorm, sized for 8x8 to 32x32 images.

    Examples:
        >>> import torch
        >>> small_cnn()(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1),
        nn.BatchNorm2d(4 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


class SmallCNN(nn.Sequential):
    """:func:`small_cnn` as a class (for configuration files: ``class_path: lightning_unlearn.models.SmallCNN``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__(*small_cnn(num_classes, in_channels, width))


def cnn_no_bn(num_classes: int = 10, in_channels: int = 1, width: int = 32, dropout: float = 0.25) -> nn.Sequential:
    """:func:`small_cnn` without BatchNorm, with dropout: a second architecture for the benchmarks and tests.

    Examples:
        >>> import torch
        >>> cnn_no_bn()(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4 * width, num_classes),
    )


def mlp(num_classes: int = 10, in_features: int = 64, hidden: int = 256) -> nn.Sequential:
    """A two-hidden-layer perceptron on flattened images: a third architecture for the benchmarks and tests.

    Examples:
        >>> import torch
        >>> mlp()(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def lenet_bn(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """LeNet-5 with BatchNorm for 28x28 images (MNIST).

    Examples:
        >>> import torch
        >>> lenet_bn()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
