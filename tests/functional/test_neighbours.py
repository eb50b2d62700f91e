from __future__ import annotations

import re

import pytest
import torch

from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.neighbours import (
    default_max_shift,
    feature_spread,
    neighbour_copies,
    shifted_copies,
    swapped_copies,
)


def test_every_copy_is_a_nonzero_translation_of_its_image(digits: Split) -> None:
    x = digits.x_train[:6]
    copies = shifted_copies(x, copies=20, max_shift=1, generator=torch.Generator().manual_seed(0))
    assert copies.shape == (6 * 20, 1, 8, 8)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for row, image in enumerate(copies):
        source = padded[row // 20]
        matches = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if torch.equal(source[:, 1 - dy : 9 - dy, 1 - dx : 9 - dx], image)
        ]
        assert any(offset != (0, 0) for offset in matches)  # a real translation of its own image


def test_offsets_cover_all_eight_neighbours_and_are_seeded() -> None:
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0
    copies = shifted_copies(image, copies=400, max_shift=1, generator=torch.Generator().manual_seed(1))
    positions = {tuple(int(i) for i in (c[0] == 1).nonzero()[0]) for c in copies}
    assert positions == {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)} - {(2, 2)}
    again = shifted_copies(image, copies=400, max_shift=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(copies, again)


def test_default_shift_is_an_eighth_of_the_side() -> None:
    assert default_max_shift(torch.zeros(1, 1, 8, 8)) == 1
    assert default_max_shift(torch.zeros(1, 1, 28, 28)) == 4
    assert default_max_shift(torch.zeros(1, 3, 32, 32)) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"inputs": torch.zeros(4, 64)},
            r"`inputs` must be \[k, C, H, W\] images or \[k, C, L\] signals, got shape \(4, 64\)\.",
        ),
        ({"copies": 0}, r"`copies` must be >= 1, got 0\."),
        ({"max_shift": 0}, r"`max_shift` must be >= 1, got 0\."),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"inputs": torch.zeros(2, 1, 8, 8), "copies": 2, "max_shift": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        shifted_copies(**args)  # type: ignore[arg-type]


def test_signals_are_translated_along_their_length(digits: Split) -> None:
    x = digits.x_train[:5].flatten(2)  # [5, 1, 64]: real rows of digits as 1-D signals
    copies = shifted_copies(x, copies=30, max_shift=3, generator=torch.Generator().manual_seed(0))
    assert copies.shape == (150, 1, 64)
    padded = torch.nn.functional.pad(x, (3, 3))
    offsets = set()
    for row, signal in enumerate(copies):
        source = padded[row // 30]
        found = [dx for dx in range(-3, 4) if torch.equal(source[:, 3 - dx : 67 - dx], signal)]
        assert any(dx != 0 for dx in found)
        offsets.update(dx for dx in found if dx != 0)
    assert offsets == {-3, -2, -1, 1, 2, 3}
    assert default_max_shift(x) == 8


def test_swapped_copies_take_a_quarter_of_the_features_from_another_instance(digits: Split) -> None:
    x = digits.x_train[:6].flatten(1)  # [6, 64] feature vectors
    copies = swapped_copies(x, copies=10, generator=torch.Generator().manual_seed(0))
    assert copies.shape == (60, 64)
    for row, vector in enumerate(copies):
        own = x[row // 10]
        changed = vector != own
        assert 1 <= int(changed.sum()) <= 16  # at most round(0.25 * 64) features, at least one
        others = torch.cat([x[: row // 10], x[row // 10 + 1 :]])
        # every changed feature holds another instance's value of that feature, or (where the donor's value equals
        # its own) its own value moved by half the data's spread
        from_other = (others == vector).any(dim=0) | torch.isclose(vector, own + 0.5 * feature_spread(x))
        assert bool(from_other[changed].all())
    again = swapped_copies(x, copies=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(copies, again)


def test_a_single_feature_vector_gets_noise_copies_never_itself() -> None:
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    copies = swapped_copies(x, copies=20, generator=torch.Generator().manual_seed(0))
    assert bool(((copies != x).sum(dim=1) == 1).all())


def test_feature_spread_is_per_feature_for_vectors_and_one_value_otherwise() -> None:
    x = torch.stack([torch.tensor([0.0, 100.0, 5.0]), torch.tensor([1.0, 300.0, 5.0])])
    spread = feature_spread(x)
    assert spread[1] > 100 * spread[0] > 0
    assert spread[2] > 0  # a constant feature gets a floor, never zero
    images = torch.rand(4, 1, 8, 8)
    assert torch.allclose(feature_spread(images), images.std().expand(1, 8, 8))


def test_neighbour_copies_dispatch_on_the_input_shape() -> None:
    g = torch.Generator().manual_seed(0)
    assert neighbour_copies(torch.rand(3, 1, 8, 8), 4, g).shape == (12, 1, 8, 8)
    assert neighbour_copies(torch.rand(3, 2, 40), 4, g).shape == (12, 2, 40)
    assert neighbour_copies(torch.rand(3, 7), 4, g).shape == (12, 7)
    message = (
        "`inputs` must be [k, C, H, W] images, [k, C, L] signals or [k, D] feature vectors, got shape (3, 1, 1, 1, 1)."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        neighbour_copies(torch.rand(3, 1, 1, 1, 1), 4, g)
