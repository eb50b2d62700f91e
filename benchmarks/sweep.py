"""One-factor-at-a-time hyper-parameter sweep around the package defaults, scored on a development split.

Each variant changes one setting of the defaults (learning rate, BatchNorm mode, anchor loss weight, anchor radii as
multiples of the default radii for the input size, anchors per instance, MAS penalty strength, MAS mask fraction) and
forgets the same k random training instances per seed. The held-out split is cut in two by position: even positions
are the development split that ranks the variants, odd positions are reported beside it and never used to choose.

    python benchmarks/sweep.py --dataset digits --k 32 --seeds 0 1 --out benchmarks/results/sweep_digits.json
    python benchmarks/sweep.py --dataset mnist5k --model resnet18 --k 8 --seeds 0 \\
        --out benchmarks/results/sweep_mnist5k.json
    python benchmarks/sweep.py --quick                         # smoke run (seconds)
    python benchmarks/sweep.py --report benchmarks/results/sweep_digits.json benchmarks/results/sweep_mnist5k.json

The report ranks variants by their mean development-accuracy drop over the datasets given, counting only variants
that unlearned every instance in every run.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from unlearn_digits import MODELS, lightning_request, load_task, machine_info

from lightning_unlearn import ForgetSet, MASImportance, PGDAnchors
from lightning_unlearn.functional.evaluation import accuracy


class ScaledRadii(PGDAnchors):
    """The default anchors with the default radii (``PGDAnchors.radii`` for the input size) times ``factor``."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def radii(self, inputs: Tensor) -> tuple[float, ...]:
        return tuple(self.factor * r for r in super().radii(inputs))


# name -> (anchors, importance, UnlearningModule keyword arguments); "default" is the package default
VARIANTS: dict[str, tuple[PGDAnchors | str | None, MASImportance | None, dict[str, Any]]] = {
    "default": ("default", None, {}),
    "lr=3e-5": ("default", None, {"lr": 3e-5}),
    "lr=3e-4": ("default", None, {"lr": 3e-4}),
    "batchnorm=train": ("default", None, {"batchnorm": "train"}),
    "anchor weight=3": (PGDAnchors(weight=3.0), None, {}),
    "anchor weight=30": (PGDAnchors(weight=30.0), None, {}),
    "eps x0.5": (ScaledRadii(0.5), None, {}),
    "eps x2": (ScaledRadii(2.0), None, {}),
    "eps x4": (ScaledRadii(4.0), None, {}),
    "eps x0.25": (ScaledRadii(0.25), None, {}),
    "anchors/instance=7": (PGDAnchors(per_instance=7), None, {}),
    "anchors/instance=42": (PGDAnchors(per_instance=42), None, {}),
    "no anchors": (None, None, {}),
    "penalty strength=0.1": ("default", MASImportance(use="penalty", strength=0.1), {}),
    "penalty strength=1": ("default", MASImportance(use="penalty", strength=1.0), {}),
    "penalty strength=10": ("default", MASImportance(use="penalty", strength=10.0), {}),
    "mask top 10 %": ("default", MASImportance(use="mask", top_fraction=0.1), {}),
    "mask top 50 %": ("default", MASImportance(use="mask", top_fraction=0.5), {}),
}


def run(dataset: str, model_name: str, k: int, seeds: list[int], variants: list[str]) -> list[dict[str, Any]]:
    split, base, _, _ = load_task(dataset, model_name)
    dev, held = slice(0, None, 2), slice(1, None, 2)
    x_dev, y_dev, x_held, y_held = split.x_test[dev], split.y_test[dev], split.x_test[held], split.y_test[held]
    pre_dev, pre_held = accuracy(base, x_dev, y_dev), accuracy(base, x_held, y_held)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        perm = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(seed))
        x_f, y_f = split.x_train[perm[:k]], split.y_train[perm[:k]]
        for name in variants:
            anchors, importance, module_kwargs = VARIANTS[name]
            L.seed_everything(seed, verbose=False)
            model = copy.deepcopy(base)
            info = lightning_request(
                model, ForgetSet(x_f, y_f), copy.deepcopy(anchors), copy.deepcopy(importance), module_kwargs, seed
            )
            row = {
                "dataset": f"{dataset}/{model_name}",
                "variant": name,
                "k": k,
                "seed": seed,
                "unlearned": info["unlearned"],
                "steps": info["steps"],
                "seconds": info["seconds"],
                "forget_acc": accuracy(model, x_f, y_f),
                "dev_acc": accuracy(model, x_dev, y_dev),
                "held_acc": accuracy(model, x_held, y_held),
                "pretrained_dev_acc": pre_dev,
                "pretrained_held_acc": pre_held,
            }
            rows.append(row)
            print(json.dumps({key: (round(v, 4) if isinstance(v, float) else v) for key, v in row.items()}), flush=True)
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    """One line per variant: runs unlearned and development/other-half drops per dataset, ranked by the mean
    development drop over datasets among variants that unlearned every run (the others last)."""
    datasets = sorted({r["dataset"] for r in rows})
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]

    def cell(variant: str, dataset: str) -> tuple[int, int, float, float]:
        group = [r for r in rows if r["variant"] == variant and r["dataset"] == dataset]
        if not group:
            return 0, 0, float("nan"), float("nan")
        dev = statistics.fmean(r["pretrained_dev_acc"] - r["dev_acc"] for r in group)
        held = statistics.fmean(r["pretrained_held_acc"] - r["held_acc"] for r in group)
        return sum(bool(r["unlearned"]) for r in group), len(group), 100 * dev, 100 * held

    scored = []
    for variant in variants:
        cells = [cell(variant, d) for d in datasets]
        complete = all(n > 0 and ok == n for ok, n, _, _ in cells)
        scored.append((not complete, statistics.fmean(c[2] for c in cells), variant, cells))
    scored.sort()
    head = "| rank | variant | " + " | ".join(f"{d}: unlearned, dev drop, other-half drop" for d in datasets)
    out = [head + " | mean dev drop |", "|---|---|" + "---|" * (len(datasets) + 1)]
    for rank, (incomplete, mean_dev, variant, cells) in enumerate(scored, start=1):
        parts = [f"{ok}/{n}, {dev:.1f}, {held:.1f}" if n else "not run" for ok, n, dev, held in cells]
        name = f"**{variant}**" if variant == "default" else variant
        out.append(f"| {'-' if incomplete else rank} | {name} | " + " | ".join(parts) + f" | {mean_dev:.1f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["digits", "mnist5k"], default="digits")
    parser.add_argument("--model", choices=list(MODELS), default="small_cnn")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep.json"))
    parser.add_argument("--quick", action="store_true", help="smoke run: digits, k=2, seed 0, two variants")
    parser.add_argument("--report", type=Path, nargs="+", help="print the ranked table of these result files")
    args = parser.parse_args()
    if args.report:
        print(report([row for path in args.report for row in json.loads(path.read_text())["rows"]]))
        return
    if args.quick:
        args.dataset, args.model, args.k, args.seeds = "digits", "small_cnn", 2, [0]
        args.variants = ["default", "lr=3e-4"]
    torch.set_num_threads(args.threads)
    rows = run(args.dataset, args.model, args.k, args.seeds, args.variants)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "machine": machine_info()}, indent=1))
    print(report(rows))


if __name__ == "__main__":
    main()
