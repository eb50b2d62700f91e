"""Relabelling: make a classifier predict chosen classes for chosen training instances.

Instead of just misclassifying the forget instances (any wrong class will do), relabel mode moves each one to a target
class given with the request: ``ForgetSet(x, y, targets=t)`` and ``UnlearningModule(..., mode="relabel")``. The
request is done when every instance is predicted as its target. This script takes the small CNN that
``lightning-unlearn demo`` pre-trains on scikit-learn's digits (cached after the first run), relabels ``k`` training
instances (each to ``--target``, or by default to "its label + 1"), and prints each instance's prediction before and
after, then the request's summary (``forget/target_acc`` is the share predicted as their target).

    python examples/02_relabel.py                 # 16 instances, each to label + 1
    python examples/02_relabel.py --target 7      # every instance to class 7 (instances of class 7 are skipped)
    python examples/02_relabel.py --smoke         # tiny sizes, default step budget (the tests)
"""

from __future__ import annotations

import argparse
import json

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn import ForgetSet, InstanceUnlearning, UnlearningModule
from lightning_unlearn.datasets import load_digits_split
from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.pretrain import pretrained_digits_cnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: finishes in a few seconds")
    parser.add_argument("--k", type=int, default=16, help="number of training instances to relabel")
    parser.add_argument("--target", type=int, default=None, help="one class for all (default: each label + 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        torch.set_num_threads(1)
        args.k = 4
    L.seed_everything(args.seed, verbose=False)

    split = load_digits_split()
    classifier = pretrained_digits_cnn()  # pre-trained once, then loaded from the cache

    order = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(args.seed))
    if args.target is not None:  # an instance cannot be relabelled to its own class
        order = order[split.y_train[order] != args.target]
    index, rest = order[: args.k], order[args.k :]
    x, y = split.x_train[index], split.y_train[index]
    targets = torch.full_like(y, args.target) if args.target is not None else (y + 1) % 10
    forget = ForgetSet(x, y, targets=targets)

    callback = InstanceUnlearning(seed=args.seed)
    trainer = L.Trainer(
        max_epochs=-1,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=not args.smoke,
        enable_model_summary=False,
        check_val_every_n_epoch=25,
    )
    evaluation = {
        "retain": DataLoader(TensorDataset(split.x_train[rest], split.y_train[rest]), batch_size=512),
        "test": DataLoader(TensorDataset(split.x_test, split.y_test), batch_size=512),
    }
    before = predict(classifier, x).argmax(-1)
    module = UnlearningModule(classifier, num_classes=10, mode="relabel")
    trainer.fit(module, DataLoader(forget, batch_size=len(forget)), val_dataloaders=evaluation)
    after = predict(classifier, x).argmax(-1)

    print("\n| instance | label | target | predicted before | predicted after |")
    for i, position in enumerate(index.tolist()):
        print(f"| {position:8d} | {int(y[i]):5d} | {int(targets[i]):6d} | {int(before[i]):16d} | {int(after[i]):15d} |")
    summary = callback.summary
    assert summary is not None
    for name in ("forget/target_acc", "retain/acc", "test/acc"):
        print(f"{name}: {summary.before.get(name, float('nan')):.3f} -> {summary.after.get(name, float('nan')):.3f}")
    print(f"relabelled: {summary.unlearned} ({summary.k} instances, {summary.steps} steps, {summary.seconds:.1f}s)")
    result = {
        "relabelled": summary.unlearned,
        "k": summary.k,
        "steps": summary.steps,
        "target_acc": summary.after.get("forget/target_acc"),
        "test_acc": summary.after.get("test/acc"),
    }
    print("RESULT " + json.dumps(result))  # one machine-readable line (the tests parse it)


if __name__ == "__main__":
    main()
