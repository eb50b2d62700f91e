"""The benchmark entry point runs on its smallest setting and writes the documented schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import fresh_launch_env

REPO = Path(__file__).resolve().parents[1]
ROW_KEYS = {
    "method", "k", "seed", "steps", "seconds", "unlearned", "setup_seconds", "forget_acc", "target_acc",
    "retain_acc", "test_acc", "mia_efficacy", "pretrained_test_acc", "finished_by",
}  # fmt: skip


def run_script(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run ``benchmarks/<script>`` with ``args`` in a fresh process; assert it exits 0 and return its stdout."""
    command = [sys.executable, str(REPO / "benchmarks" / script), *args]
    done = subprocess.run(command, env=env or fresh_launch_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


def test_digits_benchmark_quick_run_writes_rows_and_table(tmp_path: Path, _pretrained_digits) -> None:
    out = tmp_path / "bench.json"
    stdout = run_script("unlearn_digits.py", "--quick", "--out", str(out))
    data = json.loads(out.read_text())
    assert {"rows", "machine"} <= set(data)
    assert {(r["method"], r["k"]) for r in data["rows"]} == {("neg_grad", 4), ("default", 4)}
    for row in data["rows"]:
        assert set(row) == ROW_KEYS
        assert 0.0 <= row["test_acc"] <= 1.0 and row["steps"] >= (1 if row["method"] == "neg_grad" else 0)
    default = next(row for row in data["rows"] if row["method"] == "default")
    assert default["unlearned"] is True and default["forget_acc"] == 0.0  # the package default finishes
    assert default["test_acc"] > 0.95 and default["pretrained_test_acc"] > 0.98
    assert "| method | k | runs | all unlearned |" in stdout
    assert run_script("report.py", str(out), timeout=60).count("\n| default | 4 |") == 1


CONTINUAL_KEYS = {
    "setting", "seed", "request", "k", "unlearned", "finished_by", "steps", "seconds", "forget_acc",
    "earlier_forget_acc", "relearned", "earlier_instances", "test_acc", "rss_mib",
}  # fmt: skip


def test_continual_benchmark_smoke_run_writes_rows_and_table(tmp_path: Path, _pretrained_digits) -> None:
    out = tmp_path / "continual.json"
    args = ["--requests", "2", "--k", "2", "--seeds", "0", "--smoke-anchors", "--out", str(out)]  # default budget
    settings = ["default", "keep_forget_data", "keep_forget_data+retain"]
    stdout = run_script("continual.py", *args, "--settings", *settings, "--union")
    data = json.loads(out.read_text())
    assert 0.9 < data["pretrained_test_acc"] <= 1.0
    assert [(r["setting"], r["request"], r["k"]) for r in data["rows"]] == [
        ("default", 1, 2), ("default", 2, 2), ("default (union)", 0, 4), ("keep_forget_data", 1, 2),
        ("keep_forget_data", 2, 2), ("keep_forget_data+retain", 1, 2), ("keep_forget_data+retain", 2, 2),
    ]  # fmt: skip
    for row in data["rows"]:
        assert set(row) - {"earlier_forget_acc"} == CONTINUAL_KEYS - {"earlier_forget_acc"}
        assert len(row.get("earlier_forget_acc", [])) == max(row["request"] - 1, 0)
        assert row["unlearned"] is True and row["forget_acc"] == 0.0 and row["test_acc"] > 0.75
        assert row["rss_mib"] is None or row["rss_mib"] > 100  # MiB of a process that holds torch
    for setting in settings[1:]:
        kept = [row for row in data["rows"] if row["setting"] == setting]
        assert kept[1]["relearned"] == 0 and kept[1]["earlier_instances"] == 2  # the opt-in holds earlier requests
    assert stdout.count("\n| keep_forget_data | ") == 2 and "\n| default (union) | all 4 | 1 | 1/1 |" in stdout


def test_continual_probe_counts_relearned_instances_per_earlier_request(_pretrained_digits) -> None:
    """The probe loop behind "Continual: what we tried": rows per request, re-learned counts per earlier request."""
    stdout = run_script("continual_probes.py", json.dumps({"requests": 2, "k": 3, "max_steps": 3, "deepen": 5.0}))
    rows = json.loads(stdout.strip().splitlines()[-1])["rows"]
    assert [row["r"] for row in rows] == [1, 2]
    assert rows[0]["relearned"] == [] and len(rows[1]["margins"]) == 2
    assert rows[1]["relearned"][0] in range(4)  # of request 1's 3 instances
    # the edit put each request's instances 5 logits past the boundary (median margin, right after the request)
    assert rows[0]["margins"][0] >= 4.9 and rows[1]["margins"][1] >= 4.9


SWEEP_KEYS = {
    "dataset", "variant", "k", "seed", "unlearned", "steps", "seconds", "forget_acc", "dev_acc", "held_acc",
    "pretrained_dev_acc", "pretrained_held_acc",
}  # fmt: skip


def test_sweep_quick_run_writes_rows_and_ranked_table(tmp_path: Path, _pretrained_digits) -> None:
    out = tmp_path / "sweep.json"
    run_script("sweep.py", "--quick", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["k"], r["seed"]) for r in rows] == [("default", 2, 0), ("lr=3e-4", 2, 0)]
    for row in rows:
        assert set(row) == SWEEP_KEYS and row["dataset"] == "digits/small_cnn"
        assert 0.0 <= row["dev_acc"] <= 1.0 and 0.0 <= row["held_acc"] <= 1.0
        assert row["unlearned"] is True and row["forget_acc"] == 0.0 and row["held_acc"] > 0.9
    report = run_script("sweep.py", "--report", str(out), timeout=60)
    lines = [line for line in report.splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(lines) == 2 and {line.split(" | ")[1] for line in lines} == {"**default**", "lr=3e-4"}


def test_cifar10_benchmark_runs_on_a_local_folder(tmp_path: Path) -> None:
    from tests.test_datasets import write_cifar10_folder

    write_cifar10_folder(tmp_path / "data", per_batch=8)
    out = tmp_path / "cifar.json"
    args = ["--dataset", "cifar10", "--model", "resnet18", "--data-dir", str(tmp_path / "data"), "--epochs", "1"]
    args += ["--ks", "1", "--seeds", "0", "--methods", "neg_grad", "retrain", "--out", str(out)]
    env = {**fresh_launch_env(), "LIGHTNING_UNLEARN_CACHE": str(tmp_path / "cache")}
    stdout = run_script("unlearn_digits.py", *args, env=env)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["k"]) for r in rows] == [("neg_grad", 1), ("retrain", 1)]
    assert all(set(row) == ROW_KEYS for row in rows)
    assert (tmp_path / "cache" / "benchmark_cifar10_resnet18_seed0_ep1.pt").is_file()
    assert "| retrain | 1 | 1 | n/a |" in stdout
