"""The ``lightning-unlearn`` console script."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_unlearn.callback import InstanceUnlearning
from lightning_unlearn.data import ForgetSet
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
    adds a column per entry (e.g. ``{"retrain": {"forget/acc": ...}}``).
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


CACHE_PREFIX = "cache:"


def resolve_checkpoint(checkpoint: str) -> Path:
    """The file a ``checkpoint`` value names: ``cache:NAME`` is ``NAME`` in the cache folder of the demo's pre-trained
    models (``$LIGHTNING_UNLEARN_CACHE``, else ``~/.cache/lightning-unlearn``); anything else is a path (``~``
    expanded).
    """
    from lightning_unlearn.pretrain import cache_dir

    if checkpoint.startswith(CACHE_PREFIX):
        return cache_dir() / checkpoint[len(CACHE_PREFIX) :]
    return Path(checkpoint).expanduser()


def _weights_mismatch(state: dict[str, Tensor], expected: dict[str, Tensor]) -> str | None:
    """The first tensor that keeps ``state`` from loading into a model whose state dict is ``expected``."""
    for name, value in expected.items():
        if name not in state:
            return f"tensor {name!r} of the classifier is missing from the file"
        if tuple(state[name].shape) != tuple(value.shape):
            return (
                f"tensor {name!r} has shape {list(state[name].shape)} in the file but {list(value.shape)} in the"
                " classifier"
            )
    extra = [name for name in state if name not in expected]
    return f"tensor {extra[0]!r} in the file is not in the classifier" if extra else None


class CheckpointedUnlearningModule(UnlearningModule):
    """The model of lightning-unlearn fit: an UnlearningModule with classifier weights loaded from a file.

    The file is a Lightning checkpoint, an UnlearningModule checkpoint or a plain state dict.

    Args:
        classifier: the architecture (class_path + init_args in YAML).
        num_classes: number of classes the classifier predicts.
        checkpoint: the trained weights: a path (~ expanded) or cache:NAME for NAME in the demo's cache folder
            ($LIGHTNING_UNLEARN_CACHE, else ~/.cache/lightning-unlearn); null keeps the classifier as built.
        **kwargs: the other arguments of UnlearningModule.

    Raises:
        FileNotFoundError: if ``checkpoint`` does not exist.
        ValueError: if its weights do not fit ``classifier`` (naming the first tensor that does not).
    """

    def __init__(self, classifier: nn.Module, num_classes: int, checkpoint: str | None = None, **kwargs: Any) -> None:
        if checkpoint is not None:
            from lightning_unlearn.loading import extract_state_dict

            path = resolve_checkpoint(checkpoint)
            if not path.is_file():
                hint = ""
                if checkpoint.startswith(CACHE_PREFIX + "digits_small_cnn"):
                    hint = " (`lightning-unlearn demo` pre-trains the digits CNN and caches it there)"
                raise FileNotFoundError(f"`checkpoint` file {str(path)!r} does not exist{hint}.")
            state = extract_state_dict(torch.load(path, map_location="cpu", weights_only=False))
            mismatch = _weights_mismatch(state, classifier.state_dict())
            if mismatch is not None:
                raise ValueError(f"the weights in {str(path)!r} do not fit the classifier: {mismatch}.")
            classifier.load_state_dict(state)
        super().__init__(classifier, num_classes, **kwargs)
        self.save_hyperparameters(ignore=["classifier"])


def _check_request(model: UnlearningModule, datamodule: L.LightningDataModule) -> None:
    """Fail before the Trainer starts, naming the option, when the classifier's outputs do not match
    ``model.num_classes`` or a forget label lies outside it.
    """
    from lightning_unlearn.datamodule import ForgetRequestDataModule

    if not isinstance(datamodule, ForgetRequestDataModule) or not datamodule.forget_indices:
        return
    item = datamodule.dataset[datamodule.forget_indices[0]]
    x = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(x, Tensor):
        return
    modes = {module: module.training for module in model.classifier.modules()}
    try:
        model.classifier.eval()
        with torch.no_grad():
            logits = model.classifier(x.unsqueeze(0))
    finally:
        for module, training in modes.items():
            module.train(training)
    outputs = int(logits.shape[-1]) if isinstance(logits, Tensor) and logits.ndim == 2 else None
    if outputs is not None and outputs != model.num_classes:
        raise ValueError(
            f"`model.num_classes` is {model.num_classes} but the classifier returns {outputs} logits per instance;"
            f" set `--model.num_classes {outputs}` or change the classifier."
        )


def _retained_text(callback: InstanceUnlearning, datamodule: L.LightningDataModule | None) -> str:
    """The ``retained sample:`` line of ``fit``: how many retained inputs the request distilled on."""
    from lightning_unlearn.datamodule import ForgetRequestDataModule

    offered = datamodule.retain_indices if isinstance(datamodule, ForgetRequestDataModule) else []
    # under ddp_spawn the callback set its plugin up in the worker processes: the DataModule says what it offered
    size = callback.retain.size if callback.retain is not None else len(offered)
    if not size:
        return "retained sample: none (forget set only)"
    hint = " (--data.retain_fraction 0: none)" if offered else ""
    return f"retained sample: {size} training instances outside the forget set{hint}"


def _request_summaries(trainer: L.Trainer) -> list[tuple[InstanceUnlearning, RequestSummary]]:
    return [
        (callback, callback.summary)
        for callback in trainer.callbacks  # type: ignore[attr-defined]
        if isinstance(callback, InstanceUnlearning) and callback.summary is not None
    ]


def _drop_disabled_progress_bars(config: Any) -> None:
    """With ``--trainer.enable_progress_bar false``, remove the progress bars listed in ``trainer.callbacks`` (the
    shipped configs list an :class:`~lightning_unlearn.progress.UnlearningProgressBar`), which the Trainer would
    otherwise refuse (``MisconfigurationException``): the flag turns the bar off and the request runs.
    """
    import importlib

    from lightning.pytorch.callbacks import ProgressBar

    def is_progress_bar(callback: Any) -> bool:
        module, _, name = str(getattr(callback, "class_path", "")).rpartition(".")
        try:
            kind = getattr(importlib.import_module(module), name) if module else None
        except (ImportError, AttributeError):  # reported when the callbacks are built
            return False
        return isinstance(kind, type) and issubclass(kind, ProgressBar)

    trainer = config.get("trainer")
    callbacks = None if trainer is None else trainer.get("callbacks")
    if callbacks is None or trainer.get("enable_progress_bar") is not False:
        return
    listed = callbacks if isinstance(callbacks, list) else [callbacks]
    trainer["callbacks"] = [callback for callback in listed if not is_progress_bar(callback)]


def fit_command(argv: Sequence[str] | None) -> int:
    """``lightning-unlearn fit|validate ...``: a LightningCLI over :class:`CheckpointedUnlearningModule` and
    :class:`~lightning_unlearn.datamodule.ForgetRequestDataModule`.

    After ``fit``, the callback's summary is written next to the logs. A request that succeeded also writes the
    classifier's weights and prints the retained sample, the before/after table, the cost and the receipt's path; one
    that failed (instances still remembered, ``max_drop`` broken) makes the command return 1 with the reason as the
    last line on stderr. ``--verbose`` (anywhere in ``argv``) lets Lightning's own messages through (see
    :func:`quiet_output`).
    """
    from jsonargparse._typehints import ActionTypeHint
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from lightning_unlearn.datamodule import ForgetRequestDataModule

    class UnlearnCLI(LightningCLI):
        exit_code = 0

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            for action in parser._actions:
                if isinstance(action, ActionTypeHint):
                    _shorten_subclass_help(action, CLASS_EXAMPLES.get(action.dest, ()))

        def before_instantiate_classes(self) -> None:
            _drop_disabled_progress_bars(self.config.get(str(self.subcommand), self.config))

        def before_fit(self) -> None:
            assert isinstance(self.model, UnlearningModule)
            _check_request(self.model, self.datamodule)

        def after_fit(self) -> None:
            trainer = self.trainer
            if trainer.global_rank != 0:
                return
            folder = Path(trainer.log_dir or trainer.default_root_dir)
            folder.mkdir(parents=True, exist_ok=True)
            model = self.model
            assert isinstance(model, UnlearningModule)
            requests = _request_summaries(trainer)
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
                lines += [_retained_text(callback, data), "", *before_after_table(summary), ""]
                lines.append(f"{cost_text(summary, train_size)}, all unlearned: True")
                lines += [f"receipt: {Path(path).resolve()}" for path in callback.receipts[-1:]]
            lines += [f"unlearned classifier: {weights}"]
            lines += [f"summary: {folder / 'summary.json'}"] if requests else []
            sys.stdout.write("\n".join(lines) + "\n")

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


CLASS_EXAMPLES = {
    "model.classifier": ("lightning_unlearn.models.SmallCNN", "torchvision.models.resnet18"),
    "data.dataset": ("lightning_unlearn.datasets.DigitsDataset", "torchvision.datasets.CIFAR10"),
    "data.test_dataset": ("lightning_unlearn.datasets.DigitsDataset", "torchvision.datasets.CIFAR10"),
}


def _shorten_subclass_help(action: Any, examples: Sequence[str] = (), shown: int = 4) -> None:
    """Cap the "known subclasses" list of a class-typed option's help (the classifier's ran to 600 lines): ``examples``
    first, then the first known subclasses up to ``shown`` names.
    """
    full = action.extra_help

    def extra_help() -> str:
        text = full()
        prefix = ", known subclasses: "
        if prefix not in text:
            return text
        head, paths = text.split(prefix, 1)
        names = paths.split(", ")
        if len(names) <= shown and not examples:
            return text
        names = [*examples, *(name for name in names if name not in examples)]
        return f"{head}, any class path, e.g. " + ", ".join(names[:shown]) + f" ({len(names) - shown} more known)"

    action.extra_help = extra_help


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
    p_demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
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
    with quiet_output(args.verbose):
        demo(
            k=args.k,
            seed=args.seed,
            max_steps=args.max_steps,
            progress=not args.no_progress,
            out_dir=args.out_dir,
            compare_retrain=args.compare_retrain,
            retain_fraction=args.retain_fraction,
        )
    return 0


def shipped_configs() -> dict[str, Path]:
    """The request configs installed with the package (``lightning_unlearn/configs/*.yaml``), by name."""
    folder = Path(__file__).parent / "configs"
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


if __name__ == "__main__":
    raise SystemExit(main())
