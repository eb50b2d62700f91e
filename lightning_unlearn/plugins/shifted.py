"""Copies of the forget instances (shifted, or with swapped features), held at the pre-trained outputs: data-free
stand-ins for their neighbours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_unlearn.functional.neighbours import neighbour_copies
from lightning_unlearn.plugins.held import HeldOutputs

if TYPE_CHECKING:
    from lightning_unlearn.request import RequestContext


class ShiftedCopies(HeldOutputs):
    """Hold the pre-trained outputs on translated copies of each forget instance (logged as ``train/shifted_copies``).

    A forget instance is usually a typical member of its class, and the images a request damages are the ones that
    look like it. ``copies`` translations of each forget image by a few pixels look like it without being it: holding
    the model's outputs there makes the request carve out the instance itself instead of moving the boundary through
    its neighbours. On digits this took the test-accuracy cost of a 32-instance request from 7.7 to 2.3 points
    (``docs/benchmarks.md``). Needs only the forget set; the copies live for one request and are never checkpointed.

    ``[N, C, L]`` signals are shifted along their length. ``[N, D]`` feature vectors have no axis to shift along: each
    copy takes a random quarter of its features from another forget instance instead
    (:func:`~lightning_unlearn.functional.neighbours.swapped_copies`). Inputs of any other shape get no copies (a
    warning says so) and the term is zero.

    Args:
        copies: translated copies per forget instance.
        max_shift: largest translation per axis in pixels; ``None`` picks an eighth of the smaller image side
            (1 pixel on 8x8 digits, 4 on 32x32 images) or of a signal's length (unused for feature vectors).
        fill: value of the pixels shifted in from outside the image (the background of the input range).
        weight: weight of the KL term.
        batch_size: copies drawn per training step.

    Raises:
        ValueError: if an argument is outside its valid range.

    Examples:
        >>> from lightning_unlearn import InstanceUnlearning
        >>> callback = InstanceUnlearning(shifted_copies=ShiftedCopies(copies=10, max_shift=2))
        >>> callback.shifted_copies.copies, callback.shifted_copies.max_shift
        (10, 2)
    """

    name = "shifted_copies"

    def __init__(
        self,
        copies: int = 20,
        max_shift: int | None = None,
        fill: float = 0.0,
        weight: float = 10.0,
        batch_size: int = 256,
    ) -> None:
        if copies <= 0:
            raise ValueError(f"`copies` must be > 0, got {copies}.")
        if max_shift is not None and max_shift <= 0:
            raise ValueError(f"`max_shift` must be > 0 or None, got {max_shift}.")
        super().__init__(weight=weight, batch_size=batch_size, generator_offset=20)
        self.copies = int(copies)
        self.max_shift = max_shift
        self.fill = float(fill)

    @override
    def make_inputs(self, ctx: RequestContext) -> Tensor:
        x = ctx.request.forget[0]
        if x.dim() not in (2, 3, 4):
            rank_zero_warn(
                f"ShiftedCopies needs [N, C, H, W] images, [N, C, L] signals or [N, D] feature vectors, got inputs of"
                f" shape {tuple(x.shape)}: no copies are made (pass `shifted_copies=None` to silence this)."
            )
            return x[:0]
        if len(x) == 0:
            return x
        generator = ctx.request.generator(self._offset + 1)
        return neighbour_copies(x, self.copies, generator, max_shift=self.max_shift, fill=self.fill)
