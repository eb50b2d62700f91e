"""The runnable examples in ``examples/``, each in its ``--smoke`` mode, as subprocesses (the way users run them).

The pre-trained digits model is built (or read from the cache) once in this process by the ``_pretrained_digits``
fixture, so the subprocesses only load it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from torch import nn

from tests.conftest import fresh_launch_env

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _run(script: str, *args: str, cwd: Path, timeout: int = 180) -> str:
    env = {**fresh_launch_env(), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(EXAMPLES / script), "--smoke", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return done.stdout


def _results(stdout: str) -> list[dict[str, Any]]:
    """The ``RESULT {json}`` lines an example prints (one per run)."""
    return [json.loads(line[len("RESULT ") :]) for line in stdout.splitlines() if line.startswith("RESULT ")]


def test_existing_project_example_unlearns_every_instance(tmp_path: Path) -> None:
    output = _run("01_existing_lightning_project.py", cwd=tmp_path)
    assert "checkpoint saved: digits-epoch=0.ckpt" in output
    [result] = _results(output)
    assert result["unlearned"] is True and result["k"] == 4 and result["after"]["forget/acc"] == 0.0


def test_relabel_example_moves_every_instance_to_its_target(tmp_path: Path, _pretrained_digits: nn.Module) -> None:
    output = _run("02_relabel.py", cwd=tmp_path)
    assert "| instance | label | target |" in output
    [result] = _results(output)
    assert result["relabelled"] is True and result["k"] == 4 and result["target_acc"] == 1.0
    assert result["test_acc"] > 0.95  # pre-trained: 0.994


def test_continual_example_unlearns_every_request(tmp_path: Path, _pretrained_digits: nn.Module) -> None:
    output = _run("03_continual.py", cwd=tmp_path)
    [result] = _results(output)
    assert [(r["k"], r["unlearned"]) for r in result["requests"]] == [(2, True)] * 5
    assert result["forget_acc"][-1] == 0.0  # the last request, just unlearned (earlier ones may come back)
    assert result["test_acc"] > 0.75  # pre-trained: 0.994; five requests with the defaults cost about 0.16


def test_cifar10_example_exits_cleanly_without_data(tmp_path: Path) -> None:
    output = _run("04_cifar10_resnet18.py", "--data-dir", str(tmp_path / "absent"), cwd=tmp_path)
    assert "CIFAR-10 not found" in output


def test_ddp_example_writes_one_summary_of_a_successful_request(tmp_path: Path, _pretrained_digits: nn.Module) -> None:
    output = _run("05_ddp.py", "--out", str(tmp_path / "out"), cwd=tmp_path, timeout=240)
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("summary*.json")] == ["out/summary.json"]
    [result] = _results(output)
    assert result["world_size"] == 2 and result["unlearned"] is True and result["k"] == 4
    [summary] = json.loads((tmp_path / "out" / "summary.json").read_text())["requests"]
    assert summary["unlearned"] is True and summary["k"] == 4 and summary["steps"] == result["steps"]
