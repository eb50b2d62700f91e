"""Continual unlearning on scikit-learn digits: a sequence of requests on the same module and callback.

After every request the script measures the forget accuracy of every request so far (0 = still unlearned) and the test
accuracy, with the package defaults and with ``InstanceUnlearning(keep_forget_data=True)`` (earlier requests kept in
memory, held unlearned and included in the stop check). Prints a markdown table and writes JSON.

    python benchmarks/continual.py                                  # 5 requests of 16, seeds 0 1 2, both settings
    python benchmarks/continual.py --requests 2 --k 2 --seeds 0 --max-steps 5 --smoke-anchors   # smoke (seconds)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import Split, load_digits_split
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.pretrain import pretrained_digits_cnn

sys.path.insert(0, str(Path(__file__).parent))
from unlearn_digits import quiet_trainer  # the same quiet single-CPU Trainer as the single-request benchmark

SETTINGS = {"default": False, "keep_forget_data": True}


def run_sequence(
    split: Split,
    base: torch.nn.Module,
    requests: list[tuple[torch.Tensor, torch.Tensor]],
    keep: bool,
    seed: int,
    args: Any,
) -> list[dict[str, Any]]:
    classifier = copy.deepcopy(base)
    anchors = PGDAnchors(eps=1.0, per_instance=2, steps=2) if args.smoke_anchors else "default"
    callback = InstanceUnlearning(
        anchors=anchors,  # type: ignore[arg-type]
        max_steps=args.max_steps,
        keep_forget_data=keep,
        seed=seed,
    )
    module = UnlearningModule(classifier, num_classes=10)
    rows = []
    for r, (x, y) in enumerate(requests):
        started = time.perf_counter()
        quiet_trainer(callback).fit(module, DataLoader(ForgetSet(x, y), batch_size=len(y)))
        summary = callback.summary
        assert summary is not None
        earlier = [accuracy(classifier, xe, ye) for xe, ye in requests[:r]]
        rows.append({
            "setting": "keep_forget_data" if keep else "default", "seed": seed, "request": r + 1, "k": len(y),
            "unlearned": summary.unlearned, "steps": summary.steps, "seconds": time.perf_counter() - started,
            "forget_acc": accuracy(classifier, x, y), "earlier_forget_acc": earlier,
            "max_earlier_forget_acc": max(earlier, default=0.0),
            "test_acc": accuracy(classifier, split.x_test, split.y_test),
        })  # fmt: skip
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}), flush=True)
    return rows


def table(rows: list[dict[str, Any]], pretrained: float) -> str:
    out = [
        "| setting | request | runs | all unlearned | forget acc (this request) | earlier requests' forget acc, max |"
        " test acc | test drop | steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        for r in sorted({row["request"] for row in rows}):
            group = [row for row in rows if row["setting"] == setting and row["request"] == r]
            if not group:
                continue
            test = statistics.fmean(row["test_acc"] for row in group)
            cells = [
                setting, str(r), str(len(group)), f"{sum(row['unlearned'] for row in group)}/{len(group)}",
                f"{100 * statistics.fmean(row['forget_acc'] for row in group):.1f}",
                f"{100 * max(row['max_earlier_forget_acc'] for row in group):.1f}" if r > 1 else "",
                f"{100 * test:.1f}", f"{100 * (pretrained - test):.1f}",
                f"{statistics.fmean(row['steps'] for row in group):.0f}",
            ]  # fmt: skip
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--k", type=int, default=16, help="instances per request")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--smoke-anchors", action="store_true", help="tiny anchors (for the smoke test)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/continual.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = load_digits_split()
    base = pretrained_digits_cnn()
    pretrained = accuracy(base, split.x_test, split.y_test)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        order = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(seed))
        requests = [
            (split.x_train[order[i * args.k : (i + 1) * args.k]], split.y_train[order[i * args.k : (i + 1) * args.k]])
            for i in range(args.requests)
        ]
        for setting in args.settings:
            L.seed_everything(seed, verbose=False)
            rows += run_sequence(split, base, requests, SETTINGS[setting], seed, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"pretrained_test_acc": pretrained, "rows": rows}, indent=1))
    print(f"pre-trained test accuracy {100 * pretrained:.2f} %")
    print(table(rows, pretrained))


if __name__ == "__main__":
    main()
