"""Adversarial anchors: targeted PGD examples around the forget instances that hold the decision boundary in place."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_unlearn.distributed import gather_rows
from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.functional.losses import ANCHOR_LOSS_KINDS, AnchorLossKind, anchor_loss
from lightning_unlearn.functional.neighbours import feature_spread
from lightning_unlearn.functional.pgd import NORMS, Norm, eval_mode, other_classes, targeted_pgd
from lightning_unlearn.metrics import AnchorAgreement
from lightning_unlearn.plugins.base import ScaledProtection, zero_term
from lightning_unlearn.spawn import SpawnSafeGenerators

if TYPE_CHECKING:
    import lightning as L

    from lightning_unlearn.module import UnlearningModule
    from lightning_unlearn.request import Request

AnchorLabel = Literal["prediction", "target"]
Backend = Literal["auto", "builtin", "torchattacks"]
ANCHOR_LABELS: tuple[str, ...] = ("prediction", "target")
BACKENDS: tuple[str, ...] = ("auto", "builtin", "torchattacks")
#: L2 radii of ``eps=None`` for an 8x8 single-channel image with inputs in [0, 1]; scaled by sqrt(H * W / 64) and by
#: the width of the input range (or :data:`SPREAD_WIDTH` spreads of unbounded data) for other inputs (see
#: :meth:`PGDAnchors.radii`).
DEFAULT_RADII: tuple[float, ...] = (0.5, 1.0, 2.0)
#: the width, in spreads of the data, that unbounded inputs take in place of a range's width (see
#: :meth:`PGDAnchors.radii`)
SPREAD_WIDTH = 3.0


@dataclass
class AnchorPool:
    """Anchors of one request, on the model's device.

    Attributes:
        inputs: ``[A, ...]`` adversarial inputs.
        labels: ``[A]`` hard labels the anchors are trained with.
        logits: ``[A, C]`` the pre-trained model's logits on the anchors (the soft targets of ``loss="kl"``).
        attack_targets: ``[A]`` the class each anchor was pushed toward.
    """

    inputs: Tensor
    labels: Tensor
    logits: Tensor
    attack_targets: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def success_rate(self) -> float:
        """Share of anchors the pre-trained model assigns to their attack target."""
        if len(self) == 0:
            return 0.0
        return float((self.logits.argmax(-1) == self.attack_targets).float().mean())


class PGDAnchors(SpawnSafeGenerators, ScaledProtection):  # holds a torch.Generator: see spawn.py
    """Generates adversarial anchors from the forget instances and supplies their loss during unlearning.

    For each forget instance, ``per_instance`` anchors are made by targeted PGD toward classes drawn uniformly from the
    other ``C - 1`` classes, with the model in eval mode, once at the start of a request. Each anchor is then trained
    toward the label the pre-trained model gives it (``label="prediction"``, the default) or toward its attack target
    (``label="target"``, the reference code's choice), with cross-entropy or by KL distillation of the pre-trained
    outputs (``loss="kl"``).

    As an :class:`~lightning_unlearn.plugins.UnlearningPlugin` it generates the pool in :meth:`setup`, adds
    ``scale * weight * loss`` on ``batch_size`` anchors drawn at each step (logged as ``train/anchor_loss``), reports
    ``anchor/agreement`` and lets the stall rule lower ``scale`` through :meth:`scale_protection`.

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
        if norm not in NORMS:
            raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
        if label not in ANCHOR_LABELS:
            raise ValueError(f"`label` must be one of {ANCHOR_LABELS}, got {label!r}.")
        if loss not in ANCHOR_LOSS_KINDS:
            raise ValueError(f"`loss` must be one of {ANCHOR_LOSS_KINDS}, got {loss!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
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
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight}.")
        if isinstance(input_range, str) and input_range != "auto":
            raise ValueError(f"`input_range` must be (low, high), 'auto' or None, got {input_range!r}.")
        if isinstance(input_range, (tuple, list)):
            low, high = input_range
            if not low < high:
                raise ValueError(f"`input_range` must be (low, high) with low < high, got {input_range}.")
            input_range = (float(low), float(high))
        if backend == "torchattacks" and input_range is None:
            raise ValueError(
                "`backend='torchattacks'` clamps anchors to a range: pass `input_range=(low, high)` or 'auto', or use"
                " backend='builtin' for `input_range=None`."
            )
        if backend == "torchattacks" and not torchattacks_available():
            raise ModuleNotFoundError(
                "`backend='torchattacks'` needs torchattacks: pip install 'lightning-unlearn[torchattacks]',"
                " or use backend='builtin'."
            )
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
        self.weight = float(weight)
        self.batch_size = int(batch_size)
        self.input_range: tuple[float, float] | Literal["auto"] | None = input_range
        self.random_start = random_start
        self.backend = backend
        self._pool: AnchorPool | None = None
        self._batch_generator = torch.Generator()

    name = "anchor_loss"

    @property
    def pool(self) -> AnchorPool | None:
        """This process's anchors while a request runs (``None`` otherwise)."""
        return self._pool

    @override
    def setup(self, request: Request, module: UnlearningModule, trainer: L.Trainer) -> None:
        x, y, _ = request.forget
        everywhere = gather_rows(trainer, x)  # every process resolves the same range and spread
        geometry = self.geometry(everywhere) if len(everywhere) else None
        self._pool = pool = self.generate(
            module.classifier, x, y, module.num_classes, generator=request.generator(0), geometry=geometry
        )
        request.protected.append(pool.inputs)  # the last-layer edit changes their outputs least
        count = trainer.strategy.reduce(torch.tensor(float(len(pool)), device=module.device), reduce_op="sum")
        successes = torch.tensor(pool.success_rate * len(pool), device=module.device)
        request.summary.anchors = int(count)
        request.summary.anchor_success_rate = float(trainer.strategy.reduce(successes, reduce_op="sum")) / max(
            int(count), 1
        )
        self._batch_generator = request.generator(1)
        self._start_scale(self._batch_generator)

    @override
    def loss_term(self, module: UnlearningModule) -> Tensor:
        pool = self._pool
        assert pool is not None
        if len(pool) == 0:  # an empty shard: a zero that still touches every parameter (DDP needs all grads)
            return zero_term(module)
        return self._scale * self.weight * self.batch_loss(module, pool, self._batch_generator)

    def batch_loss(self, model: Callable[[Tensor], Tensor], pool: AnchorPool, generator: torch.Generator) -> Tensor:
        """The unweighted loss on ``batch_size`` anchors drawn (with replacement) from ``pool`` with ``generator``."""
        index = torch.randint(0, len(pool), (min(self.batch_size, len(pool)),), generator=generator)
        index = index.to(pool.inputs.device)
        return self.loss_on(model(pool.inputs[index]), pool, index)

    @override
    def measure(self, module: UnlearningModule) -> dict[str, float]:
        if self._pool is None:
            return {}
        metric = AnchorAgreement().to(module.device)
        metric.update(predict(module.classifier, self._pool.inputs), self._pool.labels)
        return {"anchor/agreement": float(metric.compute())}

    @override
    def step_metrics(self) -> dict[str, float]:
        return {} if self._pool is None else {"train/anchor_scale": self._scale}

    @override
    def teardown(self, module: UnlearningModule) -> None:
        self._pool = None

    @override
    def state_dict(self) -> dict[str, Any]:
        if self._pool is None:
            return {}
        return self._scale_state(self._batch_generator)

    @property
    def resolved_backend(self) -> str:
        """The backend ``generate`` uses for bounded ``[N, C, H, W]`` images: ``"auto"`` resolved against what is
        installed (other inputs always take the built-in PGD: torchattacks' attacks are written for images in a range).
        """
        if self.backend == "auto":
            return "torchattacks" if torchattacks_available() else "builtin"
        return self.backend

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
        if isinstance(self.input_range, tuple):
            return self.input_range, None
        if self.input_range == "auto" and inputs.numel() and float(inputs.min()) >= 0 and float(inputs.max()) <= 1:
            return (0.0, 1.0), None
        return None, feature_spread(inputs)

    def radii(self, inputs: Tensor, bounds: tuple[float, float] | Literal["auto"] | None = "auto") -> tuple[float, ...]:
        """The radii the anchors of ``inputs`` are generated at: ``eps`` as given, or for ``eps=None``
        :data:`DEFAULT_RADII` scaled to the input: by ``sqrt(H * W / 64)`` (``H * W`` the size of one channel of one
        instance, or the feature count of ``[N, D]`` inputs) for ``norm="l2"``, divided by 8 for ``norm="linf"``, and
        by the width of the clamp range in both cases. Unbounded inputs (``bounds=None``; by default from
        :meth:`geometry`) are measured in units of their spread and take a width of :data:`SPREAD_WIDTH` spreads (a
        ``[0, 1]`` image's values spread over about a third of its range).

        The default radii were chosen on 8x8 digits; a fixed L2 radius shrinks per pixel as images grow, and the
        sweep in ``docs/benchmarks.md`` found the scaled radii best on both 8x8 digits and 32x32 MNIST.

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
        if bounds == "auto":
            bounds = self.geometry(inputs)[0]
        width = SPREAD_WIDTH if bounds is None else bounds[1] - bounds[0]
        if self.norm == "linf":
            return tuple(width * r / 8 for r in DEFAULT_RADII)
        size = inputs[0, 0].numel() if inputs.dim() >= 3 else inputs[0].numel()
        return tuple(width * math.sqrt(size / 64) * r for r in DEFAULT_RADII)

    def check_inputs(self, inputs: Tensor) -> None:
        """Raise if ``inputs`` fall outside a given ``input_range`` (PGD would clamp them and change the instances);
        ``"auto"`` and ``None`` accept any inputs.

        Raises:
            ValueError: naming the range found and the declared one.
        """
        if not isinstance(self.input_range, tuple):
            return
        low, high = self.input_range
        found = (float(inputs.min()), float(inputs.max()))
        if found[0] < low - 1e-6 or found[1] > high + 1e-6:
            raise ValueError(
                f"forget inputs span [{found[0]:.4g}, {found[1]:.4g}], outside `input_range`={self.input_range} of"
                " PGDAnchors; pass the range your inputs live in, or `input_range='auto'` (the default) to let the"
                " anchors follow the data."
            )

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
            empty = labels.new_empty(0)
            return AnchorPool(
                inputs.new_empty((0, *inputs.shape[1:])), empty, inputs.new_empty((0, num_classes)), empty
            )
        self.check_inputs(inputs)
        bounds, spread = geometry if geometry is not None else self.geometry(inputs)
        if self.backend == "torchattacks" and inputs.dim() != 4:
            raise ValueError(
                f"`backend='torchattacks'` attacks [N, C, H, W] images, got inputs of shape {tuple(inputs.shape)}: use"
                " backend='builtin' (or 'auto', which picks it for other inputs)."
            )
        if bounds is None and self.backend == "torchattacks":
            raise ValueError(
                "`backend='torchattacks'` clamps anchors to a range, and the forget inputs span"
                f" [{float(inputs.min()):.4g}, {float(inputs.max()):.4g}] with `input_range`={self.input_range!r}:"
                " pass `input_range=(low, high)` or use backend='builtin'."
            )
        radii = self.radii(inputs, bounds)
        attacked = model if spread is None else _Rescaled(model, 0.0, spread.to(inputs))
        source_all = inputs if spread is None else inputs / spread.to(inputs)
        groups = min(len(radii), self.per_instance)  # fewer anchors than radii: the first radii
        k, per = inputs.shape[0], self.per_instance
        targets = other_classes(labels.repeat_interleave(per, dim=0), num_classes, generator).view(k, per)
        adv_parts, logit_parts = [], []
        start = 0
        with eval_mode(model):
            for g, eps in enumerate(radii[:groups]):
                count = per // groups + (1 if g < per % groups else 0)
                source = source_all.repeat_interleave(count, dim=0)
                group_targets = targets[:, start : start + count].reshape(-1)
                attack = self._attack_fn(attacked, eps, generator, bounds, bounds if inputs.dim() == 4 else None)
                advs = [attack(x, t) for x, t in zip(source.split(chunk_size), group_targets.split(chunk_size))]
                adv = torch.cat(advs) if spread is None else torch.cat(advs) * spread.to(inputs)
                logits = torch.cat([model(chunk).float() for chunk in adv.split(chunk_size)])
                adv_parts.append(adv.view(k, count, *inputs.shape[1:]))
                logit_parts.append(logits.view(k, count, -1))
                start += count
        # instance-major layout: the anchors of forget instance i are rows i * per_instance ... (i + 1) * per_instance
        adv_all = torch.cat(adv_parts, dim=1).reshape(k * per, *inputs.shape[1:])
        logits_all = torch.cat(logit_parts, dim=1).reshape(k * per, -1)
        attack_targets = targets.reshape(-1)
        hard = logits_all.argmax(-1) if self.label == "prediction" else attack_targets
        return AnchorPool(inputs=adv_all, labels=hard, logits=logits_all, attack_targets=attack_targets)

    def loss_on(self, logits: Tensor, pool: AnchorPool, index: Tensor) -> Tensor:
        """The anchor loss of the anchors at ``index`` given the current ``logits`` on them (unweighted)."""
        reference = pool.labels[index] if self.loss == "ce" else pool.logits[index]
        return anchor_loss(logits, reference, kind=self.loss)

    def _attack_fn(
        self,
        model: nn.Module,
        eps: float,
        generator: torch.Generator | None,
        bounds: tuple[float, float] | None,
        images: tuple[float, float] | None,
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """The PGD of one radius: torchattacks' for bounded ``[N, C, H, W]`` images (``images``: their range) when it is
        the backend, the built-in one (clamped to ``bounds``, or unclamped) otherwise.
        """
        step_size = self.step_size if self.step_size is not None else eps / 4
        if self.resolved_backend == "torchattacks" and images is not None:
            return self._torchattacks_fn(model, eps, step_size, generator, images)
        low, high = bounds if bounds is not None else (-math.inf, math.inf)

        def builtin(x: Tensor, t: Tensor) -> Tensor:
            return targeted_pgd(
                model,
                x,
                t,
                norm=self.norm,
                eps=eps,
                step_size=step_size,
                steps=self.steps,
                random_start=self.random_start,
                input_range=(low, high),
                generator=generator,
            )

        return builtin

    def _torchattacks_fn(
        self,
        model: nn.Module,
        eps: float,
        step_size: float,
        generator: torch.Generator | None,
        bounds: tuple[float, float],
    ) -> Callable[[Tensor, Tensor], Tensor]:
        import torchattacks

        cls = torchattacks.PGDL2 if self.norm == "l2" else torchattacks.PGD
        low, high = bounds
        scale = high - low
        # torchattacks works on [0, 1] inputs: rescale the range into it and the model's input back out of it.
        wrapped = _Rescaled(model, low, scale).eval()  # eval: torchattacks then never calls `.train()` afterwards
        atk = cls(
            wrapped,
            eps=eps / scale,
            alpha=step_size / scale,
            steps=self.steps,
            random_start=self.random_start,
        )
        atk.set_mode_targeted_by_label(quiet=True)
        device = next(model.parameters()).device
        atk.set_device(device)

        def run(x: Tensor, t: Tensor) -> Tensor:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                torch.manual_seed(seed)
                adv = atk((x - low) / scale, t)
            return adv.detach() * scale + low

        return run


class _Rescaled(nn.Module):
    """``model`` on inputs mapped back by ``x * scale + low`` (a range onto ``[0, 1]``, or units of the spread)."""

    def __init__(self, model: nn.Module, low: float, scale: float | Tensor) -> None:
        super().__init__()
        self.model = model
        self.low = low
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x * self.scale + self.low)


def torchattacks_available() -> bool:
    """Whether the optional torchattacks backend is installed."""
    return importlib.util.find_spec("torchattacks") is not None
