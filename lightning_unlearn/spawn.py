"""What our objects need to cross Lightning's process launchers (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``).

* :class:`SpawnSafeGenerators`, a mixin whose pickled state holds each ``torch.Generator`` attribute as plain bytes.
  ``ddp_spawn`` pickles the LightningModule and the callbacks with ``torch.multiprocessing``'s pickler, which shares
  every tensor it meets through shared memory; a ``torch.Generator`` pickles its state as a *new* tensor
  (``Generator.__reduce__``), so under the Linux default sharing strategy (``"file_descriptor"``) the file descriptor
  sent to the child belongs to a tensor freed as soon as pickling ends, before the child is started. The child then
  gets a closed descriptor (``ValueError: bad value(s) in fds_to_keep``) or one the parent has reused for something
  else (``RuntimeError: unable to resize file <filename not specified> to the right size``). Same failure with a bare
  ``torch.Generator()`` passed to ``torch.multiprocessing.Process``: https://github.com/pytorch/pytorch/issues/146828.
"""

from __future__ import annotations

from typing import Any

import torch


def _rebuild_generator(device: str, seed: int, offset: int | None, state: bytes) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.__setstate__((seed, offset, torch.frombuffer(bytearray(state), dtype=torch.uint8)))
    return generator


class _GeneratorState:
    """A ``torch.Generator``'s full state as plain values (bytes, no tensor): pickles without shared memory."""

    def __init__(self, generator: torch.Generator) -> None:
        seed, offset, state = generator.__reduce__()[2]
        self.args = (str(generator.device), int(seed), offset, state.cpu().numpy().tobytes())

    def rebuild(self) -> torch.Generator:
        return _rebuild_generator(*self.args)


class SpawnSafeGenerators:
    """Mixin: ``torch.Generator`` attributes are pickled as plain bytes, so the object survives ``ddp_spawn``.

    Put it first among the bases; it wraps the next class's ``__getstate__``/``__setstate__`` (``LightningModule``'s
    and ``nn.Module``'s, or ``object``'s). The generators come back with the same state; ``copy.deepcopy`` too.

    Examples:
        >>> import copy
        >>> class Sampler(SpawnSafeGenerators):
        ...     def __init__(self) -> None:
        ...         self.generator = torch.Generator().manual_seed(1)
        >>> sampler = Sampler()
        >>> state = sampler.__getstate__()
        >>> any(isinstance(v, torch.Generator) for v in state.values())
        False
        >>> copied = copy.deepcopy(sampler)
        >>> torch.equal(torch.rand(3, generator=copied.generator), torch.rand(3, generator=sampler.generator))
        True
    """

    def __getstate__(self) -> dict[str, Any]:
        parent = getattr(super(), "__getstate__", None)
        state = parent() if parent is not None else None
        state = dict(self.__dict__ if state is None else state)
        return {k: _GeneratorState(v) if isinstance(v, torch.Generator) else v for k, v in state.items()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {k: v.rebuild() if isinstance(v, _GeneratorState) else v for k, v in state.items()}
        parent = getattr(super(), "__setstate__", None)
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)
