"""The one place that turns :class:`~lightning_unlearn.InstanceUnlearning`'s arguments into the plugins a request runs,
in the order they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from lightning_unlearn.plugins.anchors import PGDAnchors
from lightning_unlearn.plugins.base import UnlearningPlugin, check_plugins
from lightning_unlearn.plugins.distill import RetainDistillation, RetainSource
from lightning_unlearn.plugins.edit import LastLayerEdit
from lightning_unlearn.plugins.fisher import FisherEdit
from lightning_unlearn.plugins.importance import MASImportance
from lightning_unlearn.plugins.replay import ForgetReplay
from lightning_unlearn.plugins.shifted import ShiftedCopies

Default = Literal["default"]


class MethodParts(NamedTuple):
    """The method's own plugins, each ``None`` when off, in the order they run (a new built-in part is one field here
    and one line in :func:`method_parts`).
    """

    anchors: PGDAnchors | None
    importance: MASImportance | None
    shifted_copies: ShiftedCopies | None
    retain: RetainDistillation | None
    fisher_edit: FisherEdit | None
    edit: LastLayerEdit | None


def method_parts(
    anchors: PGDAnchors | Default | None = "default",
    importance: MASImportance | None = None,
    shifted_copies: ShiftedCopies | Default | None = "default",
    retain: RetainDistillation | RetainSource | None = None,
    fisher_edit: FisherEdit | Default | None = "default",
    edit: LastLayerEdit | Default | None = "default",
) -> MethodParts:
    """The method's parts from :class:`~lightning_unlearn.InstanceUnlearning`'s arguments: ``"default"`` is the
    class's default instance, a retained sample is wrapped in :class:`RetainDistillation`.

    Raises:
        ValueError: naming the argument, the type found and the valid choices.

    Examples:
        >>> [type(p).__name__ for p in method_parts() if p is not None]
        ['PGDAnchors', 'ShiftedCopies', 'FisherEdit', 'LastLayerEdit']
        >>> method_parts(edit=3)
        Traceback (most recent call last):
        ...
        ValueError: `edit` must be a LastLayerEdit, 'default' or None, got int.
    """
    return MethodParts(
        anchors=_part("anchors", anchors, PGDAnchors),
        importance=_part("importance", importance, MASImportance, default=False),
        shifted_copies=_part("shifted_copies", shifted_copies, ShiftedCopies),
        retain=as_retain(retain),
        fisher_edit=_part("fisher_edit", fisher_edit, FisherEdit),
        edit=_part("edit", edit, LastLayerEdit),
    )


def build_plugins(
    parts: MethodParts, keep_forget_data: bool = False, plugins: Sequence[UnlearningPlugin] = ()
) -> list[UnlearningPlugin]:
    """The ordered list of plugins a request runs: the method's parts that are on, the replay of kept forget data
    (:class:`ForgetReplay`, with ``keep_forget_data``), then the user's ``plugins``.

    Raises:
        ValueError: if ``plugins`` holds something else than plugins, or two plugins share a name.

    Examples:
        >>> from lightning_unlearn.plugins import L1Sparse
        >>> parts = method_parts(anchors=None, shifted_copies=None)
        >>> [p.name for p in build_plugins(parts, keep_forget_data=True, plugins=[L1Sparse()])]
        ['fisher_edit', 'last_layer_edit', 'replay', 'l1']
    """
    own = [part for part in parts if part is not None]
    return check_plugins([*own, *([ForgetReplay()] if keep_forget_data else []), *plugins])


def as_retain(retain: RetainDistillation | RetainSource | None) -> RetainDistillation | None:
    """A retained sample as the plugin that distils on it (a ``RetainDistillation`` as it is, ``None`` for none)."""
    return retain if retain is None or isinstance(retain, RetainDistillation) else RetainDistillation(retain)


def with_datamodule_sample(parts: MethodParts, datamodule: Any) -> tuple[MethodParts, bool]:
    """``parts`` distilling on the retained sample ``datamodule`` offers (its ``retain_sample()``, as
    :class:`~lightning_unlearn.datamodule.ForgetRequestDataModule` does; no retained sample without one), and whether
    it offered one.
    """
    offer = getattr(datamodule, "retain_sample", None)
    sample = offer() if callable(offer) else None
    return parts._replace(retain=as_retain(sample)), sample is not None


def _part(argument: str, value: Any, kind: type[UnlearningPlugin], default: bool = True) -> Any:
    if default and value == "default":
        return kind()
    if value is not None and not isinstance(value, kind):
        choices = ", 'default' or None" if default else " or None"
        raise ValueError(f"`{argument}` must be a {kind.__name__}{choices}, got {type(value).__name__}.")
    return value
