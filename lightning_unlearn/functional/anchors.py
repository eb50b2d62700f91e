"""Anchor generation: targeted PGD at several radii around each input, with the built-in PGD or torchattacks'
(:mod:`~lightning_unlearn.functional.backends`).

Plain tensor code with no Lightning import: the model's train/eval modes are saved and restored module by module, and
all randomness comes from the ``generator`` argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_unlearn.functional.backends import Rescaled, torchattacks_pgd
from lightning_unlearn.functional.neighbours import feature_spread
from lightning_unlearn.functional.pgd import Norm, eval_mode, other_classes, targeted_pgd

Attack = Callable[[Tensor, Tensor], Tensor]
#: L2 radii of ``eps=None`` for an 8x8 single-channel image with inputs in [0, 1]; scaled by sqrt(H * W / 64) and by
#: the width of the input range (or :data:`SPREAD_WIDTH` spreads of unbounded data) for other inputs (see
#: :func:`default_radii`).
DEFAULT_RADII: tuple[float, ...] = (0.5, 1.0, 2.0)
#: the width, in spreads of the data, that unbounded inputs take in place of a range's width (see
#: :func:`default_radii`)
SPREAD_WIDTH = 3.0


@dataclass
class AnchorPool:
    """Anchors of one request, on the model's device.

    Attributes:
        inputs: ``[A, ...]`` adversarial inputs.
        labels: ``[A]`` hard labels the anchors are trained with.
        logits: ``[A, C]`` the pre-trained model's logits on the anchors (the soft targets of ``loss="kl"``).
        attack_targets: ``[A]`` the class each anchor was pushed toward.
    """

    inputs: Tensor
    labels: Tensor
    logits: Tensor
    attack_targets: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def empty(cls, inputs: Tensor, num_classes: int) -> AnchorPool:
        """No anchors, shaped like ``inputs`` (an empty shard under DDP)."""
        labels = torch.empty(0, dtype=torch.long, device=inputs.device)
        return cls(inputs.new_empty((0, *inputs.shape[1:])), labels, inputs.new_empty((0, num_classes)), labels)

    @property
    def success_rate(self) -> float:
        """Share of anchors the pre-trained model assigns to their attack target."""
        if len(self) == 0:
            return 0.0
        return float((self.logits.argmax(-1) == self.attack_targets).float().mean())


def anchor_geometry(
    inputs: Tensor, input_range: tuple[float, float] | str | None = "auto"
) -> tuple[tuple[float, float] | None, Tensor | None]:
    """``(clamp range, spread)`` of the anchors of ``inputs``: with a bounded range (``input_range`` given, or
    ``"auto"`` on inputs inside ``[0, 1]``) the range and ``None``; unbounded, ``None`` and the data's spread
    (:func:`~lightning_unlearn.functional.neighbours.feature_spread`), the unit PGD then works in.

    Examples:
        >>> anchor_geometry(torch.rand(4, 1, 8, 8))
        ((0.0, 1.0), None)
    """
    if isinstance(input_range, tuple):
        return input_range, None
    if input_range == "auto" and inputs.numel() and float(inputs.min()) >= 0 and float(inputs.max()) <= 1:
        return (0.0, 1.0), None
    return None, feature_spread(inputs)


def default_radii(inputs: Tensor, norm: Norm, bounds: tuple[float, float] | None) -> tuple[float, ...]:
    """:data:`DEFAULT_RADII` scaled to ``inputs``: by ``sqrt(H * W / 64)`` (``H * W`` the size of one channel of one
    instance, or the feature count of ``[N, D]`` inputs) for ``norm="l2"``, divided by 8 for ``norm="linf"``, and by
    the width of the clamp range ``bounds`` in both cases. Unbounded inputs (``bounds=None``) are measured in units of
    their spread and take a width of :data:`SPREAD_WIDTH` spreads (a ``[0, 1]`` image's values spread over about a
    third of its range).

    The default radii were chosen on 8x8 digits; a fixed L2 radius shrinks per pixel as images grow, and the sweep in
    ``docs/benchmarks.md`` found the scaled radii best on both 8x8 digits and 32x32 MNIST.

    Examples:
        >>> default_radii(torch.zeros(1, 1, 8, 8), "l2", (0.0, 1.0)), default_radii(torch.zeros(1, 64), "linf", None)
        ((0.5, 1.0, 2.0), (0.1875, 0.375, 0.75))
    """
    width = SPREAD_WIDTH if bounds is None else bounds[1] - bounds[0]
    if norm == "linf":
        return tuple(width * r / 8 for r in DEFAULT_RADII)
    size = inputs[0, 0].numel() if inputs.dim() >= 3 else inputs[0].numel()
    return tuple(width * math.sqrt(size / 64) * r for r in DEFAULT_RADII)


def pgd_attack(
    model: nn.Module,
    *,
    norm: Norm,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool,
    generator: torch.Generator | None,
    bounds: tuple[float, float] | None,
    torchattacks_images: tuple[float, float] | None = None,
) -> Attack:
    """The targeted PGD of one radius as a function ``(inputs, targets) -> adversarial inputs``: torchattacks' for
    bounded ``[N, C, H, W]`` images (``torchattacks_images``: their range), the built-in one (clamped to ``bounds``, or
    unclamped for ``None``) otherwise.

    Examples:
        >>> attack = pgd_attack(nn.Linear(2, 2), norm="l2", eps=0.1, step_size=0.05, steps=3, random_start=False,
        ...                     generator=None, bounds=(0.0, 1.0))
        >>> attack(torch.full((3, 2), 0.5), torch.ones(3, dtype=torch.long)).shape
        torch.Size([3, 2])
    """
    if torchattacks_images is not None:
        return torchattacks_pgd(model, norm, eps, step_size, steps, random_start, generator, torchattacks_images)
    low, high = bounds if bounds is not None else (-math.inf, math.inf)

    def builtin(x: Tensor, t: Tensor) -> Tensor:
        return targeted_pgd(
            model,
            x,
            t,
            norm=norm,
            eps=eps,
            step_size=step_size,
            steps=steps,
            random_start=random_start,
            input_range=(low, high),
            generator=generator,
        )

    return builtin


def multi_radius_anchors(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    num_classes: int,
    radii: Sequence[float],
    per_instance: int,
    attack: Callable[[nn.Module, float], Attack],
    generator: torch.Generator | None = None,
    spread: Tensor | None = None,
    chunk_size: int = 2048,
) -> tuple[Tensor, Tensor, Tensor]:
    """``per_instance`` anchors for each input, spread evenly over ``radii`` (fewer anchors than radii: the first
    radii), each pushed toward a class drawn uniformly from the other classes, with the model in eval mode (each
    submodule's mode restored). With ``spread``, PGD works in units of the data's spread.

    Args:
        model: the classifier (not a DDP wrapper).
        inputs: ``[k, ...]`` inputs on the model's device.
        labels: ``[k]`` their labels.
        num_classes: number of classes ``C``.
        radii: the radii, in input units (in spreads with ``spread``).
        per_instance: anchors per input.
        attack: ``attack(model, eps)``: the PGD of one radius (see :func:`pgd_attack`).
        generator: CPU generator for the targets.
        spread: per-feature (or single) spread of the data, or ``None``.
        chunk_size: anchors attacked per PGD call (bounds memory).

    Returns:
        ``(anchors [k * per_instance, ...], the model's logits on them, attack targets)``, instance-major: the anchors
        of input ``i`` are rows ``i * per_instance`` to ``(i + 1) * per_instance``.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> def attack(model, eps):
        ...     return pgd_attack(model, norm="l2", eps=eps, step_size=eps / 4, steps=2, random_start=True,
        ...                       generator=None, bounds=(0.0, 1.0))
        >>> adv, logits, targets = multi_radius_anchors(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), 3,
        ...                                             (0.5, 1.0), 3, attack)
        >>> tuple(adv.shape), tuple(logits.shape), tuple(targets.shape)
        ((6, 1, 2, 2), (6, 3), (6,))
    """
    attacked = model if spread is None else Rescaled(model, 0.0, spread.to(inputs))
    source_all = inputs if spread is None else inputs / spread.to(inputs)
    groups = min(len(radii), per_instance)
    k, per = inputs.shape[0], per_instance
    targets = other_classes(labels.repeat_interleave(per, dim=0), num_classes, generator).view(k, per)
    adv_parts, logit_parts = [], []
    start = 0
    with eval_mode(model):
        for g, eps in enumerate(radii[:groups]):
            count = per // groups + (1 if g < per % groups else 0)
            source = source_all.repeat_interleave(count, dim=0)
            group_targets = targets[:, start : start + count].reshape(-1)
            run = attack(attacked, eps)
            advs = [run(x, t) for x, t in zip(source.split(chunk_size), group_targets.split(chunk_size))]
            adv = torch.cat(advs) if spread is None else torch.cat(advs) * spread.to(inputs)
            logits = torch.cat([model(chunk).float() for chunk in adv.split(chunk_size)])
            adv_parts.append(adv.view(k, count, *inputs.shape[1:]))
            logit_parts.append(logits.view(k, count, -1))
            start += count
    adv_all = torch.cat(adv_parts, dim=1).reshape(k * per, *inputs.shape[1:])
    logits_all = torch.cat(logit_parts, dim=1).reshape(k * per, -1)
    return adv_all, logits_all, targets.reshape(-1)
