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
  summaries, the trace of every step) come back to the same callback object in the main process, through a temporary
  file whatever their size. Lightning brings back only the weights (through a file), the trainer state and
  ``callback_metrics`` (through a pipe that is read only after the workers have exited).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
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
    """Let :func:`return_to_main_process` deliver values to ``receiver`` (held weakly) in this process under ``key``.

    Whatever a worker wrote for ``receiver`` and the main process never read (the worker or the launch failed after
    it was written) is deleted when ``receiver`` is garbage-collected or this process exits.
    """
    _RECEIVERS[key] = receiver
    weakref.finalize(receiver, _discard_undelivered, key, os.getpid())


def return_to_main_process(trainer: L.Trainer, key: str, collect: Callable[[], dict[str, Any]]) -> None:
    """Under a multiprocessing launcher (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``), have rank 0's worker send
    ``collect()`` (attribute name to plain value, evaluated when the worker ends) back to the main process, where the
    object registered under ``key`` with :func:`register_receiver` gets them as attributes. No-op under other launchers
    (``ddp`` runs the main process as rank 0; one device has no worker).

    Call it in the worker (e.g. in ``Callback.setup``). The values may be of any size: the worker pickles them into a
    temporary file (like Lightning's own launcher does with the weights) and only a reference to the file travels
    through the launcher's ``get_extra_results``; the main process reads the file, sets the attributes and deletes
    the file while it unpickles the worker's output. (Lightning's launcher joins the workers before it reads their
    output from a pipe, so an output larger than the pipe's buffer, 64 KiB on Linux, would never be read: issue 23.)

    Examples:
        >>> import pickle
        >>> from types import SimpleNamespace
        >>> class Launcher:
        ...     def get_extra_results(self, trainer):
        ...         return {}
        >>> class Receiver:
        ...     trace = []
        >>> receiver = Receiver()
        >>> register_receiver(receiver, "doctest-key")
        >>> worker = SimpleNamespace(strategy=SimpleNamespace(launcher=Launcher()))
        >>> return_to_main_process(worker, "doctest-key", lambda: {"trace": [{"step": 1.0}] * 100_000})
        >>> message = pickle.dumps(worker.strategy.launcher.get_extra_results(worker))  # what the queue carries
        >>> len(message) < 1_000
        True
        >>> _ = pickle.loads(message)  # in the main process: reads and deletes the file
        >>> len(receiver.trace)
        100000
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
        extra.setdefault(_RETURN_KEY, []).append(_Returned.write(key, collect()))
        return extra

    setattr(launcher, "get_extra_results", get_extra_results)  # noqa: B010 (this worker's launcher only)


def _return_folder(key: str) -> Path:
    """Where workers write the values for the receiver registered under ``key`` (a random key: not guessable)."""
    return Path(tempfile.gettempdir()) / f"lightning_unlearn_returned_{key}"


class _Returned:
    """A reference to values written to a file on their way to the main process: unpickling it there hands them to
    the registered receiver and deletes the file.
    """

    def __init__(self, key: str, path: str) -> None:
        self.key, self.path = key, path

    @classmethod
    def write(cls, key: str, values: dict[str, Any]) -> _Returned:
        folder = _return_folder(key)
        folder.mkdir(mode=0o700, exist_ok=True)
        handle, path = tempfile.mkstemp(suffix=".pkl", dir=folder)
        try:
            with os.fdopen(handle, "wb") as file:
                pickle.dump(values, file, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            _remove(path)
            raise
        return cls(key, path)

    def __reduce__(self) -> tuple[Callable[[str, str], None], tuple[str, str]]:
        return _deliver, (self.key, self.path)


def _deliver(key: str, path: str) -> None:
    """Set the values in ``path`` on the receiver registered under ``key`` (if it still exists); the file is deleted
    in any case, also when reading it fails.
    """
    try:
        receiver = _RECEIVERS.get(key)
        if receiver is not None:
            with open(path, "rb") as file:
                values = pickle.load(file)
            for name, value in values.items():
                setattr(receiver, name, value)
    finally:
        _remove(path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    with contextlib.suppress(OSError):  # the folder stays while another worker's file is in it
        os.rmdir(os.path.dirname(path))


def _discard_undelivered(key: str, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked worker, which inherits this finalizer
        shutil.rmtree(_return_folder(key), ignore_errors=True)
