"""Unlearning under DDP on CPU (gloo, 2 processes) and with bf16 mixed precision, on scikit-learn digits.

Never ``strategy="ddp"`` inside the pytest process (it would re-launch pytest): the in-process runs use ``ddp_fork``
(the same launcher as ``ddp_spawn``, without pickling) and, once, ``ddp_spawn``; ``strategy="ddp"`` runs through the
user-facing script ``benchmarks/ddp_request.py`` in a subprocess with a timeout. Only rank 0's summary comes back to
this process's callback, so a probe callback writes what each rank saw into ``tmp_path``.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from lightning_unlearn import ForgetSet, InstanceUnlearning, MASImportance, PGDAnchors, UnlearningModule
from lightning_unlearn.datasets import Split
from lightning_unlearn.evaluation import RequestEvaluator
from lightning_unlearn.spawn import register_receiver, return_to_main_process
from tests.conftest import forget_indices, fresh_launch_env, quiet_trainer_kwargs

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 400
TEST_ACC_TOLERANCE = 0.05  # |test accuracy after, 2 processes - 1 process| on the 360 digits test images
pytestmark = pytest.mark.timeout(120)


class RankProbe(Callback):
    """Writes what one rank saw: its shard, the importance it holds, its anchors, and where it stopped.

    Listed after ``InstanceUnlearning``, so its ``on_train_start`` sees the request set up and its ``on_train_end``
    sees the summary.
    """

    def __init__(self, unlearning: InstanceUnlearning, out: Path) -> None:
        self.unlearning = unlearning
        self.out = out
        self.record: dict[str, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, UnlearningModule)
        batches = [pl_module.split_batch(batch) for batch in trainer.train_dataloader]
        x = torch.cat([b[0] for b in batches]).to(pl_module.device)
        y = torch.cat([b[1] for b in batches]).to(pl_module.device)
        assert self.unlearning.importance is not None
        scores = self.unlearning.importance.scores
        assert scores is not None
        torch.save(
            {n: v.detach().cpu() for n, v in scores.items()}, self.out / f"importance_rank{trainer.global_rank}.pt"
        )
        pool = self.unlearning.anchors.pool if self.unlearning.anchors is not None else None
        self.record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "shard_size": int(x.shape[0]),
            "shard_remaining_at_start": int((~pl_module.unlearned(x, y)).sum()),
            "anchors": len(pool) if pool is not None else 0,
            "anchor_dtype": str(pool.inputs.dtype) if pool is not None else None,
            "anchor_logits_dtype": str(pool.logits.dtype) if pool is not None else None,
            "importance_dtypes": sorted({str(v.dtype) for v in scores.values()}),
        }

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = self.unlearning.summary
        assert summary is not None
        self.record.update(summary=summary.to_dict(), global_step=trainer.global_step)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))


def run_request(
    classifier: nn.Module,
    forget: ForgetSet,
    out: Path,
    *,
    devices: int,
    precision: str = "32-true",
    seed: int = 0,
    strategy: str = "ddp_fork",
    unlearning: InstanceUnlearning | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Tensor]], dict[str, float]]:
    """One request with ``devices`` processes (``strategy`` when more than one); returns each rank's record, each
    rank's importance and the main process's ``callback_metrics``. ``classifier`` ends with rank 0's weights.
    ``unlearning`` defaults to :func:`request_callback` with ``seed``."""
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, verbose=False)
    unlearning = unlearning if unlearning is not None else request_callback(seed)
    kwargs = quiet_trainer_kwargs()
    kwargs.update(devices=devices, strategy=strategy if devices > 1 else "auto", precision=precision)
    trainer = L.Trainer(max_epochs=-1, callbacks=[unlearning, RankProbe(unlearning, out)], **kwargs)
    trainer.fit(UnlearningModule(classifier, num_classes=10), DataLoader(forget, batch_size=len(forget)))
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(devices)]
    scores = [torch.load(out / f"importance_rank{r}.pt", weights_only=True) for r in range(devices)]
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    return records, scores, metrics


def request_callback(seed: int = 0) -> InstanceUnlearning:
    """The callback of every request in this file: small anchors and importance, so that a request takes seconds."""
    return InstanceUnlearning(
        fisher_edit=None,
        anchors=PGDAnchors(eps=1.0, per_instance=4, steps=5, weight=1.0, backend="builtin"),
        importance=MASImportance(),
        max_steps=MAX_STEPS,
        seed=seed,
    )


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(x).argmax(-1) == y).float().mean())


def digits_forget_set(digits: Split, k: int) -> ForgetSet:
    index = forget_indices(len(digits.y_train), k)
    return ForgetSet(digits.x_train[index], digits.y_train[index])


def single_process_importance(classifier: nn.Module, forget: ForgetSet) -> dict[str, Tensor]:
    """What one process computes for the whole forget set (the reference for any number of processes)."""
    importance = MASImportance()
    return importance.normalize(importance.estimate_sum(classifier, forget.inputs), len(forget))


def assert_importance_close(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)


# --------------------------------------------------------------------------------------------------- k = 16, 1 vs 2
@pytest.fixture(scope="module")
def runs_k16(tmp_path_factory: pytest.TempPathFactory, _pretrained_digits: nn.Module, digits: Split) -> dict[str, Any]:
    """The same request (k = 16, seed 0) with one process and with two."""
    forget = digits_forget_set(digits, 16)
    result: dict[str, Any] = {"forget": forget}
    for devices in (1, 2):
        model = copy.deepcopy(_pretrained_digits).eval()
        unlearning = request_callback(seed=0)
        records, scores, metrics = run_request(
            model, forget, tmp_path_factory.mktemp(f"k16_{devices}p"), devices=devices, unlearning=unlearning
        )
        result[devices] = {
            "summary": unlearning.summary,  # this process's callback (with 2: rank 0's summary, brought back)
            "records": records,
            "scores": scores,
            "metrics": metrics,
            "forget_acc": accuracy(model, forget.inputs, forget.labels),
            "test_acc": accuracy(model, digits.x_test, digits.y_test),
        }
    return result


def test_two_processes_unlearn_every_instance(runs_k16: dict[str, Any]) -> None:
    two = runs_k16[2]
    assert [r["shard_size"] for r in two["records"]] == [8, 8]
    for record in two["records"]:
        summary = record["summary"]
        assert summary["unlearned"] and not summary["restored"]
        assert summary["k"] == 16 and summary["remaining_before"] == 16 and summary["remaining_after"] == 0
        assert summary["anchors"] == 16 * 4
        assert record["anchors"] == 8 * 4  # each rank generated the anchors of its own shard only
    assert two["forget_acc"] == 0.0  # rank 0's weights, recovered by the main process
    assert two["metrics"]["forget/remaining"] == 0.0
    summary = two["summary"]  # ddp_fork brings rank 0's summary back to the main process's callback too
    assert summary is not None and summary.unlearned and summary.steps == two["records"][0]["summary"]["steps"]


def test_importance_identical_on_both_ranks(runs_k16: dict[str, Any]) -> None:
    rank0, rank1 = runs_k16[2]["scores"]
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def test_importance_does_not_depend_on_process_count(runs_k16: dict[str, Any]) -> None:
    (one,) = runs_k16[1]["scores"]
    assert_importance_close(runs_k16[2]["scores"][0], one)


def test_both_ranks_stop_at_the_same_step(runs_k16: dict[str, Any]) -> None:
    records = runs_k16[2]["records"]
    assert len({r["summary"]["steps"] for r in records}) == 1
    assert len({r["global_step"] for r in records}) == 1
    assert records[0]["global_step"] == records[0]["summary"]["steps"] < MAX_STEPS


def test_two_processes_match_one_process(runs_k16: dict[str, Any]) -> None:
    one, two = runs_k16[1], runs_k16[2]
    assert one["forget_acc"] == two["forget_acc"] == 0.0
    assert abs(one["test_acc"] - two["test_acc"]) <= TEST_ACC_TOLERANCE, (one["test_acc"], two["test_acc"])
    # same data, same effective batch (DDP averages the two half-batches); the anchors differ (seeded per rank), so
    # the step counts are of the same order but not equal
    steps_one, steps_two = one["records"][0]["summary"]["steps"], two["records"][0]["summary"]["steps"]
    assert 1 / 3 <= steps_two / steps_one <= 3.0, (steps_one, steps_two)


# ------------------------------------------------------------------------------------------------- strategy="ddp_spawn"
def _generators(module: UnlearningModule, callback: InstanceUnlearning) -> tuple[torch.Generator, ...]:
    """The generators the module and the callback's plugins hold between requests (the anchor sampler's, in its
    plugin; the anchors' own generator is made from the seed at each request)."""
    assert callback.anchors is not None
    return (module._label_generator, callback.anchors._generator)


def _draws_in_child(objects: tuple[UnlearningModule, InstanceUnlearning], queue: Any) -> None:
    module, callback = objects
    generators = _generators(module, callback)
    queue.put([torch.rand(3, generator=g).tolist() for g in generators])


def test_module_and_callback_reach_a_spawned_process(digits_cnn: nn.Module) -> None:
    """Issue 13 at its root, without Lightning: ``torch.multiprocessing``'s pickler used to send each
    ``torch.Generator``'s state as a temporary shared tensor whose file descriptor was closed before the child started
    (``RuntimeError: unable to resize file`` / ``ValueError: bad value(s) in fds_to_keep``). The generators arrive with
    their state."""
    module, callback = UnlearningModule(digits_cnn, num_classes=10), request_callback()
    generators = _generators(module, callback)
    for seed, generator in enumerate(generators):
        torch.rand(5, generator=generator.manual_seed(seed))  # a state other than the seed's
    context = torch.multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    process = context.Process(target=_draws_in_child, args=((module, callback), queue))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert queue.get() == [torch.rand(3, generator=g).tolist() for g in generators]


def test_ddp_spawn_request_matches_one_process(
    tmp_path: Path, runs_k16: dict[str, Any], _pretrained_digits: nn.Module, digits: Split
) -> None:
    """``strategy="ddp_spawn"`` pickles the module and the callback into two fresh processes (issue 13: their
    ``torch.Generator`` attributes used to break that); the weights and the callback's summary come back to this
    process's objects, and the result equals the one-process run's within the tolerances above."""
    forget, one = runs_k16["forget"], runs_k16[1]
    model = copy.deepcopy(_pretrained_digits).eval()
    unlearning = request_callback(seed=0)
    records, scores, metrics = run_request(
        model, forget, tmp_path, devices=2, strategy="ddp_spawn", unlearning=unlearning
    )
    assert [(r["rank"], r["world_size"], r["shard_size"]) for r in records] == [(0, 2, 8), (1, 2, 8)]
    for record in records:
        summary = record["summary"]
        assert summary["unlearned"] and not summary["restored"]
        assert (summary["k"], summary["remaining_before"], summary["remaining_after"]) == (16, 16, 0)
    assert len({r["summary"]["steps"] for r in records}) == 1
    assert len({r["global_step"] for r in records}) == 1
    # the weights: rank 0's, loaded by Lightning into this process's classifier object
    before, after = _pretrained_digits.state_dict(), model.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert accuracy(model, forget.inputs, forget.labels) == 0.0
    assert metrics["forget/remaining"] == 0.0
    # the callback's state: rank 0's summary, on this process's callback object
    summary = unlearning.summary
    assert summary is not None and summary.unlearned is True and not summary.restored
    rank0 = records[0]["summary"]
    for name in ("k", "steps", "remaining_before", "remaining_after", "anchors", "anchor_success_rate"):
        assert getattr(summary, name) == rank0[name], name
    assert summary.after["forget/remaining"] == 0.0
    assert len(unlearning.history) == 1
    assert len(unlearning.trace) == summary.steps and unlearning.trace[-1]["forget/remaining"] == 0.0  # one per check
    # the same values as one process
    assert abs(accuracy(model, digits.x_test, digits.y_test) - one["test_acc"]) <= TEST_ACC_TOLERANCE
    steps_one = one["records"][0]["summary"]["steps"]
    assert 1 / 3 <= summary.steps / steps_one <= 3.0, (steps_one, summary.steps)
    assert all(torch.equal(scores[0][n], scores[1][n]) for n in scores[0])
    assert_importance_close(scores[0], one["scores"][0])


# --------------------------------------------------------------------------------------------------- small / uneven k
def _two_process_run(tmp: Path, pretrained: nn.Module, digits: Split, k: int) -> dict[str, Any]:
    forget = digits_forget_set(digits, k)
    model = copy.deepcopy(pretrained).eval()
    records, scores, _ = run_request(model, forget, tmp, devices=2)
    return {"k": k, "forget": forget, "model": model, "records": records, "scores": scores, "pretrained": pretrained}


@pytest.fixture(scope="module")
def run_k1(tmp_path_factory: pytest.TempPathFactory, _pretrained_digits: nn.Module, digits: Split) -> dict[str, Any]:
    return _two_process_run(tmp_path_factory.mktemp("k1"), _pretrained_digits, digits, 1)


@pytest.fixture(scope="module")
def run_k3(tmp_path_factory: pytest.TempPathFactory, _pretrained_digits: nn.Module, digits: Split) -> dict[str, Any]:
    return _two_process_run(tmp_path_factory.mktemp("k3"), _pretrained_digits, digits, 3)


def test_k1_with_two_processes(run_k1: dict[str, Any]) -> None:
    records = run_k1["records"]
    assert all(r["summary"]["unlearned"] and r["summary"]["remaining_after"] == 0 for r in records)
    assert len({r["summary"]["steps"] for r in records}) == 1
    assert len({r["global_step"] for r in records}) == 1
    assert accuracy(run_k1["model"], run_k1["forget"].inputs, run_k1["forget"].labels) == 0.0
    rank0, rank1 = run_k1["scores"]
    assert all(torch.equal(rank0[n], rank1[n]) for n in rank0)


@pytest.mark.parametrize("run", ["run_k1", "run_k3"])
def test_uneven_shards_count_each_instance_once(run: str, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(run)
    k = result["k"]
    reference = single_process_importance(copy.deepcopy(result["pretrained"]).eval(), result["forget"])
    for record in result["records"]:
        summary = record["summary"]
        assert summary["unlearned"]
        assert (summary["k"], summary["remaining_before"], summary["anchors"]) == (k, k, 4 * k)
    assert sum(r["anchors"] for r in result["records"]) == 4 * k  # each instance has its anchors made once
    assert_importance_close(result["scores"][0], reference)


# --------------------------------------------------------------------------------------------------- unlearned shard
def test_a_shard_already_unlearned_at_start(tmp_path: Path, digits_cnn: nn.Module, digits: Split) -> None:
    """Rank 1's shard is given labels the model does not predict, as if those instances had been forgotten already:
    that rank starts with nothing left to unlearn, rank 0 with all of its shard."""
    forget = digits_forget_set(digits, 8)
    # Lightning shards a training set with DistributedSampler(shuffle=True, seed=PL_GLOBAL_SEED); the callback collects
    # the shards of epoch 0
    shard1 = list(DistributedSampler(forget, num_replicas=2, rank=1, shuffle=True, seed=0))
    with torch.no_grad():
        predicted = digits_cnn(forget.inputs).argmax(-1)
    labels = forget.labels.clone()
    labels[shard1] = (predicted[shard1] + 1) % 10
    forget = ForgetSet(forget.inputs, labels)
    records, scores, metrics = run_request(digits_cnn, forget, tmp_path, devices=2)
    assert [r["shard_remaining_at_start"] for r in records] == [4, 0]
    assert all(r["summary"]["remaining_before"] == 4 and r["summary"]["unlearned"] for r in records)
    assert len({r["summary"]["steps"] for r in records}) == 1
    assert len({r["global_step"] for r in records}) == 1
    assert accuracy(digits_cnn, forget.inputs, forget.labels) == 0.0
    assert metrics["forget/remaining"] == 0.0
    assert all(torch.equal(scores[0][n], scores[1][n]) for n in scores[0])


# --------------------------------------------------------------------------------------------------- precision
def test_bf16_mixed_on_cpu_with_two_processes(tmp_path: Path, digits_cnn: nn.Module, digits: Split) -> None:
    forget = digits_forget_set(digits, 8)
    records, scores, _ = run_request(digits_cnn, forget, tmp_path, devices=2, precision="bf16-mixed")
    for record in records:
        assert record["summary"]["unlearned"]
        # anchors and importance are made in on_train_start, outside autocast: full precision
        assert record["anchor_dtype"] == record["anchor_logits_dtype"] == "torch.float32"
        assert record["importance_dtypes"] == ["torch.float32"]
    assert len({r["summary"]["steps"] for r in records}) == 1
    assert all(torch.equal(scores[0][n], scores[1][n]) for n in scores[0])
    assert all(p.dtype == torch.float32 for p in digits_cnn.parameters())  # mixed, not true, bf16
    assert accuracy(digits_cnn, forget.inputs, forget.labels) == 0.0


# --------------------------------------------------------------------------------------------------- strategy="ddp"
def test_ddp_script_in_a_subprocess_writes_one_report(tmp_path: Path, _pretrained_digits: nn.Module) -> None:
    """``strategy="ddp"`` the way users launch it: Lightning re-runs the script for rank 1; only rank 0 reports."""
    env = fresh_launch_env()
    command = [sys.executable, str(REPO / "benchmarks" / "ddp_request.py"), "--devices", "2", "--k", "4"]
    command += ["--max-steps", str(MAX_STEPS), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    reports = list(tmp_path.rglob("*.json"))
    assert [p.name for p in reports] == ["report.json"]
    report = json.loads(reports[0].read_text())
    assert report["strategy"] == "ddp" and report["world_size"] == 2
    assert report["summary"]["unlearned"] and report["summary"]["k"] == 4
    assert len(set(report["steps_per_rank"])) == 1 and len(report["steps_per_rank"]) == 2
    assert len(set(report["global_step_per_rank"])) == 1
    assert report["importance_identical"] is True
    assert report["after"]["forget_acc"] == 0.0
    assert output.count("instances unlearned in") == 1  # rank_zero_info: printed once, not once per rank
    assert output.count("ddp_request: world_size=2") == 1


# --------------------------------------------------------------------------------------------------- logged values
class ForgetCheckProbe(Callback):
    """After validation, measures the forget metrics on this rank's half of a forget set (synced across ranks)."""

    def __init__(self, forget: ForgetSet, out: Path) -> None:
        self.forget = forget
        self.out = out

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, UnlearningModule)
        rank, world = trainer.global_rank, trainer.world_size
        x, y = self.forget.inputs[rank::world], self.forget.labels[rank::world]
        values = RequestEvaluator(pl_module, trainer).check_forget([(x, y, None)])
        (self.out / f"forget_rank{rank}.json").write_text(json.dumps(values))


def test_logged_values_equal_single_process_values(
    tmp_path: Path, _pretrained_digits: nn.Module, digits: Split
) -> None:
    """Evaluation accuracies and forget metrics logged by 2 processes equal 1 process's on the same data and weights."""
    model = copy.deepcopy(_pretrained_digits).eval()
    with torch.no_grad():  # a partly wrong model, so that the values are not all 0 or 1
        model[-1].weight.add_(0.3 * torch.randn(model[-1].weight.shape, generator=torch.Generator().manual_seed(0)))
    forget = ForgetSet(digits.x_train[:30], digits.y_train[:30])
    loaders = {  # even sizes: no DistributedSampler padding
        "retain": DataLoader(list(zip(digits.x_train[30:830], digits.y_train[30:830])), batch_size=64),
        "test": DataLoader(list(zip(digits.x_test, digits.y_test)), batch_size=64),
    }
    logged, forget_values = {}, {}
    for devices in (1, 2):
        out = tmp_path / f"{devices}p"
        out.mkdir()
        kwargs = quiet_trainer_kwargs()
        kwargs.update(devices=devices, strategy="ddp_fork" if devices > 1 else "auto")
        trainer = L.Trainer(callbacks=[ForgetCheckProbe(forget, out)], **kwargs)
        trainer.validate(UnlearningModule(model, num_classes=10), dataloaders=loaders, verbose=False)
        logged[devices] = {name: float(value) for name, value in trainer.callback_metrics.items()}
        forget_values[devices] = [json.loads((out / f"forget_rank{r}.json").read_text()) for r in range(devices)]
    assert set(logged[1]) == set(logged[2]) == {"retain/acc", "test/acc"}
    for name in logged[1]:
        assert logged[2][name] == pytest.approx(logged[1][name], abs=1e-6), name
    assert 0.0 < logged[1]["test/acc"] < 1.0
    with torch.no_grad():
        remembered = int((model(forget.inputs).argmax(-1) == forget.labels).sum())
    assert 0 < remembered < 30
    expected = {"forget/acc": remembered / 30, "forget/remaining": float(remembered)}
    for values in [*forget_values[1], *forget_values[2]]:  # each rank holds the synced values of the whole set
        assert values["forget/acc"] == pytest.approx(expected["forget/acc"], abs=1e-6)
        assert values["forget/remaining"] == expected["forget/remaining"]


# --------------------------------------------------------------------------------------------------- large outputs
SPAWN_SCRIPT = REPO / "tests" / "scripts" / "spawn_request.py"
PIPE_BUFFER = 64 * 1024  # Linux's pipe buffer: a worker's output larger than this hung Lightning's launcher (issue 23)


def _run_to_completion(command: list[str], tmp_path: Path, timeout: float) -> dict[str, Any]:
    """Run ``command`` in its own process group; a run past ``timeout`` (a hang) fails the test, and the group (main
    process and workers) is killed. Returns the script's result.json."""
    env = {**fresh_launch_env(), "TMPDIR": str(tmp_path / "tmp"), "OMP_NUM_THREADS": "1"}
    (tmp_path / "tmp").mkdir()
    log = tmp_path / "log.txt"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out, start_new_session=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"no result after {timeout:.0f}s (hung?): {log.read_text()[-2000:]}")
    assert process.returncode == 0, log.read_text()[-3000:]
    # the worker's file is read and deleted by the main process (Lightning leaves only its own empty weights folder)
    assert not list((tmp_path / "tmp").glob("lightning_unlearn_returned_*")), list((tmp_path / "tmp").iterdir())
    return json.loads((tmp_path / "out" / "result.json").read_text())


@pytest.mark.timeout(600)
def test_ddp_spawn_returns_a_default_request_of_1000_steps(tmp_path: Path) -> None:
    """Issue 23: a default request of 1,000 steps under ``ddp_spawn`` returns to the main process with its summary,
    history and trace, although they pickle to more than the 64 KiB that fit in the launcher's pipe (they travel
    through a file). The model cannot move (a vanishing learning rate), so the request runs its whole budget."""
    command = [sys.executable, str(SPAWN_SCRIPT), str(tmp_path / "out"), "--strategy", "ddp_spawn", "--steps", "1000"]
    result = _run_to_completion(command, tmp_path, timeout=480)
    summary = result["summary"]
    assert summary is not None and summary["steps"] == 1000 and summary["k"] == 2
    assert summary["unlearned"] is True and summary["finished_by"] == "steps+edit"  # the budget ran out
    assert result["history"] == 1
    assert result["trace"] == 1000 and result["last_trace_step"] == 1000.0  # one point per stop check
    assert result["returned_bytes"] > PIPE_BUFFER
    assert result["callback_metrics_bytes"] < PIPE_BUFFER // 8  # what Lightning itself still sends through the pipe


@pytest.mark.timeout(300)
def test_ddp_fork_returns_a_trace_larger_than_the_pipe(tmp_path: Path) -> None:
    """``ddp_fork`` (and ``ddp_notebook``, the same launcher) bring back a trace larger than the pipe: 2,000 points
    planted from earlier requests plus a short request."""
    command = [sys.executable, str(SPAWN_SCRIPT), str(tmp_path / "out"), "--strategy", "ddp_fork", "--steps", "20"]
    result = _run_to_completion([*command, "--plant", "2000"], tmp_path, timeout=240)
    assert result["summary"]["steps"] == 20 and result["history"] == 1
    assert result["trace"] == 2020 and result["last_trace_step"] == 20.0
    assert result["returned_bytes"] > PIPE_BUFFER


class _Receiver:
    def __init__(self) -> None:
        self.trace: list[dict[str, float]] = []


class _Launcher:
    def get_extra_results(self, trainer: Any) -> dict[str, Any]:
        return {"callback_metrics_bytes": b""}


def _worker_output(key: str, values: dict[str, Any]) -> bytes:
    """What rank 0's worker puts into the launcher's queue, with ``values`` returned for ``key``."""
    trainer = SimpleNamespace(strategy=SimpleNamespace(launcher=_Launcher()))
    return_to_main_process(trainer, key, lambda: values)  # type: ignore[arg-type]
    return pickle.dumps(trainer.strategy.launcher.get_extra_results(trainer))


def test_returned_values_of_any_size_travel_as_a_small_reference(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    receiver = _Receiver()
    register_receiver(receiver, "key-large")
    trace = [{"step": float(step), "forget/remaining": 1.0} for step in range(100_000)]
    message = _worker_output("key-large", {"trace": trace})
    assert len(pickle.dumps(trace)) > 30 * PIPE_BUFFER and len(message) < 1_000
    assert len(list(tmp_path.rglob("*.pkl"))) == 1
    extra = pickle.loads(message)  # the main process reading the queue
    assert receiver.trace == trace and extra["callback_metrics_bytes"] == b""
    assert not list(tmp_path.iterdir())  # file and folder deleted


def test_the_file_is_deleted_when_delivery_fails(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    class Refusing:
        def __setattr__(self, name: str, value: Any) -> None:
            raise AttributeError(f"can't set {name}")

    receiver = Refusing()
    register_receiver(receiver, "key-refusing")
    message = _worker_output("key-refusing", {"trace": [{"step": 1.0}]})
    with pytest.raises(AttributeError, match="can't set trace"):
        pickle.loads(message)
    assert not list(tmp_path.iterdir())
    gone = _worker_output("key-nobody", {"trace": [{"step": 1.0}]})  # its receiver no longer exists
    pickle.loads(gone)
    assert not list(tmp_path.iterdir())


def test_an_undelivered_file_is_deleted_with_its_receiver(tmp_path: Path, monkeypatch) -> None:
    """A worker wrote its values but the main process never read them (the launch failed after that)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    receiver = _Receiver()
    register_receiver(receiver, "key-undelivered")
    _worker_output("key-undelivered", {"trace": [{"step": 1.0}]})
    assert len(list(tmp_path.rglob("*.pkl"))) == 1
    del receiver
    gc.collect()
    assert not list(tmp_path.iterdir())


class WeightHash(Callback):
    """Writes, per rank, a hash of the classifier's weights and the summary once the request has ended."""

    def __init__(self, unlearning: InstanceUnlearning, out: Path) -> None:
        self.unlearning, self.out = unlearning, out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, UnlearningModule) and self.unlearning.summary is not None
        digest = hashlib.sha256(b"".join(v.cpu().numpy().tobytes() for v in pl_module.classifier.state_dict().values()))
        record = {"hash": digest.hexdigest(), "summary": self.unlearning.summary.to_dict()}
        (self.out / f"weights_rank{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.parametrize("with_retain", [False, True], ids=["forget-only", "retain"])
def test_the_fisher_edit_gives_every_process_the_same_weights(
    tmp_path: Path, _pretrained_digits: nn.Module, digits: Split, with_retain: bool
) -> None:
    """The default request under two processes: the Fisher edit runs on the gathered forget set and protected inputs
    with a broadcast seed (with a retained sample: each rank's shard gathered, restored toward the same reference),
    so both ranks end with identical weights, having taken no step."""
    model = copy.deepcopy(_pretrained_digits).eval()
    forget = digits_forget_set(digits, 16)
    unlearning = InstanceUnlearning(seed=0, retain=digits.x_train[-70:] if with_retain else None)
    kwargs = quiet_trainer_kwargs()
    kwargs.update(devices=2, strategy="ddp_fork")
    trainer = L.Trainer(max_epochs=-1, callbacks=[unlearning, WeightHash(unlearning, tmp_path)], **kwargs)
    trainer.fit(UnlearningModule(model, num_classes=10), DataLoader(forget, batch_size=len(forget)))
    records = [json.loads((tmp_path / f"weights_rank{r}.json").read_text()) for r in range(2)]
    assert records[0]["hash"] == records[1]["hash"]
    for record in records:
        summary = record["summary"]
        assert summary["finished_by"] == "fisher_edit" and summary["steps"] == 0 and summary["unlearned"]
        assert summary["k"] == 16 and summary["remaining_after"] == 0
    assert accuracy(model, forget.inputs, forget.labels) == 0.0  # rank 0's weights, back in this process
