"""One unlearning request on scikit-learn digits, launched the way users launch multi-process training.

    python benchmarks/ddp_request.py --devices 2                        # strategy="ddp", 2 CPU processes (gloo)
    python benchmarks/ddp_request.py --devices 2 --precision bf16-mixed
    python benchmarks/ddp_request.py --accelerator gpu --devices 4      # one process per GPU (nccl)

With ``strategy="ddp"`` Lightning starts the other ranks by running this script again, each rank runs the whole file,
and only global rank 0 writes the report: ``<out>/report.json`` (one file, whatever the number of processes). The
report holds the request summary, the step at which each rank stopped, whether the importance tensors are identical on
every rank (gathered and compared bit for bit), and forget/test accuracy before and after.

Used by ``tests/test_distributed.py`` (as a subprocess with a timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, MASImportance, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import load_digits_split
from lightning_unlearn.pretrain import pretrained_digits_cnn


class RankAgreement(Callback):
    """Gathers, at the end of the request, each rank's step count and importance tensors (a collective: every rank
    calls it) so that rank 0 can report whether they agree."""

    def __init__(self, unlearning: InstanceUnlearning) -> None:
        self.unlearning = unlearning
        self.result: dict[str, Any] = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = self.unlearning.summary  # InstanceUnlearning is listed first, so its on_train_end has run
        steps = trainer.strategy.all_gather(torch.tensor(summary.steps if summary else -1, device=pl_module.device))
        global_steps = trainer.strategy.all_gather(torch.tensor(trainer.global_step, device=pl_module.device))
        scores = self.unlearning.importance.scores if self.unlearning.importance is not None else None
        identical: bool | None = None
        if scores is not None:
            flat = torch.cat([v.detach().float().flatten() for v in scores.values()])
            gathered = trainer.strategy.all_gather(flat).reshape(trainer.world_size, -1)
            identical = bool(all(torch.equal(gathered[0], row) for row in gathered))
        self.result = {
            "steps_per_rank": steps.reshape(-1).tolist(),
            "global_step_per_rank": global_steps.reshape(-1).tolist(),
            "importance_identical": identical,
        }


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", default="ddp", help="ddp (default), ddp_spawn, ddp_fork, auto, ...")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--k", type=int, default=8, help="forget instances (over all processes)")
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--per-instance", type=int, default=4, help="anchors per forget instance")
    parser.add_argument("--pgd-steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", type=Path, default=Path("unlearn_output/ddp_request"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # Every rank builds the same data and model; rank 0 runs this first (the others start inside `fit`), so the
    # pre-trained model's disk cache is written once.
    split = load_digits_split()
    classifier = pretrained_digits_cnn()
    index = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(args.seed))[: args.k]
    forget = ForgetSet(split.x_train[index], split.y_train[index])
    before = {
        "forget_acc": accuracy(classifier, forget.inputs, forget.labels),
        "test_acc": accuracy(classifier, split.x_test, split.y_test),
    }

    L.seed_everything(args.seed, verbose=False)
    unlearning = InstanceUnlearning(
        anchors=PGDAnchors(
            eps=1.0, per_instance=args.per_instance, steps=args.pgd_steps, weight=1.0, backend="builtin"
        ),
        importance=MASImportance(),
        max_steps=args.max_steps,
        seed=args.seed,
    )
    agreement = RankAgreement(unlearning)
    trainer = L.Trainer(
        strategy=args.strategy,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        precision=args.precision,
        max_epochs=-1,
        callbacks=[unlearning, agreement],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = UnlearningModule(classifier, num_classes=10)
    started = time.perf_counter()
    trainer.fit(module, DataLoader(forget, batch_size=len(forget)))
    seconds = time.perf_counter() - started
    if not trainer.is_global_zero:
        return
    classifier = classifier.cpu()  # spawn/fork: the main process got rank 0's weights back into this object
    summary = unlearning.summary
    report = {
        "strategy": args.strategy,
        "world_size": trainer.world_size,
        "precision": args.precision,
        "k": args.k,
        "fit_seconds": seconds,
        # with ddp_spawn/ddp_fork the callbacks ran in the child processes; rank 0's summary came back to this one
        "summary": summary.to_dict() if summary else None,
        **agreement.result,
        "before": before,
        "after": {
            "forget_acc": accuracy(classifier, forget.inputs, forget.labels),
            "test_acc": accuracy(classifier, split.x_test, split.y_test),
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(
        f"ddp_request: world_size={trainer.world_size} k={args.k} unlearned={summary.unlearned if summary else None}"
        f" steps={report.get('steps_per_rank')} forget_acc={report['after']['forget_acc']:.3f}"
        f" test_acc={report['after']['test_acc']:.3f} -> {args.out / 'report.json'}"
    )


if __name__ == "__main__":
    main()
