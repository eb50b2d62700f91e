"""The console script: demo, config, fit (LightningCLI) with the shipped digits config, verify, one-line errors."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from lightning_unlearn.cli import QUIET_LOGGERS, main, shipped_configs
from lightning_unlearn.data import ForgetSet
from lightning_unlearn.datasets import DigitsDataset
from lightning_unlearn.receipts import model_hash
from tests.conftest import fresh_launch_env

CONFIG = Path(__file__).parents[1] / "lightning_unlearn" / "configs" / "digits.yaml"
FORGET = [0]  # the first instance of the shipped request: about 60 steps with the defaults
#: what Lightning prints at info level (accelerators, tips, the model summary, the seed): out of the default output
LIGHTNING_CHATTER = ("GPU available", "TPU available", "Tip:", "litlogger", "| Name", "Trainable params", "Seed set")


def _fit_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(CONFIG), "--data.forget_indices", json.dumps(FORGET),
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
        "--trainer.check_val_every_n_epoch", "50", *extra,
    ]  # fmt: skip


def test_fit_runs_the_shipped_config_to_completion_and_its_receipt_verifies(
    _pretrained_digits, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the config's receipt_dir is relative
    pretrained = model_hash(_pretrained_digits)
    assert main(_fit_args(tmp_path)) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())["requests"][0]
    assert summary["unlearned"] is True and summary["k"] == 1 and not summary["restored"]
    assert summary["remaining_after"] == 0 and summary["after"]["forget/acc"] == 0.0
    assert summary["after"]["test/acc"] > 0.9 and summary["after"]["retain/acc"] > 0.9
    assert "| forget acc   |  100.0% |    0.0% |" in out
    weights = tmp_path / "unlearned_classifier.pt"
    assert f"unlearned classifier: {weights}" in out
    assert model_hash(torch.load(weights, weights_only=True)) != pretrained
    receipts = re.findall(r"^receipt: (.+\.json)$", out, flags=re.MULTILINE)
    assert receipts == [str(next((tmp_path / "unlearn_output" / "fit_digits" / "receipts").glob("*.json")))]

    forget = ForgetSet.from_dataset(DigitsDataset("train"), FORGET)
    torch.save({"inputs": forget.inputs, "labels": forget.labels}, tmp_path / "forget.pt")
    verify = ["verify", "--receipt", receipts[0], "--model", str(weights), "--forget", str(tmp_path / "forget.pt")]
    assert main([*verify, "--model-class", "lightning_unlearn.models.SmallCNN"]) == 0
    assert capsys.readouterr().out.startswith("VERIFIED: receipt ")


def test_fit_that_runs_out_of_steps_exits_1_with_the_reason_last(
    _pretrained_digits, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # without the last-layer edit (on by default, it finishes a request whose budget runs out) one step cannot do it
    config = yaml.safe_load(CONFIG.read_text())
    unlearning = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("InstanceUnlearning"))
    unlearning["init_args"]["edit"] = unlearning["init_args"]["fisher_edit"] = None
    no_edit = tmp_path / "no_edit.yaml"
    no_edit.write_text(yaml.safe_dump(config))
    args = _fit_args(tmp_path, "--trainer.max_epochs", "1")
    args[args.index(str(CONFIG))] = str(no_edit)
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (
        "lightning-unlearn: request failed: 1 of 1 instances still remembered after 1 steps; the original weights were"
        " restored; no weights written"
    )
    assert "| forget acc" not in captured.out and "receipt:" not in captured.out
    summary = json.loads((tmp_path / "summary.json").read_text())["requests"][0]
    assert summary["unlearned"] is False and summary["restored"] is True and summary["steps"] == 1
    assert not (tmp_path / "unlearned_classifier.pt").exists()


def test_verify_with_half_of_the_forget_data_says_how_many_are_missing(digits, digits_cnn, tmp_path, capsys) -> None:
    from lightning_unlearn.receipts import make_receipt, write_receipt

    x, y = digits.x_train[:8], digits.y_train[:8]
    digest = model_hash(digits_cnn)
    receipt = write_receipt(make_receipt(x, y, "misclassify", digest, digest, {}, {"unlearned": True}), tmp_path)
    torch.save(digits_cnn, tmp_path / "model.pt")
    torch.save({"inputs": x[:4], "labels": y[:4]}, tmp_path / "half.pt")
    torch.save({"inputs": digits.x_train[4:12], "labels": digits.y_train[4:12]}, tmp_path / "shifted.pt")
    args = ["verify", "--receipt", str(receipt), "--model", str(tmp_path / "model.pt"), "--forget"]
    assert main([*args, str(tmp_path / "half.pt")]) == 1
    out = capsys.readouterr().out
    assert "- the forget data lacks 4 of the receipt's 8 instances (it holds 4 instances)\n" in out
    assert "not in the receipt" not in out
    assert main([*args, str(tmp_path / "shifted.pt")]) == 1
    out = capsys.readouterr().out
    assert "- the forget data lacks 4 of the receipt's 8 instances (it holds 8 instances)\n" in out
    assert "- 4 of the 8 instances of the forget data are not in the receipt\n" in out


def test_config_prints_the_shipped_request_which_finds_its_checkpoint_in_the_cache(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sorted(shipped_configs()) == ["cifar10_resnet18", "digits"]
    assert main(["config", "digits"]) == 0
    text = capsys.readouterr().out
    assert text == CONFIG.read_text()
    assert "checkpoint: cache:digits_small_cnn_seed0_ep30.pt" in text and "~/.cache" not in text.split("#")[0]
    (tmp_path / "request.yaml").write_text(text)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "empty-cache"))
    assert main(["fit", "--config", str(tmp_path / "request.yaml")]) == 2
    expected = (
        f"lightning-unlearn: error: `checkpoint` file '{tmp_path / 'empty-cache' / 'digits_small_cnn_seed0_ep30.pt'}'"
        " does not exist (`lightning-unlearn demo` pre-trains the digits CNN and caches it there).\n"
    )
    assert capsys.readouterr().err == expected


def test_print_config_shows_the_resolved_request(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIG), "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: lightning_unlearn.InstanceUnlearning" in out and "forget_loss:" in out
    assert "class_path: lightning_unlearn.progress.UnlearningProgressBar" in out


def test_fit_help_is_short_and_the_classifier_option_names_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 600  # 1,474 lines when every torch module was listed
    option = out[out.index("  --model.classifier CLASSIFIER") :].split("\n  --")[0]
    assert "lightning_unlearn.models.SmallCNN" in option and "torchvision.models.resnet18" in option
    assert len(option.splitlines()) < 12 and "more known)" in option
    assert ":class:" not in out[out.index("--model CONFIG") - 200 : out.index("--model CONFIG")]


def _option_help(option: str, columns: int, monkeypatch: pytest.MonkeyPatch, capsys) -> list[str]:
    """The help lines of ``option`` in ``fit --help`` at ``columns`` columns (after the line that names it)."""
    monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    block = out[out.index(f"\n  --{option} ") + 1 :].split("\n  --")[0]
    return [line.strip() for line in block.splitlines()[1:]]


@pytest.mark.parametrize("option", ["model.classifier", "trainer.strategy"])
def test_fit_help_in_a_narrow_terminal_wraps_the_same_short_list(option: str, capsys, monkeypatch) -> None:
    """At 60 columns argparse cuts class paths longer than a line (34 columns of help); the short list is the one
    printed at 200 columns, wrapped as argparse wraps help text (whole paths where they fit, cut only at line ends)."""
    wide = " ".join(_option_help(option, 200, monkeypatch, capsys))
    assert re.search(r", any class path, e\.g\. [^ ]+, [^ ]+, [^ ]+, [^ ]+ \(\d+ more known\)\)$", wide), wide
    assert _option_help(option, 60, monkeypatch, capsys) == textwrap.wrap(wide, 60 - 2 - 24)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.checkpoint", "/nonexistent/model.pt"], "`checkpoint` file '/nonexistent/model.pt' does not exist."),
        (["--model.classifier", "no.such.Module"], "no.such.Module"),
        (
            ["--model.num_classes", "5"],
            "`model.num_classes` is 5 but the classifier returns 10 logits per instance; set `--model.num_classes 10`"
            " or change the classifier.",
        ),
        (
            ["--model.classifier.init_args.width", "16"],
            "do not fit the classifier: tensor '0.weight' has shape [32, 1, 3, 3] in the file but [16, 1, 3, 3] in the"
            " classifier.",
        ),
    ],
)
def test_fit_errors_end_with_one_line_naming_the_cause(_pretrained_digits, extra, message, tmp_path, capsys) -> None:
    code = main(["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(tmp_path), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lightning-unlearn: error:") and message in err[-1]
    assert not list(tmp_path.rglob("*.json"))  # nothing ran


def test_bad_yaml_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["fit", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightning-unlearn: error:")


def test_demo_with_the_progress_bar_and_retraining_prints_at_most_40_lines(_pretrained_digits, tmp_path: Path) -> None:
    env = {**fresh_launch_env(), "COLUMNS": "120", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lightning_unlearn.cli", "demo", "--k", "1", "--out-dir", str(tmp_path / "d")]
    done = subprocess.run([*command, "--compare-retrain"], env=env, capture_output=True, timeout=300, cwd=tmp_path)
    stdout = done.stdout.decode()  # bytes: text mode would turn "\r" into new lines
    assert done.returncode == 0, (stdout + done.stderr.decode())[-3000:]
    lines = stdout.rstrip("\n").split("\n")
    assert len(lines) <= 40, stdout[-3000:]
    assert "\r" not in stdout  # not a terminal: the bar prints a line every 50 steps and its final line
    bar = [line for line in lines if "request 0:" in line]
    assert 1 <= len(bar) <= 3 and "unlearned=1/1" in bar[-1] and "test/acc=0.9" in bar[-1], bar
    assert re.search(r"\| \d+/1000 \[", bar[-1]), bar
    assert not any(word in done.stderr.decode() for word in LIGHTNING_CHATTER), done.stderr.decode()[-3000:]
    assert "Validation" not in stdout and "Epoch " not in stdout
    assert "| metric       |  before |   after | retrain |" in stdout
    forget_row = next(line for line in lines if line.startswith("| forget acc "))
    assert forget_row.startswith("| forget acc   |  100.0% |    0.0% |"), forget_row
    assert re.search(r"seconds: [\d.]+ \(retraining without them: [\d.]+s\), samples: .+, all unlearned: True", stdout)
    assert os.path.isfile(tmp_path / "d" / "summary.json")


def test_demo_with_a_retained_sample_unlearns_and_plots(_pretrained_digits, tmp_path: Path) -> None:
    from lightning_unlearn.demo import demo

    result = demo(k=2, seed=1, progress=False, out_dir=tmp_path, retain_fraction=0.05)
    assert result["after"]["forget/acc"] == 0.0 and result["after"]["test/acc"] >= result["before"]["test/acc"] - 0.02
    summary = json.loads((tmp_path / "summary.json").read_text())["requests"][0]
    assert summary["unlearned"] is True
    assert (tmp_path / "curves.png").stat().st_size > 0
    with pytest.raises(ValueError, match=re.escape("`retain_fraction` must be in [0, 1], got 1.5.")):
        demo(k=2, progress=False, out_dir=tmp_path, retain_fraction=1.5)


def test_fit_with_the_progress_bar_disabled_runs_the_shipped_digits_config(
    _pretrained_digits, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23: the shipped configs list an UnlearningProgressBar; ``--trainer.enable_progress_bar false`` used to
    end in Lightning's MisconfigurationException. The flag removes the bar and the request runs."""
    monkeypatch.chdir(tmp_path)
    assert main(_fit_args(tmp_path, "--trainer.enable_progress_bar", "false")) == 0
    captured = capsys.readouterr()
    assert "request 0:" not in captured.out and "\r" not in captured.out  # no bar
    assert "Traceback" not in captured.err
    assert "| forget acc   |  100.0% |    0.0% |" in captured.out
    summary = json.loads((tmp_path / "summary.json").read_text())["requests"][0]
    assert summary["unlearned"] is True and summary["k"] == 1


class _LocalCIFAR10(torch.utils.data.Dataset):
    """Stands in for ``torchvision.datasets.CIFAR10`` (no data here): 16 random 32x32 RGB images, same arguments."""

    def __init__(self, root: str, train: bool = True, transform=None, target_transform=None, download=False) -> None:
        generator = torch.Generator().manual_seed(int(train))
        self.images = torch.rand(16, 3, 32, 32, generator=generator)
        self.labels = torch.randint(0, 10, (16,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def test_the_shipped_cifar10_config_builds_its_trainer_without_the_bar(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CIFAR-10 config needs data and weights this machine does not have: its parsing and Trainer construction
    with ``--trainer.enable_progress_bar false`` (the dataset replaced, the request itself not run)."""
    import lightning as L
    import torchvision
    from lightning.pytorch.callbacks import ProgressBar

    from lightning_unlearn import InstanceUnlearning

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _LocalCIFAR10)
    (tmp_path / "forget_indices.txt").write_text("0\n1\n")
    trainers: list[L.Trainer] = []
    monkeypatch.setattr(L.Trainer, "fit", lambda self, *args, **kwargs: trainers.append(self))
    config = str(shipped_configs()["cifar10_resnet18"])
    args = ["fit", "--config", config, "--model.checkpoint", "null", "--trainer.logger", "false"]
    assert main([*args, "--trainer.enable_progress_bar", "false"]) == 0
    (trainer,) = trainers
    assert trainer.progress_bar_callback is None
    assert not [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
    (unlearning,) = [c for c in trainer.callbacks if isinstance(c, InstanceUnlearning)]
    assert unlearning.max_steps == 1000 and unlearning.anchors is not None and unlearning.anchors.per_instance == 21
    assert trainer.precision == "bf16-mixed" and trainer.check_val_every_n_epoch == 50
    assert main(args) == 0  # without the flag: the config's bar
    assert type(trainers[1].progress_bar_callback).__name__ == "UnlearningProgressBar"
    assert "Traceback" not in capsys.readouterr().err


def test_fit_prints_the_bar_the_retained_sample_the_table_with_its_cost_and_the_paths_only(
    _pretrained_digits, tmp_path: Path, capfd, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(_fit_args(tmp_path, "--trainer.max_epochs", "2")) == 0  # two steps, then the last-layer edit
    out, err = capfd.readouterr()
    assert err == "" and not any(word in out for word in LIGHTNING_CHATTER), (out + err)[-3000:]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("lightning")] == []  # Lightning's info
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    assert {name: logging.getLogger(name).level for name in QUIET_LOGGERS} == levels  # restored
    lines = [line for line in out.split("\n") if line]  # not a terminal: the bar prints lines, no "\r" redraws
    bar = [line for line in lines if line.startswith("request 0:")]
    assert bar and lines[: len(bar)] == bar and "unlearned=1/1" in bar[-1], lines  # the bar first
    rest = lines[len(bar) :]
    assert rest[0] == "retained sample: 72 training instances outside the forget set (--data.retain_fraction 0: none)"
    assert rest[1:3] == ["| metric       |  before |   after |", "|--------------|---------|---------|"]
    rows = [line.split("|")[1].strip() for line in rest[3:7]]
    assert rows == ["forget acc", "retain acc", "test acc", "MIA efficacy"]
    samples = r"[\d,]+ \(= [\d.]+ epochs of the 1,437 training instances\)"
    assert re.fullmatch(rf"steps: \d+, seconds: [\d.]+, samples: {samples}, all unlearned: True", rest[7]), rest[7]
    assert [line.split(":")[0] for line in rest[8:]] == ["receipt", "unlearned classifier", "summary"]
    assert len(rest) == 11  # nothing after the paths
    receipt = json.loads(Path(rest[8].split(": ", 1)[1]).read_text())
    assert receipt["retained_sample"] == 72 and receipt["method"]["plugins"]["retain_distill"]["size"] == 72


def test_fit_verbose_brings_lightning_back_and_retain_fraction_0_turns_the_sample_off(
    _pretrained_digits, tmp_path: Path, capfd, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    args = _fit_args(tmp_path, "--trainer.max_epochs", "2", "--data.retain_fraction", "0", "--verbose")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    out = capfd.readouterr().out
    messages = "\n".join(r.getMessage() for r in caplog.records)  # the log lines pytest captures instead of stderr
    assert "GPU available" in messages and "Trainable params" in messages and "Seed set to 0" in messages
    assert [w for w in caught if "LeafSpec" in str(w.message)]
    assert "retained sample: none (forget set only)\n" in out
    receipt = json.loads(next((tmp_path / "unlearn_output" / "fit_digits" / "receipts").glob("*.json")).read_text())
    assert receipt["retained_sample"] == 0 and "retain_distill" not in receipt["method"]["plugins"]
