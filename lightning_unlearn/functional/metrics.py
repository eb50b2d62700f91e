"""The one definition of "unlearned" and of the forget counts, shared by the losses, the stop rule and the metrics.

:func:`is_unlearned` says which instances are unlearned; :func:`forget_counts` counts them (the update step of the
:class:`~lightning_unlearn.metrics.ForgetAccuracy` family); the functional metrics below compute from those counts, as
the ``Metric`` classes do from their summed states (the torchmetrics layout of shared update and compute steps).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def check_preds(preds: Tensor, labels: Tensor, name: str = "labels") -> None:
    """Raise unless ``preds`` and ``labels`` are 1-D tensors of the same length.

    Raises:
        ValueError: naming both shapes.

    Examples:
        >>> check_preds(torch.tensor([0, 1]), torch.tensor([1, 1]))
    """
    if preds.shape != labels.shape or preds.dim() != 1:
        raise ValueError(
            f"`preds` and `{name}` must be 1-D tensors of the same length, got {tuple(preds.shape)} and"
            f" {tuple(labels.shape)}."
        )


def as_preds(preds: Tensor) -> Tensor:
    """Predicted classes ``[B]`` from classes ``[B]`` or logits ``[B, C]``.

    Examples:
        >>> as_preds(torch.tensor([[0.1, 0.9], [2.0, 1.0]])).tolist()
        [1, 0]
    """
    return preds.argmax(-1) if preds.is_floating_point() and preds.dim() == 2 else preds


def is_unlearned(preds: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
    """Which instances are unlearned: predicted away from ``labels`` or, in relabel mode, predicted as ``targets``.

    Args:
        preds: ``[B, C]`` logits or ``[B]`` predicted classes.
        labels: ``[B]`` original labels.
        targets: ``[B]`` relabel targets, or ``None`` (misclassify mode). A target of ``-1`` means "misclassify" for
            that instance.

    Returns:
        A ``[B]`` boolean tensor.

    Examples:
        >>> logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
        >>> is_unlearned(logits, torch.tensor([0, 0])).tolist()
        [False, True]
        >>> is_unlearned(logits, torch.tensor([0, 0]), targets=torch.tensor([1, 2])).tolist()
        [False, False]
    """
    preds = as_preds(preds)
    away = preds != labels
    if targets is None:
        return away
    return torch.where(targets >= 0, preds == targets, away)


class ForgetCounts(NamedTuple):
    """Counts of one batch of forget instances (summed over batches and processes by the ``Metric`` classes).

    Attributes:
        total: instances.
        remembered: instances still predicted as their original label.
        relabel_total: instances with a relabel target.
        on_target: of those, instances predicted as their target.
        to_go: instances not yet unlearned (see :func:`is_unlearned`).
    """

    total: Tensor
    remembered: Tensor
    relabel_total: Tensor
    on_target: Tensor
    to_go: Tensor


def forget_counts(preds: Tensor, labels: Tensor, targets: Tensor | None = None) -> ForgetCounts:
    """The counts behind every forget metric (the shared update step).

    Args:
        preds: ``[B]`` predicted classes or ``[B, C]`` logits.
        labels: ``[B]`` original labels.
        targets: ``[B]`` relabel targets (``-1``: misclassify) or ``None``.

    Raises:
        ValueError: if the shapes do not match.

    Examples:
        >>> counts = forget_counts(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]), torch.tensor([-1, 2, 2]))
        >>> [int(c) for c in counts]
        [3, 1, 2, 1, 2]
    """
    preds = as_preds(preds)
    check_preds(preds, labels)
    if targets is None:
        targets = torch.full_like(labels, -1)
    check_preds(preds, targets, "targets")
    relabel = targets >= 0
    return ForgetCounts(
        total=torch.tensor(labels.numel(), device=labels.device),
        remembered=(preds == labels).sum(),
        relabel_total=relabel.sum(),
        on_target=(relabel & (preds == targets)).sum(),
        to_go=(~is_unlearned(preds, labels, targets)).sum(),
    )


def share(part: Tensor, whole: Tensor) -> Tensor:
    """``part / whole`` as a float scalar, ``nan`` when ``whole`` is zero (the shared compute step).

    Examples:
        >>> share(torch.tensor(1), torch.tensor(4)), share(torch.tensor(0), torch.tensor(0))
        (tensor(0.2500), tensor(nan))
    """
    if int(whole) == 0:
        return torch.tensor(float("nan"))
    return part.float() / whole


def forget_accuracy(preds: Tensor, labels: Tensor) -> Tensor:
    """Share of forget instances still predicted as their original label (falls to 0 as they are unlearned).

    Args:
        preds: ``[B]`` predicted classes or ``[B, C]`` logits.
        labels: ``[B]`` original labels.

    Returns:
        A scalar float tensor (``nan`` for an empty batch).

    Examples:
        >>> forget_accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 0]))
        tensor(0.5000)
    """
    counts = forget_counts(preds, labels)
    return share(counts.remembered, counts.total)


def target_accuracy(preds: Tensor, targets: Tensor) -> Tensor:
    """Share of relabelled instances predicted as their target; instances with target ``-1`` are ignored.

    Examples:
        >>> target_accuracy(torch.tensor([3, 1, 2]), torch.tensor([3, 2, -1]))
        tensor(0.5000)
    """
    counts = forget_counts(preds, torch.full_like(targets, -1), targets)
    return share(counts.on_target, counts.relabel_total)


def remaining(preds: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
    """How many instances are still to unlearn: predicted as their label, or (relabel mode) not yet as their target.

    Examples:
        >>> remaining(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]), torch.tensor([-1, 2, 2]))
        tensor(2)
    """
    return forget_counts(preds, labels, targets).to_go


def agreement(preds: Tensor, reference: Tensor) -> Tensor:
    """Share of predictions equal to a reference labelling (anchor agreement: the pre-trained model's labels).

    Examples:
        >>> agreement(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0]))
        tensor(0.7500)
    """
    preds = as_preds(preds)
    check_preds(preds, reference, "reference")
    return share((preds == reference).sum(), torch.tensor(reference.numel()))
