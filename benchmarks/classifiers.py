"""Every classifier a user brings: the package's request, exactly as a user writes it, on image, signal and tabular
classifiers with and without normalisation, next to retraining from scratch without the forget set in the same run.

For each classifier and seed: the forget set is the first ``k`` of a seeded permutation of the training indices (as
``tests/conftest.py``'s ``forget_indices``); the classifier's own recipe retrains it from scratch on the rest (timed);
then a fresh copy of the pre-trained classifier runs one request with the package defaults::

    module = UnlearningModule(classifier, num_classes=C)
    trainer = L.Trainer(max_epochs=-1, callbacks=[InstanceUnlearning(seed=s)], logger=False, ...,
                        accelerator="cpu", devices=1)
    trainer.fit(module, DataLoader(ForgetSet(x, y), batch_size=32))

With ``--retain-fraction f > 0`` the callback also gets ``retain=`` that share of the rest of the training inputs.
A request that raises is reported as ``raises: <message>`` and the script goes on. Cost: ``samples`` is the request's
own count of inputs pushed through the classifier (``summary.samples``, ``-`` where the package has no such field),
against retraining's epochs x training-set size; ``wall ratio`` is the request's seconds over retraining's, both
measured in this process. One torch thread. Prints a markdown table (per run, then mean and spread over seeds) and
writes JSON to ``benchmarks/results/classifiers.json``.

    python benchmarks/classifiers.py                                   # k = 32, seeds 0 1 2, every classifier
    python benchmarks/classifiers.py --k 64 --models digits_cnn lenet_no_bn
    python benchmarks/classifiers.py --k 32 --retain-fraction 0.05     # with a 5 % retained sample
    python benchmarks/classifiers.py --k 4 --seeds 0 --models breast_cancer_mlp --max-steps 5   # smoke (seconds)
    python benchmarks/classifiers.py --tables benchmarks/results/a.json benchmarks/results/b.json   # merged tables
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, UnlearningModule
from lightning_unlearn.datasets import Split, load_cbf_split, load_mnist5k_split, load_tabular_split
from lightning_unlearn.functional.evaluation import accuracy, predict
from lightning_unlearn.functional.metrics import is_unlearned
from lightning_unlearn.models import cnn1d, lenet, tabular_mlp
from lightning_unlearn.pretrain import cached_classifier, pretrained_signal_cnn, pretrained_tabular_mlp

sys.path.insert(0, str(Path(__file__).parent))
from unlearn_digits import load_task, machine_info, retrain_request  # the digits benchmark's models and retraining


@dataclass
class Task:
    """A pre-trained classifier with its data and its own training recipe (Adam 1e-3, batch 64, ``epochs``)."""

    split: Split
    classifier: nn.Module
    epochs: int
    make_model: Callable[[], nn.Module]
    inputs: str  # what a user feeds it, in words


def digits_task(model: str) -> Callable[[], Task]:
    def build() -> Task:
        split, classifier, epochs, make_model = load_task("digits", model)
        return Task(split, classifier, epochs, make_model, "images [N, 1, 8, 8] in [0, 1]")

    return build


def lenet_task() -> Task:
    split, epochs = load_mnist5k_split(), 10
    classifier = cached_classifier(
        f"benchmark_mnist5k_lenet_seed0_ep{epochs}.pt", lenet, split.x_train, split.y_train, epochs=epochs
    )
    return Task(split, classifier, epochs, lenet, "images [N, 1, 28, 28] in [0, 1]")


def signal_task() -> Task:
    return Task(load_cbf_split(), pretrained_signal_cnn(), 20, cnn1d, "standardised signals [N, 1, 128]")


def tabular_task(name: str) -> Callable[[], Task]:
    def build() -> Task:
        split = load_tabular_split(name)
        features, classes = split.x_train.shape[1], split.num_classes
        make_model = lambda: tabular_mlp(features, classes)  # noqa: E731
        inputs = f"standardised features [N, {features}]"
        return Task(split, pretrained_tabular_mlp(name, epochs=30), 30, make_model, inputs)

    return build


CLASSIFIERS: dict[str, tuple[str, Callable[[], Task]]] = {
    "digits_cnn": ("digits small CNN with BatchNorm", digits_task("small_cnn")),
    "digits_cnn_no_bn": ("digits CNN without normalisation (dropout)", digits_task("cnn_no_bn")),
    "lenet_no_bn": ("MNIST-5k LeNet-5 without normalisation", lenet_task),
    "digits_mlp": ("digits MLP 64-256-256-10 (flattened images)", digits_task("mlp")),
    "cbf_cnn1d": ("Cylinder-Bell-Funnel 1-D CNN (3 classes)", signal_task),
    "digits_flat_mlp": ("tabular MLP on standardised flat digits (10 classes)", tabular_task("digits_flat")),
    "breast_cancer_mlp": ("tabular MLP on breast cancer (2 classes)", tabular_task("breast_cancer")),
}


def user_request(
    classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int, retain: torch.Tensor | None,
    max_steps: int | None, callback_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One request as a user writes it (plus ``callback_kwargs``); returns what its summary says, or ``error``."""
    kwargs: dict[str, Any] = {"seed": seed, **(callback_kwargs or {})}
    if retain is not None:
        kwargs["retain"] = retain
    if max_steps is not None:  # smoke runs only; the benchmark uses the package's budget
        kwargs["max_steps"] = max_steps
    started = time.perf_counter()
    try:
        callback = InstanceUnlearning(**kwargs)
        module = UnlearningModule(classifier, num_classes=num_classes)
        trainer = L.Trainer(
            max_epochs=-1,
            callbacks=[callback],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            devices=1,
        )
        trainer.fit(module, DataLoader(ForgetSet(x, y), batch_size=32))
    except Exception as error:  # a request that raises is a result of this benchmark
        return {"error": f"{type(error).__name__}: {error}", "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    summary = callback.summary
    assert summary is not None
    samples = getattr(summary, "samples", None)
    return {
        "error": None,
        "seconds": seconds,
        "steps": summary.steps,
        "finished_by": summary.finished_by,
        "restored": summary.restored,
        "summary_unlearned": summary.unlearned,
        "samples": samples,
    }


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    tasks: dict[str, dict[str, Any]] = {}
    for name in args.models:
        label, build = CLASSIFIERS[name]
        task = build()
        split, base = task.split, task.classifier
        n = len(split.y_train)
        pre_test = accuracy(base, split.x_test, split.y_test)
        tasks[name] = {
            "label": label, "inputs": task.inputs, "num_classes": split.num_classes, "train": n,
            "test": len(split.y_test), "epochs": task.epochs, "pretrained_test_acc": pre_test,
            "input_min": float(split.x_train.min()), "input_max": float(split.x_train.max()),
        }  # fmt: skip
        print(json.dumps({"classifier": name, **tasks[name]}), flush=True)
        for seed in args.seeds:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            f_idx, r_idx = perm[: args.k], perm[args.k :]
            x_f, y_f = split.x_train[f_idx], split.y_train[f_idx]
            x_r, y_r = split.x_train[r_idx], split.y_train[r_idx]
            retain = None
            if args.retain_fraction > 0:
                retain = x_r[: max(1, round(args.retain_fraction * len(r_idx)))]
            retrained, info = retrain_request(split, r_idx, seed, task.epochs, task.make_model)
            L.seed_everything(seed, verbose=False)
            model = copy.deepcopy(base)
            outcome = user_request(model, x_f, y_f, split.num_classes, seed, retain, args.max_steps)
            row = {
                "classifier": name, "k": args.k, "seed": seed, "retain_fraction": args.retain_fraction,
                "retain_sample": 0 if retain is None else len(retain), **outcome,
                "unlearned": int(is_unlearned(predict(model, x_f), y_f).sum()),
                "test_drop": 100 * (pre_test - accuracy(model, split.x_test, split.y_test)),
                "retain_drop": 100 * (accuracy(base, x_r, y_r) - accuracy(model, x_r, y_r)),
                "retrain_seconds": info["seconds"], "retrain_samples": task.epochs * len(r_idx),
                "retrain_test_acc": accuracy(retrained, split.x_test, split.y_test),
                "retrain_forget_acc": accuracy(retrained, x_f, y_f),
            }  # fmt: skip
            row["wall_ratio"] = row["seconds"] / row["retrain_seconds"]
            row["samples_ratio"] = None if row.get("samples") is None else row["samples"] / row["retrain_samples"]
            rows.append(row)
            print(json.dumps({key: (round(v, 4) if isinstance(v, float) else v) for key, v in row.items()}), flush=True)
    return rows, tasks


def spread(values: list[float], digits: int = 1) -> str:
    """``mean (min-max)`` of ``values``; just the value for one."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def short(message: str, width: int = 110) -> str:
    message = message.replace("|", "/").replace("\n", " ")
    return message if len(message) <= width else message[: width - 3] + "..."


def per_run_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| classifier | k | seed | unlearned | finished by | test drop | retain drop | steps | seconds | samples |"
        " retrain samples | retrain s | samples ratio | wall ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = [r["classifier"], str(r["k"]), str(r["seed"])]
        tail = [f"{r['retrain_samples']:,}", f"{r['retrain_seconds']:.1f}"]
        if r["error"]:
            cells = [*head, f"raises: {short(r['error'])}", *["-"] * 4, f"{r['seconds']:.1f}", "-", *tail, "-", "-"]
        else:
            samples = "-" if r["samples"] is None else f"{r['samples']:,}"
            ratio = "-" if r["samples_ratio"] is None else f"{r['samples_ratio']:.2f}"
            cells = [*head, f"{r['unlearned']}/{r['k']}", str(r["finished_by"]), f"{r['test_drop']:.1f}"]
            cells += [f"{r['retain_drop']:.1f}", str(r["steps"]), f"{r['seconds']:.1f}", samples, *tail]
            cells += [ratio, f"{r['wall_ratio']:.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def summary_table(rows: list[dict[str, Any]], tasks: dict[str, dict[str, Any]]) -> str:
    """Mean (min-max) over seeds per classifier; runs that raised are counted, their first message shown, and left out
    of the means (their seconds are the time to raise, not a cost)."""
    out = [
        "| classifier | pre-trained test acc | k | runs | unlearned | finished by | test drop | retain drop | steps |"
        " seconds | samples | samples ratio | retrain s | wall ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["classifier"] for r in rows):
        group = [r for r in rows if r["classifier"] == name]
        ok = [r for r in group if not r["error"]]
        raised = [r for r in group if r["error"]]
        pre = f"{100 * tasks[name]['pretrained_test_acc']:.1f} %"
        head = [name, pre, str(group[0]["k"]), str(len(group))]
        retrain = spread([r["retrain_seconds"] for r in group])
        if not ok:
            cells = [*head, f"raises ({len(raised)}/{len(group)}): {short(raised[0]['error'])}", *["-"] * 7]
            cells += [retrain, "-"]
            out.append("| " + " | ".join(cells) + " |")
            continue
        unlearned = ", ".join(f"{r['unlearned']}/{r['k']}" for r in ok)
        if raised:
            unlearned += f"; raises ({len(raised)}): {short(raised[0]['error'], 60)}"
        finished = ", ".join(str(r["finished_by"]) for r in ok)
        samples = [r["samples"] for r in ok if r["samples"] is not None]
        ratios = [r["samples_ratio"] for r in ok if r["samples_ratio"] is not None]
        drops = [spread([r["test_drop"] for r in ok]), spread([r["retain_drop"] for r in ok])]
        cells = [*head, unlearned, finished, *drops]
        cells += [spread([float(r["steps"]) for r in ok], 0), spread([r["seconds"] for r in ok])]
        cells += [spread([float(s) for s in samples], 0) if samples else "-", spread(ratios, 2) if ratios else "-"]
        cells += [retrain, spread([r["wall_ratio"] for r in ok], 2)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=32, help="forget instances per request")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(CLASSIFIERS), choices=list(CLASSIFIERS))
    parser.add_argument(
        "--retain-fraction", type=float, default=0.0, help="pass InstanceUnlearning(retain=) this share of the rest"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="smoke runs only (default: the package's budget)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/classifiers.json"))
    parser.add_argument("--tables", type=Path, nargs="+", help="only print the tables of these JSON files, merged")
    args = parser.parse_args()
    if args.tables:
        rows, tasks = [], {}
        for path in args.tables:
            data = json.loads(path.read_text())
            rows += data["rows"]
            tasks |= data["classifiers"]
        print_tables(rows, tasks)
        return
    if not 0.0 <= args.retain_fraction < 1.0:
        parser.error(f"--retain-fraction must be in [0, 1), got {args.retain_fraction}.")
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows, tasks = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"args": vars(args) | {"out": str(args.out)}, "classifiers": tasks, "rows": rows}
    payload["machine"] = machine_info() | {"wall_seconds": time.perf_counter() - started}
    args.out.write_text(json.dumps(payload, indent=1))
    print_tables(rows, tasks)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


def print_tables(rows: list[dict[str, Any]], tasks: dict[str, dict[str, Any]]) -> None:
    print("\nClassifiers:\n")
    for name, task in tasks.items():
        print(
            f"- {name}: {task['label']}; {task['inputs']} (training inputs span [{task['input_min']:.2f},"
            f" {task['input_max']:.2f}]); {task['train']} train / {task['test']} test; recipe {task['epochs']} epochs;"
            f" pre-trained test accuracy {100 * task['pretrained_test_acc']:.2f} %"
        )
    print("\nPer run:\n")
    print(per_run_table(rows))
    print("\nMean (min-max) over seeds:\n")
    print(summary_table(rows, tasks))


if __name__ == "__main__":
    main()
