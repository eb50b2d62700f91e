"""A default request of ``--steps`` steps under a multiprocessing launcher (2 CPU processes); used by the test that a
worker's output of any size comes back to the main process (issue 23: outputs over the 64 KiB pipe buffer hung).

    python tests/scripts/spawn_request.py OUT_DIR [--strategy ddp_spawn|ddp_fork|ddp_notebook] [--k 2] [--steps 1000]

The request is ``InstanceUnlearning(fisher_edit=None, max_steps=steps)`` (defaults otherwise: the Fisher edit would
finish it before any step) on a small digits MLP (or the cached
digits CNN), whose optimizer gets a learning rate too small to move a weight: no instance is unlearned by the steps,
so the request runs its whole budget (the last-layer edit finishes it). Writes OUT_DIR/result.json with what the
main process's callback holds.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, UnlearningModule
from lightning_unlearn.datasets import load_digits_split
from lightning_unlearn.models import mlp
from lightning_unlearn.pretrain import pretrained_digits_cnn, train_classifier


def _saved(values: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(values, buffer)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--strategy", default="ddp_spawn")
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp", help="mlp: a small MLP trained here")
    parser.add_argument("--plant", type=int, default=0, help="trace points from earlier requests, added before fit")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    split = load_digits_split()
    if args.model == "cnn":
        classifier = pretrained_digits_cnn()
    else:  # the cheapest steps: a small MLP, trained in about a second
        torch.manual_seed(0)
        classifier = train_classifier(mlp(hidden=32), split.x_train, split.y_train, epochs=15)
    with torch.no_grad():
        remembered = classifier(split.x_train).argmax(-1) == split.y_train
    order = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(0))
    index = order[remembered[order]][: args.k]
    forget = ForgetSet(split.x_train[index], split.y_train[index])
    callback = InstanceUnlearning(fisher_edit=None, max_steps=args.steps, seed=0)
    callback.trace += [{"request": -1.0, "step": float(step), "forget/remaining": 0.0} for step in range(args.plant)]
    trainer = L.Trainer(
        max_epochs=-1,
        callbacks=[callback],
        strategy=args.strategy,
        devices=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = UnlearningModule(classifier, num_classes=10, lr=1e-30)
    started = time.perf_counter()
    trainer.fit(module, DataLoader(forget, batch_size=args.k))
    seconds = time.perf_counter() - started
    summary = callback.summary
    result = {
        "seconds": seconds,
        "summary": None if summary is None else summary.to_dict(),
        "history": len(callback.history),
        "trace": len(callback.trace),
        "last_trace_step": callback.trace[-1]["step"] if callback.trace else None,
        "returned_bytes": len(pickle.dumps({"history": callback.history, "trace": callback.trace, "receipts": []})),
        "callback_metrics": sorted(trainer.callback_metrics),
        "callback_metrics_bytes": len(_saved(dict(trainer.callback_metrics))),  # what Lightning sends through the pipe
    }
    (args.out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
