"""The stall rule: when forgetting stops making progress, trade some protection for progress."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StallRule:
    """Says when the number of instances still remembered has not fallen for ``patience`` steps.

    Attributes:
        patience: steps without a new best before :meth:`update` reports a stall; ``None`` never does.
        best: the fewest instances remembered so far (``-1`` before the first update).
        best_step: the step of that best, or of the last stall.

    Examples:
        >>> rule = StallRule(patience=2)
        >>> [rule.update(remaining=3, step=s) for s in range(1, 6)]
        [False, False, True, False, True]
    """

    patience: int | None
    best: int = -1
    best_step: int = 0

    def update(self, remaining: int, step: int) -> bool:
        """Record ``remaining`` at ``step``; ``True`` if unlearning has stalled (the count restarts from here)."""
        if self.best < 0 or remaining < self.best:
            self.best, self.best_step = remaining, step
            return False
        if self.patience is not None and step - self.best_step >= self.patience:
            self.best_step = step
            return True
        return False
