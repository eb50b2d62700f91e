from __future__ import annotations

import pytest
import torch

from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.neighbours import default_max_shift, shifted_copies


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
        ({"inputs": torch.zeros(4, 64)}, r"`inputs` must be \[k, C, H, W\] images, got shape \(4, 64\)\."),
        ({"copies": 0}, r"`copies` must be >= 1, got 0\."),
        ({"max_shift": 0}, r"`max_shift` must be >= 1, got 0\."),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"inputs": torch.zeros(2, 1, 8, 8), "copies": 2, "max_shift": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        shifted_copies(**args)  # type: ignore[arg-type]
