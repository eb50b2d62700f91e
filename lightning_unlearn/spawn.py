"""What our objects need to cross Lightning's process launchers (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``).

Two things, both kept out of the module and the callback themselves:

* :class:`SpawnSafeGenerators`, a mixin whose pickled state holds each ``torch.Generator`` attribute as plain bytes.
  ``ddp_spawn`` pickles the LightningModule and the callbacks with ``torch.multiprocessing``'s pickler, which shares
  every tensor it meets through shared memory; a ``torch.Generator`` pickles its state as a *new* tensor
  (``Generator.__reduce__``), so under the Linux default sharing strategy (``"file_descriptor"``) the file descriptor
  sent to the child belongs to a tensor freed as soon as pickling ends, before the child is started. The child then
  gets a closed descriptor (``ValueError: bad value(s) in fds_to_keep``) or one the parent has reused for something
  else (``RuntimeError: unable to resize file <filename not specified> to the right size``). Same failure with a bare
  ``torch.Generator()`` passed to ``torch.multiprocessing.Process``: https://github.com/pytorch/pytorch/issues/146828.
* :func:`return_to_main_process`: attributes of a callback computed in the worker processes (e.g. the request
  summaries) come back to the same callback object in the main process. Lightning brings back only the weights,
  the trainer state and ``callback_metrics``.
"""

from __future__ import annotations

import pickle
import weakref
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

_RETURN_KEY = "lightning_unlearn/returned_state"
_RECEIVERS: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


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


def register_receiver(receiver: object, key: str) -> None:
    """Let :func:`return_to_main_process` deliver values to ``receiver`` (held weakly) in this process under ``key``."""
    _RECEIVERS[key] = receiver


def return_to_main_process(trainer: L.Trainer, key: str, collect: Callable[[], dict[str, Any]]) -> None:
    """Under a multiprocessing launcher (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``), have rank 0's worker send
    ``collect()`` (attribute name to plain value, evaluated when the worker ends) back to the main process, where the
    object registered under ``key`` with :func:`register_receiver` gets them as attributes. No-op under other launchers
    (``ddp`` runs the main process as rank 0; one device has no worker).

    Call it in the worker (e.g. in ``Callback.setup``). The values travel pickled as bytes through the launcher's
    ``get_extra_results``, like Lightning's own ``callback_metrics`` (tensors would be shared through memory of a
    process that has exited), and are set when the main process unpickles the worker's output.
    """
    launcher = trainer.strategy.launcher
    original = getattr(launcher, "get_extra_results", None)
    if original is None:
        return
    returned: set[str] = vars(launcher).setdefault("_lightning_unlearn_returned", set())
    if key in returned:  # already wrapped for this receiver (e.g. a second `setup` in the same worker)
        return
    returned.add(key)

    def get_extra_results(trainer: L.Trainer) -> dict[str, Any]:
        extra = original(trainer)
        extra.setdefault(_RETURN_KEY, []).append(_Returned(key, pickle.dumps(collect())))
        return extra

    setattr(launcher, "get_extra_results", get_extra_results)  # noqa: B010 (this worker's launcher only)


class _Returned:
    """Values on their way to the main process: unpickling them there hands them to the registered receiver."""

    def __init__(self, key: str, payload: bytes) -> None:
        self.key, self.payload = key, payload

    def __reduce__(self) -> tuple[Callable[[str, bytes], None], tuple[str, bytes]]:
        return _deliver, (self.key, self.payload)


def _deliver(key: str, payload: bytes) -> None:
    receiver = _RECEIVERS.get(key)
    if receiver is not None:
        for name, value in pickle.loads(payload).items():
            setattr(receiver, name, value)
