"""Forget and anchor losses, ``is_unlearned`` and ``runner_up_classes`` against hand-computed values."""

from __future__ import annotations

import math
import re

import pytest
import torch

from lightning_unlearn.functional.losses import anchor_loss, forget_loss, is_unlearned, runner_up_classes

# Three instances, three classes. Instance 0 is predicted as its label 0 (remembered, runner-up class 1), instance 1
# is already predicted away from its label 0 (class 1), instance 2 is predicted as its label 2 (runner-up class 0).
LOGITS = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 4.0]]
LABELS = [0, 0, 2]
# Relabel targets: instance 0 -> 2 (not there yet), instance 1 -> 1 (already there), instance 2 -> 1 (not there yet).
TARGETS = [2, 1, 1]


def _lse(row: list[float]) -> float:
    return math.log(sum(math.exp(v) for v in row))


def _ce(row: list[float], cls: int) -> float:
    return _lse(row) - row[cls]


def _logits() -> torch.Tensor:
    return torch.tensor(LOGITS, requires_grad=True)


# ---------------------------------------------------------------------------------------------- forget_loss values
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("runner_up", (_ce(LOGITS[0], 1) + _ce(LOGITS[2], 0)) / 3),
        ("margin", ((2.0 - 1.0) + (4.0 - 1.0)) / 3),
        ("neg_ce", (-_ce(LOGITS[0], 0) - _ce(LOGITS[2], 2)) / 3),
    ],
)
def test_forget_loss_misclassify_values(kind: str, expected: float) -> None:
    loss = forget_loss(_logits(), torch.tensor(LABELS), kind=kind)  # type: ignore[arg-type]
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # targets of -1 everywhere are misclassify mode too
    loss_minus_one = forget_loss(_logits(), torch.tensor(LABELS), torch.full((3,), -1), kind=kind)  # type: ignore[arg-type]
    assert loss_minus_one.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("runner_up", (_ce(LOGITS[0], 2) + _ce(LOGITS[2], 1)) / 3),
        ("neg_ce", (_ce(LOGITS[0], 2) + _ce(LOGITS[2], 1)) / 3),
        # hinge max_{j != t} z_j - z_t: instance 0: 2 - 0, instance 2: 4 - 0
        ("margin", (2.0 + 4.0) / 3),
    ],
)
def test_forget_loss_relabel_values(kind: str, expected: float) -> None:
    loss = forget_loss(_logits(), torch.tensor(LABELS), torch.tensor(TARGETS), kind=kind)  # type: ignore[arg-type]
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["runner_up", "margin", "neg_ce"])
def test_forget_loss_mixed_targets(kind: str) -> None:
    # instance 0 misclassify, instance 2 relabel to 1: the sum of the two modes' terms
    targets = torch.tensor([-1, -1, 1])
    loss = forget_loss(_logits(), torch.tensor(LABELS), targets, kind=kind)  # type: ignore[arg-type]
    first = {"runner_up": _ce(LOGITS[0], 1), "margin": 1.0, "neg_ce": -_ce(LOGITS[0], 0)}[kind]
    third = {"runner_up": _ce(LOGITS[2], 1), "margin": 4.0, "neg_ce": _ce(LOGITS[2], 1)}[kind]
    assert loss.item() == pytest.approx((first + third) / 3, rel=1e-6)


@pytest.mark.parametrize("kind", ["runner_up", "margin", "neg_ce"])
@pytest.mark.parametrize("relabel", [False, True])
def test_forget_loss_gradients_only_on_active_instances(kind: str, relabel: bool) -> None:
    logits = _logits()
    targets = torch.tensor(TARGETS) if relabel else None
    forget_loss(logits, torch.tensor(LABELS), targets, kind=kind).backward()  # type: ignore[arg-type]
    assert logits.grad is not None
    assert torch.equal(logits.grad[1], torch.zeros(3))  # instance 1 is already unlearned
    assert logits.grad[0].abs().sum() > 0
    assert logits.grad[2].abs().sum() > 0


@pytest.mark.parametrize("kind", ["runner_up", "margin", "neg_ce"])
@pytest.mark.parametrize("relabel", [False, True])
def test_forget_loss_unlearned_instances_contribute_nothing(kind: str, relabel: bool) -> None:
    labels, targets = torch.tensor(LABELS), torch.tensor(TARGETS)
    # only instance 0, and instance 0 next to the unlearned instance 1: same sum, batch size 1 vs 2
    alone = forget_loss(_logits()[:1], labels[:1], targets[:1] if relabel else None, kind=kind)  # type: ignore[arg-type]
    pair = forget_loss(_logits()[:2], labels[:2], targets[:2] if relabel else None, kind=kind)  # type: ignore[arg-type]
    assert pair.item() * 2 == pytest.approx(alone.item(), rel=1e-6)
    # a batch of unlearned instances only: exactly zero, but still part of the graph
    logits = _logits()
    done = forget_loss(logits[1:2], labels[1:2], targets[1:2] if relabel else None, kind=kind)  # type: ignore[arg-type]
    assert done.item() == 0.0
    assert done.requires_grad
    done.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 3))


def test_forget_loss_margin_keeps_pushing_until_past_the_margin() -> None:
    # predicted away from label 0 by 0.5 only: unlearned with margin 0, still active with margin 2
    logits = torch.tensor([[1.0, 1.5, 0.0]], requires_grad=True)
    labels = torch.tensor([0])
    assert forget_loss(logits, labels, kind="runner_up").item() == 0.0
    assert forget_loss(logits, labels, kind="margin", margin=2.0).item() == pytest.approx(1.0 - 1.5 + 2.0)
    assert forget_loss(logits, labels, kind="runner_up", margin=2.0).item() == pytest.approx(_ce([1.0, 1.5, 0.0], 1))
    # past the margin: nothing left to do
    far = torch.tensor([[0.0, 3.0, 0.0]])
    assert forget_loss(far, labels, kind="margin", margin=2.0).item() == 0.0


def test_forget_loss_empty_batch() -> None:
    logits = torch.zeros(0, 3, requires_grad=True)
    loss = forget_loss(logits, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    assert loss.requires_grad


def test_forget_loss_errors() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("`kind` must be one of ('runner_up', 'margin', 'neg_ce', 'random_label'), got 'ce'."),
    ):
        forget_loss(_logits(), torch.tensor(LABELS), kind="ce")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("`margin` must be >= 0, got -0.5.")):
        forget_loss(_logits(), torch.tensor(LABELS), margin=-0.5)


# ---------------------------------------------------------------------------------------------- anchor_loss
def test_anchor_loss_ce_value() -> None:
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 0.5]])
    labels = torch.tensor([2, 1])
    expected = (_ce([2.0, 0.0, 1.0], 2) + _ce([0.0, 2.0, 0.5], 1)) / 2
    assert anchor_loss(logits, labels, kind="ce").item() == pytest.approx(expected, rel=1e-6)


def test_anchor_loss_kl_value() -> None:
    current = [[2.0, 0.0, 1.0], [0.0, 2.0, 0.5]]
    reference = [[1.0, 1.0, 0.0], [0.0, 3.0, 0.0]]

    def softmax(row: list[float]) -> list[float]:
        z = sum(math.exp(v) for v in row)
        return [math.exp(v) / z for v in row]

    # KL(p_reference || p_current), summed over classes, averaged over anchors
    expected = 0.0
    for cur, ref in zip(current, reference):
        p, q = softmax(ref), softmax(cur)
        expected += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    expected /= 2
    value = anchor_loss(torch.tensor(current), torch.tensor(reference), kind="kl").item()
    assert value == pytest.approx(expected, rel=1e-5)
    assert anchor_loss(torch.tensor(current), torch.tensor(current), kind="kl").item() == pytest.approx(0.0, abs=1e-7)


def test_anchor_loss_errors() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match=re.escape("`kind` must be one of ('ce', 'kl'), got 'mse'.")):
        anchor_loss(logits, torch.tensor([0, 1]), kind="mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("`reference` must be [A] labels for kind='ce', got shape (2, 2).")):
        anchor_loss(logits, logits, kind="ce")
    with pytest.raises(
        ValueError,
        match=re.escape("`reference` must be [A, C] logits like `logits` for kind='kl', got shape (2,)."),
    ):
        anchor_loss(logits, torch.tensor([0, 1]), kind="kl")


# ---------------------------------------------------------------------------------------------- is_unlearned
def test_is_unlearned_misclassify_and_relabel() -> None:
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    assert is_unlearned(logits, labels).tolist() == [False, True, False]
    assert is_unlearned(logits, labels, torch.tensor(TARGETS)).tolist() == [False, True, False]
    # instance 2 predicted as 2: relabel to 2 would be done; -1 means misclassify for that instance
    assert is_unlearned(logits, torch.tensor([1, 0, 0]), torch.tensor([0, -1, 2])).tolist() == [True, True, True]
    # misclassified to the wrong class is not "relabelled"
    assert is_unlearned(logits, labels, torch.tensor([2, 2, 1])).tolist() == [False, False, False]


def test_runner_up_classes() -> None:
    logits = torch.tensor([[2.0, 1.0, 3.0], [5.0, -1.0, 4.0], [0.0, 0.5, 9.0], [1.0, 2.0, 3.0]])
    # label is the top class -> second best; label is not the top class -> the top class
    assert runner_up_classes(logits, torch.tensor([2, 0, 1, 0])).tolist() == [0, 2, 2, 2]
    assert runner_up_classes(logits, torch.tensor([0, 2, 2, 2])).tolist() == [2, 0, 1, 1]
    # no gradient and no change to the input
    source = logits.clone().requires_grad_(True)
    out = runner_up_classes(source, torch.tensor([2, 0, 1, 0]))
    assert not out.requires_grad
    assert torch.equal(source.detach(), logits)
