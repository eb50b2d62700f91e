"""The attack backends of the anchors: torchattacks' PGD (an optional dependency, imported only when asked for) next
to the built-in one, and the checks of the inputs and ranges each accepts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_unlearn.functional.pgd import Norm

Attack = Callable[[Tensor, Tensor], Tensor]
Backend = Literal["auto", "builtin", "torchattacks"]
BACKENDS: tuple[str, ...] = ("auto", "builtin", "torchattacks")


def torchattacks_available() -> bool:
    """Whether the optional torchattacks backend is installed."""
    return importlib.util.find_spec("torchattacks") is not None


def resolve_backend(backend: str) -> str:
    """``"auto"`` resolved against what is installed (``"torchattacks"`` or ``"builtin"``); others as they are.

    Examples:
        >>> resolve_backend("builtin")
        'builtin'
    """
    if backend == "auto":
        return "torchattacks" if torchattacks_available() else "builtin"
    return backend


def checked_range(input_range: Any, backend: str = "builtin") -> tuple[float, float] | Literal["auto"] | None:
    """``input_range`` checked (``(low, high)`` with ``low < high``, ``"auto"`` or ``None``) as floats, and the
    torchattacks ``backend`` checked against it and against what is installed.

    Raises:
        ValueError: if the range is not one of those, or torchattacks is asked for unbounded inputs.
        ModuleNotFoundError: if ``backend="torchattacks"`` and torchattacks is not installed.

    Examples:
        >>> checked_range((0, 1)), checked_range("auto")
        ((0.0, 1.0), 'auto')
    """
    if isinstance(input_range, str) and input_range != "auto":
        raise ValueError(f"`input_range` must be (low, high), 'auto' or None, got {input_range!r}.")
    if isinstance(input_range, (tuple, list)):
        low, high = input_range
        if not low < high:
            raise ValueError(f"`input_range` must be (low, high) with low < high, got {input_range}.")
        input_range = (float(low), float(high))
    if backend == "torchattacks" and input_range is None:
        raise ValueError(
            "`backend='torchattacks'` clamps anchors to a range: pass `input_range=(low, high)` or 'auto', or use"
            " backend='builtin' for `input_range=None`."
        )
    if backend == "torchattacks" and not torchattacks_available():
        raise ModuleNotFoundError(
            "`backend='torchattacks'` needs torchattacks: pip install 'lightning-unlearn[torchattacks]',"
            " or use backend='builtin'."
        )
    return input_range


def check_torchattacks_inputs(inputs: Tensor, bounds: tuple[float, float] | None, input_range: Any) -> None:
    """Raise unless torchattacks can attack ``inputs``: ``[N, C, H, W]`` images with a clamp range ``bounds``.

    Raises:
        ValueError: naming the shape or the span of the inputs and the way out.
    """
    if inputs.dim() != 4:
        raise ValueError(
            f"`backend='torchattacks'` attacks [N, C, H, W] images, got inputs of shape {tuple(inputs.shape)}: use"
            " backend='builtin' (or 'auto', which picks it for other inputs)."
        )
    if bounds is None:
        raise ValueError(
            "`backend='torchattacks'` clamps anchors to a range, and the forget inputs span"
            f" [{float(inputs.min()):.4g}, {float(inputs.max()):.4g}] with `input_range`={input_range!r}:"
            " pass `input_range=(low, high)` or use backend='builtin'."
        )


def check_inputs_in_range(inputs: Tensor, input_range: Any) -> None:
    """Raise if ``inputs`` fall outside a given ``input_range`` (PGD would clamp them and change the instances);
    ``"auto"`` and ``None`` accept any inputs.

    Raises:
        ValueError: naming the range found and the declared one.
    """
    if not isinstance(input_range, tuple):
        return
    low, high = input_range
    found = (float(inputs.min()), float(inputs.max()))
    if found[0] < low - 1e-6 or found[1] > high + 1e-6:
        raise ValueError(
            f"forget inputs span [{found[0]:.4g}, {found[1]:.4g}], outside `input_range`={input_range} of"
            " PGDAnchors; pass the range your inputs live in, or `input_range='auto'` (the default) to let the"
            " anchors follow the data."
        )


class Rescaled(nn.Module):
    """``model`` on inputs mapped back by ``x * scale + low`` (a range onto ``[0, 1]``, or units of the spread)."""

    def __init__(self, model: nn.Module, low: float, scale: float | Tensor) -> None:
        super().__init__()
        self.model = model
        self.low = low
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x * self.scale + self.low)


def torchattacks_pgd(
    model: nn.Module,
    norm: Norm,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool,
    generator: torch.Generator | None,
    bounds: tuple[float, float],
) -> Attack:
    """Targeted PGD of torchattacks (``PGDL2`` or ``PGD``) on images in ``bounds``, rescaled to ``[0, 1]`` for it, run
    under a forked global RNG seeded from ``generator``.
    """
    import torchattacks

    cls = torchattacks.PGDL2 if norm == "l2" else torchattacks.PGD
    low, high = bounds
    scale = high - low
    # torchattacks works on [0, 1] inputs: rescale the range into it and the model's input back out of it.
    wrapped = Rescaled(model, low, scale).eval()  # eval: torchattacks then never calls `.train()` afterwards
    atk = cls(wrapped, eps=eps / scale, alpha=step_size / scale, steps=steps, random_start=random_start)
    atk.set_mode_targeted_by_label(quiet=True)
    device = next(model.parameters()).device
    atk.set_device(device)

    def run(x: Tensor, t: Tensor) -> Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.manual_seed(seed)
            adv = atk((x - low) / scale, t)
        return adv.detach() * scale + low

    return run
