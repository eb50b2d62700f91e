"""Baseline unlearning methods from the literature, as pluggable callbacks on the same Trainer path.

Each adds one idea to an :class:`~lightning_unlearn.UnlearningModule` (a loss term through
:meth:`~lightning_unlearn.UnlearningModule.add_loss_term`, or a gradient mask in ``on_before_optimizer_step``) and
removes it at the end of ``fit``; none knows about the others, so they compose with each other and with
:class:`~lightning_unlearn.InstanceUnlearning` (which supplies the stop rule, restore-on-failure and the summary).

| method | how to run it | source |
|---|---|---|
| negative gradient | ``forget_loss="neg_ce"``, ``InstanceUnlearning(anchors=None)`` | Golatkar et al., 2020 |
| random-label fine-tuning | ``UnlearningModule(forget_loss="random_label")`` | Golatkar et al., 2020 |
| SalUn (saliency mask + random labels) | ``forget_loss="random_label"`` + :class:`SaliencyMask` | Fan et al., 2024 |
| l1-sparse fine-tuning | :class:`L1Sparse` (with retained data: + :class:`RetainLoss`) | Jia et al., NeurIPS 2023 |
| fine-tuning on retained data | ``UnlearningModule(forget_weight=0)`` + :class:`RetainLoss` | Warnecke et al., 2023 |
| negative gradient + retained loss | ``forget_loss="neg_ce"`` + :class:`RetainLoss` | Kurmanji et al. (SCRUB), 2023 |
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from lightning_unlearn.functional.importance import apply_gradient_mask, gradient_mask, normalize_importance
from lightning_unlearn.functional.pgd import eval_mode
from lightning_unlearn.module import UnlearningModule


def _module(pl_module: L.LightningModule, name: str) -> UnlearningModule:
    if not isinstance(pl_module, UnlearningModule):
        raise TypeError(f"{name} needs an UnlearningModule, got {type(pl_module).__name__}.")
    return pl_module


class L1Sparse(Callback):
    """Adds ``strength * sum(|theta|)`` to the loss: l1-sparse unlearning (Jia et al., "Model Sparsity Can Simplify
    Machine Unlearning", NeurIPS 2023).

    Args:
        strength: the l1 coefficient.

    Raises:
        ValueError: if ``strength`` is negative.

    Examples:
        >>> L1Sparse(strength=1e-4).strength
        0.0001
    """

    def __init__(self, strength: float = 5e-4) -> None:
        if strength < 0:
            raise ValueError(f"`strength` must be >= 0, got {strength}.")
        self.strength = float(strength)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = _module(pl_module, "L1Sparse")
        params = [p for p in module.classifier.parameters() if p.requires_grad]
        module.add_loss_term("l1", lambda: self.strength * torch.stack([p.abs().sum() for p in params]).sum())

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _module(pl_module, "L1Sparse").remove_loss_term("l1")


class RetainLoss(Callback):
    """Adds cross-entropy on batches of retained training data (for users who still hold some of it).

    Args:
        retain: an iterable of ``(inputs, labels, ...)`` batches (a DataLoader), cycled for as long as ``fit`` runs.
        weight: weight of the term.

    Raises:
        ValueError: if ``weight`` is negative.

    Examples:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> RetainLoss(DataLoader(TensorDataset(torch.rand(4, 3), torch.zeros(4, dtype=torch.long)))).weight
        1.0
    """

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
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = _module(pl_module, "RetainLoss")

        def retain_term() -> Tensor:
            batch = self._next()
            x, y = batch[0].to(module.device), batch[1].to(module.device)
            return self.weight * F.cross_entropy(module(x), y)

        module.add_loss_term("retain_loss", retain_term)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _module(pl_module, "RetainLoss").remove_loss_term("retain_loss")
        self._iterator = None


class SaliencyMask(Callback):
    """Updates only the weights most salient for forgetting: SalUn's gradient-saliency mask (Fan et al., "SalUn:
    Empowering Machine Unlearning via Gradient-based Weight Saliency", ICLR 2024).

    At the start of ``fit`` the saliency of each weight is ``|d CE(f(x), y) / d theta|`` summed over the forget set
    (eval mode), normalised per tensor; gradients of all but the ``fraction`` most salient weights are zeroed in
    ``on_before_optimizer_step``. Pair it with ``UnlearningModule(forget_loss="random_label")`` for SalUn.

    Args:
        fraction: share of weights left free, in ``(0, 1]``.

    Raises:
        ValueError: if ``fraction`` is outside ``(0, 1]``.

    Examples:
        >>> SaliencyMask(fraction=0.5).fraction
        0.5
    """

    def __init__(self, fraction: float = 0.5) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"`fraction` must be in (0, 1], got {fraction}.")
        self.fraction = float(fraction)
        self.mask: dict[str, Tensor] | None = None

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = _module(pl_module, "SaliencyMask")
        named = {n: p for n, p in module.classifier.named_parameters() if p.requires_grad}
        sums = {n: torch.zeros_like(p) for n, p in named.items()}
        with eval_mode(module.classifier), torch.enable_grad():
            for batch in trainer.train_dataloader:  # type: ignore[union-attr]
                x, y, _ = module.split_batch(batch)
                loss = F.cross_entropy(module.classifier(x.to(module.device)), y.to(module.device), reduction="sum")
                grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
                for (name, _p), g in zip(named.items(), grads):
                    if g is not None:
                        sums[name] += g.abs()
        sums = {n: trainer.strategy.reduce(s, reduce_op="sum") for n, s in sums.items()}
        self.mask = gradient_mask(normalize_importance(sums), self.fraction)

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.mask is not None:
            module = _module(pl_module, "SaliencyMask")
            apply_gradient_mask(dict(module.classifier.named_parameters()), self.mask)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.mask = None


__all__ = ["L1Sparse", "RetainLoss", "SaliencyMask"]
