"""The runnable examples in ``examples/``, each in its ``--smoke`` mode, as subprocesses (the way users run them).

The pre-trained digits model is built (or read from the cache) once in this process by the ``_pretrained_digits``
fixture, so the subprocesses only load it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from tests.conftest import fresh_launch_env

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _run(script: str, *args: str, cwd: Path, timeout: int = 180) -> str:
    env = fresh_launch_env()
    command = [sys.executable, str(EXAMPLES / script), "--smoke", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return done.stdout


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("01_existing_lightning_project.py", ["checkpoint saved: digits-epoch=0.ckpt", "| forget/acc", "unlearned: "]),
        ("02_relabel.py", ["| instance | label | target |", "forget/target_acc:", "relabelled: "]),
        ("03_continual.py", ["after request 4: ", "forget acc of requests 0..4:", "requests done: 5"]),
    ],
)
def test_example_runs_in_smoke_mode(
    script: str, expected: list[str], tmp_path: Path, _pretrained_digits: nn.Module
) -> None:
    output = _run(script, cwd=tmp_path)
    for line in expected:
        assert line in output


def test_cifar10_example_exits_cleanly_without_data(tmp_path: Path) -> None:
    output = _run("04_cifar10_resnet18.py", "--data-dir", str(tmp_path / "absent"), cwd=tmp_path)
    assert "CIFAR-10 not found" in output


def test_ddp_example_writes_one_summary(tmp_path: Path, _pretrained_digits: nn.Module) -> None:
    output = _run("05_ddp.py", "--out", str(tmp_path / "out"), cwd=tmp_path, timeout=240)
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("summary*.json")] == ["out/summary.json"]
    assert output.count("world_size=2") == 1
