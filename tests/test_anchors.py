"""PGDAnchors: argument checks, generation on digits, and the two backends side by side."""

from __future__ import annotations

import importlib
import os
import re

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import lightning_unlearn.functional.backends as backends
from lightning_unlearn import ForgetSet, InstanceUnlearning, UnlearningModule
from lightning_unlearn.datasets import Split
from lightning_unlearn.plugins import UnlearningPlugin
from lightning_unlearn.plugins.anchors import AnchorPool, PGDAnchors
from tests.conftest import forget_indices, quiet_trainer_kwargs


def _require_torchattacks() -> None:
    """The torchattacks backend's tests fail, not skip, when it cannot be imported (CI and the README's test command
    install it), unless ``LIGHTNING_UNLEARN_ALLOW_NO_TORCHATTACKS=1`` says this environment goes without it.
    """
    try:
        importlib.import_module("torchattacks")
    except ImportError as error:
        if os.environ.get("LIGHTNING_UNLEARN_ALLOW_NO_TORCHATTACKS") == "1":
            pytest.skip(f"torchattacks cannot be imported ({error}); LIGHTNING_UNLEARN_ALLOW_NO_TORCHATTACKS=1")
        raise


K = 12
PER_INSTANCE = 4


def _forget(digits: Split, k: int = K) -> tuple[Tensor, Tensor]:
    idx = forget_indices(len(digits.y_train), k)
    return digits.x_train[idx], digits.y_train[idx]


def _mixed_modes(model: nn.Module) -> list[bool]:
    model.train()
    for i, module in enumerate(model.modules()):
        if i % 2:
            module.eval()
    return [m.training for m in model.modules()]


def _norms(pool: AnchorPool, x: Tensor, norm: str = "l2") -> Tensor:
    delta = (pool.inputs - x.repeat_interleave(len(pool) // len(x), dim=0)).flatten(1)
    return delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)


def _generate(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0, **kwargs: object) -> AnchorPool:
    settings: dict[str, object] = {"eps": 1.0, "steps": 20, **kwargs}  # one radius unless a test asks for several
    anchors = PGDAnchors(per_instance=PER_INSTANCE, **settings)  # type: ignore[arg-type]
    return anchors.generate(model, x, y, num_classes=10, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"norm": "l1"}, "`norm` must be one of ('l2', 'linf'), got 'l1'."),
        ({"label": "attack"}, "`label` must be one of ('prediction', 'target'), got 'attack'."),
        ({"loss": "mse"}, "`loss` must be one of ('ce', 'kl'), got 'mse'."),
        ({"backend": "foolbox"}, "`backend` must be one of ('auto', 'builtin', 'torchattacks'), got 'foolbox'."),
        ({"eps": 0.0}, "`eps` must be > 0 (or a non-empty sequence of such values, or None), got 0.0."),
        ({"eps": ()}, "`eps` must be > 0 (or a non-empty sequence of such values, or None), got ()."),
        ({"eps": (1.0, -0.5)}, "`eps` must be > 0 (or a non-empty sequence of such values, or None), got (1.0, -0.5)."),
        ({"steps": 0}, "`steps` must be > 0, got 0."),
        ({"per_instance": -2}, "`per_instance` must be > 0, got -2."),
        ({"batch_size": 0}, "`batch_size` must be > 0, got 0."),
        ({"step_size": 0.0}, "`step_size` must be > 0 or None, got 0.0."),
        ({"weight": -1.0}, "`weight` must be >= 0, got -1.0."),
        ({"input_range": (1.0, 0.0)}, "`input_range` must be (low, high) with low < high, got (1.0, 0.0)."),
        ({"input_range": (0.5, 0.5)}, "`input_range` must be (low, high) with low < high, got (0.5, 0.5)."),
    ],
)
def test_argument_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PGDAnchors(**kwargs)  # type: ignore[arg-type]


def test_defaults() -> None:
    anchors = PGDAnchors(backend="builtin")
    assert (anchors.norm, anchors.eps, anchors.steps, anchors.per_instance) == ("l2", None, 10, 21)
    assert (anchors.label, anchors.loss, anchors.weight, anchors.batch_size) == ("prediction", "kl", 10.0, 256)
    assert anchors.eps_values is None and anchors.step_size is None
    assert PGDAnchors(eps=2.0, step_size=0.1).step_size == 0.1
    several = PGDAnchors(eps=[0.5, 1.0], per_instance=4)
    assert several.eps == several.eps_values == (0.5, 1.0)


@pytest.mark.parametrize(
    ("settings", "shape", "radii"),
    [
        ({}, (5, 1, 8, 8), (0.5, 1.0, 2.0)),  # digits: the radii as chosen
        ({}, (5, 3, 32, 32), (2.0, 4.0, 8.0)),  # 32x32 images: sqrt(1024 / 64) = 4 times, whatever the channels
        ({}, (5, 1, 28, 28), (1.75, 3.5, 7.0)),
        ({}, (5, 16), (0.25, 0.5, 1.0)),  # feature vectors: sqrt(16 / 64)
        ({"input_range": (-1.0, 1.0)}, (5, 1, 8, 8), (1.0, 2.0, 4.0)),  # twice the input range, twice the radii
        ({"norm": "linf"}, (5, 3, 32, 32), (0.0625, 0.125, 0.25)),  # per pixel: no size scaling
        ({"eps": 0.3}, (5, 3, 32, 32), (0.3,)),  # an explicit eps is used as given
        ({"eps": (1.0, 3.0)}, (5, 1, 8, 8), (1.0, 3.0)),
    ],
)
def test_radii_scale_with_the_input_unless_given(
    settings: dict[str, object], shape: tuple[int, ...], radii: tuple[float, ...]
) -> None:
    assert PGDAnchors(backend="builtin", **settings).radii(torch.zeros(shape)) == pytest.approx(radii)  # type: ignore[arg-type]


def test_default_radii_bound_the_anchors_on_larger_images(digits: Split) -> None:
    x = torch.nn.functional.interpolate(digits.x_train[:3], size=(32, 32), mode="bilinear").clamp(0, 1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(1024, 10))
    pool = PGDAnchors(per_instance=3, backend="builtin").generate(model, x, digits.y_train[:3], num_classes=10)
    norms = (pool.inputs - x.repeat_interleave(3, dim=0)).flatten(1).norm(dim=1).view(3, 3)
    assert bool((norms <= torch.tensor([2.0, 4.0, 8.0]) + 1e-4).all())
    assert float(norms[:, 2].max()) > 2.0  # the largest radius is used, beyond the 8x8 default's 2.0


def test_default_step_size_is_a_quarter_of_eps(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 4)
    implicit = _generate(digits_cnn, x, y, eps=0.8, steps=4, backend="builtin")
    explicit = _generate(digits_cnn, x, y, eps=0.8, step_size=0.2, steps=4, backend="builtin")
    other = _generate(digits_cnn, x, y, eps=0.8, step_size=0.1, steps=4, backend="builtin")
    assert torch.equal(implicit.inputs, explicit.inputs)
    assert not torch.equal(implicit.inputs, other.inputs)


def test_several_radii(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 6)
    pool = _generate(digits_cnn, x, y, eps=(0.25, 1.0), steps=10, backend="builtin")  # 2 + 2 anchors per instance
    assert len(pool) == PER_INSTANCE * 6
    # instance-major: each instance's 4 anchors are 2 at the first radius, then 2 at the second
    norms = (pool.inputs - x.repeat_interleave(PER_INSTANCE, dim=0)).flatten(1).norm(dim=1).view(6, PER_INSTANCE)
    near, far = norms[:, :2], norms[:, 2:]
    assert bool((near <= 0.25 + 1e-5).all()) and bool((far <= 1.0 + 1e-5).all())
    assert float(far.mean()) > 2 * float(near.mean())
    assert bool((pool.attack_targets != y.repeat_interleave(PER_INSTANCE)).all())


def test_torchattacks_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "torchattacks_available", lambda: False)
    message = (
        "`backend='torchattacks'` needs torchattacks: pip install 'lightning-unlearn[torchattacks]',"
        " or use backend='builtin'."
    )
    with pytest.raises(ModuleNotFoundError, match=re.escape(message)):
        PGDAnchors(backend="torchattacks")
    assert PGDAnchors(backend="auto").resolved_backend == "builtin"
    assert PGDAnchors(backend="builtin").resolved_backend == "builtin"
    monkeypatch.setattr(backends, "torchattacks_available", lambda: True)
    assert PGDAnchors(backend="auto").resolved_backend == "torchattacks"


def test_check_inputs(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 4)
    anchors = PGDAnchors(backend="builtin", input_range=(0.0, 1.0))
    anchors.check_inputs(x)  # inside [0, 1]
    message = (
        "forget inputs span [-0.5, 0.5], outside `input_range`=(0.0, 1.0) of PGDAnchors; pass the range your inputs"
        " live in, or `input_range='auto'` (the default) to let the anchors follow the data."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        anchors.check_inputs(x - 0.5)
    with pytest.raises(ValueError, match=re.escape("forget inputs span [0, 2], outside `input_range`=(0.0, 1.0)")):
        anchors.generate(digits_cnn, x * 2, y, num_classes=10)
    PGDAnchors(input_range=(-0.5, 0.5)).check_inputs(x - 0.5)


# ---------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("label", ["prediction", "target"])
def test_generate_on_digits(digits: Split, digits_cnn: nn.Module, label: str) -> None:
    x, y = _forget(digits)
    pool = _generate(digits_cnn, x, y, label=label, backend="builtin")
    assert len(pool) == PER_INSTANCE * K
    assert pool.inputs.shape == (PER_INSTANCE * K, 1, 8, 8)
    assert pool.logits.shape == (PER_INSTANCE * K, 10)
    # attack targets: never the instance's own label
    assert bool((pool.attack_targets != y.repeat_interleave(PER_INSTANCE)).all())
    with torch.no_grad():
        prediction = digits_cnn(pool.inputs)
    torch.testing.assert_close(pool.logits, prediction)
    if label == "prediction":
        assert torch.equal(pool.labels, prediction.argmax(-1))
    else:
        assert torch.equal(pool.labels, pool.attack_targets)
    success = float((prediction.argmax(-1) == pool.attack_targets).float().mean())
    assert pool.success_rate == pytest.approx(success)
    print(f"builtin anchors on digits (L2, eps 1.0, 20 steps): success {pool.success_rate:.3f}")
    assert pool.success_rate > 0.7
    assert bool((_norms(pool, x) <= 1.0 + 1e-5).all())
    assert float(pool.inputs.min()) >= 0.0 and float(pool.inputs.max()) <= 1.0


def test_generate_linf(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 6)
    pool = _generate(digits_cnn, x, y, norm="linf", eps=0.2, backend="builtin")
    assert bool((_norms(pool, x, "linf") <= 0.2 + 1e-5).all())
    assert pool.success_rate > 0.5


def test_generate_is_seeded(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 4)
    a = _generate(digits_cnn, x, y, seed=5, steps=5, backend="builtin")
    b = _generate(digits_cnn, x, y, seed=5, steps=5, backend="builtin")
    c = _generate(digits_cnn, x, y, seed=6, steps=5, backend="builtin")
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.attack_targets, b.attack_targets)
    assert not torch.equal(a.inputs, c.inputs)


@pytest.mark.parametrize("backend", ["builtin", "torchattacks"])
def test_generate_preserves_submodule_modes(digits: Split, digits_cnn: nn.Module, backend: str) -> None:
    if backend == "torchattacks":
        _require_torchattacks()
    x, y = _forget(digits, 4)
    before = _mixed_modes(digits_cnn)
    _generate(digits_cnn, x, y, steps=3, backend=backend)
    assert [m.training for m in digits_cnn.modules()] == before
    assert all(p.grad is None for p in digits_cnn.parameters())


def test_loss_on(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 4)
    pool = _generate(digits_cnn, x, y, steps=5, backend="builtin")
    index = torch.tensor([0, 3, 7])
    kl = PGDAnchors(loss="kl", backend="builtin")
    assert kl.loss_on(pool.logits[index], pool, index).item() == pytest.approx(0.0, abs=1e-6)
    ce = PGDAnchors(loss="ce", backend="builtin")
    expected = nn.functional.cross_entropy(pool.logits[index], pool.labels[index])
    assert ce.loss_on(pool.logits[index], pool, index).item() == pytest.approx(expected.item())
    assert len(AnchorPool(pool.inputs[:0], pool.labels[:0], pool.logits[:0], pool.attack_targets[:0])) == 0


# ---------------------------------------------------------------------------------------------- torchattacks backend
def test_backends_give_anchors_of_similar_strength(
    digits: Split, digits_cnn: nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    _require_torchattacks()
    x, y = _forget(digits)
    capsys.readouterr()
    pools = {b: _generate(digits_cnn, x, y, seed=3, backend=b) for b in ("builtin", "torchattacks")}
    assert capsys.readouterr().out == ""  # torchattacks prints mode changes unless told not to
    built, ta = pools["builtin"], pools["torchattacks"]
    assert torch.equal(built.attack_targets, ta.attack_targets)  # same seed, same targets
    norm_b, norm_t = float(_norms(built, x).mean()), float(_norms(ta, x).mean())
    print(f"success builtin {built.success_rate:.3f} torchattacks {ta.success_rate:.3f}")
    print(f"mean L2 perturbation builtin {norm_b:.3f} torchattacks {norm_t:.3f}")
    assert ta.success_rate > 0.7
    assert abs(built.success_rate - ta.success_rate) <= 0.15
    assert abs(norm_b - norm_t) <= 0.2 * norm_b
    assert bool((_norms(ta, x) <= 1.0 + 1e-5).all())
    assert float(ta.inputs.min()) >= 0.0 and float(ta.inputs.max()) <= 1.0
    # deterministic with the same seed
    again = _generate(digits_cnn, x, y, seed=3, backend="torchattacks")
    assert torch.equal(again.inputs, ta.inputs)


class _FromSymmetric(nn.Module):
    """Takes inputs in [-1, 1] and feeds the [0, 1] classifier (normalisation inside the model)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x + 1) / 2)


@pytest.mark.parametrize("backend", ["builtin", "torchattacks"])
def test_other_input_range(digits: Split, digits_cnn: nn.Module, backend: str) -> None:
    if backend == "torchattacks":
        _require_torchattacks()
    x, y = _forget(digits, 8)
    model = _FromSymmetric(digits_cnn).eval()
    # twice the range, twice the eps: the same attack as eps 1.0 on [0, 1]
    pool = _generate(model, x * 2 - 1, y, eps=2.0, input_range=(-1.0, 1.0), backend=backend)
    assert float(pool.inputs.min()) >= -1.0 and float(pool.inputs.max()) <= 1.0
    assert bool((_norms(pool, x * 2 - 1) <= 2.0 + 1e-4).all())
    assert float(pool.inputs.min()) < 0.0  # not squeezed into [0, 1]
    assert pool.success_rate > 0.7


# ---------------------------------------------------------------------------------------------- unbounded inputs
def test_auto_range_on_images_is_the_unit_range(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 6)
    auto = _generate(digits_cnn, x, y, eps=None, steps=5)
    unit = _generate(digits_cnn, x, y, eps=None, steps=5, input_range=(0.0, 1.0))
    assert torch.equal(auto.inputs, unit.inputs)  # images in [0, 1]: exactly the bounded attack
    assert PGDAnchors().geometry(x) == ((0.0, 1.0), None)


def test_standardised_feature_vectors_get_anchors_scaled_per_feature(digits: Split) -> None:
    x = digits.x_train.flatten(1)
    x = x[:, x.std(0) > 0.2]  # the pixels that vary, as standardised features of very different scales
    d = x.shape[1]
    x = (x - x.mean(0)) / x.std(0) * torch.linspace(0.1, 10.0, d)
    model = nn.Sequential(nn.Linear(d, 10)).eval()
    idx = forget_indices(len(x), 16)
    anchors = PGDAnchors(per_instance=3, steps=5)
    bounds, spread = anchors.geometry(x[idx])
    assert bounds is None and spread.shape == (d,)
    assert float(spread[-8:].mean()) > 5 * float(spread[:8].mean())
    pool = anchors.generate(
        model, x[idx], digits.y_train[idx], num_classes=10, generator=torch.Generator().manual_seed(0)
    )
    moved = (pool.inputs - x[idx].repeat_interleave(3, dim=0)).abs().mean(0)
    assert float(moved[-8:].mean()) > 3 * float(moved[:8].mean())  # each feature moves on its own scale
    scaled = (pool.inputs - x[idx].repeat_interleave(3, dim=0)) / spread
    assert float(scaled.norm(dim=1).max()) <= max(anchors.radii(x[idx], bounds=None)) + 1e-4
    assert float(pool.inputs.min()) < -1.0  # never clamped to [0, 1]


def test_torchattacks_needs_a_bounded_range(digits: Split, digits_cnn: nn.Module) -> None:
    with pytest.raises(ValueError, match=re.escape("`backend='torchattacks'` clamps anchors to a range: pass")):
        PGDAnchors(backend="torchattacks", input_range=None)
    _require_torchattacks()
    x, y = _forget(digits, 2)
    message = "`backend='torchattacks'` clamps anchors to a range, and the forget inputs span [-0.5, 0.5]"
    with pytest.raises(ValueError, match=re.escape(message)):
        PGDAnchors(backend="torchattacks").generate(digits_cnn, x - 0.5, y, num_classes=10)


class _SeeProtected(UnlearningPlugin):
    name = "see_protected"

    def __init__(self) -> None:
        self.seen: list[Tensor] = []

    def finish(self, ctx) -> None:
        self.seen = list(ctx.request.protected)


def test_the_anchors_are_among_the_edits_protected_inputs(digits: Split, digits_cnn: nn.Module) -> None:
    x, y = _forget(digits, 4)
    spy = _SeeProtected()
    anchors = PGDAnchors(per_instance=3, steps=2)
    callback = InstanceUnlearning(anchors=anchors, shifted_copies=None, max_steps=1, plugins=[spy], seed=0)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(ForgetSet(x, y), batch_size=4))
    assert [len(p) for p in spy.seen] == [4 * 3]
    assert float((spy.seen[0] - x.repeat_interleave(3, dim=0)).flatten(1).norm(dim=1).max()) > 0  # anchors, not x


def test_feature_vectors_take_the_builtin_pgd_even_with_torchattacks_installed(digits: Split) -> None:
    _require_torchattacks()
    x, y = _forget(digits, 4)
    flat = x.flatten(1)  # [4, 64] in [0, 1]: torchattacks' L2 attack only handles [N, C, H, W]
    model = nn.Sequential(nn.Linear(64, 10)).eval()
    assert PGDAnchors(backend="auto").resolved_backend == "torchattacks"
    pool = PGDAnchors(per_instance=2, steps=3, backend="auto").generate(model, flat, y, num_classes=10)
    assert pool.inputs.shape == (8, 64) and float(pool.inputs.min()) >= 0.0 and float(pool.inputs.max()) <= 1.0
    message = "`backend='torchattacks'` attacks [N, C, H, W] images, got inputs of shape (4, 64): use backend='builtin'"
    with pytest.raises(ValueError, match=re.escape(message)):
        PGDAnchors(backend="torchattacks").generate(model, flat, y, num_classes=10)
