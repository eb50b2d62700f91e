"""Load check: one request of 1,000 MNIST-5k instances, then a sequence of 20 requests, with peak memory per request.

    python benchmarks/load.py                      # defaults below; prints a table, writes benchmarks/results/load.json
    python benchmarks/load.py --phases sequence --request-k 4                  # only the sequence, 4 per request
    python benchmarks/load.py --big-k 100 --requests 3 --max-steps 20 --sequence-max-steps 20     # smoke

Peak resident memory (VmHWM) is reset before each request (Linux ``/proc/self/clear_refs``), so each row shows that
request's own peak: it must not grow from request to request.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import load_mnist5k_split
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.models import small_cnn
from lightning_unlearn.pretrain import train_classifier


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _request(module: UnlearningModule, callback: InstanceUnlearning, forget: ForgetSet, batch: int) -> dict[str, Any]:
    _reset_peak()
    trainer = L.Trainer(
        max_epochs=-1, callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.fit(module, DataLoader(forget, batch_size=batch))
    summary = callback.summary
    assert summary is not None
    seconds = time.perf_counter() - started
    return {
        "k": len(forget), "steps": summary.steps, "unlearned": summary.unlearned, "seconds": seconds,
        "peak_rss_mb": _status_mb("VmHWM"), "rss_after_mb": _status_mb("VmRSS"),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-k", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--request-k", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=300, help="step cap of the big request")
    parser.add_argument("--sequence-max-steps", type=int, default=1000, help="step cap of each sequence request")
    parser.add_argument("--phases", nargs="+", default=["big", "sequence"], choices=["big", "sequence"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/load.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    split = load_mnist5k_split()
    model = train_classifier(small_cnn(in_channels=1), split.x_train, split.y_train, epochs=3, seed=0)
    pretrained = accuracy(model, split.x_test, split.y_test)
    order = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(0))
    anchors = PGDAnchors(per_instance=3)  # one anchor per radius: 3,000 anchors for the big request
    rows: list[dict[str, Any]] = []
    big = order[: args.big_k]
    if "big" in args.phases:
        callback = InstanceUnlearning(anchors=anchors, max_steps=args.max_steps, restore_on_failure=False, seed=0)
        forget = ForgetSet(split.x_train[big], split.y_train[big])
        rows.append({"phase": "big", **_request(UnlearningModule(copy.deepcopy(model), 10), callback, forget, 256)})
        print(json.dumps(rows[-1]), flush=True)
    module = UnlearningModule(copy.deepcopy(model), 10)
    callback = InstanceUnlearning(anchors=anchors, max_steps=args.sequence_max_steps, seed=0)
    for r in range(args.requests if "sequence" in args.phases else 0):
        index = order[args.big_k + r * args.request_k : args.big_k + (r + 1) * args.request_k]
        row = _request(module, callback, ForgetSet(split.x_train[index], split.y_train[index]), args.request_k)
        rows.append(
            {"phase": f"sequence {r + 1}", **row, "test_acc": accuracy(module.classifier, split.x_test, split.y_test)}
        )
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"pretrained_test_acc": pretrained, "rows": rows}, indent=1))
    print(f"pre-trained test accuracy {pretrained:.4f}")
    print("| phase | k | steps | unlearned | seconds | peak RSS (MB) | RSS after (MB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [row["phase"], row["k"], row["steps"], row["unlearned"], f"{row['seconds']:.1f}"]
        cells += [f"{row['peak_rss_mb']:.0f}", f"{row['rss_after_mb']:.0f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
