"""Adversarial anchors: targeted PGD examples around the forget instances that hold the decision boundary in place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_unlearn.distributed import gather_rows
from lightning_unlearn.functional.anchors import (
    AnchorPool,
    Attack,
    anchor_geometry,
    default_radii,
    multi_radius_anchors,
    pgd_attack,
)
from lightning_unlearn.functional.backends import (
    BACKENDS,
    Backend,
    check_inputs_in_range,
    check_torchattacks_inputs,
    checked_range,
    resolve_backend,
)
from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.functional.losses import ANCHOR_LOSS_KINDS, AnchorLossKind, anchor_loss
from lightning_unlearn.functional.pgd import NORMS, Norm
from lightning_unlearn.metrics import AnchorAgreement
from lightning_unlearn.plugins.held import HeldOutputs

if TYPE_CHECKING:
    from lightning_unlearn.request import RequestContext

AnchorLabel = Literal["prediction", "target"]
ANCHOR_LABELS: tuple[str, ...] = ("prediction", "target")


class PGDAnchors(HeldOutputs):
    """Generates adversarial anchors from the forget instances and supplies their loss during unlearning.

    For each forget instance, ``per_instance`` anchors are made by targeted PGD toward classes drawn uniformly from the
    other ``C - 1`` classes, with the model in eval mode, once at the start of a request. Each anchor is then trained
    toward the label the pre-trained model gives it (``label="prediction"``, the default) or toward its attack target
    (``label="target"``, the reference code's choice), with cross-entropy or by KL distillation of the pre-trained
    outputs (``loss="kl"``).

    As a :class:`~lightning_unlearn.plugins.HeldOutputs` plugin it generates the pool in :meth:`setup` (the anchors
    join the request's protected inputs), adds ``scale * weight * loss`` on ``batch_size`` anchors drawn at each step
    (logged as ``train/anchor_loss``), reports ``anchor/agreement`` and lets the stall rule lower ``scale``; the
    summary records ``anchors`` and ``anchor_success_rate`` (``summary.plugins["anchor_loss"]``). The attack itself
    is :func:`~lightning_unlearn.functional.anchors.multi_radius_anchors`.

    Args:
        norm: ``"l2"`` or ``"linf"``.
        eps: radius of the perturbation ball, in input units (in units of the data's spread for unbounded inputs,
            see ``input_range``); a sequence spreads each instance's anchors evenly over several radii (near anchors
            hold the boundary tight, far ones hold it wide). ``None`` (the default) picks radii from the input size,
            see :meth:`radii`.
        step_size: PGD step; ``None`` means ``eps / 4`` for each radius.
        steps: PGD steps.
        per_instance: anchors generated per forget instance.
        label: ``"prediction"`` or ``"target"``.
        loss: ``"ce"`` or ``"kl"``.
        weight: weight of the anchor loss relative to the forget loss.
        batch_size: anchors drawn per training step.
        input_range: ``(low, high)`` of valid inputs (the forget inputs must lie in it; anchors are clamped to it);
            ``None``: inputs of any value, anchors never clamped, their radii follow the spread of the data (see
            :meth:`radii`); ``"auto"`` (the default): ``(0, 1)`` when the forget inputs lie in it (images), else
            ``None`` (standardised signals, feature vectors, images normalised outside the model).
        random_start: start PGD at a random point of the ball.
        backend: ``"builtin"`` (the package's PGD), ``"torchattacks"`` (needs ``lightning-unlearn[torchattacks]``) or
            ``"auto"`` (torchattacks when installed, else builtin).

    Raises:
        ValueError: if an argument is outside its valid range or choices.
        ModuleNotFoundError: if ``backend="torchattacks"`` and torchattacks is not installed.

    Examples:
        >>> anchors = PGDAnchors(eps=1.0, steps=10, per_instance=4, backend="builtin")
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> pool = anchors.generate(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), num_classes=3)
        >>> len(pool), tuple(pool.inputs.shape)
        (8, (8, 1, 2, 2))
    """

    def __init__(
        self,
        norm: Norm = "l2",
        eps: float | Sequence[float] | None = None,
        step_size: float | None = None,
        steps: int = 10,
        per_instance: int = 21,
        label: AnchorLabel = "prediction",
        loss: AnchorLossKind = "kl",
        weight: float = 10.0,
        batch_size: int = 256,
        input_range: tuple[float, float] | Literal["auto"] | None = "auto",
        random_start: bool = True,
        backend: Backend = "auto",
    ) -> None:
        choices = (("norm", norm, NORMS), ("label", label, ANCHOR_LABELS), ("loss", loss, ANCHOR_LOSS_KINDS))
        for arg, choice, valid in (*choices, ("backend", backend, BACKENDS)):
            if choice not in valid:
                raise ValueError(f"`{arg}` must be one of {valid}, got {choice!r}.")
        if eps is None:
            eps_values: tuple[float, ...] | None = None
        else:
            eps_values = (float(eps),) if isinstance(eps, (int, float)) else tuple(float(e) for e in eps)
            if not eps_values or min(eps_values) <= 0:
                raise ValueError(f"`eps` must be > 0 (or a non-empty sequence of such values, or None), got {eps}.")
        for name, value in (("steps", steps), ("per_instance", per_instance), ("batch_size", batch_size)):
            if value <= 0:
                raise ValueError(f"`{name}` must be > 0, got {value}.")
        if step_size is not None and step_size <= 0:
            raise ValueError(f"`step_size` must be > 0 or None, got {step_size}.")
        super().__init__(weight=weight, batch_size=batch_size, generator_offset=1)
        input_range = checked_range(input_range, backend)
        self.norm = norm
        self.eps: float | tuple[float, ...] | None = (
            eps_values[0] if eps_values is not None and len(eps_values) == 1 else eps_values
        )
        self.eps_values = eps_values
        self.step_size = None if step_size is None else float(step_size)
        self.steps = int(steps)
        self.per_instance = int(per_instance)
        self.label = label
        self.loss = loss
        self.input_range: tuple[float, float] | Literal["auto"] | None = input_range
        self.random_start = random_start
        self.backend = backend
        self._pool: AnchorPool | None = None

    name = "anchor_loss"

    @property
    def pool(self) -> AnchorPool | None:
        """This process's anchors while a request runs (``None`` otherwise)."""
        return self._pool

    @override
    def make_pool(self, ctx: RequestContext) -> tuple[Tensor, Tensor]:
        request, module, trainer = ctx.request, ctx.module, ctx.trainer
        x, y, _ = request.forget
        everywhere = gather_rows(trainer, x)  # every process resolves the same range and spread
        geometry = self.geometry(everywhere) if len(everywhere) else None
        self._pool = pool = self.generate(
            module.classifier, x, y, module.num_classes, generator=request.generator(0), geometry=geometry
        )
        count = trainer.strategy.reduce(torch.tensor(float(len(pool)), device=module.device), reduce_op="sum")
        successes = torch.tensor(pool.success_rate * len(pool), device=module.device)
        rate = float(trainer.strategy.reduce(successes, reduce_op="sum")) / max(int(count), 1)
        request.summary.record(self.name, anchors=int(count), anchor_success_rate=rate)
        return pool.inputs, pool.logits

    @override
    def held_loss(self, logits: Tensor, index: Tensor) -> Tensor:
        assert self._pool is not None
        return self.loss_on(logits, self._pool, index)

    def batch_loss(self, model: Callable[[Tensor], Tensor], pool: AnchorPool, generator: torch.Generator) -> Tensor:
        """The unweighted loss on ``batch_size`` anchors drawn (with replacement) from ``pool`` with ``generator``."""
        index = torch.randint(0, len(pool), (min(self.batch_size, len(pool)),), generator=generator)
        index = index.to(pool.inputs.device)
        return self.loss_on(model(pool.inputs[index]), pool, index)

    @override
    def measure(self, ctx: RequestContext) -> dict[str, float]:
        if self._pool is None:
            return {}
        metric = AnchorAgreement().to(ctx.module.device)
        metric.update(predict(ctx.module.classifier, self._pool.inputs), self._pool.labels)
        return {"anchor/agreement": float(metric.compute())}

    @override
    def step_metrics(self, ctx: RequestContext) -> dict[str, float]:
        return {} if self._pool is None else {"train/anchor_scale": self._scale}

    @override
    def teardown(self, ctx: RequestContext) -> None:
        super().teardown(ctx)
        self._pool = None

    @property
    def resolved_backend(self) -> str:
        """The backend ``generate`` uses for bounded ``[N, C, H, W]`` images: ``"auto"`` resolved against what is
        installed (other inputs always take the built-in PGD: torchattacks' attacks are written for images in a range).
        """
        return resolve_backend(self.backend)

    def geometry(self, inputs: Tensor) -> tuple[tuple[float, float] | None, Tensor | None]:
        """``(clamp range, spread)`` of the anchors of ``inputs``: with a bounded range (``input_range`` given, or
        ``"auto"`` on inputs inside ``[0, 1]``) the range and ``None``; unbounded, ``None`` and the data's spread
        (:func:`~lightning_unlearn.functional.neighbours.feature_spread`: per feature for ``[N, D]`` vectors, one value
        otherwise), the unit PGD then works in. Under DDP the callback passes every process's forget inputs, so all
        agree.

        Examples:
            >>> PGDAnchors().geometry(torch.rand(4, 1, 8, 8))
            ((0.0, 1.0), None)
            >>> bounds, spread = PGDAnchors().geometry(torch.tensor([[-2.0, 10.0], [2.0, 30.0]]))
            >>> bounds, [round(v, 2) for v in spread.tolist()]
            (None, [2.83, 14.14])
        """
        return anchor_geometry(inputs, self.input_range)

    def radii(self, inputs: Tensor, bounds: tuple[float, float] | Literal["auto"] | None = "auto") -> tuple[float, ...]:
        """The radii the anchors of ``inputs`` are generated at: ``eps`` as given, or for ``eps=None`` the default
        radii scaled to the input and its clamp range (``bounds``; by default from :meth:`geometry`), see
        :func:`~lightning_unlearn.functional.anchors.default_radii`.

        Examples:
            >>> PGDAnchors().radii(torch.zeros(1, 3, 32, 32))
            (2.0, 4.0, 8.0)
            >>> PGDAnchors(eps=0.5).radii(torch.zeros(1, 3, 32, 32))
            (0.5,)
            >>> PGDAnchors().radii(torch.zeros(1, 64), bounds=None)
            (1.5, 3.0, 6.0)
        """
        if self.eps_values is not None:
            return self.eps_values
        return default_radii(inputs, self.norm, self.geometry(inputs)[0] if bounds == "auto" else bounds)

    def check_inputs(self, inputs: Tensor) -> None:
        """Raise if ``inputs`` fall outside a given ``input_range`` (see
        :func:`~lightning_unlearn.functional.backends.check_inputs_in_range`).
        """
        check_inputs_in_range(inputs, self.input_range)

    @torch.no_grad()
    def generate(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        num_classes: int,
        generator: torch.Generator | None = None,
        chunk_size: int = 2048,
        geometry: tuple[tuple[float, float] | None, Tensor | None] | None = None,
    ) -> AnchorPool:
        """Make ``per_instance`` anchors for each input with the model in eval mode (each submodule's mode restored).

        Args:
            model: the classifier (not a DDP wrapper).
            inputs: ``[k, ...]`` forget inputs on the model's device.
            labels: ``[k]`` their labels (attack targets are drawn among the other classes).
            num_classes: number of classes ``C``.
            generator: CPU generator for targets and random starts (seed it per process).
            chunk_size: anchors attacked per PGD call (bounds memory).
            geometry: ``(clamp range, spread)`` from :meth:`geometry` (by default, of ``inputs``).

        Returns:
            The :class:`AnchorPool`.

        Raises:
            ValueError: if a given ``input_range`` does not hold the inputs, or the torchattacks backend is asked
                for unbounded inputs (it clamps to a range).
        """
        if inputs.shape[0] == 0:  # an empty shard under DDP
            return AnchorPool.empty(inputs, num_classes)
        self.check_inputs(inputs)
        bounds, spread = geometry if geometry is not None else self.geometry(inputs)
        if self.backend == "torchattacks":
            check_torchattacks_inputs(inputs, bounds, self.input_range)
        radii = self.radii(inputs, bounds)
        images = bounds if inputs.dim() == 4 and self.resolved_backend == "torchattacks" else None

        def attack(model: nn.Module, eps: float) -> Attack:
            step_size = self.step_size if self.step_size is not None else eps / 4
            return pgd_attack(
                model,
                norm=self.norm,
                eps=eps,
                step_size=step_size,
                steps=self.steps,
                random_start=self.random_start,
                generator=generator,
                bounds=bounds,
                torchattacks_images=images,
            )

        adv_all, logits_all, attack_targets = multi_radius_anchors(
            model, inputs, labels, num_classes, radii, self.per_instance, attack, generator, spread, chunk_size
        )
        hard = logits_all.argmax(-1) if self.label == "prediction" else attack_targets
        return AnchorPool(inputs=adv_all, labels=hard, logits=logits_all, attack_targets=attack_targets)

    def loss_on(self, logits: Tensor, pool: AnchorPool, index: Tensor) -> Tensor:
        """The anchor loss of the anchors at ``index`` given the current ``logits`` on them (unweighted)."""
        reference = pool.labels[index] if self.loss == "ce" else pool.logits[index]
        return anchor_loss(logits, reference, kind=self.loss)
