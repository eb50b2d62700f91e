"""The shared mechanics of plugins that hold the pre-trained model's outputs on a pool of inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from typing_extensions import override

from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.functional.losses import anchor_loss
from lightning_unlearn.plugins.base import ScaledProtection, zero_term
from lightning_unlearn.spawn import SpawnSafeGenerators

if TYPE_CHECKING:
    from lightning_unlearn.request import RequestContext


class HeldOutputs(SpawnSafeGenerators, ScaledProtection):  # holds a torch.Generator: see spawn.py
    """Distil the pre-trained model's outputs on a pool of inputs while a request unlearns (KL divergence to the
    pre-trained softmax, on ``batch_size`` inputs drawn at every step).

    Subclasses say which inputs with :meth:`make_inputs` (or build inputs and reference logits together with
    :meth:`make_pool`, and change the loss with :meth:`held_loss`); the pool is built in :meth:`setup` on the original
    weights,
    added to ``request.protected`` (the inputs whose outputs the request should change least, read by
    :class:`~lightning_unlearn.plugins.LastLayerEdit`) and dropped at the end of the request: never checkpointed.

    Args:
        weight: weight of the term.
        batch_size: pool inputs drawn per training step.
        generator_offset: which of the request's generators draws the batches (unique per plugin).

    Raises:
        ValueError: if ``weight`` is negative or ``batch_size`` not positive.
    """

    name = "held_outputs"
    adds_loss = True

    def __init__(self, weight: float, batch_size: int, generator_offset: int) -> None:
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight}.")
        if batch_size <= 0:
            raise ValueError(f"`batch_size` must be > 0, got {batch_size}.")
        self.weight = float(weight)
        self.batch_size = int(batch_size)
        self._offset = int(generator_offset)
        self._inputs: Tensor | None = None
        self._logits: Tensor | None = None
        self._generator = torch.Generator()

    def make_inputs(self, ctx: RequestContext) -> Tensor:
        """The pool's inputs (this process's share), on the module's device."""
        raise NotImplementedError

    def make_pool(self, ctx: RequestContext) -> tuple[Tensor, Tensor | None]:
        """The pool's inputs and the pre-trained logits on them (``None`` for an empty pool); by default
        :meth:`make_inputs` and one pass of the classifier.
        """
        inputs = self.make_inputs(ctx)
        return inputs, predict(ctx.module.classifier, inputs) if len(inputs) else None

    def held_loss(self, logits: Tensor, index: Tensor) -> Tensor:
        """The unweighted loss of the current ``logits`` on the pool inputs at ``index``: by default the KL divergence
        to the pre-trained softmax.
        """
        assert self._logits is not None
        return anchor_loss(logits.float(), self._logits[index], kind="kl")

    @property
    def inputs(self) -> Tensor | None:
        """This process's pool while a request runs (``None`` otherwise)."""
        return self._inputs

    @override
    def setup(self, ctx: RequestContext) -> None:
        self._inputs, self._logits = self.make_pool(ctx)
        ctx.request.protected.append(self._inputs)
        self._generator = ctx.request.generator(self._offset)
        self._start_scale(self._generator)

    @override
    def loss_term(self, ctx: RequestContext) -> Tensor:
        inputs, logits = self._inputs, self._logits
        if inputs is None or logits is None or len(inputs) == 0:  # an empty pool (DDP shard)
            return zero_term(ctx.module)
        index = torch.randint(0, len(inputs), (min(self.batch_size, len(inputs)),), generator=self._generator)
        index = index.to(inputs.device)
        return self._scale * self.weight * self.held_loss(ctx.module(inputs[index]), index)

    @override
    def step_metrics(self, ctx: RequestContext) -> dict[str, float]:
        return {} if self._inputs is None else {f"train/{self.name}_scale": self._scale}

    @override
    def teardown(self, ctx: RequestContext) -> None:
        self._inputs = self._logits = None

    @override
    def state_dict(self) -> dict[str, Any]:
        if self._inputs is None:
            return {}
        return self._scale_state(self._generator)
