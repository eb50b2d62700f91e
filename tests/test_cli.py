"""The console script: demo, fit (LightningCLI) with the shipped digits config, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_unlearn.cli import main
from lightning_unlearn.pretrain import cache_dir

CONFIG = Path(__file__).parents[1] / "lightning_unlearn" / "configs" / "digits.yaml"


@pytest.fixture
def checkpoint(_pretrained_digits) -> str:
    path = cache_dir() / "digits_small_cnn_seed0_ep30.pt"
    assert path.is_file()
    return str(path)


def test_fit_with_the_shipped_config_writes_weights_summary_and_receipt(checkpoint, tmp_path: Path, capsys) -> None:
    args = [
        "fit", "--config", str(CONFIG), "--model.checkpoint", checkpoint,
        "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.check_val_every_n_epoch", "1",
        "--data.forget_indices", "[0, 11, 22, 33]",
    ]  # fmt: skip
    assert main(args) == 0
    assert "unlearned classifier and summary written to" in capsys.readouterr().out
    folder = tmp_path / "lightning_logs" / "version_0"
    assert (folder / "unlearned_classifier.pt").is_file()
    summary = json.loads((folder / "summary.json").read_text())["requests"][0]
    assert summary["k"] == 4 and summary["steps"] <= 3
    assert summary["before"]["forget/acc"] == 1.0
    assert {"retain/acc", "test/acc", "mia/efficacy"} <= set(summary["after"])


def test_print_config_shows_the_resolved_request(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIG), "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: lightning_unlearn.InstanceUnlearning" in out and "forget_loss:" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.checkpoint", "/nonexistent/model.pt"], "`checkpoint` file '/nonexistent/model.pt' does not exist."),
        (["--model.classifier", "no.such.Module"], "no.such.Module"),
    ],
)
def test_fit_errors_end_with_one_line(extra, message, capsys) -> None:
    code = main(["fit", "--config", str(CONFIG), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightning-unlearn: error:") and message in err[0]


def test_bad_yaml_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["fit", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightning-unlearn: error:")
