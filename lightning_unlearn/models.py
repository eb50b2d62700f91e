"""Small reference classifiers used by the demo, the benchmarks and the tests."""

from __future__ import annotations

from torch import nn


def small_cnn(
    num_classes: int = 10, in_channels: int = 1, width: int = 32, batchnorm: bool = True, dropout: float = 0.0
) -> nn.Sequential:
    """A three-convolution CNN, with BatchNorm after each convolution (``batchnorm``) and optional dropout before the
    last convolution and the head, sized for 8x8 to 32x32 images.

    Examples:
        >>> import torch
        >>> small_cnn()(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), *([nn.BatchNorm2d(c_out)] if batchnorm else []), nn.ReLU()]

    drop = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(
        *block(in_channels, width),
        *block(width, 2 * width),
        nn.MaxPool2d(2),
        *drop,
        *block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        *drop,
        nn.Linear(4 * width, num_classes),
    )


class SmallCNN(nn.Sequential):
    """:func:`small_cnn` as a class (for configuration files: ``class_path: lightning_unlearn.models.SmallCNN``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__(*small_cnn(num_classes, in_channels, width))


#: CIFAR-10's per-channel mean and standard deviation of ``[0, 1]`` images (the usual values)
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)


class NormalizedResNet18(nn.Sequential):
    """torchvision's ResNet-18 behind a per-channel normalisation layer, so that its inputs stay in ``[0, 1]`` (what
    ``PGDAnchors(input_range=(0, 1))`` and ``ShiftedCopies(fill=0.0)`` expect). The model of
    ``examples/04_cifar10_resnet18.py`` and of the shipped ``cifar10_resnet18`` config (``class_path:
    lightning_unlearn.models.NormalizedResNet18``): a state dict saved from one loads into the other.

    Examples:
        >>> import torch
        >>> NormalizedResNet18()(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ) -> None:
        from torchvision.models import resnet18
        from torchvision.transforms import Normalize

        super().__init__(Normalize(mean, std), resnet18(num_classes=num_classes))


def cnn_no_bn(num_classes: int = 10, in_channels: int = 1, width: int = 32, dropout: float = 0.25) -> nn.Sequential:
    """:func:`small_cnn` without BatchNorm, with dropout: a second architecture for the benchmarks and tests.

    Examples:
        >>> import torch
        >>> cnn_no_bn()(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return small_cnn(num_classes, in_channels, width, batchnorm=False, dropout=dropout)


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


def lenet(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """LeNet-5 without normalisation for 28x28 images (MNIST; the first convolution pads by 2, as for 32x32): the
    architecture of :func:`lenet_bn` without its BatchNorm layers, a second image classifier without normalisation
    next to :func:`cnn_no_bn` (max-pooling, two hidden linear layers, no dropout).

    Examples:
        >>> import torch
        >>> lenet()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def cnn1d(num_classes: int = 3, in_channels: int = 1, width: int = 32, kernel_size: int = 7) -> nn.Sequential:
    """A small 1-D CNN for signals ``[N, C, L]`` (any length >= 8): three Conv1d-ReLU-MaxPool blocks of ``width``,
    ``2 * width`` and ``2 * width`` channels, global average pooling and a linear head; no normalisation.

    Examples:
        >>> import torch
        >>> cnn1d()(torch.randn(2, 1, 128)).shape
        torch.Size([2, 3])
    """

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2), nn.ReLU(), nn.MaxPool1d(2)]

    return nn.Sequential(
        *block(in_channels, width),
        *block(width, 2 * width),
        *block(2 * width, 2 * width),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


def tabular_mlp(in_features: int, num_classes: int, hidden: int = 64, depth: int = 2) -> nn.Sequential:
    """A perceptron for feature vectors ``[N, D]``: ``depth`` hidden Linear-ReLU layers of ``hidden`` units and a linear
    head; no normalisation, no dropout.

    Raises:
        ValueError: if ``depth`` is smaller than 1.

    Examples:
        >>> import torch
        >>> tabular_mlp(13, 3)(torch.randn(2, 13)).shape
        torch.Size([2, 3])
    """
    if depth < 1:
        raise ValueError(f"`depth` must be >= 1, got {depth}.")
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else hidden, hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, num_classes))
