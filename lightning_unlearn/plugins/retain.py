"""Cross-entropy on retained training data, for users who still hold some of it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor
from typing_extensions import override

from lightning_unlearn.plugins.base import UnlearningPlugin

if TYPE_CHECKING:
    from lightning_unlearn.request import RequestContext


class RetainLoss(UnlearningPlugin):
    """Adds cross-entropy on batches of retained training data (logged as ``train/retain_loss``).

    Args:
        retain: an iterable of ``(inputs, labels, ...)`` batches (a DataLoader), cycled for as long as ``fit`` runs.
        weight: weight of the term.

    Raises:
        ValueError: if ``weight`` is negative.

    Examples:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> RetainLoss(DataLoader(TensorDataset(torch.rand(4, 3), torch.zeros(4, dtype=torch.long)))).weight
        1.0
    """

    name = "retain_loss"
    adds_loss = True

    def __init__(self, retain: Iterable[Any], weight: float = 1.0) -> None:
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight}.")
        self.retain = retain
        self.weight = float(weight)
        self._iterator: Iterator[Any] | None = None

    def _next(self) -> Any:
        if self._iterator is None:
            self._iterator = iter(self.retain)
        try:
            return next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.retain)
            return next(self._iterator)

    @override
    def loss_term(self, ctx: RequestContext) -> Tensor:
        batch = self._next()
        x, y = batch[0].to(ctx.module.device), batch[1].to(ctx.module.device)
        return self.weight * F.cross_entropy(ctx.module(x), y)

    @override
    def teardown(self, ctx: RequestContext) -> None:
        self._iterator = None
