"""Deletion receipts: a verifiable JSON record of each unlearning request, with hashes instead of data.

A receipt names every forgotten instance by the SHA-256 of its input bytes and label, and the model by the SHA-256 of
its parameters before and after, so a third party holding the model and the forget data can check the deletion
(``lightning-unlearn verify``) without the receipt itself revealing any of the data.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_unlearn._version import __version__
from lightning_unlearn.io import atomic_write_text, json_safe

RECEIPT_VERSION = 1


def instance_hash(x: Tensor, label: int) -> str:
    """SHA-256 of one instance: its input as contiguous float32 CPU bytes, then its label as 8 little-endian bytes.

    Examples:
        >>> instance_hash(torch.zeros(2), 3)[:16]
        '96fb5e4a2704b410'
    """
    digest = hashlib.sha256(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(int(label).to_bytes(8, "little", signed=True))
    return digest.hexdigest()


def model_hash(model: nn.Module | Mapping[str, Tensor]) -> str:
    """SHA-256 of a model's state dict (names and float32 CPU bytes, in name order), buffers included.

    Examples:
        >>> model_hash(nn.Linear(2, 2)) == model_hash(nn.Linear(2, 2))  # different random weights
        False
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        digest.update(name.encode())
        if isinstance(value, Tensor):
            digest.update(
                value.detach()
                .to("cpu", torch.float64 if value.is_floating_point() else torch.int64)
                .contiguous()
                .numpy()
                .tobytes()
            )
    return digest.hexdigest()


@dataclass
class DeletionReceipt:
    """The record of one request (see the module docstring).

    ``retained_sample`` is the number of retained training inputs the request distilled on (0: none, a
    forget-set-only request); the receipt never holds them or their hashes.
    """

    request_id: str
    created_utc: str
    k: int
    mode: str
    instance_hashes: list[str]
    model_before: str
    model_after: str
    method: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]
    unlearned: bool
    restored: bool
    steps: int
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)
    retained_sample: int = 0
    receipt_version: int = RECEIPT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain values, ready for JSON (``nan`` becomes ``None``)."""
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeletionReceipt:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def make_receipt(
    inputs: Tensor,
    labels: Tensor,
    mode: str,
    model_before: str,
    model_after: str,
    method: Mapping[str, Any],
    summary: Mapping[str, Any],
) -> DeletionReceipt:
    """Build a receipt from the forget instances, the model hashes, the method's settings and a request summary.

    The size of the retained sample is read from ``method["plugins"]["retain_distill"]["size"]`` (the
    ``RetainDistillation`` settings).

    Examples:
        >>> method = {"plugins": {"retain_distill": {"weight": 10.0, "batch_size": 64, "size": 70}}}
        >>> receipt = make_receipt(torch.zeros(1, 2), torch.tensor([3]), "misclassify", "a", "b", method, {})
        >>> receipt.k, receipt.retained_sample
        (1, 70)
    """
    import lightning

    return DeletionReceipt(
        request_id=uuid.uuid4().hex,
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        k=int(labels.shape[0]),
        mode=mode,
        instance_hashes=[instance_hash(x, int(y)) for x, y in zip(inputs, labels)],
        model_before=model_before,
        model_after=model_after,
        method=dict(method),
        before=dict(summary.get("before", {})),
        after=dict(summary.get("after", {})),
        unlearned=bool(summary.get("unlearned", False)),
        restored=bool(summary.get("restored", False)),
        steps=int(summary.get("steps", 0)),
        seconds=float(summary.get("seconds", 0.0)),
        retained_sample=int((method.get("plugins", {}).get("retain_distill") or {}).get("size") or 0),
        versions={
            "lightning_unlearn": __version__,
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "python": platform.python_version(),
        },
    )


def gather_instances(x: Tensor, y: Tensor, world_size: int) -> tuple[Tensor, Tensor]:
    """Every process's forget inputs and labels, concatenated in rank order on CPU (as they are with one process).

    Examples:
        >>> gather_instances(torch.zeros(2, 3), torch.tensor([0, 1]), world_size=1)[1].tolist()
        [0, 1]
    """
    if world_size <= 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x, y
    shards: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(shards, (x.cpu(), y.cpu()))
    return torch.cat([s[0] for s in shards]), torch.cat([s[1] for s in shards])


def write_request_receipt(
    directory: str | os.PathLike[str],
    forget: tuple[Tensor, Tensor, Tensor | None],
    model_before: Mapping[str, Tensor],
    model: nn.Module,
    method: dict[str, Any],
    summary: dict[str, Any],
    world_size: int = 1,
    rank: int = 0,
) -> Path | None:
    """The receipt of one request, over the forget instances of every process, written by rank zero (every process
    calls it together).

    Returns:
        The receipt's path on rank zero, ``None`` on the other ranks.
    """
    x, y, t = forget
    x, y = gather_instances(x, y, world_size)
    if rank != 0:
        return None
    mode = "relabel" if t is not None else "misclassify"
    before, after = model_hash(model_before), model_hash(model)
    receipt = make_receipt(x, y, mode, model_before=before, model_after=after, method=method, summary=summary)
    return write_receipt(receipt, directory)


def write_receipt(receipt: DeletionReceipt, directory: str | os.PathLike[str]) -> Path:
    """Write ``<request_id>.json`` atomically (temporary file + rename) and append it to ``receipts.jsonl``.

    The log is rewritten atomically as well (old content + the new line, then rename), so a crash at any point leaves
    either the old log or the new one, never a torn line.

    Returns:
        The path of the receipt file.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(receipt.to_dict(), indent=1, sort_keys=True)
    path = folder / f"{receipt.request_id}.json"
    atomic_write_text(path, text + "\n")
    log = folder / "receipts.jsonl"
    old = log.read_text() if log.exists() else ""
    atomic_write_text(log, old + json.dumps(receipt.to_dict(), sort_keys=True) + "\n")
    return path


def read_receipt(path: str | os.PathLike[str]) -> DeletionReceipt:
    """Load a receipt written by :func:`write_receipt`."""
    return DeletionReceipt.from_dict(json.loads(Path(path).read_text()))


def verify_receipt(
    receipt: DeletionReceipt,
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    targets: Tensor | None = None,
    later: bool = False,
) -> list[str]:
    """Check a model and forget data against a receipt; returns the list of problems (empty = verified).

    Checks: the model's hash equals ``model_after`` (skipped with ``later=True``: the model is one that served later
    requests, so it differs from the model right after this one); the data's instance hashes equal the receipt's (as
    multisets: the problems say how many of the receipt's instances are missing from the data and how many of the
    data's are not in the receipt); every instance is unlearned by the model (misclassified, or predicted as its
    target in relabel mode): with ``later=True``, *still* unlearned.
    """
    from lightning_unlearn.functional.evaluation import predict
    from lightning_unlearn.functional.metrics import is_unlearned

    problems = []
    if not later and model_hash(model) != receipt.model_after:
        problems.append("the model's parameters do not match the receipt's `model_after` hash")
    given = Counter(instance_hash(x, int(y)) for x, y in zip(inputs, labels))
    recorded = Counter(receipt.instance_hashes)
    missing, extra = sum((recorded - given).values()), sum((given - recorded).values())
    if missing:
        problems.append(
            f"the forget data lacks {missing} of the receipt's {receipt.k} instances (it holds {len(labels)} instances)"
        )
    if extra:
        problems.append(f"{extra} of the {len(labels)} instances of the forget data are not in the receipt")
    done = is_unlearned(
        predict(model, inputs),
        labels.to(next(model.parameters()).device),
        None if targets is None else targets.to(next(model.parameters()).device),
    )
    if not bool(done.all()):
        problems.append(f"{int((~done).sum())} of {len(done)} instances are not unlearned by the model")
    return problems
