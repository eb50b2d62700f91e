"""Shifted copies of the forget instances: data-free stand-ins for the training data that looks like them.

Plain tensor code with no Lightning import. A forget instance that must be misclassified is usually a typical member of
its class; the test images that a request damages are the ones that look like it. Translating an image by a pixel or
a few gives inputs that look like it but are not it, and holding the pre-trained model's outputs on them keeps the
request from moving the boundary through its neighbours (measured in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def default_max_shift(inputs: Tensor) -> int:
    """The largest translation :func:`shifted_copies` uses by default: an eighth of the smaller image side, at least 1.

    Examples:
        >>> default_max_shift(torch.zeros(1, 1, 8, 8)), default_max_shift(torch.zeros(1, 3, 32, 32))
        (1, 4)
    """
    return max(1, round(min(inputs.shape[-2], inputs.shape[-1]) / 8))


def shifted_copies(
    inputs: Tensor,
    copies: int,
    max_shift: int,
    generator: torch.Generator | None = None,
    fill: float = 0.0,
) -> Tensor:
    """``copies`` translations of each image, each by a random non-zero offset of at most ``max_shift`` pixels per
    axis, the uncovered border filled with ``fill``.

    Args:
        inputs: ``[k, C, H, W]`` images.
        copies: translations per image.
        max_shift: largest offset per axis, in pixels (at least 1).
        generator: CPU generator of the offsets.
        fill: value of the pixels shifted in from outside the image.

    Returns:
        ``[k * copies, C, H, W]``, instance-major: the copies of image ``i`` are rows ``i * copies`` to
        ``(i + 1) * copies - 1``.

    Raises:
        ValueError: if ``inputs`` are not ``[k, C, H, W]`` images, or ``copies`` or ``max_shift`` is below 1.

    Examples:
        >>> image = torch.zeros(1, 1, 3, 3)
        >>> image[0, 0, 1, 1] = 1.0
        >>> out = shifted_copies(image, copies=8, max_shift=1, generator=torch.Generator().manual_seed(0))
        >>> out.shape, bool((out.sum(dim=(1, 2, 3)) == 1).all()), bool((out[:, 0, 1, 1] == 0).all())
        (torch.Size([8, 1, 3, 3]), True, True)
    """
    if inputs.dim() != 4:
        raise ValueError(f"`inputs` must be [k, C, H, W] images, got shape {tuple(inputs.shape)}.")
    if copies < 1:
        raise ValueError(f"`copies` must be >= 1, got {copies}.")
    if max_shift < 1:
        raise ValueError(f"`max_shift` must be >= 1, got {max_shift}.")
    x = inputs.repeat_interleave(copies, dim=0)
    n, c, h, w = x.shape
    side = 2 * max_shift + 1
    # a uniform draw over the side * side offsets except (0, 0)
    draw = torch.randint(0, side * side - 1, (n,), generator=generator)
    draw = draw + (draw >= side * side // 2).long()
    dy = (draw // side - max_shift).to(x.device)
    dx = (draw % side - max_shift).to(x.device)
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift), value=fill)
    rows = torch.arange(h, device=x.device)[None, :] + max_shift - dy[:, None]
    cols = torch.arange(w, device=x.device)[None, :] + max_shift - dx[:, None]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
