"""What one request did: the summary kept in the callback's history, written to receipts and summaries."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class RequestSummary:
    """What one request did.

    Attributes:
        request: index of the request (0 for the first ``fit`` with this callback).
        k: number of forget instances (over all processes).
        steps: optimizer steps taken.
        seconds: wall time of the request, anchors and importance included.
        samples: inputs pushed through the classifier by the request, over all processes: training steps, anchor
            generation (each PGD step), every plugin's batches, stop checks and the edit (a pass that also goes
            backward counts once; passes over the evaluation sets are not counted). Compare it with retraining's
            epochs x training-set size.
        setup_seconds: of which anchor generation and importance estimation.
        remaining_before: instances not yet unlearned at the start.
        remaining_after: instances not unlearned at the end (0 on success).
        unlearned: whether every instance was unlearned.
        restored: whether the original weights were put back (request failed and ``restore_on_failure``).
        failure: why the request failed (``None`` on success).
        plugins: each plugin's outcomes, under its name (``{"anchor_loss": {"anchors": 168, ...}, ...}``), written by
            the plugins with :meth:`record`; :attr:`anchors`, :attr:`anchor_success_rate` and :attr:`finished_by`
            read them.
        before: metrics on the original weights (``forget/acc``, ``anchor/agreement``, ``{name}/acc``,
            ``mia/efficacy``, ...).
        after: the same metrics at the end.

    Examples:
        >>> summary = RequestSummary(request=0, k=4)
        >>> summary.record("last_layer_edit", finished_by="steps")
        >>> summary.finished_by, summary.to_dict()["remaining_after"], summary.to_dict()["finished_by"]
        ('steps', 0, 'steps')
    """

    request: int
    k: int
    steps: int = 0
    seconds: float = 0.0
    samples: int = 0
    setup_seconds: float = 0.0
    remaining_before: int = 0
    remaining_after: int = 0
    unlearned: bool = False
    restored: bool = False
    failure: str | None = None
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)

    def record(self, plugin: str, **values: Any) -> None:
        """Add ``values`` (plain values) to the outcomes of ``plugin``."""
        self.plugins.setdefault(plugin, {}).update(values)

    def outcome(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` in the outcomes of the last plugin that recorded one (``default`` if none did)."""
        found = [part[key] for part in self.plugins.values() if part.get(key) is not None]
        return found[-1] if found else default

    @property
    def anchors(self) -> int:
        """Number of anchors (over all processes; 0 without anchors)."""
        return int(self.outcome("anchors", 0))

    @property
    def anchor_success_rate(self) -> float:
        """Share of anchors the pre-trained model labels with their attack target (``nan`` without anchors)."""
        return float(self.outcome("anchor_success_rate", float("nan")))

    @property
    def finished_by(self) -> str | None:
        """Which result the request kept: ``"fisher_edit"`` (the closed-form edit of the last layers finished it
        before any step, see :class:`~lightning_unlearn.plugins.FisherEdit`), ``"steps"`` (the optimiser's),
        ``"steps+edit"`` (the closed-form last-layer edit of the weights the steps reached, see
        :class:`~lightning_unlearn.plugins.LastLayerEdit`), ``"edit"`` (the edit of the original weights), ``"none"``
        (the edit could not improve on steps that fell short: the request fails) or ``None`` (no plugin finishes
        requests, e.g. ``edit=None``).
        """
        value = self.outcome("finished_by")
        return None if value is None else str(value)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, ready for JSON (with ``anchors``, ``anchor_success_rate`` and ``finished_by`` at the top)."""
        values = asdict(self)
        values.update(anchors=self.anchors, anchor_success_rate=self.anchor_success_rate, finished_by=self.finished_by)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RequestSummary:
        """The summary of :meth:`to_dict`'s values (keys that are not fields are read from :attr:`plugins`; a summary
        written before plugins had their own parts keeps its ``anchors``, ``anchor_success_rate`` and ``finished_by``).

        Examples:
            >>> RequestSummary.from_dict({"request": 0, "k": 4, "anchors": 84, "finished_by": "steps"}).finished_by
            'steps'
        """
        names = {f.name for f in fields(cls)}
        summary = cls(**{k: v for k, v in values.items() if k in names})
        legacy = {k: values[k] for k in ("anchors", "anchor_success_rate", "finished_by") if values.get(k) is not None}
        if "plugins" not in values and legacy:  # the flat form of earlier versions
            summary.record("summary", **legacy)
        return summary
