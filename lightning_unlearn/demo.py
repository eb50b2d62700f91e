"""The ``lightning-unlearn demo`` command: forget a few scikit-learn digits with the defaults and print before/after.

Also the text of a request's results that ``demo`` and ``fit`` print: :func:`before_after_table`, :func:`cost_text`
and (``fit``) :func:`retained_text`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_unlearn.callback import InstanceUnlearning
from lightning_unlearn.data import ForgetSet
from lightning_unlearn.datamodule import ForgetRequestDataModule
from lightning_unlearn.module import UnlearningModule
from lightning_unlearn.request import RequestSummary


def demo(
    k: int = 32,
    seed: int = 0,
    max_steps: int = 1000,
    progress: bool = True,
    out_dir: str | Path = "unlearn_output/demo",
    compare_retrain: bool = False,
    retain_fraction: float = 0.0,
) -> dict[str, dict[str, float]]:
    """Pre-train (or load from cache) a small CNN on scikit-learn digits, forget ``k`` training instances with the
    package defaults, print a before/after table and write logs, a JSON summary and a PNG plot to ``out_dir``.

    With ``progress`` the request shows one :class:`~lightning_unlearn.progress.UnlearningProgressBar`. With
    ``compare_retrain`` the same CNN is also trained from scratch without the forget instances (the pre-training
    recipe), and its accuracies and seconds are printed next to unlearning's. With ``retain_fraction`` > 0 that share
    of the rest of the training set is passed as a retained sample (``InstanceUnlearning(retain=...)``).

    Raises:
        ValueError: if ``retain_fraction`` is outside [0, 1].

    Returns:
        ``{"before": {...}, "after": {...}}``, plus ``"retrain"`` with ``compare_retrain``.
    """
    import importlib.util

    if not 0.0 <= retain_fraction <= 1.0:
        raise ValueError(f"`retain_fraction` must be in [0, 1], got {retain_fraction}.")
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from torch.utils.data import TensorDataset

    from lightning_unlearn.datasets import load_digits_split
    from lightning_unlearn.pretrain import pretrained_digits_cnn
    from lightning_unlearn.progress import UnlearningProgressBar

    L.seed_everything(seed, verbose=False)
    out = Path(out_dir)
    split = load_digits_split()
    started = time.perf_counter()
    classifier = pretrained_digits_cnn()
    pretrain_seconds = time.perf_counter() - started
    index = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(seed))
    forget_idx, retain_idx = index[:k], index[k:]
    x_f, y_f = split.x_train[forget_idx], split.y_train[forget_idx]
    x_r, y_r = split.x_train[retain_idx], split.y_train[retain_idx]
    evaluation = {
        "retain": DataLoader(TensorDataset(x_r, y_r), batch_size=1024),
        "test": DataLoader(TensorDataset(split.x_test, split.y_test), batch_size=1024),
    }
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    logger = TensorBoardLogger(out, name="logs") if tensorboard else CSVLogger(out, name="logs")
    sample = round(retain_fraction * len(retain_idx))
    retained = f"{sample} training instances outside the forget set" if sample else "none (forget set only)"
    callback = InstanceUnlearning(max_steps=max_steps, seed=seed, retain=x_r[:sample] if sample else None)
    trainer = L.Trainer(
        max_epochs=-1,
        callbacks=[callback, *([UnlearningProgressBar()] if progress else [])],
        logger=logger,
        log_every_n_steps=1,
        check_val_every_n_epoch=25,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
    )
    module = UnlearningModule(classifier, num_classes=10)
    trainer.fit(module, DataLoader(ForgetSet(x_f, y_f), batch_size=k), val_dataloaders=evaluation)
    summary = callback.summary
    assert summary is not None
    extra: dict[str, dict[str, float]] = {}
    retrain = ""
    if compare_retrain:
        extra["retrain"], retrain_seconds = _retrain_digits_cnn(seed, (x_f, y_f), (x_r, y_r), split)
        retrain = f" (retraining without them: {retrain_seconds:.1f}s)"
    written = [callback.save_summary(out / "summary.json")]
    if importlib.util.find_spec("matplotlib") is not None:
        written.append(callback.plot(out / "curves.png"))
    lines = [
        f"Unlearning {k} digits training instances (pre-trained model ready in {pretrain_seconds:.1f}s)",
        f"retained sample: {retained}",
        "",
        *before_after_table(summary, extra),
        "",
        f"{cost_text(summary, len(split.y_train), retrain)}, all unlearned: {summary.unlearned}",
        f"logs: {logger.log_dir}",
        *[f"wrote: {path}" for path in written],
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return {"before": dict(summary.before), "after": dict(summary.after), **extra}


def _retrain_digits_cnn(
    seed: int, forget: tuple[Tensor, Tensor], retain: tuple[Tensor, Tensor], split: Any
) -> tuple[dict[str, float], float]:
    """The demo's CNN trained from scratch on the retain instances only (same recipe as the pre-trained one): its
    accuracies on forget, retain and test sets, and the seconds it took.
    """
    from lightning_unlearn.functional.evaluation import accuracy
    from lightning_unlearn.models import small_cnn
    from lightning_unlearn.pretrain import cached_classifier

    started = time.perf_counter()
    model = cached_classifier("", small_cnn, retain[0], retain[1], epochs=30, seed=seed, cache=False)
    seconds = time.perf_counter() - started
    values = {
        "forget/acc": accuracy(model, *forget),
        "retain/acc": accuracy(model, *retain),
        "test/acc": accuracy(model, split.x_test, split.y_test),
    }
    return values, seconds


TABLE_ROWS = (
    ("forget acc", "forget/acc"),
    ("retain acc", "retain/acc"),
    ("test acc", "test/acc"),
    ("MIA efficacy", "mia/efficacy"),
)


def before_after_table(summary: RequestSummary, extra: dict[str, dict[str, float]] | None = None) -> list[str]:
    """The before/after table of a request (Markdown), the lines of ``demo`` and of a successful ``fit``; ``extra``
    adds a column per entry (e.g. ``{"retrain": {"forget/acc": ...}}``); a value not measured is ``n/a``.

    Examples:
        >>> summary = RequestSummary(request=0, k=1, before={"forget/acc": 1.0}, after={"forget/acc": 0.0})
        >>> for line in before_after_table(summary, {"retrain": {"forget/acc": 0.5}})[:3]:
        ...     print(line)
        | metric       |  before |   after | retrain |
        |--------------|---------|---------|---------|
        | forget acc   |  100.0% |    0.0% |   50.0% |
    """
    extra = extra or {}
    header = f"| {'metric':<12} | {'before':>7} | {'after':>7} |" + "".join(f" {name:>7} |" for name in extra)
    rule = f"|{'-' * 14}|{'-' * 9}|{'-' * 9}|" + f"{'-' * 9}|" * len(extra)
    lines = [header, rule]
    for label, key in TABLE_ROWS:
        values = [summary.before.get(key, float("nan")), summary.after.get(key, float("nan"))]
        values += [column.get(key, float("nan")) for column in extra.values()]
        lines.append(f"| {label:<12} |" + "".join(f" {v * 100:6.1f}% |" if v == v else "     n/a |" for v in values))
    return lines


def cost_text(summary: RequestSummary, train_size: int | None = None, after_seconds: str = "") -> str:
    """What a request cost: steps, seconds (then ``after_seconds``), the inputs it pushed through the classifier
    (:attr:`~lightning_unlearn.request.RequestSummary.samples`, over all processes) and, with ``train_size``, that
    many inputs in epochs of the training set.

    Examples:
        >>> cost_text(RequestSummary(request=0, k=32, steps=500, seconds=12.34, samples=71850), train_size=1437)
        'steps: 500, seconds: 12.3, samples: 71,850 (= 50 epochs of the 1,437 training instances)'
    """
    text = f"steps: {summary.steps}, seconds: {summary.seconds:.1f}{after_seconds}, samples: {summary.samples:,}"
    if train_size:
        text += f" (= {summary.samples / train_size:.3g} epochs of the {train_size:,} training instances)"
    return text


def retained_text(callback: InstanceUnlearning, datamodule: L.LightningDataModule | None) -> str:
    """The ``retained sample:`` line of ``fit``: how many retained inputs the request distilled on."""
    offered = datamodule.retain_indices if isinstance(datamodule, ForgetRequestDataModule) else []
    # under ddp_spawn the callback set its plugin up in the worker processes: the DataModule says what it offered
    size = callback.retain.size if callback.retain is not None else len(offered)
    if not size:
        return "retained sample: none (forget set only)"
    hint = " (--data.retain_fraction 0: none)" if offered else ""
    return f"retained sample: {size} training instances outside the forget set{hint}"
