"""The ``lightning-unlearn`` console script."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_unlearn.callback import InstanceUnlearning
from lightning_unlearn.checkpointed import CheckpointedUnlearningModule, check_request
from lightning_unlearn.cli_parser import ShortClassListHelpFormatter, drop_disabled_progress_bars
from lightning_unlearn.datamodule import ForgetRequestDataModule
from lightning_unlearn.demo import before_after_table, cost_text, demo, retained_text
from lightning_unlearn.module import UnlearningModule

__all__ = ["CheckpointedUnlearningModule", "UnlearnCLI", "demo", "main", "quiet_output", "shipped_configs", "verify"]


def verify(receipt: str, model: str, forget: str, model_class: str | None = None, later: bool = False) -> list[str]:
    """Check a model and forget data against a deletion receipt; prints the verdict and returns the problems.

    ``later``: the model served later requests, so its hash is not the receipt's ``model_after``; check only that
    the receipt's instances are still unlearned by it.
    """
    from lightning_unlearn.loading import load_classifier, load_forget_tensors
    from lightning_unlearn.receipts import read_receipt, verify_receipt

    record = read_receipt(receipt)
    classifier = load_classifier(model, model_class)
    x, y, t = load_forget_tensors(forget)
    problems = verify_receipt(record, classifier, x, y, t, later=later)
    which = " on a later model (not the receipt's `model_after`)" if later else ""
    if problems:
        sys.stdout.write(f"NOT VERIFIED: receipt {record.request_id}{which}\n" + "".join(f"- {p}\n" for p in problems))
    elif later:
        sys.stdout.write(f"VERIFIED: receipt {record.request_id}{which}: {record.k} instances still unlearned\n")
    else:
        sys.stdout.write(f"VERIFIED: receipt {record.request_id}: model matches, {record.k} instances unlearned\n")
    return problems


class UnlearnCLI(LightningCLI):
    """The LightningCLI of ``lightning-unlearn fit|validate`` over :class:`CheckpointedUnlearningModule` and
    :class:`~lightning_unlearn.datamodule.ForgetRequestDataModule`.

    After ``fit``, the callback's summary is written next to the logs. A request that succeeded also writes the
    classifier's weights and prints the retained sample, the before/after table, the cost and the receipt's path; one
    that failed (instances still remembered, ``max_drop`` broken) sets :attr:`exit_code` to 1 and writes the reason as
    the last line on stderr.
    """

    exit_code = 0

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Every parser shortens the lists of known subclasses in its help (:mod:`lightning_unlearn.cli_parser`)."""
        kwargs.setdefault("formatter_class", ShortClassListHelpFormatter)
        return super().init_parser(**kwargs)

    def before_instantiate_classes(self) -> None:
        drop_disabled_progress_bars(self.config.get(str(self.subcommand), self.config))

    def before_fit(self) -> None:
        assert isinstance(self.model, UnlearningModule)
        check_request(self.model, self.datamodule)

    def after_fit(self) -> None:
        trainer = self.trainer
        if trainer.global_rank != 0:
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        model = self.model
        assert isinstance(model, UnlearningModule)
        callbacks = [c for c in trainer.callbacks if isinstance(c, InstanceUnlearning)]  # type: ignore[attr-defined]
        requests = [(callback, callback.summary) for callback in callbacks if callback.summary is not None]
        for callback, _ in requests:
            callback.save_summary(folder / "summary.json")
        failures = [summary for _, summary in requests if not summary.unlearned]
        if failures:
            summary = failures[0]
            kept = "the original weights were restored" if summary.restored else "the partial result was kept"
            sys.stdout.write(f"summary: {folder / 'summary.json'}\n")
            sys.stdout.flush()
            sys.stderr.write(f"lightning-unlearn: request failed: {summary.failure}; {kept}; no weights written\n")
            self.exit_code = 1
            return
        weights = folder / "unlearned_classifier.pt"
        torch.save(model.classifier.state_dict(), weights)
        data = self.datamodule
        train_size = data.train_size if isinstance(data, ForgetRequestDataModule) else None
        lines: list[str] = []
        for callback, summary in requests:
            lines += [retained_text(callback, data), "", *before_after_table(summary), ""]
            lines.append(f"{cost_text(summary, train_size)}, all unlearned: True")
            lines += [f"receipt: {Path(path).resolve()}" for path in callback.receipts[-1:]]
        lines += [f"unlearned classifier: {weights}"]
        lines += [f"summary: {folder / 'summary.json'}"] if requests else []
        sys.stdout.write("\n".join(lines) + "\n")


def fit_command(argv: Sequence[str] | None) -> int:
    """``lightning-unlearn fit|validate ...``: run :class:`UnlearnCLI`; its exit code. ``--verbose`` (anywhere in
    ``argv``) lets Lightning's own messages through (see :func:`quiet_output`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = VERBOSE_FLAG in args
    args = [arg for arg in args if arg != VERBOSE_FLAG]
    with warnings.catch_warnings(), quiet_output(verbose):
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        cli = UnlearnCLI(
            CheckpointedUnlearningModule,
            ForgetRequestDataModule,
            args=args,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
            auto_configure_optimizers=False,
        )
    return cli.exit_code


VERBOSE_FLAG = "--verbose"

#: loggers of Lightning's info messages: accelerator lines, tips, "Seed set to", the model summary, and this package's
#: own progress notes (``rank_zero_info`` writes through ``lightning.pytorch``)
QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")
#: warnings from the libraries underneath that a user of the command line cannot act on (message patterns)
QUIET_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


@contextmanager
def quiet_output(verbose: bool = False) -> Iterator[None]:
    """Keep Lightning's info messages (:data:`QUIET_LOGGERS`, below ``WARNING``) and :data:`QUIET_WARNINGS` out of the
    output while the block runs, so ``fit`` and ``demo`` print the progress bar, the table and the paths; warnings
    that say something about the request itself still show. ``verbose`` lets everything through.

    Examples:
        >>> import logging
        >>> with quiet_output():
        ...     logging.getLogger("lightning.pytorch").isEnabledFor(logging.INFO)
        False
    """
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        try:
            for logger in loggers:
                logger.setLevel(logging.WARNING)
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


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
    except (argparse.ArgumentError, FileNotFoundError, ValueError, TypeError, ModuleNotFoundError, KeyError) as error:
        sys.stderr.write(f"lightning-unlearn: error: {_one_line(str(error))}\n")
        return 2


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightning-unlearn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "fit",
        help="run a request from a YAML config (LightningCLI, see `fit --help`; `--verbose` adds Lightning's messages)",
        add_help=False,
    )
    p_config = sub.add_parser("config", help="print a shipped request config (YAML): `config digits > request.yaml`")
    p_config.add_argument("name", choices=sorted(shipped_configs()), help="which config")
    p_demo = sub.add_parser("demo", help="forget 32 digits instances with the defaults and print before/after")
    p_demo.add_argument("--k", type=int, default=32, help="number of instances to forget (default 32)")
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--max-steps", type=int, default=1000)
    p_demo.add_argument("--no-progress", action="store_false", dest="progress", help="hide the progress bar")
    p_demo.add_argument("--verbose", action="store_true", help="also print Lightning's messages and library warnings")
    p_demo.add_argument("--out-dir", default="unlearn_output/demo", help="where logs, summary and plot go")
    p_demo.add_argument(
        "--compare-retrain",
        action="store_true",
        help="also retrain the CNN without the forget instances; print its accuracies and seconds next to unlearning's",
    )
    p_demo.add_argument(
        "--retain-fraction",
        type=float,
        default=0.0,
        help="pass this share of the other training images as a retained sample (default 0: the forget set only)",
    )
    p_verify = sub.add_parser("verify", help="check a model and forget data against a deletion receipt")
    p_verify.add_argument("--receipt", required=True, help="receipt JSON written by InstanceUnlearning(receipt_dir=)")
    p_verify.add_argument("--model", required=True, help="pickled module, Lightning checkpoint or state dict")
    p_verify.add_argument("--model-class", default=None, help="architecture class path when --model holds weights")
    p_verify.add_argument("--forget", required=True, help="torch.save'd dict with 'inputs', 'labels' (, 'targets')")
    p_verify.add_argument(
        "--later",
        action="store_true",
        help="the model served later requests: check that the instances are still unlearned, not the model hash",
    )
    args = parser.parse_args(argv)
    if args.command == "verify":
        return 1 if verify(args.receipt, args.model, args.forget, args.model_class, args.later) else 0
    if args.command == "config":
        sys.stdout.write(shipped_configs()[args.name].read_text())
        return 0
    options = {name: value for name, value in vars(args).items() if name not in ("command", "verbose")}
    with quiet_output(args.verbose):
        demo(**options)
    return 0


def shipped_configs() -> dict[str, Path]:
    """The request configs installed with the package (``lightning_unlearn/configs/*.yaml``), by name."""
    folder = Path(__file__).parent / "configs"
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


if __name__ == "__main__":
    raise SystemExit(main())
