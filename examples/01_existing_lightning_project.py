"""Unlearning inside an existing Lightning project.

The common case: a team already trains its classifier as a ``LightningModule`` and keeps Lightning checkpoints. This
script

1. trains such a module (a small CNN on scikit-learn's digits) with an ordinary ``Trainer`` and saves its checkpoint
   to a temporary folder, as any Lightning project does;
2. loads the classifier back from that checkpoint with ``lightning_unlearn.loading.load_classifier``;
3. wraps it in an ``UnlearningModule``, adds the ``InstanceUnlearning`` callback to a new ``Trainer`` and fits it on
   the forget set (served by ``ForgetRequestDataModule``, with the rest of the training data and the test split as
   evaluation sets), then prints the request's before/after summary.

    python examples/01_existing_lightning_project.py            # about a minute on 2 CPU cores
    python examples/01_existing_lightning_project.py --smoke    # tiny sizes, default step budget (the tests)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_unlearn import InstanceUnlearning, PGDAnchors, UnlearningModule
from lightning_unlearn.datamodule import ForgetRequestDataModule
from lightning_unlearn.datasets import DigitsDataset
from lightning_unlearn.loading import load_classifier
from lightning_unlearn.models import small_cnn


class DigitsClassifier(L.LightningModule):
    """The "existing project": a plain Lightning classifier, nothing unlearning-specific in it."""

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = small_cnn(num_classes=10)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def train_project(folder: Path, epochs: int, progress: bool) -> Path:
    """Step 1: ordinary Lightning training; returns the checkpoint's path."""
    checkpoint = ModelCheckpoint(dirpath=folder, filename="digits-{epoch}")
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=progress,
        enable_model_summary=False,
    )
    trainer.fit(DigitsClassifier(), DataLoader(DigitsDataset("train"), batch_size=64, shuffle=True))
    return Path(checkpoint.best_model_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: finishes in a few seconds")
    parser.add_argument("--k", type=int, default=32, help="number of training instances to forget")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the project's own training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        torch.set_num_threads(1)
        args.k, args.epochs = 4, 1
    L.seed_everything(args.seed, verbose=False)

    with tempfile.TemporaryDirectory() as tmp:
        # 1. the existing project trains and checkpoints its model
        ckpt = train_project(Path(tmp), args.epochs, progress=not args.smoke)
        print(f"checkpoint saved: {ckpt.name}")

        # 2. load the classifier back: the factory builds the architecture, the checkpoint supplies the weights
        classifier = load_classifier(ckpt, factory=DigitsClassifier)

    # 3. the forget request: k training instances; the rest of the training set and the test set are evaluated
    train = DigitsDataset("train")
    forget_indices = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[: args.k]
    data = ForgetRequestDataModule(train, forget_indices=forget_indices.tolist(), test_dataset=DigitsDataset("test"))
    if args.smoke:
        callback = InstanceUnlearning(anchors=PGDAnchors(eps=1.0, per_instance=2, steps=2), seed=args.seed)
    else:
        callback = InstanceUnlearning(seed=args.seed)  # the package defaults
    trainer = L.Trainer(
        max_epochs=-1,  # the callback stops the Trainer when every instance is unlearned (or at max_steps)
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=not args.smoke,
        enable_model_summary=False,
        check_val_every_n_epoch=25,  # retain/test accuracy every 25 steps (one step per epoch here)
    )
    trainer.fit(UnlearningModule(classifier, num_classes=10), datamodule=data)

    summary = callback.summary
    assert summary is not None
    print(f"\n| {'metric':<16} | {'before':>7} | {'after':>7} |")
    for name in ("forget/acc", "retain/acc", "test/acc", "mia/efficacy"):
        before, after = summary.before.get(name, float("nan")), summary.after.get(name, float("nan"))
        print(f"| {name:<16} | {before:7.3f} | {after:7.3f} |")
    print(f"\nunlearned: {summary.unlearned} ({summary.k} instances, {summary.steps} steps, {summary.seconds:.1f}s)")
    after = {name: value for name, value in summary.after.items() if value == value}  # JSON has no nan
    result = {"unlearned": summary.unlearned, "k": summary.k, "steps": summary.steps, "after": after}
    print("RESULT " + json.dumps(result))  # one machine-readable line (the tests parse it)
    # `classifier` (the project's own LightningModule) now holds the unlearned weights: save it as usual, e.g.
    # torch.save(classifier.state_dict(), "digits_unlearned.pt")


if __name__ == "__main__":
    main()
