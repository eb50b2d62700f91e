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
    import lightning as L

    from lightning_unlearn.module import UnlearningModule
    from lightning_unlearn.request import Request


class HeldOutputs(SpawnSafeGenerators, ScaledProtection):  # holds a torch.Generator: see spawn.py
    """Distil the pre-trained model's outputs on a pool of inputs while a request unlearns (KL divergence to the
    pre-trained softmax, on ``batch_size`` inputs drawn at every step).

    Subclasses say which inputs with :meth:`make_inputs`; the pool is built in :meth:`setup` on the original weights,
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

    def make_inputs(self, request: Request, module: UnlearningModule, trainer: L.Trainer) -> Tensor:
        """The pool's inputs (this process's share), on the module's device."""
        raise NotImplementedError

    @property
    def inputs(self) -> Tensor | None:
        """This process's pool while a request runs (``None`` otherwise)."""
        return self._inputs

    @override
    def setup(self, request: Request, module: UnlearningModule, trainer: L.Trainer) -> None:
        self._inputs = self.make_inputs(request, module, trainer)
        self._logits = predict(module.classifier, self._inputs) if len(self._inputs) else None
        request.protected.append(self._inputs)
        self._generator = request.generator(self._offset)
        self._start_scale(self._generator)

    @override
    def loss_term(self, module: UnlearningModule) -> Tensor:
        inputs, logits = self._inputs, self._logits
        if inputs is None or logits is None or len(inputs) == 0:  # an empty pool (DDP shard)
            return zero_term(module)
        index = torch.randint(0, len(inputs), (min(self.batch_size, len(inputs)),), generator=self._generator)
        index = index.to(inputs.device)
        return self._scale * self.weight * anchor_loss(module(inputs[index]).float(), logits[index], kind="kl")

    @override
    def step_metrics(self) -> dict[str, float]:
        return {} if self._inputs is None else {f"train/{self.name}_scale": self._scale}

    @override
    def teardown(self, module: UnlearningModule) -> None:
        self._inputs = self._logits = None

    @override
    def state_dict(self) -> dict[str, Any]:
        if self._inputs is None:
            return {}
        return self._scale_state(self._generator)
