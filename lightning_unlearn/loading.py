"""Loading classifiers and forget data from files: Lightning checkpoints, plain state dicts, pickled modules."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_unlearn.pretrain import cache_dir

#: a ``checkpoint`` value starting with this names a file in the cache folder of the demo's pre-trained models
CACHE_PREFIX = "cache:"


def import_object(path: str) -> Any:
    """Import ``"package.module:attr"`` (or ``"package.module.attr"``).

    Raises:
        ValueError: if the path cannot be imported, naming it.

    Examples:
        >>> import_object("lightning_unlearn.models:small_cnn").__name__
        'small_cnn'
    """
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"cannot import class path {path!r}: {error}") from error


def extract_state_dict(checkpoint: Mapping[str, Any], prefix: str = "classifier.") -> dict[str, Tensor]:
    """The classifier's weights from a Lightning checkpoint (``state_dict`` key) or a plain state dict; keys of an
    :class:`~lightning_unlearn.UnlearningModule` checkpoint lose their ``classifier.`` prefix.
    """
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError("the file holds neither a Lightning checkpoint nor a state dict of tensors.")
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def load_classifier(
    path: str | os.PathLike[str], factory: str | Callable[[], nn.Module] | None = None, strict: bool = True
) -> nn.Module:
    """Load a classifier: a pickled ``nn.Module`` file, or a checkpoint / state dict plus ``factory`` that builds the
    architecture (a callable or a class path such as ``"torchvision.models:resnet18"``).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file needs a ``factory`` and none was given, or the weights do not fit it.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"model file {str(file)!r} does not exist.")
    loaded = torch.load(file, map_location="cpu", weights_only=False)
    if isinstance(loaded, nn.Module):
        return loaded.eval()
    if factory is None:
        raise ValueError(f"{str(file)!r} holds weights, not a module: pass the architecture (a class path) too.")
    build = import_object(factory) if isinstance(factory, str) else factory
    model = build()
    try:
        model.load_state_dict(extract_state_dict(loaded), strict=strict)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"the weights in {str(file)!r} do not fit the architecture: {first}") from error
    return model.eval()


def load_forget_tensors(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor, Tensor | None]:
    """Read ``{"inputs": ..., "labels": ..., "targets": optional}`` saved with ``torch.save``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if keys are missing.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"forget data file {str(file)!r} does not exist.")
    data = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(data, Mapping) or "inputs" not in data or "labels" not in data:
        raise ValueError(f"{str(file)!r} must hold a dict with 'inputs' and 'labels' (and optionally 'targets').")
    return data["inputs"], data["labels"], data.get("targets")


def resolve_checkpoint(checkpoint: str) -> Path:
    """The file a ``checkpoint`` value names: ``cache:NAME`` is ``NAME`` in the cache folder of the demo's pre-trained
    models (``$LIGHTNING_UNLEARN_CACHE``, else ``~/.cache/lightning-unlearn``); anything else is a path (``~``
    expanded).

    Examples:
        >>> str(resolve_checkpoint("~/weights.pt")).startswith("~")
        False
        >>> resolve_checkpoint("cache:digits.pt") == cache_dir() / "digits.pt"
        True
    """
    if checkpoint.startswith(CACHE_PREFIX):
        return cache_dir() / checkpoint[len(CACHE_PREFIX) :]
    return Path(checkpoint).expanduser()


def load_checkpoint_weights(classifier: nn.Module, checkpoint: str) -> nn.Module:
    """Load into ``classifier`` the weights of the file ``checkpoint`` names (:func:`resolve_checkpoint`): a Lightning
    checkpoint, an :class:`~lightning_unlearn.UnlearningModule` checkpoint or a plain state dict.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if its weights do not fit ``classifier``, naming the first tensor that does not.

    Returns:
        ``classifier``, its weights loaded.

    Examples:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "linear.pt"
        >>> torch.save(nn.Linear(3, 2).state_dict(), file)
        >>> load_checkpoint_weights(nn.Linear(3, 2), str(file)).weight.shape
        torch.Size([2, 3])
        >>> try:
        ...     load_checkpoint_weights(nn.Linear(3, 4), str(file))
        ... except ValueError as error:
        ...     print(str(error).split(": ", 1)[1])
        tensor 'weight' has shape [2, 3] in the file but [4, 3] in the classifier.
    """
    path = resolve_checkpoint(checkpoint)
    if not path.is_file():
        hint = ""
        if checkpoint.startswith(CACHE_PREFIX + "digits_small_cnn"):
            hint = " (`lightning-unlearn demo` pre-trains the digits CNN and caches it there)"
        raise FileNotFoundError(f"`checkpoint` file {str(path)!r} does not exist{hint}.")
    state = extract_state_dict(torch.load(path, map_location="cpu", weights_only=False))
    mismatch = _weights_mismatch(state, classifier.state_dict())
    if mismatch is not None:
        raise ValueError(f"the weights in {str(path)!r} do not fit the classifier: {mismatch}.")
    classifier.load_state_dict(state)
    return classifier


def _weights_mismatch(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str | None:
    """The first tensor that keeps ``state`` from loading into a model whose state dict is ``expected``."""
    for name, value in expected.items():
        if name not in state:
            return f"tensor {name!r} of the classifier is missing from the file"
        if tuple(state[name].shape) != tuple(value.shape):
            return (
                f"tensor {name!r} has shape {list(state[name].shape)} in the file but {list(value.shape)} in the"
                " classifier"
            )
    extra = [name for name in state if name not in expected]
    return f"tensor {extra[0]!r} in the file is not in the classifier" if extra else None
