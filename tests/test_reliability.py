"""Reliability and privacy: resume after SIGKILL, determinism, no forget data in checkpoints, receipts, guards."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn import ForgetSet, InstanceUnlearning, MASImportance, PGDAnchors, UnlearningModule
from lightning_unlearn.cli import main as cli_main
from lightning_unlearn.evaluation import accuracies
from lightning_unlearn.io import json_safe
from lightning_unlearn.receipts import model_hash, read_receipt, write_receipt
from tests.conftest import forget_indices, fresh_launch_env, quiet_trainer_kwargs

SCRIPT = Path(__file__).parent / "scripts" / "resumable_request.py"


def _run_script(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = fresh_launch_env()
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out), *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    straight = _run_script(tmp_path / "straight")
    assert straight.wait(timeout=240) == 0, straight.stderr.read().decode()[-2000:] if straight.stderr else ""
    reference = json.loads((tmp_path / "straight" / "result.json").read_text())

    killed = _run_script(tmp_path / "killed", "--step-delay", "0.1")
    last = tmp_path / "killed" / "ckpt" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.2)
    time.sleep(1.5)  # a few more steps, possibly mid-way through the next checkpoint
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "result.json").exists()
    state = torch.load(last, weights_only=False)
    assert 0 < state["global_step"] < reference["steps"]

    resumed = _run_script(tmp_path / "killed", "--resume", str(last))
    assert resumed.wait(timeout=240) == 0, resumed.stderr.read().decode()[-2000:] if resumed.stderr else ""
    result = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert result["unlearned"] is True
    assert result["steps"] == reference["steps"]
    assert result["hash"] == reference["hash"]  # bit-identical on CPU


def _fit(digits, classifier, index, callbacks=(), **kwargs) -> InstanceUnlearning:
    L.seed_everything(0, verbose=False)
    callback = InstanceUnlearning(fisher_edit=None, anchors=PGDAnchors(per_instance=4, steps=5), seed=0, **kwargs)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback, *callbacks], **quiet_trainer_kwargs())
    forget = ForgetSet(digits.x_train[index], digits.y_train[index])
    trainer.fit(UnlearningModule(classifier, num_classes=10), DataLoader(forget, batch_size=len(index)))
    return callback


def test_same_seed_gives_bit_identical_weights(digits, digits_cnn) -> None:
    index = forget_indices(len(digits.y_train), 8, seed=5)
    other = pytest.importorskip("copy").deepcopy(digits_cnn)
    _fit(digits, digits_cnn, index)
    _fit(digits, other, index)
    assert model_hash(digits_cnn) == model_hash(other)


class _CaptureAnchors(Callback):
    def __init__(self, unlearning: InstanceUnlearning) -> None:
        self.unlearning = unlearning
        self.anchors: torch.Tensor | None = None

    def on_train_batch_end(self, *args: object) -> None:
        pool = self.unlearning.anchors.pool if self.unlearning.anchors is not None else None
        if self.anchors is None and pool is not None:
            self.anchors = pool.inputs.detach().cpu().clone()


def _contains(haystack: torch.Tensor, needle: torch.Tensor) -> bool:
    flat, pattern = haystack.detach().flatten().float().cpu(), needle.flatten().float().cpu()
    if flat.numel() < pattern.numel():
        return False
    windows = flat.unfold(0, pattern.numel(), 1)
    return bool(torch.isclose(windows, pattern, atol=1e-7).all(dim=1).any())


def _tensors(obj: object):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_TEXT_SUFFIXES = {".csv", ".json", ".jsonl", ".yaml", ".txt"}


def _numbers_in(text: str) -> torch.Tensor:
    """Every number written in a JSON, CSV or YAML text, in order (``0.9375``, ``9.375e-01``, ``1``, ...)."""
    return torch.tensor([float(m) for m in _NUMBER.findall(text)], dtype=torch.float64)


def _windows(secret: torch.Tensor, width: int = 4) -> torch.Tensor:
    """Runs of ``width`` consecutive values of a flattened secret with at least two values other than 0 and 1 (a run of
    blank pixels, or a single value such as 0.9375, could be any metric).
    """
    flat = secret.detach().flatten().double().cpu()
    runs = flat.unfold(0, width, 1)
    distinctive = ((runs != 0) & (runs != 1)).sum(dim=1) >= 2
    return runs[distinctive]


def _leaks(folder: Path, secrets: list[torch.Tensor], atol: float = 1e-6) -> list[str]:
    """Text files under ``folder`` whose numbers contain a run of a secret's values (within ``atol``; float32 values
    may be written with more or fewer digits).
    """
    needles = torch.cat([_windows(s) for s in secrets])
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix in _TEXT_SUFFIXES):
        numbers = _numbers_in(path.read_text())
        if numbers.numel() < needles.shape[1]:
            continue
        runs = numbers.unfold(0, needles.shape[1], 1)
        close = (runs[:, None, :] - needles[None, :, :]).abs() <= atol
        if bool(close.all(dim=2).any()):
            found.append(path.name)
    return found


def test_checkpoints_logs_and_receipts_hold_no_forget_inputs_or_anchors(digits, digits_cnn, tmp_path: Path) -> None:
    index = forget_indices(len(digits.y_train), 6, seed=7)
    callback = InstanceUnlearning(
        fisher_edit=None, anchors=PGDAnchors(per_instance=3, steps=5), seed=0, receipt_dir=tmp_path / "r"
    )
    capture = _CaptureAnchors(callback)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True, save_top_k=0)
    kwargs = {**quiet_trainer_kwargs(), "enable_checkpointing": True, "logger": L.pytorch.loggers.CSVLogger(tmp_path)}
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback, capture, checkpoint], **kwargs)
    x, y = digits.x_train[index], digits.y_train[index]
    trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(ForgetSet(x, y), batch_size=6))
    assert capture.anchors is not None and callback.summary is not None and callback.summary.steps >= 2
    assert callback.summary.unlearned
    callback.save_summary(tmp_path / "summary.json")
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    tensors = list(_tensors(state))
    assert tensors
    secrets = [*x, *capture.anchors[:: max(1, len(capture.anchors) // 6)]]
    for secret in secrets:
        assert not any(_contains(t, secret) for t in tensors)
    written = {p.suffix for p in tmp_path.rglob("*") if p.suffix in _TEXT_SUFFIXES}
    assert {".csv", ".json", ".jsonl", ".yaml"} <= written  # logs, summary, receipts and hparams were scanned
    assert _leaks(tmp_path, secrets) == []


@pytest.mark.parametrize("form", ["csv", "json", "yaml"])
def test_the_privacy_scan_finds_a_planted_forget_input_or_anchor(digits, tmp_path: Path, form: str) -> None:
    x = digits.x_train[forget_indices(len(digits.y_train), 2, seed=7)]
    anchor = (x[1] + 0.01 * torch.randn_like(x[1])).clamp(0, 1)  # float32 values with many digits
    secrets = [x[0], x[1], anchor]
    log = tmp_path / f"metrics.{form}"
    clean = {"step": 3, "forget/acc": 0.9375, "test/acc": 0.98611, "pixels": [0.0, 1.0, 0.0, 1.0]}
    log.write_text(json.dumps(clean))
    assert _leaks(tmp_path, secrets) == []  # metrics alone are not a leak
    for secret in (x[0], anchor):
        values = secret.flatten()[16:40].tolist()
        if form == "csv":
            text = "step,forget/acc\n3,0.9375\n" + ",".join(str(v) for v in values) + "\n"
        elif form == "json":
            text = json.dumps({"step": 3, "debug": values})
        else:
            text = "debug:\n" + "".join(f"- {v:.7g}\n" for v in values)
        log.write_text(text)
        assert _leaks(tmp_path, secrets) == [log.name], text


def test_receipt_verifies_and_cli_rejects_a_different_model(digits, digits_cnn, tmp_path: Path, capsys) -> None:
    index = forget_indices(len(digits.y_train), 6, seed=11)
    original = pytest.importorskip("copy").deepcopy(digits_cnn)
    callback = _fit(digits, digits_cnn, index, receipt_dir=tmp_path)
    assert len(callback.receipts) == 1
    receipt = read_receipt(callback.receipts[0])
    assert receipt.k == 6 and receipt.unlearned and receipt.model_after == model_hash(digits_cnn)
    assert receipt.model_before == model_hash(original)
    assert len(receipt.instance_hashes) == 6
    log_lines = (tmp_path / "receipts.jsonl").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in log_lines] == [receipt.request_id]
    torch.save(digits_cnn, tmp_path / "model.pt")
    torch.save(original, tmp_path / "original.pt")
    torch.save({"inputs": digits.x_train[index], "labels": digits.y_train[index]}, tmp_path / "forget.pt")
    args = ["verify", "--receipt", str(callback.receipts[0]), "--forget", str(tmp_path / "forget.pt")]
    assert cli_main([*args, "--model", str(tmp_path / "model.pt")]) == 0
    assert "VERIFIED" in capsys.readouterr().out
    assert cli_main([*args, "--model", str(tmp_path / "original.pt")]) == 1
    out = capsys.readouterr().out
    assert "NOT VERIFIED" in out and "model_after" in out and "not unlearned" in out


def test_crash_while_writing_a_receipt_leaves_the_log_intact(
    digits, digits_cnn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = forget_indices(len(digits.y_train), 4, seed=2)
    callback = _fit(digits, digits_cnn, index, receipt_dir=tmp_path)
    receipt = read_receipt(callback.receipts[0])
    log = tmp_path / "receipts.jsonl"
    before = log.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    receipt.request_id = "second"
    with pytest.raises(OSError, match="disk gone"):
        write_receipt(receipt, tmp_path)
    monkeypatch.undo()
    assert log.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_errors_are_one_line_and_nonzero(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "missing.pt")
    assert cli_main(["verify", "--receipt", missing, "--model", missing, "--forget", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightning-unlearn: error:") and "\n" not in err


def test_max_drop_guard_restores_the_original_weights(digits, digits_cnn) -> None:
    index = forget_indices(len(digits.y_train), 8, seed=4)
    before = model_hash(digits_cnn)
    L.seed_everything(0, verbose=False)
    callback = InstanceUnlearning(fisher_edit=None, anchors=None, importance=None, max_drop=0.0, seed=0)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    module = UnlearningModule(digits_cnn, num_classes=10, lr=1e-3)
    forget = ForgetSet(digits.x_train[index], digits.y_train[index])
    test = DataLoader(TensorDataset(digits.x_test, digits.y_test), batch_size=512)
    with pytest.warns(UserWarning, match=r"test accuracy dropped by .* > max_drop=0.0"):
        trainer.fit(module, DataLoader(forget, batch_size=8), val_dataloaders={"test": test})
    summary = callback.summary
    assert summary is not None and summary.restored and not summary.unlearned
    assert summary.failure is not None and summary.failure.startswith("test accuracy dropped by")
    assert model_hash(digits_cnn) == before


@pytest.mark.parametrize(
    ("labels", "num_outputs", "message"),
    [
        (torch.tensor([10, 1, 2, 3]), 10, r"forget labels must lie in [0, 10) (num_classes=10), got values up to 10."),
        (torch.tensor([0, 1, 2, 3]), 7, "`classifier` must return [B, num_classes] logits, i.e. [2, 7] here, got"),
    ],
)
def test_errors_inside_fit_leave_weights_bit_identical(digits, digits_cnn, labels, num_outputs, message) -> None:
    before = model_hash(digits_cnn)
    callback = InstanceUnlearning(fisher_edit=None, anchors=PGDAnchors(per_instance=2, steps=2), seed=0)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    module = UnlearningModule(digits_cnn, num_classes=num_outputs)
    forget = ForgetSet(digits.x_train[:4], labels)
    with pytest.raises(ValueError, match=re.escape(message)):
        trainer.fit(module, DataLoader(forget, batch_size=4))
    assert model_hash(digits_cnn) == before


def test_inputs_outside_the_anchor_range_are_refused_before_any_change(digits, digits_cnn) -> None:
    before = model_hash(digits_cnn)
    callback = InstanceUnlearning(fisher_edit=None, anchors=PGDAnchors(input_range=(0.0, 0.5)), seed=0)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], **quiet_trainer_kwargs())
    forget = ForgetSet(digits.x_train[:4], digits.y_train[:4])
    with pytest.raises(ValueError, match=r"forget inputs span \[0, 1\], outside `input_range`=\(0.0, 0.5\)"):
        trainer.fit(UnlearningModule(digits_cnn, num_classes=10), DataLoader(forget, batch_size=4))
    assert model_hash(digits_cnn) == before


def _sharded_strategy(name: str) -> object:
    """A real Lightning strategy, constructed without launching anything (``sub:`` prefix: a user's subclass)."""
    from lightning.pytorch import strategies
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    cls = getattr(strategies, name.removeprefix("sub:"))
    if name.startswith("sub:"):
        cls = type(f"My{cls.__name__}", (cls,), {})
    try:
        return cls()
    except MisconfigurationException as error:  # DeepSpeedStrategy() needs the deepspeed package
        pytest.skip(f"{name} cannot be constructed here: {error}")


@pytest.mark.parametrize("name", ["FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy", "sub:FSDPStrategy"])
def test_sharded_strategies_are_refused_at_setup(digits_cnn, name: str) -> None:
    strategy = _sharded_strategy(name)
    trainer = type("StandInTrainer", (), {"strategy": strategy})()  # setup only reads `trainer.strategy` to refuse
    message = f"InstanceUnlearning does not support strategy {type(strategy).__name__}; use a data-parallel strategy"
    with pytest.raises(ValueError, match=re.escape(message)):
        InstanceUnlearning().setup(trainer, UnlearningModule(digits_cnn, num_classes=10), "fit")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ForgetSet(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), "at least one instance"),
        (lambda: ForgetSet(torch.rand(2, 1, 8, 8), torch.tensor([0.0, 1.0])), "`labels` must be an integer tensor"),
        (lambda: ForgetSet(torch.rand(2, 1, 8, 8), torch.tensor([[0, 1]])), "`labels` must be 1-D ([k])"),
        (lambda: ForgetSet(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), torch.tensor([0, 2])), "must differ"),
        (lambda: ForgetSet(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), torch.tensor([1])), "one entry per input"),
        (lambda: ForgetSet(torch.full((2, 1, 8, 8), float("nan")), torch.tensor([0, 1])), "must be finite"),
        (lambda: PGDAnchors(eps=0.0), "`eps` must be > 0"),
        (lambda: PGDAnchors(steps=0), "`steps` must be > 0, got 0."),
        (lambda: PGDAnchors(per_instance=-1), "`per_instance` must be > 0, got -1."),
        (lambda: PGDAnchors(step_size=0.0), "`step_size` must be > 0 or None, got 0.0."),
        (lambda: __import__("lightning_unlearn").MASImportance(strength=-1.0), "`strength` must be >= 0, got -1.0."),
        (lambda: __import__("lightning_unlearn").MASImportance(top_fraction=1.5), "`top_fraction` must be in (0, 1]"),
    ],
)
def test_bad_arguments_are_refused_at_construction(build, message) -> None:
    """Pure argument checks: these objects never see the model (the tests below cover the points that do)."""
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: UnlearningModule(m, num_classes=1), "`num_classes` must be an integer >= 2, got 1."),
        (lambda m: UnlearningModule(m.requires_grad_(False), num_classes=10), "has no trainable parameters"),
    ],
)
def test_bad_module_arguments_raise_before_the_classifier_changes(digits_cnn, build, message) -> None:
    before = model_hash(digits_cnn)
    with pytest.raises(ValueError, match=re.escape(message)):
        build(digits_cnn)
    digits_cnn.requires_grad_(True)
    assert model_hash(digits_cnn) == before


def _resumable_fit(digits, classifier, tmp_path: Path, ckpt_path: str | None = None):
    L.seed_everything(0, verbose=False)
    index = forget_indices(len(digits.y_train), 12, seed=3)
    anchors = PGDAnchors(eps=1.0, per_instance=4, steps=5, weight=1.0, backend="builtin")
    callback = InstanceUnlearning(fisher_edit=None, anchors=anchors, importance=MASImportance(), max_drop=0.5, seed=0)
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=2, save_top_k=-1, save_last=False
    )
    kwargs = {**quiet_trainer_kwargs(), "enable_checkpointing": True}
    trainer = L.Trainer(max_epochs=-1, check_val_every_n_epoch=1000, callbacks=[callback, checkpoint], **kwargs)
    module = UnlearningModule(classifier, num_classes=10)
    rest = torch.ones(len(digits.y_train), dtype=torch.bool)
    rest[index] = False
    evaluation = {
        "retain": DataLoader(TensorDataset(digits.x_train[rest][:300], digits.y_train[rest][:300]), batch_size=100),
        "test": DataLoader(TensorDataset(digits.x_test, digits.y_test), batch_size=200),
    }
    forget = ForgetSet(digits.x_train[index], digits.y_train[index])
    trainer.fit(module, DataLoader(forget, batch_size=12), val_dataloaders=evaluation, ckpt_path=ckpt_path)
    return callback, module


def test_resume_mid_request_measures_the_reference_on_the_original_weights(digits, digits_cnn, tmp_path) -> None:
    """On resume the partly unlearned weights are loaded first. The reference accuracy (``summary.before``, which
    ``{name}/drop`` and ``max_drop`` read) and the final weights must still equal an uninterrupted run's."""
    fresh = copy.deepcopy(digits_cnn)
    straight, _ = _resumable_fit(digits, digits_cnn, tmp_path / "straight")
    summary = straight.summary
    assert summary is not None and summary.unlearned and summary.steps > 4
    assert accuracies(summary.before)["retain"] == 1.0
    resumed, _ = _resumable_fit(
        digits, fresh, tmp_path / "resumed", ckpt_path=str(tmp_path / "straight" / "ckpt" / "step=4.ckpt")
    )
    again = resumed.summary
    assert again is not None and again.unlearned
    assert accuracies(again.before) == accuracies(summary.before)
    assert json_safe(again.before) == json_safe(summary.before) and again.before["retain/acc"] == 1.0
    assert (again.steps, again.anchors, again.remaining_before) == (summary.steps, summary.anchors, 12)
    assert json_safe(again.after) == json_safe(summary.after)
    assert model_hash(fresh) == model_hash(digits_cnn)
