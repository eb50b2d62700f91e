"""The Fisher edit's settings across classifiers: one package request per classifier and seed with
``InstanceUnlearning(fisher_edit=FisherEdit(**SETTINGS))`` (``null``: the issue-14 steps), test drop in points.

Prints one JSON line per classifier (drops of seeds 0-2 and their mean). No retraining: for costs use
``benchmarks/classifiers.py``. docs/benchmarks.md, "Choosing the Fisher edit's settings", lists the runs, e.g.

    python benchmarks/fisher_settings.py '{"layers": 3}' lenet_no_bn,digits_cnn_no_bn,digits_mlp 32
    python benchmarks/fisher_settings.py 'null' breast_cancer_mlp
    python benchmarks/fisher_settings.py '{"restore": 64}' digits_cnn 32 0.05   # with a 5 % retained sample
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from classifiers import CLASSIFIERS, user_request  # the benchmark's classifiers, data and request

from lightning_unlearn import FisherEdit
from lightning_unlearn.functional.evaluation import accuracy

torch.set_num_threads(1)


def main(settings: dict | None, models: list[str], k: int, retain_fraction: float = 0.0) -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for model_name in models:
        task = CLASSIFIERS[model_name][1]()
        drops: list[float] = []
        summary: dict = {}
        for seed in (0, 1, 2):
            model = copy.deepcopy(task.classifier).eval()
            order = torch.randperm(len(task.split.y_train), generator=torch.Generator().manual_seed(seed))
            idx, rest = order[:k], order[k:]
            retain = task.split.x_train[rest[: round(retain_fraction * len(rest))]] if retain_fraction > 0 else None
            before = accuracy(model, task.split.x_test, task.split.y_test)
            fisher = FisherEdit(**settings) if settings is not None else None
            x, y, classes = task.split.x_train[idx], task.split.y_train[idx], task.split.num_classes
            summary = user_request(model, x, y, classes, seed, retain, None, {"fisher_edit": fisher})
            drops.append(100 * (before - accuracy(model, task.split.x_test, task.split.y_test)))
        row = {
            "settings": settings,
            "model": model_name,
            "k": k,
            "retain_fraction": retain_fraction,
            "drops": [round(d, 1) for d in drops],
            "mean": round(statistics.mean(drops), 2),
            "finished_by": summary["finished_by"],
            "unlearned": summary["summary_unlearned"],
            "samples": summary["samples"],
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    k = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    main(json.loads(sys.argv[1]), sys.argv[2].split(","), k, float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
