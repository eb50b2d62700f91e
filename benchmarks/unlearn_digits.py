"""Benchmark of the core method on scikit-learn digits: forget k random training instances with each method.

Prints a markdown table (mean over seeds, and per run with --per-run) and writes JSON to benchmarks/results/.

    python benchmarks/unlearn_digits.py                       # k = 8, 32, 128; seeds 0, 1, 2; all methods
    python benchmarks/unlearn_digits.py --quick               # smoke run (seconds): k = 4, one seed, two methods

Methods: negative gradient alone, + anchors, + anchors + importance penalty (the package default), + anchors +
importance mask, the default in relabel mode, the same computation as a plain PyTorch loop (to time Lightning's
overhead), and retraining from scratch without the forget set (the reference).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, MASImportance, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import Split, load_digits_split
from lightning_unlearn.functional import forget_loss
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.models import small_cnn
from lightning_unlearn.pretrain import pretrained_digits_cnn, train_classifier

MAX_STEPS = 2000


def _trainer(callback: InstanceUnlearning) -> L.Trainer:
    return L.Trainer(
        max_epochs=-1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )


def lightning_request(
    classifier: nn.Module,
    forget: ForgetSet,
    anchors: PGDAnchors | str | None,
    importance: MASImportance | str | None,
    module_kwargs: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    callback = InstanceUnlearning(anchors=anchors, importance=importance, max_steps=MAX_STEPS, seed=seed)  # type: ignore[arg-type]
    module = UnlearningModule(classifier, num_classes=10, **module_kwargs)
    started = time.perf_counter()
    _trainer(callback).fit(module, DataLoader(forget, batch_size=len(forget)))
    seconds = time.perf_counter() - started
    summary = callback.summary
    assert summary is not None
    return {
        "steps": summary.steps,
        "seconds": seconds,
        "unlearned": summary.unlearned,
        "setup_seconds": summary.setup_seconds,
    }


def plain_loop_request(classifier: nn.Module, forget: ForgetSet, seed: int) -> dict[str, Any]:
    """The package default computation, written as a plain PyTorch loop (no Lightning)."""
    started = time.perf_counter()
    default = UnlearningModule(classifier, num_classes=10)
    anchors, importance = PGDAnchors(), MASImportance()
    generator = torch.Generator().manual_seed(seed)
    x, y = forget.inputs, forget.labels
    pool = anchors.generate(classifier, x, y, 10, generator=generator)
    scores = importance.normalize(importance.estimate_sum(classifier, x), len(x))
    reference = {n: p.detach().clone() for n, p in classifier.named_parameters()}
    batch_gen = torch.Generator().manual_seed(seed + 1)
    params = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = (
        torch.optim.Adam(params, lr=default.lr, weight_decay=default.weight_decay)
        if default.optimizer_name == "adam"
        else torch.optim.SGD(params, lr=default.lr, momentum=default.momentum)
    )
    classifier.train()
    if default.batchnorm == "eval":
        for m in classifier.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    steps = 0
    done = False
    while steps < MAX_STEPS and not done:
        logits = classifier(x)
        loss = default.forget_weight * forget_loss(
            logits, y, None, kind=default.forget_loss_kind, margin=default.margin
        )
        index = torch.randint(0, len(pool), (min(anchors.batch_size, len(pool)),), generator=batch_gen)
        loss = loss + anchors.weight * anchors.loss_on(classifier(pool.inputs[index]), pool, index)
        loss = loss + importance.penalty(classifier, reference, scores)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        done = bool(default.unlearned(x, y).all())
    classifier.eval()
    return {"steps": steps, "seconds": time.perf_counter() - started, "unlearned": done, "setup_seconds": float("nan")}


def retrain_request(split: Split, retain_index: torch.Tensor, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(seed)
    model = small_cnn()
    started = time.perf_counter()
    train_classifier(model, split.x_train[retain_index], split.y_train[retain_index], seed=seed)
    return model, {"steps": 0, "seconds": time.perf_counter() - started, "unlearned": None, "setup_seconds": 0.0}


METHODS: dict[str, dict[str, Any]] = {
    "neg_grad": {"anchors": None, "importance": None, "module": {"forget_loss": "neg_ce"}},
    "anchors": {"anchors": "default", "importance": None, "module": {}},
    "anchors+penalty": {"anchors": "default", "importance": "default", "module": {}},
    "anchors+mask": {"anchors": "default", "importance": MASImportance(use="mask"), "module": {}},
    "default_relabel": {"anchors": "default", "importance": "default", "module": {}, "relabel": True},
    "plain_loop": {},
    "retrain": {},
}


def run(ks: list[int], seeds: list[int], methods: list[str]) -> list[dict[str, Any]]:
    split = load_digits_split()
    base = pretrained_digits_cnn()
    pre = {"test": accuracy(base, split.x_test, split.y_test)}
    rows: list[dict[str, Any]] = []
    n = len(split.y_train)
    for k in ks:
        for seed in seeds:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            f_idx, r_idx = perm[:k], perm[k:]
            x_f, y_f = split.x_train[f_idx], split.y_train[f_idx]
            for method in methods:
                L.seed_everything(seed, verbose=False)
                spec = METHODS[method]
                model = copy.deepcopy(base)
                relabel = bool(spec.get("relabel"))
                targets = (y_f + 1 + torch.randint(0, 9, y_f.shape, generator=torch.Generator().manual_seed(seed))) % 10
                if method == "retrain":
                    model, info = retrain_request(split, r_idx, seed)
                elif method == "plain_loop":
                    info = plain_loop_request(model, ForgetSet(x_f, y_f), seed)
                else:
                    forget = ForgetSet(x_f, y_f, targets=targets if relabel else None)
                    info = lightning_request(model, forget, spec["anchors"], spec["importance"], spec["module"], seed)
                row = {
                    "method": method,
                    "k": k,
                    "seed": seed,
                    **info,
                    "forget_acc": accuracy(model, x_f, y_f),
                    "target_acc": accuracy(model, x_f, targets) if relabel else float("nan"),
                    "retain_acc": accuracy(model, split.x_train[r_idx], split.y_train[r_idx]),
                    "test_acc": accuracy(model, split.x_test, split.y_test),
                    "pretrained_test_acc": pre["test"],
                }
                rows.append(row)
                print(
                    json.dumps({key: (round(v, 4) if isinstance(v, float) else v) for key, v in row.items()}),
                    flush=True,
                )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    mean: Callable[[list[float]], float] = lambda v: statistics.fmean(v) if v else float("nan")  # noqa: E731
    out = [
        "| method | k | runs | all unlearned | forget acc | target acc | retain acc | test acc | test drop | steps |"
        " seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["k"], r["method"]) for r in rows}, key=lambda t: (t[0], list(METHODS).index(t[1])))
    for k, method in keys:
        group = [r for r in rows if r["k"] == k and r["method"] == method]
        ok = sum(1 for r in group if r["unlearned"] or (r["unlearned"] is None))
        status = f"{ok}/{len(group)}" if method != "retrain" else "n/a"
        pre = group[0]["pretrained_test_acc"]
        test = mean([r["test_acc"] for r in group])
        out.append(
            f"| {method} | {k} | {len(group)} | {status} | {100 * mean([r['forget_acc'] for r in group]):.1f} |"
            f" {100 * mean([r['target_acc'] for r in group]):.1f} | {100 * mean([r['retain_acc'] for r in group]):.1f} |"
            f" {100 * test:.1f} | {100 * (pre - test):.1f} | {mean([r['steps'] for r in group]):.0f} |"
            f" {mean([r['seconds'] for r in group]):.1f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--quick", action="store_true", help="smoke run: k=4, seed 0, neg_grad and default")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/unlearn_digits.json"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.ks, args.seeds, args.methods = [4], [0], ["neg_grad", "anchors+penalty"]
    rows = run(args.ks, args.seeds, args.methods)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "machine": _machine()}, indent=1))
    print(table(rows))


def _machine() -> dict[str, Any]:
    import os
    import platform

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }


if __name__ == "__main__":
    main()
