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
