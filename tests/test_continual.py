"""Sequences of requests: what is carried between them, resuming from a checkpoint, receipts on a later model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_unlearn import ForgetSet, InstanceUnlearning, PGDAnchors, UnlearningModule
from lightning_unlearn.cli import main as cli_main
from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.evaluation import accuracy
from lightning_unlearn.receipts import read_receipt, verify_receipt
from lightning_unlearn.request import RequestSummary
from tests.conftest import forget_indices, quiet_trainer_kwargs


def _requests(digits: Split, count: int, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    index = forget_indices(len(digits.y_train), count * k, seed=3)
    return [
        (digits.x_train[index[i * k : (i + 1) * k]], digits.y_train[index[i * k : (i + 1) * k]]) for i in range(count)
    ]


def _callback(**kwargs: object) -> InstanceUnlearning:
    return InstanceUnlearning(anchors=PGDAnchors(per_instance=4, steps=5), seed=0, **kwargs)  # type: ignore[arg-type]


def _fit(
    module: UnlearningModule, callback: InstanceUnlearning, x: torch.Tensor, y: torch.Tensor, **kwargs
) -> L.Trainer:
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    trainer.fit(module, DataLoader(ForgetSet(x, y), batch_size=len(y)), **kwargs)
    return trainer


def _reachable_tensors(obj: object, seen: set[int] | None = None):
    """Every tensor reachable from ``obj`` through attributes, dicts, lists, tuples and sets."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None), torch.Generator, nn.Module)):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _reachable_tensors(value, seen)
    elif isinstance(obj, (list, tuple, set)):
        for value in obj:
            yield from _reachable_tensors(value, seen)
    elif hasattr(obj, "__dict__"):
        yield from _reachable_tensors(vars(obj), seen)


def _near(haystack: torch.Tensor, needles: torch.Tensor, radius: float) -> bool:
    """Whether a row of ``haystack`` (viewed as inputs of ``needles``' shape) lies within L2 ``radius`` of a needle."""
    size = needles[0].numel()
    if haystack.numel() < size or haystack.numel() % size or not haystack.is_floating_point():
        return False
    rows = haystack.detach().float().cpu().reshape(-1, size)
    return bool((torch.cdist(rows, needles.flatten(1).float()) <= radius).any())


def test_nothing_of_a_deleted_instance_is_carried_to_the_next_request(digits: Split, digits_cnn: nn.Module) -> None:
    """Between requests the callback, its plugins and the module hold no forget input, no anchor and no shifted copy:
    no tensor they reach has a row within the anchors' radius of a deleted input, and neither has the callback's
    checkpoint state. What the next request starts from is the classifier itself."""
    (x, y), (x2, y2) = _requests(digits, 2, 4)
    callback = _callback()
    module = UnlearningModule(digits_cnn, num_classes=10)
    _fit(module, callback, x, y)
    assert callback.summary is not None and callback.summary.unlearned
    radius = 1.5  # the anchors are within L2 1.0 of their instance; shifted copies of a digit are further away
    classifier = {id(t) for t in digits_cnn.state_dict(keep_vars=True).values()}
    carried = [t for t in _reachable_tensors(callback) if id(t) not in classifier]
    # the module minus the Trainer of the last fit, which refers to the user's own DataLoader (as after any fit)
    module_state = {name: value for name, value in vars(module).items() if name != "_trainer"}
    carried += [t for t in _reachable_tensors(module_state) if id(t) not in classifier]
    assert not any(_near(t, x, radius) for t in carried)
    assert not any(_near(t, x, radius) for t in _reachable_tensors(callback.state_dict()))
    # a planted copy is found: the scan can fail
    assert _near(torch.cat([x2, x[:1] + 0.01]), x, radius)
    # and the next request starts without them: only its own 4 instances are checked
    _fit(module, callback, x2, y2)
    assert callback.history[1].remaining_before == 4 and callback.history[1].unlearned


@pytest.mark.parametrize("with_retain", [False, True], ids=["forget-only", "retain"])
def test_a_sequence_resumes_from_a_checkpoint_between_requests(
    digits: Split, digits_cnn: nn.Module, tmp_path: Path, with_retain: bool
) -> None:
    """Request 2 run from a checkpoint written after request 1, in a fresh module and callback, gives the weights,
    request counter and summary of the uninterrupted sequence bit for bit (with a retained sample: the Fisher edit's
    reference, the pre-trained weights, comes back from the checkpoint)."""
    (x1, y1), (x2, y2) = _requests(digits, 2, 4)
    pretrained = copy.deepcopy(digits_cnn)
    retain = {"retain": digits.x_train[forget_indices(len(digits.y_train), 100, seed=3)[40:]]} if with_retain else {}

    straight = _callback(**retain)
    module = UnlearningModule(copy.deepcopy(pretrained), num_classes=10)
    L.seed_everything(0, verbose=False)
    _fit(module, straight, x1, y1)
    L.seed_everything(1, verbose=False)
    _fit(module, straight, x2, y2)

    first = _callback(**retain)
    module_a = UnlearningModule(copy.deepcopy(pretrained), num_classes=10)
    L.seed_everything(0, verbose=False)
    _fit(module_a, first, x1, y1).save_checkpoint(tmp_path / "after-request-1.ckpt")

    resumed = _callback(**retain)
    module_b = UnlearningModule(copy.deepcopy(pretrained), num_classes=10)  # weights come from the checkpoint
    L.seed_everything(1, verbose=False)
    _fit(module_b, resumed, x2, y2, ckpt_path=str(tmp_path / "after-request-1.ckpt"))

    assert [s.request for s in resumed.history] == [0, 1]
    untimed = [
        {k: v for k, v in s.to_dict().items() if "seconds" not in k} for s in (resumed.history[0], first.history[0])
    ]
    assert json.dumps(untimed[0], sort_keys=True) == json.dumps(untimed[1], sort_keys=True)  # NaN-safe
    for key in ("k", "steps", "remaining_before", "unlearned", "finished_by", "before", "after"):
        assert json.dumps(getattr(resumed.history[1], key)) == json.dumps(getattr(straight.history[1], key)), key
    for (name, a), b in zip(module.classifier.state_dict().items(), module_b.classifier.state_dict().values()):
        assert torch.equal(a, b), name


def test_receipts_of_earlier_requests_verify_on_a_later_model(
    digits: Split, digits_cnn: nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A receipt names the model right after its request; ``verify --later`` checks a later model instead: every
    instance still unlearned, the model hash reported but not required."""
    (x1, y1), (x2, y2) = _requests(digits, 2, 4)
    with pytest.warns(UserWarning, match="keep_forget_data=True"):
        callback = _callback(keep_forget_data=True, receipt_dir=tmp_path / "receipts")
    pretrained = copy.deepcopy(digits_cnn)
    module = UnlearningModule(digits_cnn, num_classes=10)
    _fit(module, callback, x1, y1)
    _fit(module, callback, x2, y2)
    assert all(s.unlearned for s in callback.history) and accuracy(digits_cnn, x1, y1) == 0.0
    first = read_receipt(callback.receipts[0])
    assert verify_receipt(first, digits_cnn, x1, y1) == [
        "the model's parameters do not match the receipt's `model_after` hash"
    ]
    assert verify_receipt(first, digits_cnn, x1, y1, later=True) == []
    torch.save(digits_cnn, tmp_path / "model.pt")
    torch.save({"inputs": x1, "labels": y1}, tmp_path / "forget.pt")
    args = ["verify", "--receipt", str(callback.receipts[0]), "--model", str(tmp_path / "model.pt")]
    args += ["--forget", str(tmp_path / "forget.pt")]
    assert cli_main(args) == 1
    assert cli_main([*args, "--later"]) == 0
    out = capsys.readouterr().out
    verdict = f"VERIFIED: receipt {first.request_id} on a later model (not the receipt's `model_after`)"
    assert f"{verdict}: 4 instances still unlearned" in out
    # the later check fails when the instances are remembered again (here: the pre-trained model)
    assert verify_receipt(first, pretrained, x1, y1, later=True) == ["4 of 4 instances are not unlearned by the model"]


def test_keep_forget_data_warns_that_a_checkpoint_brings_no_earlier_forget_sets() -> None:
    with pytest.warns(UserWarning, match="keep_forget_data=True"):
        callback = InstanceUnlearning(keep_forget_data=True)
    state = {"history": [RequestSummary(request=0, k=4, unlearned=True).to_dict()], "in_progress": False}
    message = r"the forget sets of this checkpoint's 1 earlier requests are not in it \(checkpoints never hold forget"
    with pytest.warns(UserWarning, match=message):
        callback.load_state_dict(state)
    assert [s.request for s in callback.history] == [0] and callback.request is None


def test_with_a_retained_sample_a_sequence_repairs_earlier_damage_toward_the_pretrained_model(
    digits: Split, digits_cnn: nn.Module
) -> None:
    """The default Fisher edit restores 64 retained inputs to the pre-trained model's margins in every request: after
    five requests test accuracy is higher than with ``restore=0``, and every request is unlearned."""
    from lightning_unlearn import FisherEdit

    requests = _requests(digits, 5, 16)
    retain = digits.x_train[forget_indices(len(digits.y_train), 200, seed=3)[100:]]  # outside the requests
    accuracies = {}
    for restore in (64, 0):
        classifier = copy.deepcopy(digits_cnn)
        callback = _callback(retain=retain, fisher_edit=FisherEdit(restore=restore))
        module = UnlearningModule(classifier, num_classes=10)
        for x, y in requests:
            _fit(module, callback, x, y)
            assert callback.summary is not None and callback.summary.unlearned
        accuracies[restore] = accuracy(classifier, digits.x_test, digits.y_test)
    assert accuracies[64] > accuracies[0] + 0.04  # 95.8 % against 87.5 % when written
