"""A request on digits that checkpoints every few steps; used by the kill-and-resume test.

    python tests/scripts/resumable_request.py OUT_DIR [--resume CKPT] [--step-delay SECONDS]

Writes OUT_DIR/result.json with the SHA-256 of the final classifier and the summary.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, MASImportance, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import load_digits_split
from lightning_unlearn.pretrain import pretrained_digits_cnn
from lightning_unlearn.receipts import model_hash


class _Slow(Callback):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def on_train_batch_end(self, *args: object) -> None:
        time.sleep(self.delay)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--resume", type=str, default=None)
    parser.add_argument("--step-delay", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    split = load_digits_split()
    classifier = pretrained_digits_cnn()
    index = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(3))[:12]
    forget = ForgetSet(split.x_train[index], split.y_train[index])
    anchors = PGDAnchors(eps=1.0, per_instance=4, steps=5, weight=1.0)
    callback = InstanceUnlearning(anchors=anchors, importance=MASImportance(), max_steps=400, seed=0, fisher_edit=None)
    checkpoint = ModelCheckpoint(dirpath=args.out / "ckpt", every_n_train_steps=10, save_last=True, save_top_k=0)
    trainer = L.Trainer(
        max_epochs=-1,
        callbacks=[callback, checkpoint, _Slow(args.step_delay)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    module = UnlearningModule(classifier, num_classes=10)
    trainer.fit(module, DataLoader(forget, batch_size=len(forget)), ckpt_path=args.resume)
    summary = callback.summary
    assert summary is not None
    (args.out / "result.json").write_text(
        json.dumps({"hash": model_hash(classifier), "steps": summary.steps, "unlearned": summary.unlearned})
    )


if __name__ == "__main__":
    main()
