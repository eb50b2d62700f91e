"""Copies of the forget instances that look like them without being them: data-free stand-ins for their neighbours.

Plain tensor code with no Lightning import. A forget instance that must be misclassified is usually a typical member of
its class; the inputs that a request damages are the ones that look like it. Translating an image (or a signal) by a
few pixels (samples) gives inputs that look like it but are not it, and holding the pre-trained model's outputs on them
keeps the request from moving the boundary through its neighbours (measured in ``docs/benchmarks.md``). A feature
vector has no axis to translate along: :func:`swapped_copies` takes a share of its features from other forget
instances instead (the marginal-resampling corruption of SCARF, Bahri et al. 2022). :func:`neighbour_copies` picks
the right one for the input's shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: share of a feature vector's entries :func:`swapped_copies` takes from another forget instance by default
DEFAULT_SWAP_FRACTION = 0.25


def default_max_shift(inputs: Tensor) -> int:
    """The largest translation :func:`shifted_copies` uses by default: an eighth of the smaller image side (of the
    length, for ``[N, C, L]`` signals), at least 1.

    Examples:
        >>> default_max_shift(torch.zeros(1, 1, 8, 8)), default_max_shift(torch.zeros(1, 3, 32, 32))
        (1, 4)
        >>> default_max_shift(torch.zeros(1, 1, 128))
        16
    """
    if inputs.dim() == 3:
        return max(1, round(inputs.shape[-1] / 8))
    return max(1, round(min(inputs.shape[-2], inputs.shape[-1]) / 8))


def feature_spread(inputs: Tensor, per_feature: bool | None = None) -> Tensor:
    """The spread of ``inputs`` (standard deviation over instances), shaped like one instance: per feature for
    ``[N, D]`` feature vectors (their features may have any scales; features that do not vary get a tenth of the
    median spread), one value for everything else (images and signals share one scale). Falls back to one value when
    fewer than two instances (or no variation) say more.

    Examples:
        >>> x = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
        >>> feature_spread(x).tolist()
        [1.4142135381698608, 14.142135620117188]
        >>> feature_spread(torch.zeros(3, 1, 4)).shape
        torch.Size([1, 4])
    """
    per_feature = inputs.dim() == 2 if per_feature is None else per_feature
    overall = inputs.float().std() if inputs.numel() > 1 else inputs.new_tensor(0.0)
    overall = overall if bool(overall > 0) else inputs.new_tensor(1.0)
    if not per_feature or inputs.shape[0] < 2:
        return overall.expand(inputs.shape[1:]).clone()
    spread = inputs.float().std(dim=0)
    floor = spread.median().clamp_min(0) * 0.1
    if not bool(floor > 0):
        return overall.expand(inputs.shape[1:]).clone()
    return spread.clamp_min(float(floor))


def swapped_copies(
    inputs: Tensor,
    copies: int,
    fraction: float = DEFAULT_SWAP_FRACTION,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``copies`` corruptions of each feature vector: a random ``fraction`` of its features replaced by the same
    features of another forget instance (SCARF's marginal resampling, restricted to the forget set). A single instance
    has no other to draw from: its copies get Gaussian noise of half the data's spread on the same share of features.

    Args:
        inputs: ``[k, D]`` feature vectors.
        copies: corruptions per instance.
        fraction: share of the features replaced, in ``(0, 1]``.
        generator: CPU generator of the draws.

    Returns:
        ``[k * copies, D]``, instance-major, each row different from its instance in at least one feature.

    Raises:
        ValueError: if ``inputs`` are not ``[k, D]``, ``copies`` is below 1 or ``fraction`` outside ``(0, 1]``.

    Examples:
        >>> x = torch.arange(8.0).view(2, 4)
        >>> out = swapped_copies(x, copies=3, generator=torch.Generator().manual_seed(0))
        >>> out.shape, bool(((out == x[0]) | (out == x[1])).all())
        (torch.Size([6, 4]), True)
    """
    if inputs.dim() != 2:
        raise ValueError(f"`inputs` must be [k, D] feature vectors, got shape {tuple(inputs.shape)}.")
    if copies < 1:
        raise ValueError(f"`copies` must be >= 1, got {copies}.")
    if not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction}.")
    k, d = inputs.shape
    x = inputs.repeat_interleave(copies, dim=0)
    n = x.shape[0]
    count = max(1, round(fraction * d))
    chosen = torch.rand(n, d, generator=generator).argsort(dim=1)[:, :count].to(x.device)
    mask = torch.zeros(n, d, dtype=torch.bool, device=x.device).scatter_(1, chosen, True)
    if k == 1:
        noise = torch.randn(n, d, generator=generator).to(x) * 0.5 * feature_spread(inputs)
        return torch.where(mask, x + noise, x)
    own = torch.arange(k).repeat_interleave(copies)
    partner = (own + torch.randint(1, k, (n,), generator=generator)) % k  # another instance, never itself
    donor = inputs[partner.to(x.device)]
    return torch.where(mask & (donor != x), donor, torch.where(mask, x + 0.5 * feature_spread(inputs), x))


def neighbour_copies(
    inputs: Tensor,
    copies: int,
    generator: torch.Generator | None = None,
    max_shift: int | None = None,
    fill: float = 0.0,
) -> Tensor:
    """Stand-ins for the neighbours of each forget instance, by input shape: translated copies of ``[k, C, H, W]``
    images and ``[k, C, L]`` signals (:func:`shifted_copies`, ``max_shift`` defaulting to
    :func:`default_max_shift`), feature swaps between ``[k, D]`` feature vectors (:func:`swapped_copies`).

    Raises:
        ValueError: for inputs of any other shape.

    Examples:
        >>> neighbour_copies(torch.rand(2, 1, 16), copies=5).shape
        torch.Size([10, 1, 16])
        >>> neighbour_copies(torch.rand(2, 6), copies=5).shape
        torch.Size([10, 6])
    """
    if inputs.dim() == 2:
        return swapped_copies(inputs, copies, generator=generator)
    if inputs.dim() not in (3, 4):
        raise ValueError(
            f"`inputs` must be [k, C, H, W] images, [k, C, L] signals or [k, D] feature vectors, got shape"
            f" {tuple(inputs.shape)}."
        )
    shift = max_shift if max_shift is not None else default_max_shift(inputs)
    return shifted_copies(inputs, copies, shift, generator=generator, fill=fill)


def shifted_copies(
    inputs: Tensor,
    copies: int,
    max_shift: int,
    generator: torch.Generator | None = None,
    fill: float = 0.0,
) -> Tensor:
    """``copies`` translations of each image (or signal), each by a random non-zero offset of at most ``max_shift``
    pixels per axis, the uncovered border filled with ``fill``.

    Args:
        inputs: ``[k, C, H, W]`` images, or ``[k, C, L]`` signals (translated along ``L``).
        copies: translations per image.
        max_shift: largest offset per axis, in pixels (at least 1).
        generator: CPU generator of the offsets.
        fill: value of the pixels shifted in from outside the image.

    Returns:
        ``[k * copies, ...]``, instance-major: the copies of input ``i`` are rows ``i * copies`` to
        ``(i + 1) * copies - 1``.

    Raises:
        ValueError: if ``inputs`` are not ``[k, C, H, W]`` or ``[k, C, L]``, or ``copies`` or ``max_shift`` is below 1.

    Examples:
        >>> image = torch.zeros(1, 1, 3, 3)
        >>> image[0, 0, 1, 1] = 1.0
        >>> out = shifted_copies(image, copies=8, max_shift=1, generator=torch.Generator().manual_seed(0))
        >>> out.shape, bool((out.sum(dim=(1, 2, 3)) == 1).all()), bool((out[:, 0, 1, 1] == 0).all())
        (torch.Size([8, 1, 3, 3]), True, True)
        >>> signal = torch.tensor([[[0.0, 1.0, 0.0]]])
        >>> shifted_copies(signal, copies=2, max_shift=1, generator=torch.Generator().manual_seed(0)).tolist()
        [[[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]]
    """
    if inputs.dim() not in (3, 4):
        raise ValueError(f"`inputs` must be [k, C, H, W] images or [k, C, L] signals, got shape {tuple(inputs.shape)}.")
    if copies < 1:
        raise ValueError(f"`copies` must be >= 1, got {copies}.")
    if max_shift < 1:
        raise ValueError(f"`max_shift` must be >= 1, got {max_shift}.")
    x = inputs.repeat_interleave(copies, dim=0)
    if x.dim() == 3:
        return _shifted_signals(x, max_shift, generator, fill)
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


def _shifted_signals(x: Tensor, max_shift: int, generator: torch.Generator | None, fill: float) -> Tensor:
    """Each ``[C, L]`` row of ``x`` translated along ``L`` by a non-zero offset of at most ``max_shift``."""
    n, c, length = x.shape
    draw = torch.randint(0, 2 * max_shift, (n,), generator=generator) - max_shift
    dx = (draw + (draw >= 0).long()).to(x.device)  # skip the offset 0
    padded = F.pad(x, (max_shift, max_shift), value=fill)
    cols = torch.arange(length, device=x.device)[None, :] + max_shift - dx[:, None]
    batch = torch.arange(n, device=x.device)[:, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None]
    return padded[batch, channel, cols[:, None, :]]
