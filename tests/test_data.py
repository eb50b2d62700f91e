"""ForgetSet: modes, building from a dataset, and every validation error."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn.data import NO_TARGET, ForgetSet
from lightning_unlearn.datasets import Split
from tests.conftest import forget_indices


def _xy(digits: Split, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    idx = forget_indices(len(digits.y_train), k)
    return digits.x_train[idx], digits.y_train[idx]


def test_misclassify_mode(digits: Split) -> None:
    x, y = _xy(digits)
    forget = ForgetSet(x, y)
    assert forget.mode == "misclassify"
    assert len(forget) == 4
    assert forget.targets.tolist() == [NO_TARGET] * 4 == [-1] * 4
    item = forget[2]
    assert torch.equal(item[0], x[2]) and int(item[1]) == int(y[2]) and int(item[2]) == -1
    xb, yb, tb = next(iter(DataLoader(forget, batch_size=4)))
    assert torch.equal(xb, x) and torch.equal(yb, y) and tb.tolist() == [-1] * 4


def test_relabel_mode(digits: Split) -> None:
    x, y = _xy(digits)
    targets = (y + 1) % 10
    forget = ForgetSet(x, y, targets=targets)
    assert forget.mode == "relabel"
    assert torch.equal(forget.targets, targets)
    assert forget.labels.dtype == forget.targets.dtype == torch.long
    _, _, tb = next(iter(DataLoader(forget, batch_size=4)))
    assert torch.equal(tb, targets)


def test_integer_dtypes_become_long(digits: Split) -> None:
    x, y = _xy(digits)
    forget = ForgetSet(x, y.to(torch.int32), targets=((y + 1) % 10).to(torch.uint8))
    assert forget.labels.dtype == torch.long and forget.targets.dtype == torch.long
    assert torch.equal(forget.labels, y)


def test_from_dataset(digits: Split) -> None:
    dataset = TensorDataset(digits.x_train, digits.y_train)
    idx = forget_indices(len(dataset), 8)
    forget = ForgetSet.from_dataset(dataset, idx)
    assert forget.mode == "misclassify"
    assert torch.equal(forget.inputs, digits.x_train[idx])
    assert torch.equal(forget.labels, digits.y_train[idx])
    as_list = ForgetSet.from_dataset(dataset, idx.tolist(), targets=((digits.y_train[idx] + 3) % 10).tolist())
    assert as_list.mode == "relabel"
    assert torch.equal(as_list.targets, (digits.y_train[idx] + 3) % 10)
    # items with more than two fields (input, label, extra)
    extra = TensorDataset(digits.x_train, digits.y_train, torch.arange(len(digits.y_train)))
    assert torch.equal(ForgetSet.from_dataset(extra, [5, 0]).labels, digits.y_train[[5, 0]])


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([], "`indices` must name at least one instance, got an empty sequence."),
        ([3, 1, 3], "`indices` must not repeat an instance, got [3, 1, 3]."),
        ([0, 1437], "`indices` must lie in [0, 1437), got values from 0 to 1437."),
        ([-1, 4], "`indices` must lie in [0, 1437), got values from -1 to 4."),
    ],
)
def test_from_dataset_bad_indices(digits: Split, indices: list[int], message: str) -> None:
    dataset = TensorDataset(digits.x_train, digits.y_train)
    with pytest.raises(ValueError, match=re.escape(message)):
        ForgetSet.from_dataset(dataset, indices)


def test_from_dataset_bad_targets(digits: Split) -> None:
    dataset = TensorDataset(digits.x_train, digits.y_train)
    with pytest.raises(ValueError, match=re.escape("`targets` must have one entry per input (2), got 3.")):
        ForgetSet.from_dataset(dataset, [0, 1], targets=[1, 2, 3])


def test_validation_errors(digits: Split) -> None:
    x, y = _xy(digits)
    cases: list[tuple[tuple[object, ...], str]] = [
        (
            (x[:0], y[:0]),
            "`inputs` must hold at least one instance, got an empty tensor: a request needs instances.",
        ),
        ((x, y.float()), "`labels` must be an integer tensor, got dtype torch.float32."),
        ((x, y > 4), "`labels` must be an integer tensor, got dtype torch.bool."),
        ((x, y.view(4, 1)), "`labels` must be 1-D ([k]), got shape (4, 1)."),
        ((x, y[:3]), "`labels` must have one entry per input (4), got 3."),
        ((x, torch.tensor([1, -1, 2, 3])), "`labels` must be >= 0, got -1."),
        ((torch.where(x > 0.5, float("nan"), x), y), "`inputs` must be finite, got NaN or infinite values."),
        ((torch.where(x > 0.5, float("inf"), x), y), "`inputs` must be finite, got NaN or infinite values."),
        (((x * 16).long(), y), "`inputs` must be a floating-point tensor, got a tensor of dtype torch.int64."),
        ((x.tolist(), y), "`inputs` must be a floating-point tensor, got list."),
        ((x, y, (y + 1).float()), "`targets` must be an integer tensor, got dtype torch.float32."),
        ((x, y, (y + 1)[:2]), "`targets` must have one entry per input (4), got 2."),
        ((x, y, torch.tensor([1, 2, -1, 3])), "`targets` must be >= 0, got -1."),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            ForgetSet(*args)  # type: ignore[arg-type]


def test_targets_equal_to_labels(digits: Split) -> None:
    x, y = _xy(digits)
    targets = (y + 1) % 10
    targets[1] = y[1]
    targets[3] = y[3]
    with pytest.raises(
        ValueError, match=re.escape("`targets` must differ from `labels`; positions [1, 3] have target equal to label.")
    ):
        ForgetSet(x, y, targets=targets)
