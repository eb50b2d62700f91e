"""Forget and anchor losses: plain tensor code, no Lightning.

Every loss here is *bounded*: an instance that is already unlearned contributes nothing, so the optimiser never keeps
pushing a model away from where it should stay (the unbounded negative cross-entropy of the reference code does).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_unlearn.functional.metrics import is_unlearned

ForgetLossKind = Literal["runner_up", "margin", "neg_ce", "random_label"]
AnchorLossKind = Literal["ce", "kl"]

FORGET_LOSS_KINDS: tuple[str, ...] = ("runner_up", "margin", "neg_ce", "random_label")
ANCHOR_LOSS_KINDS: tuple[str, ...] = ("ce", "kl")


def runner_up_classes(logits: Tensor, labels: Tensor) -> Tensor:
    """The highest-scoring class other than ``labels``: the nearest class to move an instance to.

    Examples:
        >>> runner_up_classes(torch.tensor([[2.0, 1.0, 3.0]]), torch.tensor([2])).tolist()
        [0]
    """
    masked = logits.detach().clone()
    masked.scatter_(1, labels.unsqueeze(1), float("-inf"))
    return masked.argmax(dim=-1)


def forget_loss(
    logits: Tensor,
    labels: Tensor,
    targets: Tensor | None = None,
    kind: ForgetLossKind = "runner_up",
    margin: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The loss that unlearns a batch, summed over instances that are not yet unlearned and divided by the batch size.

    Misclassify mode (``targets`` is ``None`` or ``-1``):

    - ``"runner_up"``: cross-entropy toward the runner-up class (the smallest move away from the label);
    - ``"margin"``: hinge ``relu(z_label - max_{j != label} z_j + margin)``;
    - ``"neg_ce"``: negative cross-entropy on the label (the reference code's loss; bounded here by skipping instances
      that are already unlearned);
    - ``"random_label"``: cross-entropy toward a class drawn uniformly from the other classes at every call (the
      random-label fine-tuning baseline; Golatkar et al., 2020; Fan et al., 2024).

    Relabel mode: cross-entropy toward the target for every kind (``"margin"`` uses the hinge
    ``relu(max_{j != target} z_j - z_target + margin)``).

    Args:
        logits: ``[B, C]`` scores.
        labels: ``[B]`` original labels.
        targets: ``[B]`` relabel targets (``-1`` for none) or ``None``.
        kind: one of ``"runner_up"``, ``"margin"``, ``"neg_ce"``.
        margin: the hinge margin of ``kind="margin"``; also keeps pushing the other kinds until an instance is
            ``margin`` past the decision boundary.
        generator: CPU generator of ``kind="random_label"``'s draws.

    Returns:
        A scalar tensor (zero, with a graph, when every instance is unlearned).

    Raises:
        ValueError: if ``kind`` is unknown or ``margin`` is negative.

    Examples:
        >>> logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]], requires_grad=True)
        >>> loss = forget_loss(logits, torch.tensor([0, 0]))
        >>> round(loss.item(), 4)  # only the first instance still remembered: CE toward class 1, halved
        0.7038
    """
    if kind not in FORGET_LOSS_KINDS:
        raise ValueError(f"`kind` must be one of {FORGET_LOSS_KINDS}, got {kind!r}.")
    if margin < 0:
        raise ValueError(f"`margin` must be >= 0, got {margin}.")
    batch = logits.shape[0]
    if batch == 0:
        return logits.sum()
    relabel = targets >= 0 if targets is not None else torch.zeros_like(labels, dtype=torch.bool)
    safe_targets = torch.where(relabel, targets, labels) if targets is not None else labels
    active = ~_unlearned_with_margin(logits.detach(), labels, safe_targets, relabel, margin)
    runner_up = runner_up_classes(logits, labels)
    goal = torch.where(relabel, safe_targets, runner_up)
    if kind == "margin":
        per_instance = _margin_hinge(logits, labels, safe_targets, relabel, margin)
    elif kind == "random_label":
        shift = torch.randint(1, logits.shape[1], labels.shape, generator=generator).to(labels.device)
        random = torch.where(relabel, safe_targets, (labels + shift) % logits.shape[1])
        per_instance = F.cross_entropy(logits, random, reduction="none")
    elif kind == "runner_up":
        per_instance = F.cross_entropy(logits, goal, reduction="none")
    else:
        neg = -F.cross_entropy(logits, labels, reduction="none")
        per_instance = torch.where(relabel, F.cross_entropy(logits, goal, reduction="none"), neg)
    return (per_instance * active).sum() / batch


def _top_other(logits: Tensor, exclude: Tensor) -> Tensor:
    masked = logits.scatter(1, exclude.unsqueeze(1), float("-inf"))
    return masked.max(dim=-1).values


def _margin_hinge(logits: Tensor, labels: Tensor, targets: Tensor, relabel: Tensor, margin: float) -> Tensor:
    own = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    away = F.relu(own - _top_other(logits, labels) + margin)
    tgt = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    toward = F.relu(_top_other(logits, targets) - tgt + margin)
    return torch.where(relabel, toward, away)


def _unlearned_with_margin(logits: Tensor, labels: Tensor, targets: Tensor, relabel: Tensor, margin: float) -> Tensor:
    if margin > 0:
        return _margin_hinge(logits, labels, targets, relabel, margin) <= 0
    return is_unlearned(logits, labels, torch.where(relabel, targets, torch.full_like(targets, -1)))


def anchor_loss(logits: Tensor, reference: Tensor, kind: AnchorLossKind = "ce") -> Tensor:
    """Loss that holds the model's answers on adversarial anchors.

    Args:
        logits: ``[A, C]`` current scores on the anchors.
        reference: ``[A]`` hard labels (``kind="ce"``) or ``[A, C]`` pre-trained logits (``kind="kl"``, distilled with
            KL divergence to the pre-trained softmax).
        kind: ``"ce"`` or ``"kl"``.

    Returns:
        A scalar tensor, the mean over anchors.

    Raises:
        ValueError: if ``kind`` is unknown or ``reference`` has the wrong shape for it.

    Examples:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> round(anchor_loss(logits, torch.tensor([0, 1])).item(), 4)
        0.1269
        >>> round(anchor_loss(logits, logits, kind="kl").item(), 4)
        0.0
    """
    if kind not in ANCHOR_LOSS_KINDS:
        raise ValueError(f"`kind` must be one of {ANCHOR_LOSS_KINDS}, got {kind!r}.")
    if logits.shape[0] == 0:
        return logits.sum()
    if kind == "ce":
        if reference.dim() != 1:
            raise ValueError(f"`reference` must be [A] labels for kind='ce', got shape {tuple(reference.shape)}.")
        return F.cross_entropy(logits, reference)
    if reference.shape != logits.shape:
        raise ValueError(
            f"`reference` must be [A, C] logits like `logits` for kind='kl', got shape {tuple(reference.shape)}."
        )
    return F.kl_div(F.log_softmax(logits, -1), F.log_softmax(reference, -1), reduction="batchmean", log_target=True)
