"""Functional twins of the metrics in :mod:`lightning_unlearn.metrics`: plain tensor code on predictions."""

from __future__ import annotations

import torch
from torch import Tensor


def _validate(preds: Tensor, labels: Tensor, name: str = "labels") -> None:
    if preds.shape != labels.shape or preds.dim() != 1:
        raise ValueError(
            f"`preds` and `{name}` must be 1-D tensors of the same length, got {tuple(preds.shape)} and"
            f" {tuple(labels.shape)}."
        )


def _as_preds(preds: Tensor) -> Tensor:
    return preds.argmax(-1) if preds.is_floating_point() and preds.dim() == 2 else preds


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
    preds = _as_preds(preds)
    _validate(preds, labels)
    if preds.numel() == 0:
        return torch.tensor(float("nan"))
    return (preds == labels).float().mean()


def target_accuracy(preds: Tensor, targets: Tensor) -> Tensor:
    """Share of relabelled instances predicted as their target; instances with target ``-1`` are ignored.

    Examples:
        >>> target_accuracy(torch.tensor([3, 1, 2]), torch.tensor([3, 2, -1]))
        tensor(0.5000)
    """
    preds = _as_preds(preds)
    _validate(preds, targets, "targets")
    relabel = targets >= 0
    if not bool(relabel.any()):
        return torch.tensor(float("nan"))
    return (preds[relabel] == targets[relabel]).float().mean()


def remaining(preds: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
    """How many instances are still to unlearn: predicted as their label, or (relabel mode) not yet as their target.

    Examples:
        >>> remaining(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]), torch.tensor([-1, 2, 2]))
        tensor(2)
    """
    preds = _as_preds(preds)
    _validate(preds, labels)
    if targets is None:
        return (preds == labels).sum()
    _validate(preds, targets, "targets")
    return torch.where(targets >= 0, preds != targets, preds == labels).sum()


def agreement(preds: Tensor, reference: Tensor) -> Tensor:
    """Share of predictions equal to a reference labelling (anchor agreement: the pre-trained model's labels).

    Examples:
        >>> agreement(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0]))
        tensor(0.7500)
    """
    preds = _as_preds(preds)
    _validate(preds, reference, "reference")
    if preds.numel() == 0:
        return torch.tensor(float("nan"))
    return (preds == reference).float().mean()
