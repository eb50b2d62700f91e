"""One request over several processes with ``strategy="ddp"``, launched as a plain script.

With ``Trainer(strategy="ddp", devices=N)`` Lightning starts the other N - 1 processes by running this same script
again (with environment variables that tell each one its rank), so everything before ``trainer.fit`` runs once per
process: every process builds the same data and model. The forget set is sharded by Lightning's distributed sampler,
each process makes the anchors of its shard, importance and the stop decision are reduced across processes, and all
processes stop at the same step. Files are written by global rank 0 only (``trainer.is_global_zero``): one summary
JSON, whatever the number of processes.

Here: 2 CPU processes (gloo); on GPUs use ``--accelerator gpu --devices 4`` (nccl). ``torchrun`` and SLURM launches
work the same way.

    python examples/05_ddp.py                        # 2 CPU processes, 16 instances
    python examples/05_ddp.py --smoke                # tiny sizes, default step budget (the tests)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import load_digits_split
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.pretrain import pretrained_digits_cnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: finishes in a few seconds")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--k", type=int, default=16, help="instances to forget, over all processes")
    parser.add_argument("--out", type=Path, default=Path("unlearn_output/ddp_example"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        torch.set_num_threads(1)
        args.k = 4
    elif args.accelerator == "cpu":
        torch.set_num_threads(1)  # one thread per process: the processes share the CPU cores

    # Runs in every process. Rank 0 gets here first (the others start inside `fit`), so the pre-trained model's disk
    # cache is written once and read by the others.
    split = load_digits_split()
    classifier = pretrained_digits_cnn()
    index = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(args.seed))[: args.k]
    forget = ForgetSet(split.x_train[index], split.y_train[index])

    L.seed_everything(args.seed, verbose=False)
    if args.smoke:
        callback = InstanceUnlearning(anchors=PGDAnchors(eps=1.0, per_instance=2, steps=2), seed=args.seed)
    else:
        callback = InstanceUnlearning(seed=args.seed)
    trainer = L.Trainer(
        strategy="ddp",
        accelerator=args.accelerator,
        devices=args.devices,
        max_epochs=-1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # each process gets k / devices instances; one batch per process per step
    per_process = max(1, args.k // args.devices)
    trainer.fit(UnlearningModule(classifier, num_classes=10), DataLoader(forget, batch_size=per_process))

    if trainer.is_global_zero:  # every process holds the same weights and summary; one writes
        summary = callback.summary
        assert summary is not None
        path = callback.save_summary(args.out / "summary.json")
        print(
            f"world_size={trainer.world_size}: unlearned={summary.unlearned} ({summary.k} instances, {summary.steps}"
            f" steps); forget acc {accuracy(classifier, forget.inputs, forget.labels):.3f},"
            f" test acc {accuracy(classifier, split.x_test, split.y_test):.3f}; summary written to {path}"
        )
        result = {
            "world_size": trainer.world_size,
            "unlearned": summary.unlearned,
            "k": summary.k,
            "steps": summary.steps,
            "summary": str(path),
        }
        print("RESULT " + json.dumps(result))  # one machine-readable line (the tests parse it)


if __name__ == "__main__":
    main()
