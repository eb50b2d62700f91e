"""Keeps earlier requests' forget instances unlearned during later requests (``keep_forget_data=True``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor
from typing_extensions import override

from lightning_unlearn.plugins.base import UnlearningPlugin

if TYPE_CHECKING:
    from lightning_unlearn.request import ForgetPart, RequestContext


class ForgetReplay(UnlearningPlugin):
    """Adds the module's own forget loss (:meth:`~lightning_unlearn.UnlearningModule.forget_term`) on the forget sets
    of earlier requests, whole, at every step (logged as ``train/replay``).

    Examples:
        >>> ForgetReplay().name
        'replay'
    """

    name = "replay"
    adds_loss = True

    def __init__(self) -> None:
        self._parts: list[ForgetPart] = []

    @override
    def setup(self, ctx: RequestContext) -> None:
        self._parts = list(ctx.request.kept)

    @override
    def loss_term(self, ctx: RequestContext) -> Tensor | None:
        total: Tensor | None = None
        for x, y, t in self._parts:
            term = ctx.module.forget_term(ctx.module(x), y, t)
            total = term if total is None else total + term
        return total

    @override
    def teardown(self, ctx: RequestContext) -> None:
        self._parts = []
