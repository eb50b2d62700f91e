"""The ``lightning-unlearn`` console script."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_unlearn.callback import InstanceUnlearning
from lightning_unlearn.data import ForgetSet
from lightning_unlearn.module import UnlearningModule


def demo(
    k: int = 32,
    seed: int = 0,
    max_steps: int = 1000,
    progress: bool = True,
    out_dir: str | Path = "unlearn_output/demo",
) -> dict[str, dict[str, float]]:
    """Pre-train (or load from cache) a small CNN on scikit-learn digits, forget ``k`` training instances with the
    package defaults, print a before/after table and write logs, a JSON summary and a PNG plot to ``out_dir``.

    Returns:
        ``{"before": {...}, "after": {...}}``.
    """
    import importlib.util

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from torch.utils.data import TensorDataset

    from lightning_unlearn.datasets import load_digits_split
    from lightning_unlearn.pretrain import pretrained_digits_cnn

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
    callback = InstanceUnlearning(max_steps=max_steps, seed=seed)
    trainer = L.Trainer(
        max_epochs=-1,
        callbacks=[callback],
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
    written = [callback.save_summary(out / "summary.json")]
    if importlib.util.find_spec("matplotlib") is not None:
        written.append(callback.plot(out / "curves.png"))
    rows = [
        ("forget acc", "forget/acc"),
        ("retain acc", "retain/acc"),
        ("test acc", "test/acc"),
        ("MIA efficacy", "mia/efficacy"),
    ]
    lines = [
        f"Unlearning {k} digits training instances (pre-trained model ready in {pretrain_seconds:.1f}s)",
        "",
        f"| {'metric':<12} | {'before':>7} | {'after':>7} |",
        f"|{'-' * 14}|{'-' * 9}|{'-' * 9}|",
    ]
    for label, key in rows:
        before, after = summary.before.get(key, float("nan")), summary.after.get(key, float("nan"))
        lines.append(f"| {label:<12} | {before * 100:6.1f}% | {after * 100:6.1f}% |")
    lines += [
        "",
        f"steps: {summary.steps}, seconds: {summary.seconds:.1f}, all unlearned: {summary.unlearned}",
        f"logs: {logger.log_dir}",
        *[f"wrote: {path}" for path in written],
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return {"before": dict(summary.before), "after": dict(summary.after)}


def verify(receipt: str, model: str, forget: str, model_class: str | None = None) -> list[str]:
    """Check a model and forget data against a deletion receipt; prints the verdict and returns the problems."""
    from lightning_unlearn.loading import load_classifier, load_forget_tensors
    from lightning_unlearn.receipts import read_receipt, verify_receipt

    record = read_receipt(receipt)
    classifier = load_classifier(model, model_class)
    x, y, t = load_forget_tensors(forget)
    problems = verify_receipt(record, classifier, x, y, t)
    if problems:
        sys.stdout.write(f"NOT VERIFIED: receipt {record.request_id}\n" + "".join(f"- {p}\n" for p in problems))
    else:
        sys.stdout.write(f"VERIFIED: receipt {record.request_id}: model matches, {record.k} instances unlearned\n")
    return problems


class CheckpointedUnlearningModule(UnlearningModule):
    """:class:`~lightning_unlearn.UnlearningModule` whose classifier weights are loaded from a file first (a Lightning
    checkpoint, an ``UnlearningModule`` checkpoint or a plain state dict): the model of ``lightning-unlearn fit``.

    Args:
        classifier: the architecture (``class_path`` + ``init_args`` in YAML).
        num_classes: number of classes.
        checkpoint: path of the trained weights (``~`` is expanded); ``None`` keeps the classifier as built.
        **kwargs: the other arguments of :class:`~lightning_unlearn.UnlearningModule`.

    Raises:
        FileNotFoundError: if ``checkpoint`` does not exist.
        ValueError: if its weights do not fit ``classifier``.
    """

    def __init__(self, classifier: nn.Module, num_classes: int, checkpoint: str | None = None, **kwargs: Any) -> None:
        if checkpoint is not None:
            from lightning_unlearn.loading import extract_state_dict

            path = Path(checkpoint).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"`checkpoint` file {str(path)!r} does not exist.")
            state = extract_state_dict(torch.load(path, map_location="cpu", weights_only=False))
            try:
                classifier.load_state_dict(state)
            except RuntimeError as error:
                first = str(error).strip().splitlines()[0]
                raise ValueError(f"the weights in {str(path)!r} do not fit the classifier: {first}") from error
        super().__init__(classifier, num_classes, **kwargs)
        self.save_hyperparameters(ignore=["classifier"])


def fit_command(argv: Sequence[str] | None) -> int:
    """``lightning-unlearn fit|validate ...``: a LightningCLI over :class:`CheckpointedUnlearningModule` and
    :class:`~lightning_unlearn.datamodule.ForgetRequestDataModule`; after ``fit`` the classifier's weights and the
    callback's summary are written next to the logs.
    """
    from lightning.pytorch.cli import LightningCLI

    from lightning_unlearn.datamodule import ForgetRequestDataModule

    class UnlearnCLI(LightningCLI):
        def after_fit(self) -> None:
            trainer = self.trainer
            if trainer.global_rank != 0:
                return
            folder = Path(trainer.log_dir or trainer.default_root_dir)
            folder.mkdir(parents=True, exist_ok=True)
            model = self.model
            assert isinstance(model, UnlearningModule)
            torch.save(model.classifier.state_dict(), folder / "unlearned_classifier.pt")
            for callback in trainer.callbacks:  # type: ignore[attr-defined]
                if isinstance(callback, InstanceUnlearning) and callback.summary is not None:
                    callback.save_summary(folder / "summary.json")
            sys.stdout.write(f"unlearned classifier and summary written to {folder}\n")

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        UnlearnCLI(
            CheckpointedUnlearningModule,
            ForgetRequestDataModule,
            args=None if argv is None else list(argv),
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
            auto_configure_optimizers=False,
        )
    return 0


def _one_line(message: str, limit: int = 400) -> str:
    text = " ".join(part.strip() for part in message.strip().splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightning-unlearn``: errors end with a one-line message and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in ("fit", "validate"):
            return fit_command(None if argv is None else args)
        return _main(args)
    except argparse.ArgumentError as error:
        sys.stderr.write(f"lightning-unlearn: error: {_one_line(str(error))}\n")
        return 2
    except (FileNotFoundError, ValueError, TypeError, ModuleNotFoundError, KeyError) as error:
        sys.stderr.write(f"lightning-unlearn: error: {_one_line(str(error))}\n")
        return 2


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightning-unlearn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fit", help="run a request from a YAML config (LightningCLI; see `fit --help`)", add_help=False)
    p_demo = sub.add_parser("demo", help="forget 32 digits instances with the defaults and print before/after")
    p_demo.add_argument("--k", type=int, default=32, help="number of instances to forget (default 32)")
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--max-steps", type=int, default=1000)
    p_demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p_demo.add_argument("--out-dir", default="unlearn_output/demo", help="where logs, summary and plot go")
    p_verify = sub.add_parser("verify", help="check a model and forget data against a deletion receipt")
    p_verify.add_argument("--receipt", required=True, help="receipt JSON written by InstanceUnlearning(receipt_dir=)")
    p_verify.add_argument("--model", required=True, help="pickled module, Lightning checkpoint or state dict")
    p_verify.add_argument("--model-class", default=None, help="architecture class path when --model holds weights")
    p_verify.add_argument("--forget", required=True, help="torch.save'd dict with 'inputs', 'labels' (, 'targets')")
    args = parser.parse_args(argv)
    if args.command == "verify":
        return 1 if verify(args.receipt, args.model, args.forget, args.model_class) else 0
    if args.command == "demo":
        demo(k=args.k, seed=args.seed, max_steps=args.max_steps, progress=not args.no_progress, out_dir=args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
