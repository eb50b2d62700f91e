"""Counting what a request costs: the inputs pushed through a classifier. Plain torch, no Lightning."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


class SampleCounter:
    """Counts the inputs a module is called on (the leading dimension of its first argument) while attached.

    Every forward pass counts: training steps, PGD steps, distillation batches, stop checks, the last-layer edit. A
    pass that also goes backward (a training step, a PGD step) counts once. :meth:`paused` leaves passes uncounted
    (evaluation on the user's own data is monitoring, not the method's cost).

    Examples:
        >>> import torch
        >>> model = nn.Linear(3, 2)
        >>> counter = SampleCounter()
        >>> counter.attach(model)
        >>> _ = model(torch.zeros(5, 3))
        >>> with counter.paused():
        ...     _ = model(torch.zeros(100, 3))
        >>> counter.detach()
        >>> _ = model(torch.zeros(7, 3))
        >>> counter.count
        5
    """

    def __init__(self, count: int = 0) -> None:
        self.count = int(count)
        self._handle: RemovableHandle | None = None
        self._paused = 0

    def attach(self, module: nn.Module) -> None:
        """Start counting the calls of ``module`` (once; a second call moves the counter to ``module``)."""
        self.detach()
        self._handle = module.register_forward_pre_hook(self._hook)

    def detach(self) -> None:
        """Stop counting (the count is kept)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def pause(self) -> None:
        """Stop counting until the matching :meth:`resume` (pauses nest)."""
        self._paused += 1

    def resume(self) -> None:
        """Undo one :meth:`pause`."""
        self._paused = max(0, self._paused - 1)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the passes inside the block uncounted (nests)."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self._paused and args and isinstance(args[0], Tensor) and args[0].dim() > 0:
            self.count += int(args[0].shape[0])
