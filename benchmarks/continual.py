"""Continual unlearning: a sequence of requests on the same module and callback, next to one request of their union.

After every request the script counts the instances of earlier requests that the classifier classifies correctly again
(*re-learned*; 0 = every earlier request still unlearned) and measures test accuracy. Settings:

- ``default``: the package defaults, forget set only; nothing of an earlier request is kept.
- ``retain``: the defaults plus a retained sample (``--retain-fraction`` of the training data outside every request,
  distilled toward the model at the start of each request).
- ``keep_forget_data``: ``InstanceUnlearning(keep_forget_data=True)``: earlier forget sets kept in memory, held
  unlearned and included in the stop check (the explicit opt-in); ``keep_forget_data+retain``: the same with the
  retained sample.

With ``--union`` each setting except the ``keep_forget_data`` ones also runs one request of all the sequence's
instances on the pre-trained model (the reference a sequence should not fall below). Prints a markdown table and
writes JSON.

    python benchmarks/continual.py                                   # digits CNN, 5 requests of 16, seeds 0 1 2
    python benchmarks/continual.py --requests 10 --k 8 --settings default retain --union
    python benchmarks/continual.py --dataset mnist5k --model resnet18 --seeds 0 --settings default --union
    python benchmarks/continual.py --classifier cbf_cnn1d --settings default retain --union   # 1-D signals
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
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_unlearn import FisherEdit, ForgetSet, InstanceUnlearning, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.evaluation import accuracy

sys.path.insert(0, str(Path(__file__).parent))
from classifiers import CLASSIFIERS  # the "every classifier" benchmark's classifiers (signals, tabular, ...)
from unlearn_digits import MODELS, load_task, quiet_trainer  # the single-request benchmark's Trainer and models

SETTINGS = ("default", "retain", "keep_forget_data", "keep_forget_data+retain")


def make_callback(setting: str, retain: Tensor, seed: int, args: Any) -> InstanceUnlearning:
    """The callback of one setting (one per sequence: it carries the request counter between requests)."""
    anchors = PGDAnchors(eps=1.0, per_instance=2, steps=2) if args.smoke_anchors else "default"
    fisher: dict[str, Any] = {}
    if args.fisher_restore is not None:
        fisher["restore"] = args.fisher_restore
    if args.fisher_restore_toward is not None:
        fisher["restore_toward"] = args.fisher_restore_toward
    if args.fisher_margin is not None:
        fisher["margin"] = args.fisher_margin
    return InstanceUnlearning(
        anchors=anchors,  # type: ignore[arg-type]
        **({"fisher_edit": FisherEdit(**fisher)} if fisher else {}),
        max_steps=args.max_steps,
        keep_forget_data=setting.startswith("keep_forget_data"),
        retain=retain if setting.endswith("retain") else None,
        seed=seed,
    )


def resident_mib() -> int | None:
    """This process's resident memory in MiB (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) // 1024 for line in status.splitlines() if line.startswith("VmRSS")), None)


def outcome_row(
    setting: str,
    request: int,
    x: Tensor,
    y: Tensor,
    earlier: list[tuple[Tensor, Tensor]],
    classifier: nn.Module,
    callback: InstanceUnlearning,
    split: Split,
    seed: int,
    started: float,
) -> dict[str, Any]:
    """The row of one request (``request`` 0 for a union request): outcome, re-learned earlier instances, test
    accuracy; printed as a JSON line as well."""
    summary = callback.summary
    assert summary is not None
    accuracies = [accuracy(classifier, xe, ye) for xe, ye in earlier]
    row = {
        "setting": setting, "seed": seed, "request": request, "k": len(y), "unlearned": summary.unlearned,
        "finished_by": summary.finished_by, "steps": summary.steps, "seconds": time.perf_counter() - started,
        "forget_acc": accuracy(classifier, x, y), "earlier_forget_acc": accuracies,
        "relearned": sum(round(a * len(ye)) for a, (_, ye) in zip(accuracies, earlier)),
        "earlier_instances": sum(len(ye) for _, ye in earlier),
        "test_acc": accuracy(classifier, split.x_test, split.y_test), "rss_mib": resident_mib(),
    }  # fmt: skip
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return row


def run_sequence(
    split: Split,
    base: nn.Module,
    requests: list[tuple[Tensor, Tensor]],
    retain: Tensor,
    setting: str,
    seed: int,
    args: Any,
) -> list[dict[str, Any]]:
    """One module and one callback serve every request in turn; returns a row per request."""
    classifier = copy.deepcopy(base)
    callback = make_callback(setting, retain, seed, args)
    module = UnlearningModule(classifier, num_classes=split.num_classes)
    rows = []
    for r, (x, y) in enumerate(requests):
        started = time.perf_counter()
        quiet_trainer(callback).fit(module, DataLoader(ForgetSet(x, y), batch_size=len(y)))
        rows.append(outcome_row(setting, r + 1, x, y, requests[:r], classifier, callback, split, seed, started))
    return rows


def run_union(
    split: Split,
    base: nn.Module,
    requests: list[tuple[Tensor, Tensor]],
    retain: Tensor,
    setting: str,
    seed: int,
    args: Any,
) -> dict[str, Any]:
    """One request of every instance of the sequence, on the pre-trained classifier."""
    x = torch.cat([x for x, _ in requests])
    y = torch.cat([y for _, y in requests])
    classifier = copy.deepcopy(base)
    callback = make_callback(setting, retain, seed, args)
    started = time.perf_counter()
    module = UnlearningModule(classifier, num_classes=split.num_classes)
    quiet_trainer(callback).fit(module, DataLoader(ForgetSet(x, y), batch_size=len(y)))
    return outcome_row(f"{setting} (union)", 0, x, y, [], classifier, callback, split, seed, started)


def table(rows: list[dict[str, Any]], pretrained: float) -> str:
    """Mean over seeds per setting and request; re-learned: earlier instances classified correctly again (mean, max)."""
    out = [
        "| setting | request | runs | all unlearned | re-learned earlier instances, mean (max) | test acc | test drop |"
        " steps | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting in dict.fromkeys(row["setting"] for row in rows):
        for r in sorted({row["request"] for row in rows if row["setting"] == setting}):
            group = [row for row in rows if row["setting"] == setting and row["request"] == r]
            test = statistics.fmean(row["test_acc"] for row in group)
            relearned = [row["relearned"] for row in group]
            cells = [
                setting, str(r) if r else f"all {group[0]['k']}", str(len(group)),
                f"{sum(row['unlearned'] for row in group)}/{len(group)}",
                f"{statistics.fmean(relearned):.1f} ({max(relearned)}) of {group[0]['earlier_instances']}" if r > 1
                else "",
                f"{100 * test:.1f}", f"{100 * (pretrained - test):.1f}",
                f"{statistics.fmean(row['steps'] for row in group):.0f}",
                f"{statistics.fmean(row['seconds'] for row in group):.0f}",
            ]  # fmt: skip
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("digits", "mnist5k"), default="digits")
    parser.add_argument("--model", choices=list(MODELS), default="small_cnn")
    parser.add_argument(
        "--classifier", choices=list(CLASSIFIERS), help="a classifier of benchmarks/classifiers.py (overrides --model)"
    )
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--k", type=int, default=16, help="instances per request")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--union", action="store_true", help="also one request of the union of the forget sets")
    parser.add_argument("--retain-fraction", type=float, default=0.05, help="retain: share of the rest of the data")
    parser.add_argument("--max-steps", type=int, default=1000, help="step budget per request (package default)")
    parser.add_argument("--fisher-restore", type=int, help="FisherEdit(restore=...) (default: the package's)")
    parser.add_argument("--fisher-restore-toward", help="FisherEdit(restore_toward=...)")
    parser.add_argument("--fisher-margin", type=float, help="FisherEdit(margin=...) (default: the package's)")
    parser.add_argument("--smoke-anchors", action="store_true", help="tiny anchors (for the smoke test)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/continual.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.classifier:
        task = CLASSIFIERS[args.classifier][1]()
        split, base = task.split, task.classifier
    else:
        split, base, _, _ = load_task(args.dataset, args.model)
    pretrained = accuracy(base, split.x_test, split.y_test)
    rows: list[dict[str, Any]] = []
    n, used = len(split.y_train), args.requests * args.k
    for seed in args.seeds:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        requests = [
            (split.x_train[order[i * args.k : (i + 1) * args.k]], split.y_train[order[i * args.k : (i + 1) * args.k]])
            for i in range(args.requests)
        ]
        retain = split.x_train[order[used : used + max(1, round(args.retain_fraction * (n - used)))]]
        for setting in args.settings:
            L.seed_everything(seed, verbose=False)
            rows += run_sequence(split, base, requests, retain, setting, seed, args)
            if args.union and not setting.startswith("keep_forget_data"):
                L.seed_everything(seed, verbose=False)
                rows.append(run_union(split, base, requests, retain, setting, seed, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"pretrained_test_acc": pretrained, "args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1
        )
    )
    print(f"pre-trained test accuracy {100 * pretrained:.2f} %")
    print(table(rows, pretrained))


if __name__ == "__main__":
    main()
