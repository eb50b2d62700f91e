"""The parsers of ``lightning-unlearn fit``: their help text, and the parsed config before the classes are built.

In the help, a class-typed option names a few example class paths, not every known subclass (the classifier's list
ran to 600 lines). Only public API: the formatter is a :class:`jsonargparse.DefaultHelpFormatter` given to the parsers
as ``formatter_class``, and it rewrites the text that its public ``format_help`` returns.
"""

from __future__ import annotations

import importlib
import itertools
import re
import shutil
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks import ProgressBar

#: the class paths a class-typed option names first, by option
CLASS_EXAMPLES = {
    "model.classifier": ("lightning_unlearn.models.SmallCNN", "torchvision.models.resnet18"),
    "data.dataset": ("lightning_unlearn.datasets.DigitsDataset", "torchvision.datasets.CIFAR10"),
    "data.test_dataset": ("lightning_unlearn.datasets.DigitsDataset", "torchvision.datasets.CIFAR10"),
}
_KNOWN = ", known subclasses: "
_OPTION = re.compile(r"^  (-\S+)")


def short_class_list(help_text: str, examples: Sequence[str] = (), shown: int = 4) -> str:
    """``help_text`` with its list of known subclasses cut to ``shown`` names, ``examples`` first.

    Examples:
        >>> short_class_list("a model. (type: Module, known subclasses: a.A, a.B, a.C)", ["x.X"], shown=2)
        'a model. (type: Module, any class path, e.g. x.X, a.A (2 more known))'
        >>> short_class_list("a model. (type: Module, known subclasses: a.A, a.B)")
        'a model. (type: Module, known subclasses: a.A, a.B)'
    """
    head, found, rest = help_text.partition(_KNOWN)
    if not found or not rest.endswith(")"):
        return help_text
    names = rest[:-1].split(", ")
    if len(names) <= shown and not examples:
        return help_text
    names = [*examples, *(name for name in names if name not in examples)]
    return f"{head}, any class path, e.g. " + ", ".join(names[:shown]) + f" ({len(names) - shown} more known))"


def shorten_class_lists(
    text: str, width: int, examples: Mapping[str, Sequence[str]] | None = None, shown: int = 4
) -> str:
    """Apply :func:`short_class_list` to each option of a formatted help ``text`` (``width`` columns) and wrap its
    help again as argparse does; ``examples`` by option name (``"model.classifier"``).
    """
    lines, out, i = text.split("\n"), [], 0

    while i < len(lines):
        end = i + 1
        match = _OPTION.match(lines[i])
        while match and end < len(lines) and lines[end].startswith("   "):
            end += 1
        block = lines[i:end]
        if match and end > i + 1 and _KNOWN in " ".join(line.strip() for line in block):
            out += _rewrap(block, width, (examples or {}).get(match.group(1).lstrip("-"), ()), shown)
        else:
            out += block
        i = end
    return "\n".join(out)


def _rewrap(block: list[str], width: int, examples: Sequence[str], shown: int) -> list[str]:
    """One option's lines with a short class list, wrapped at argparse's help position and width."""
    position = len(block[1]) - len(block[1].lstrip(" "))
    header, same_line = block[0], block[0][position - 2 : position] == "  " and len(block[0]) > position
    text_width = max(width - position, 11)
    pieces = ([header[position:]] if same_line else []) + [line.strip() for line in block[1:]]
    words = pieces[0]
    for previous, piece in itertools.pairwise(pieces):
        # a class path longer than a line was cut at the line's end; list entries otherwise end lines with ","
        cut = _KNOWN in words and len(previous) == text_width and not previous.endswith(",")
        words += piece if cut else " " + piece
    wrapped = textwrap.wrap(short_class_list(words, examples, shown), text_width)
    if same_line:
        return [header[:position] + wrapped[0], *(" " * position + line for line in wrapped[1:])]
    return [header, *(" " * position + line for line in wrapped)]


class ShortClassListHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter whose class-typed options list :data:`CLASS_EXAMPLES` and at most
    :attr:`shown` class paths (:func:`shorten_class_lists`).

    Examples:
        >>> from jsonargparse import ArgumentParser
        >>> from torch import nn
        >>> parser = ArgumentParser(prog="p", formatter_class=ShortClassListHelpFormatter)
        >>> _ = parser.add_argument("--model.classifier", type=nn.Module, help="the architecture.")
        >>> "torch.nn.Identity (" in parser.format_help() and "more known))" in parser.format_help()
        True
    """

    examples: ClassVar[Mapping[str, Sequence[str]]] = CLASS_EXAMPLES
    shown: ClassVar[int] = 4

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None, **kwargs: Any
    ) -> None:
        self.width = shutil.get_terminal_size().columns - 2 if width is None else width  # as argparse does
        super().__init__(prog, indent_increment, max_help_position, self.width, **kwargs)  # kwargs: newer Pythons'

    def format_help(self) -> str:
        """The help text, class lists shortened."""
        return shorten_class_lists(super().format_help(), self.width, self.examples, self.shown)


def drop_disabled_progress_bars(config: Any) -> None:
    """With ``--trainer.enable_progress_bar false``, remove the progress bars listed in ``trainer.callbacks`` (the
    shipped configs list an :class:`~lightning_unlearn.progress.UnlearningProgressBar`), which the Trainer would
    otherwise refuse (``MisconfigurationException``): the flag turns the bar off and the request runs.
    """

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
