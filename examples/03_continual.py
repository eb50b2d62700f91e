"""Continual unlearning: a sequence of requests, one ``fit`` each, with the same module and callback.

Deletion requests arrive one after another. Each is one ``Trainer.fit`` on that request's forget set, with a new
``Trainer`` and the same ``UnlearningModule`` and ``InstanceUnlearning`` callback (its ``history`` keeps one summary per
request). After every request this script prints the forget accuracy of every request so far (0 means still
unlearned) and the test accuracy.

By default the callback drops each request's forget data when the request ends (keeping deleted data would defeat the
purpose), so a later request can bring an earlier instance back; ``--keep-forget-data`` passes
``InstanceUnlearning(keep_forget_data=True)``, which keeps earlier instances in memory, holds them unlearned during
later requests and includes them in the stop check. (This script keeps its own copy of every request only to measure
it.)

    python examples/03_continual.py                       # 5 requests of 8 instances
    python examples/03_continual.py --keep-forget-data
    python examples/03_continual.py --smoke               # tiny sizes, default step budget (the tests)
"""

from __future__ import annotations

import argparse
import json

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn import ForgetSet, InstanceUnlearning, UnlearningModule
from lightning_unlearn.datasets import load_digits_split
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.pretrain import pretrained_digits_cnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: finishes in a few seconds")
    parser.add_argument("--requests", type=int, default=5, help="number of requests in the sequence")
    parser.add_argument("--k", type=int, default=8, help="instances per request")
    parser.add_argument("--keep-forget-data", action="store_true", help="keep earlier requests unlearned")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        torch.set_num_threads(1)
        args.k = 2
    L.seed_everything(args.seed, verbose=False)

    split = load_digits_split()
    classifier = pretrained_digits_cnn()
    order = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(args.seed))
    requests = [order[i * args.k : (i + 1) * args.k] for i in range(args.requests)]

    callback = InstanceUnlearning(keep_forget_data=args.keep_forget_data, seed=args.seed)
    module = UnlearningModule(classifier, num_classes=10)
    test = DataLoader(TensorDataset(split.x_test, split.y_test), batch_size=512)
    print(f"test accuracy before any request: {accuracy(classifier, split.x_test, split.y_test):.3f}")

    for r, index in enumerate(requests):
        trainer = L.Trainer(  # a new Trainer per request; module and callback carry over
            max_epochs=-1,
            accelerator="cpu",
            devices=1,
            callbacks=[callback],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            check_val_every_n_epoch=50,
        )
        forget = ForgetSet(split.x_train[index], split.y_train[index])
        trainer.fit(module, DataLoader(forget, batch_size=len(forget)), val_dataloaders={"test": test})
        summary = callback.summary
        assert summary is not None
        earlier = [accuracy(classifier, split.x_train[i], split.y_train[i]) for i in requests[: r + 1]]
        print(
            f"after request {r}: unlearned={summary.unlearned} in {summary.steps} steps;"
            f" forget acc of requests 0..{r}: {' '.join(f'{a:.2f}' for a in earlier)};"
            f" test acc {accuracy(classifier, split.x_test, split.y_test):.3f}"
        )
    print(f"requests done: {len(callback.history)}")
    result = {
        "requests": [{"k": h.k, "unlearned": h.unlearned, "steps": h.steps} for h in callback.history],
        "forget_acc": earlier,
        "test_acc": accuracy(classifier, split.x_test, split.y_test),
    }
    print("RESULT " + json.dumps(result))  # one machine-readable line (the tests parse it)


if __name__ == "__main__":
    main()
