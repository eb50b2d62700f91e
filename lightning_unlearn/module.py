"""The LightningModule that unlearns: wraps a classifier, computes the forget loss plus the terms plugins add."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_unlearn.data import check_logits, split_forget_batch
from lightning_unlearn.evaluation import RequestEvaluator
from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.functional.losses import FORGET_LOSS_KINDS, ForgetLossKind, forget_loss
from lightning_unlearn.functional.metrics import is_unlearned
from lightning_unlearn.functional.projection import projected_surrogate
from lightning_unlearn.spawn import SpawnSafeGenerators

Mode = Literal["misclassify", "relabel"]
MODES: tuple[str, ...] = ("misclassify", "relabel")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
BATCHNORM_MODES: tuple[str, ...] = ("eval", "train")

LossTerm = Callable[[], "Tensor | None"]
"""A plugin's extra loss: called once per training step, returns a scalar (already weighted) or ``None``."""


class UnlearningModule(SpawnSafeGenerators, L.LightningModule):  # holds a torch.Generator: see spawn.py
    """Wraps a trained classifier so that ``Trainer.fit`` on a forget set unlearns it.

    ``training_step`` computes the forget loss on the batch (misclassify: move each instance to the nearest other
    class; relabel: move it to its target; instances already unlearned contribute nothing) plus the terms that plugins
    such as :class:`~lightning_unlearn.InstanceUnlearning` register with :meth:`add_loss_term`. The classifier is held
    by reference: after ``fit`` the classifier object itself has the new weights.

    Args:
        classifier: any module (a plain ``nn.Module`` or a ``LightningModule``) mapping an input batch to ``[B, C]``
            logits.
        num_classes: ``C``, at least 2.
        mode: ``"misclassify"``, ``"relabel"`` or ``None`` to follow the batches (targets of ``-1`` mean misclassify).
        forget_loss: ``"margin"`` (default), ``"runner_up"``, ``"neg_ce"`` or ``"random_label"``
            (see :func:`~lightning_unlearn.functional.forget_loss`).
        margin: how far past the decision boundary an instance is pushed before it stops contributing.
        forget_weight: weight of the forget loss.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: learning rate.
        weight_decay: weight decay.
        momentum: SGD momentum.
        batchnorm: ``"eval"`` keeps BatchNorm layers in eval mode during unlearning (running statistics frozen: tiny
            forget batches would otherwise overwrite them), ``"train"`` lets them update.
        project_gradients: when the forget gradient conflicts with the gradient of the plugins' terms (anchors,
            importance penalty), remove the conflicting component before the step (PCGrad). Costs one extra backward
            pass per step; the projection uses each process's local gradients.

    Raises:
        ValueError: if an argument is outside its valid range or choices, or the classifier has no trainable parameter.

    Examples:
        >>> classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> module = UnlearningModule(classifier, num_classes=10)
        >>> module(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        classifier: nn.Module,
        num_classes: int,
        mode: Mode | None = None,
        forget_loss: ForgetLossKind = "margin",
        margin: float = 0.0,
        forget_weight: float = 1.0,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        batchnorm: Literal["eval", "train"] = "eval",
        project_gradients: bool = False,
    ) -> None:
        if not isinstance(classifier, nn.Module):
            raise ValueError(f"`classifier` must be a torch.nn.Module, got {type(classifier).__name__}.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}.")
        if mode is not None and mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES} or None, got {mode!r}.")
        if forget_loss not in FORGET_LOSS_KINDS:
            raise ValueError(f"`forget_loss` must be one of {FORGET_LOSS_KINDS}, got {forget_loss!r}.")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {optimizer!r}.")
        if batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"`batchnorm` must be one of {BATCHNORM_MODES}, got {batchnorm!r}.")
        if lr <= 0:
            raise ValueError(f"`lr` must be > 0, got {lr}.")
        for name, value in (
            ("margin", margin),
            ("forget_weight", forget_weight),
            ("weight_decay", weight_decay),
            ("momentum", momentum),
        ):
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0, got {value}.")
        if not any(p.requires_grad for p in classifier.parameters()):
            raise ValueError("`classifier` has no trainable parameters (requires_grad=True): nothing can be unlearned.")
        super().__init__()
        self.save_hyperparameters(ignore=["classifier"])
        self.classifier = classifier
        self.num_classes = num_classes
        self.mode = mode
        self.forget_loss_kind = forget_loss
        self.margin = float(margin)
        self.forget_weight = float(forget_weight)
        self.optimizer_name = optimizer
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.momentum = float(momentum)
        self.batchnorm = batchnorm
        self.project_gradients = project_gradients
        self._loss_terms: dict[str, LossTerm] = {}
        self._label_generator = torch.Generator().manual_seed(0)
        self._evaluator: RequestEvaluator | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x)

    def on_fit_start(self) -> None:
        """Put the classifier in train mode (BatchNorm follows ``batchnorm`` at each step); each submodule's own mode
        is restored at the end of ``fit``.
        """
        self._modes_before_fit = [(m, m.training) for m in self.classifier.modules()]
        self._label_generator.manual_seed(torch.initial_seed() % (2**31) + self.global_rank)
        self.classifier.train()

    def on_fit_end(self) -> None:
        for module, mode in getattr(self, "_modes_before_fit", []):
            module.training = mode
        self._modes_before_fit = []

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """With ``batchnorm="eval"``, put BatchNorm layers in eval mode before each step (running statistics frozen)."""
        if self.batchnorm == "eval":
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()

    # ----------------------------------------------------------------------------------------------- plugin terms
    def add_loss_term(self, name: str, term: LossTerm) -> None:
        """Register an extra loss term, computed and added at every training step and logged as ``train/{name}``.

        Raises:
            ValueError: if a term of that name is already registered.
        """
        if name in self._loss_terms:
            raise ValueError(f"a loss term named {name!r} is already registered; remove it first.")
        self._loss_terms[name] = term

    def remove_loss_term(self, name: str) -> None:
        """Unregister a term (no error if absent)."""
        self._loss_terms.pop(name, None)

    @property
    def loss_terms(self) -> tuple[str, ...]:
        """Names of the registered terms."""
        return tuple(self._loss_terms)

    # ----------------------------------------------------------------------------------------------- steps
    def split_batch(self, batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(inputs, labels, targets or None)`` of a forget batch in the module's mode (see
        :func:`~lightning_unlearn.data.split_forget_batch`).
        """
        return split_forget_batch(batch, self.mode)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y, t = self.split_batch(batch)
        forget = self.forget_term(self(x), y, t)
        log_terms = self.logging_step()
        if log_terms:
            self.log("train/forget_loss", forget.detach(), batch_size=x.shape[0])
        protect: Tensor | None = None
        for name, term in self._loss_terms.items():
            value = term()
            if value is None:
                continue
            if log_terms:
                self.log(f"train/{name}", value.detach(), batch_size=x.shape[0])
            protect = value if protect is None else protect + value
        loss = forget if protect is None else forget + protect
        if log_terms:
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=x.shape[0])
        projectable = protect is not None and protect.requires_grad and forget.requires_grad
        if self.project_gradients and projectable and bool(forget.detach() != 0):
            assert protect is not None
            params = [p for p in self.classifier.parameters() if p.requires_grad]  # PCGrad, see projected_surrogate
            return projected_surrogate(forget, protect, params)
        return loss

    def forget_term(self, logits: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
        """The weighted forget loss of ``logits`` (the module's loss kind, margin and random-label generator)."""
        return self.forget_weight * forget_loss(
            logits, labels, targets, kind=self.forget_loss_kind, margin=self.margin, generator=self._label_generator
        )

    def logging_step(self) -> bool:
        """Whether this step's loss terms are logged: every ``Trainer(log_every_n_steps=...)`` steps, when the logger
        writes (each ``self.log`` costs about a millisecond, a third of a small model's step). The forget metrics
        (``forget/*``) are logged at every stop check regardless, for monitors such as ``EarlyStopping``.
        """
        if self._trainer is None:
            return True
        return self.trainer.global_step % max(1, int(getattr(self.trainer, "log_every_n_steps", 1))) == 0

    def unlearned(self, x: Tensor, y: Tensor, t: Tensor | None = None, batch_size: int = 1024) -> Tensor:
        """Boolean ``[k]``: which instances the classifier (in eval mode, modes restored after) has unlearned."""
        return is_unlearned(predict(self.classifier, x, batch_size), y, t)

    def check_output(self, x: Tensor) -> None:
        """Raise unless the classifier maps ``x`` to ``[B, num_classes]`` logits (:func:`~.data.check_logits`)."""
        check_logits(self.classifier, x, self.num_classes)

    @property
    def evaluator(self) -> RequestEvaluator:
        """What measures validation: the running request's evaluator (:meth:`use_evaluator`), else the module's own
        (accuracy only: no reference, no drop).
        """
        if self._evaluator is None:
            self._evaluator = RequestEvaluator(self, None)
        return self._evaluator

    def use_evaluator(self, evaluator: RequestEvaluator | None) -> None:
        """Measure validation with ``evaluator`` (a request's, while it runs), or with the module's own (``None``)."""
        self._evaluator = evaluator

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluator.update(dataloader_idx, self(batch[0]), batch[1])

    def on_validation_epoch_end(self) -> None:
        """Log ``{name}/acc`` of each evaluation set and, during a request, ``{name}/drop`` (see :mod:`.evaluation`)."""
        for name, value in self.evaluator.validation_values().items():
            self.log(name, value, batch_size=1)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        params = [p for p in self.classifier.parameters() if p.requires_grad]
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
