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
    "retain_acc", "test_acc", "mia_efficacy", "pretrained_test_acc",
}  # fmt: skip


def test_digits_benchmark_quick_run_writes_rows_and_table(tmp_path: Path, _pretrained_digits) -> None:
    out = tmp_path / "bench.json"
    command = [sys.executable, str(REPO / "benchmarks" / "unlearn_digits.py"), "--quick", "--out", str(out)]
    done = subprocess.run(command, env=fresh_launch_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    data = json.loads(out.read_text())
    assert {"rows", "machine"} <= set(data)
    assert {(r["method"], r["k"]) for r in data["rows"]} == {("neg_grad", 4), ("default", 4)}
    for row in data["rows"]:
        assert set(row) == ROW_KEYS
        assert 0.0 <= row["test_acc"] <= 1.0 and row["steps"] >= 1
    assert "| method | k | runs | all unlearned |" in done.stdout
    report = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "report.py"), str(out)],
        env=fresh_launch_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert report.returncode == 0 and report.stdout.count("\n| default | 4 |") == 1


CONTINUAL_KEYS = {
    "setting", "seed", "request", "k", "unlearned", "steps", "seconds", "forget_acc", "earlier_forget_acc",
    "max_earlier_forget_acc", "test_acc",
}  # fmt: skip


def test_continual_benchmark_smoke_run_writes_rows_and_table(tmp_path: Path, _pretrained_digits) -> None:
    out = tmp_path / "continual.json"
    command = [sys.executable, str(REPO / "benchmarks" / "continual.py"), "--requests", "2", "--k", "2"]
    command += ["--seeds", "0", "--max-steps", "3", "--smoke-anchors", "--out", str(out)]
    done = subprocess.run(command, env=fresh_launch_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    data = json.loads(out.read_text())
    assert 0.9 < data["pretrained_test_acc"] <= 1.0
    assert [(r["setting"], r["request"]) for r in data["rows"]] == [
        ("default", 1), ("default", 2), ("keep_forget_data", 1), ("keep_forget_data", 2),
    ]  # fmt: skip
    for row in data["rows"]:
        assert set(row) == CONTINUAL_KEYS
        assert len(row["earlier_forget_acc"]) == row["request"] - 1 and row["steps"] <= 3
    assert done.stdout.count("\n| keep_forget_data | ") == 2
