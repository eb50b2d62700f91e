from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from lightning_unlearn.datasets import Split, load_cbf_split
from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.functional.fisher import editable_layers, fisher_edit, margins
from lightning_unlearn.functional.neighbours import shifted_copies
from lightning_unlearn.pretrain import pretrained_signal_cnn
from tests.conftest import forget_indices


def _remembered(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = predict(model, x).argmax(-1) == y
    return x[keep], y[keep]


def test_unlearns_every_instance_and_changes_only_the_last_layers(digits: Split, digits_cnn: nn.Module) -> None:
    idx = forget_indices(len(digits.y_train), 16)
    x, y = _remembered(digits_cnn, digits.x_train[idx], digits.y_train[idx])
    before = copy.deepcopy(digits_cnn.state_dict())
    protected = shifted_copies(x, 20, 1, generator=torch.Generator().manual_seed(0))
    left = fisher_edit(digits_cnn, x, y, protected, generator=torch.Generator().manual_seed(0))
    assert left == 0
    assert bool((predict(digits_cnn, x).argmax(-1) != y).all())
    edited = {n for n, p in digits_cnn.named_parameters() if not torch.equal(p, before[n])}
    last_two = {n for n, m in digits_cnn.named_modules() if any(m is e for e in editable_layers(digits_cnn, 2))}
    assert edited and {n.rsplit(".", 1)[0] for n in edited} <= last_two
    # the neighbours it held keep most of their predictions
    agree = predict(digits_cnn, protected).argmax(-1) == y.repeat_interleave(20)
    assert float(agree.float().mean()) > 0.5


def test_relabels_to_the_targets(digits: Split, digits_cnn: nn.Module) -> None:
    idx = forget_indices(len(digits.y_train), 8, seed=1)
    x, y = _remembered(digits_cnn, digits.x_train[idx], digits.y_train[idx])
    targets = (y + 3) % 10
    left = fisher_edit(digits_cnn, x, y, shifted_copies(x, 10, 1), targets=targets)
    assert left == 0 and torch.equal(predict(digits_cnn, x).argmax(-1), targets)
    assert bool((margins(predict(digits_cnn, x), y, targets) < 0).all())


def test_edits_1d_convolutions_of_a_signal_classifier() -> None:
    split, model = load_cbf_split(), pretrained_signal_cnn()
    x, y = _remembered(model, split.x_train[:12], split.y_train[:12])
    left = fisher_edit(model, x, y, shifted_copies(x, 10, 16), layers=2)
    assert left == 0
    assert [type(m).__name__ for m in editable_layers(model, 2)] == ["Conv1d", "Linear"]


def test_a_model_without_editable_layers_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("`model` has no nn.Linear, nn.Conv1d or nn.Conv2d layer to edit.")):
        fisher_edit(nn.Sequential(nn.Flatten()), torch.rand(2, 4), torch.tensor([0, 1]), torch.rand(4, 4))


def test_restore_moves_held_margins_back_to_a_reference(digits: Split, digits_cnn: nn.Module) -> None:
    reference = copy.deepcopy(digits_cnn)
    held = digits.x_test[:48]
    ref_logits = predict(reference, held)
    labels = ref_logits.argmax(-1)
    target = margins(ref_logits, labels)
    first = forget_indices(len(digits.y_train), 24, seed=3)  # an earlier request: its edit moved the held margins
    x1, y1 = _remembered(digits_cnn, digits.x_train[first], digits.y_train[first])
    fisher_edit(digits_cnn, x1, y1, held, margin=1.0, generator=torch.Generator().manual_seed(0))
    second = forget_indices(len(digits.y_train), 8, seed=4)
    x2, y2 = _remembered(digits_cnn, digits.x_train[second], digits.y_train[second])
    damaged = copy.deepcopy(digits_cnn)

    def error(model: nn.Module) -> float:
        return float((margins(predict(model, held), labels) - target).abs().mean())

    plain, restored = copy.deepcopy(damaged), copy.deepcopy(damaged)
    assert fisher_edit(plain, x2, y2, held, generator=torch.Generator().manual_seed(0)) == 0
    gen = torch.Generator().manual_seed(0)
    left = fisher_edit(restored, x2, y2, held, generator=gen, restore=(held, labels, target))
    assert left == 0 and bool((predict(restored, x2).argmax(-1) != y2).all())
    assert error(damaged) > 0.5 and error(restored) < 0.5 * min(error(plain), error(damaged))
