"""The documentation cannot drift from the code: every Python snippet of ``README.md`` and ``docs/*.md`` runs here on
real digits data, the README's YAML for a retained sample runs in the shipped digits config, every shipped config loads
its model's weights and runs a request, and the messages the README's "Inputs and limits" section quotes are the ones
the code raises or warns.

Snippets run as written, in a namespace that holds the names they use (``x_forget``, ``y_forget``, ``classifier``, ...:
the pre-trained digits CNN and instances it classifies correctly), with one change: ``InstanceUnlearning``'s step budget
is capped at :data:`SNIPPET_MAX_STEPS`, so each request ends through the last-layer edit in seconds. A snippet that
calls a renamed or removed argument raises, and its test fails.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor, nn
from torch.utils.data import Dataset

from lightning_unlearn import ForgetSet, InstanceUnlearning, PGDAnchors, ShiftedCopies, UnlearningModule
from lightning_unlearn.cli import main, shipped_configs
from lightning_unlearn.datasets import Split
from lightning_unlearn.functional.losses import FORGET_LOSS_KINDS
from lightning_unlearn.plugins import FisherEdit, LastLayerEdit
from lightning_unlearn.request import Request, RequestContext
from tests.conftest import forget_indices

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SNIPPET_MAX_STEPS = 30  # the budget every snippet's request runs with (the edit finishes what the steps leave)
SNIPPET_K = 8  # forget instances in a snippet's namespace


@dataclass(frozen=True)
class Block:
    """A fenced code block of a documentation page."""

    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def fenced_blocks(path: Path, lang: str) -> list[Block]:
    """The ```` ```lang ```` blocks of a Markdown page, in order."""
    blocks, lines = [], path.read_text().splitlines()
    opening: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if opening is None and stripped.startswith("```"):
            opening, body = (number, stripped[3:].strip()), []
        elif opening is not None and stripped == "```":
            if opening[1] == lang:
                blocks.append(Block(path.relative_to(REPO).as_posix(), opening[0], lang, "\n".join(body) + "\n"))
            opening = None
        elif opening is not None:
            body.append(line)
    assert opening is None, f"{path}: the block opened on line {opening[0]} is never closed"
    return blocks


PYTHON_BLOCKS = [block for page in PAGES for block in fenced_blocks(page, "python")]

#: Python snippets that cannot run here, by page and a line of their code, with the reason. Keep it short: every
#: snippet that can run on digits on a CPU must.
CANNOT_RUN: dict[tuple[str, str], str] = {}


def _cannot_run(block: Block) -> str | None:
    for (page, line), reason in CANNOT_RUN.items():
        if block.page == page and line in block.code:
            return reason
    return None


def test_the_snippets_are_found_and_few_are_left_out() -> None:
    pages = {block.page for block in PYTHON_BLOCKS}
    assert {"README.md", "docs/getting-started.md", "docs/concepts.md", "docs/faq.md", "docs/cli.md"} <= pages
    assert len(PYTHON_BLOCKS) >= 7
    for key in CANNOT_RUN:  # each entry names exactly one snippet that exists
        assert sum(_cannot_run(b) is not None and key[0] == b.page and key[1] in b.code for b in PYTHON_BLOCKS) == 1
    assert len(CANNOT_RUN) <= 2


# ----------------------------------------------------------------------------------------------- the namespace
@pytest.fixture
def snippet_namespace(
    digits: Split, digits_cnn: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The names the snippets use, on real data, in a fresh working folder; ``InstanceUnlearning`` budget capped."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "request.yaml").write_text(shipped_configs()["digits"].read_text())  # cli.md: `config digits > ...`
    original_init = InstanceUnlearning.__init__

    def capped_init(self: InstanceUnlearning, *args: Any, **kwargs: Any) -> None:
        kwargs["max_steps"] = min(kwargs.get("max_steps", SNIPPET_MAX_STEPS), SNIPPET_MAX_STEPS)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(InstanceUnlearning, "__init__", capped_init)
    with torch.no_grad():
        correct = (digits_cnn(digits.x_train).argmax(-1) == digits.y_train).nonzero().flatten()
    order = correct[forget_indices(len(correct), len(correct))]
    forget, rest = order[:SNIPPET_K], order[SNIPPET_K:]
    x_forget, y_forget = digits.x_train[forget], digits.y_train[forget]
    return {
        "x_forget": x_forget,
        "y_forget": y_forget,
        "t_forget": (y_forget + 1) % 10,
        "classifier": digits_cnn,
        "model": digits_cnn,
        "x_retain": digits.x_train[rest],
        "y_retain": digits.y_train[rest],
        "x_sample": digits.x_train[rest[:70]],
        "x_test": digits.x_test,
        "y_test": digits.y_test,
        "_pretrained": copy.deepcopy(digits_cnn.state_dict()),
    }


def _fitted_requests(namespace: dict[str, Any]) -> list[InstanceUnlearning]:
    trainers = [value for value in namespace.values() if isinstance(value, L.Trainer)]
    return [c for t in trainers for c in t.callbacks if isinstance(c, InstanceUnlearning) and c.summary is not None]


def _check_request(namespace: dict[str, Any]) -> None:
    """The snippet ran a request: every instance unlearned, in the classifier object it passed."""
    [callback] = _fitted_requests(namespace)
    summary = callback.summary
    assert summary is not None and summary.unlearned and summary.k == SNIPPET_K and summary.steps <= SNIPPET_MAX_STEPS
    assert summary.finished_by in ("fisher_edit", "steps", "steps+edit", "edit")
    classifier = namespace["classifier"]
    with torch.no_grad():
        assert not (classifier(namespace["x_forget"]).argmax(-1) == namespace["y_forget"]).any()
    changed = [n for n, v in classifier.state_dict().items() if not torch.equal(v, namespace["_pretrained"][n])]
    assert changed


def _check_plugin(namespace: dict[str, Any]) -> None:
    """The snippet built a callback with a plugin: a request with it runs, and the plugin's term is applied."""
    callback = namespace["callback"]
    [plugin] = [p for p in callback.plugins if isinstance(p, namespace["HoldHead"])]
    terms: list[float] = []
    loss_term = plugin.loss_term

    def counted(ctx: RequestContext) -> Tensor:
        term = loss_term(ctx)
        terms.append(float(term.detach()))
        return term

    plugin.loss_term = counted
    module = UnlearningModule(namespace["classifier"], num_classes=10)
    loader = torch.utils.data.DataLoader(ForgetSet(namespace["x_forget"], namespace["y_forget"]), batch_size=32)
    trainer = L.Trainer(max_epochs=-1, callbacks=[callback], logger=False, enable_progress_bar=False)
    trainer.fit(module, loader)
    assert callback.summary is not None and callback.summary.unlearned
    assert len(terms) == callback.summary.steps >= 1 and terms[0] == 0.0  # added at every step, from θ₀ on
    assert callback.summary.plugins["hold_head"]["moved"] > 0.0  # its outcome, in its part of the summary
    assert "train/hold_head" in trainer.callback_metrics
    assert plugin._reference is None  # torn down at the end of the request


def _check_normalised_classifier(namespace: dict[str, Any]) -> None:
    classifier = namespace["classifier"]
    assert type(classifier[0]).__name__ == "Normalize"
    assert classifier.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def _check_forget_file(namespace: dict[str, Any]) -> None:
    data = torch.load("forget.pt", weights_only=True)
    assert data["inputs"].shape == (32, 1, 8, 8) and data["labels"].shape == (32,)


def _check_progress_bar(namespace: dict[str, Any]) -> None:
    names = [type(c).__name__ for c in namespace["trainer"].callbacks]
    assert "InstanceUnlearning" in names and "UnlearningProgressBar" in names


def _check_mia(namespace: dict[str, Any]) -> None:
    assert 0.0 <= namespace["value"] <= 1.0


#: what each page's snippets must have done, beyond running (a page's snippets are checked in order)
CHECKS: dict[str, list[Callable[[dict[str, Any]], None]]] = {
    "README.md": [_check_request],
    "docs/getting-started.md": [_check_request],
    "docs/concepts.md": [_check_plugin],
    "docs/faq.md": [_check_normalised_classifier],
    "docs/cli.md": [_check_forget_file, _check_progress_bar],
    "docs/metrics.md": [_check_mia],
}


def _check_for(block: Block) -> Callable[[dict[str, Any]], None] | None:
    on_page = [b for b in PYTHON_BLOCKS if b.page == block.page]
    checks = CHECKS.get(block.page, [])
    index = on_page.index(block)
    return checks[index] if index < len(checks) else None


def test_every_snippet_has_a_check_of_what_it_does() -> None:
    assert all(_check_for(b) is not None or _cannot_run(b) is not None for b in PYTHON_BLOCKS)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_snippet_runs_and_does_what_its_page_says(block: Block, snippet_namespace: dict[str, Any]) -> None:
    reason = _cannot_run(block)
    if reason is not None:
        pytest.skip(reason)
    code = "\n" * block.line + block.code  # tracebacks name the page's own line numbers
    exec(compile(code, block.page, "exec"), snippet_namespace)  # the documentation's own code, as written
    check = _check_for(block)
    assert check is not None
    check(snippet_namespace)


def _defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    return {n: p.default for n, p in inspect.signature(factory).parameters.items() if p.default is not p.empty}


def test_the_defaults_the_pages_state() -> None:
    """The defaults README, concepts, hyper-parameters and the GPU page describe (change them together)."""
    names = ["anchor_loss", "shifted_copies", "fisher_edit", "last_layer_edit"]
    assert [p.name for p in InstanceUnlearning().plugins] == names
    assert _defaults(InstanceUnlearning)["max_steps"] == 1000 and _defaults(InstanceUnlearning)["importance"] is None
    module = _defaults(UnlearningModule)
    assert module["forget_loss"] == "margin" and module["project_gradients"] is False
    assert FORGET_LOSS_KINDS == ("runner_up", "margin", "neg_ce", "random_label")
    hyperparameters = (REPO / "docs" / "hyperparameters.md").read_text()
    assert all(f'`"{kind}"`' in hyperparameters for kind in FORGET_LOSS_KINDS)
    anchors = _defaults(PGDAnchors)
    assert (anchors["eps"], anchors["steps"], anchors["per_instance"], anchors["loss"]) == (None, 10, 21, "kl")
    assert PGDAnchors().radii(torch.zeros(1, 3, 32, 32)) == (2.0, 4.0, 8.0)
    assert _defaults(ShiftedCopies) == {"copies": 20, "max_shift": None, "fill": 0.0, "weight": 10.0, "batch_size": 256}
    fisher = {"layers": 3, "margin": None, "lam": 1e-2, "iterations": 20, "restore": 64, "restore_toward": "auto"}
    assert _defaults(FisherEdit) == fisher | {"reference": None}
    edit = _defaults(LastLayerEdit)
    assert edit == {"margin": 0.1, "lam": 1e-3, "rounds": 3, "select": False, "proxy_copies": 8}


# ------------------------------------------------------------------------------------------- shipped configs
def _callback_args(config: dict[str, Any]) -> dict[str, Any]:
    [unlearning] = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("InstanceUnlearning")]
    return unlearning.setdefault("init_args", {})


def _quiet(config: dict[str, Any], root: Path) -> None:
    config["trainer"].update(logger=False, default_root_dir=str(root), check_val_every_n_epoch=50)
    config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"] if "ProgressBar" not in c["class_path"]]
    config["trainer"]["enable_progress_bar"] = False


def _readme_retain_yaml() -> dict[str, Any]:
    [block] = [b for b in fenced_blocks(REPO / "README.md", "yaml") if "retain:" in b.code]
    return yaml.safe_load(block.code)["retain"]


class RetainedSample(Dataset):
    """Stands for the README's ``my_project.data.RetainedSample``: inputs and labels from a ``torch.save``'d dict."""

    def __init__(self, path: str) -> None:
        data = torch.load(path, weights_only=True)
        self.inputs, self.labels = data["inputs"], data["labels"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.inputs[index], int(self.labels[index])


def test_digits_config_runs_with_the_readme_retained_sample(
    digits: Split,
    _pretrained_digits: nn.Module,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """The shipped digits config, end to end on two of its instances with a 5-step budget (the edit finishes), with
    the README's YAML for a retained sample under the callback (its dataset class stood in for by this module's).
    """
    monkeypatch.chdir(tmp_path)  # the config's receipt_dir and the sample's path are relative
    config = yaml.safe_load(shipped_configs()["digits"].read_text())
    retain = _readme_retain_yaml()
    assert retain["class_path"] == "my_project.data.RetainedSample"
    retain["class_path"] = f"{__name__}.RetainedSample"
    others = [i for i in range(len(digits.y_train)) if i not in set(config["data"]["forget_indices"])][:70]
    torch.save({"inputs": digits.x_train[others], "labels": digits.y_train[others]}, retain["init_args"]["path"])
    config["data"]["forget_indices"] = config["data"]["forget_indices"][:2]
    _callback_args(config).update(max_steps=5, retain=retain)
    _quiet(config, tmp_path)
    path = tmp_path / "request.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path)]) == 0, capsys.readouterr().err[-2000:]
    [summary] = json.loads((tmp_path / "summary.json").read_text())["requests"]
    assert summary["unlearned"] and summary["k"] == 2 and summary["steps"] <= 5
    [receipt] = (tmp_path / "unlearn_output" / "fit_digits" / "receipts").glob("*.json")
    retain = json.loads(receipt.read_text())["method"]["plugins"]["retain_distill"]
    assert retain == {"weight": 10.0, "batch_size": 64, "size": 70}
    assert (tmp_path / "unlearned_classifier.pt").is_file()


class CifarStandIn(Dataset):
    """CIFAR-sized stand-in data (``[3, 32, 32]`` in ``[0, 1]``, labels) read from a ``torch.save``'d dict: CIFAR-10
    itself is not on the test machines.
    """

    def __init__(self, path: str) -> None:
        data = torch.load(path, weights_only=True)
        self.inputs, self.labels = data["inputs"], data["labels"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.inputs[index], int(self.labels[index])


def _example_04() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_04", REPO / "examples" / "04_cifar10_resnet18.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config_classifier(config: dict[str, Any]) -> nn.Module:
    module_name, _, name = config["model"]["classifier"]["class_path"].rpartition(".")
    factory = getattr(importlib.import_module(module_name), name)
    return factory(**config["model"]["classifier"].get("init_args", {}))


def test_cifar_config_and_example_04_agree_on_the_model(tmp_path: Path) -> None:
    """The weights ``examples/04`` saves load into the shipped config's classifier, which then computes the same
    function (normalisation included); both leave the anchors at the package defaults.
    """
    config = yaml.safe_load(shipped_configs()["cifar10_resnet18"].read_text())
    torch.manual_seed(0)
    saved = _example_04().build_classifier().eval()
    torch.save(saved.state_dict(), tmp_path / "resnet18_cifar10.pt")
    loaded = _config_classifier(config)
    loaded.load_state_dict(torch.load(tmp_path / "resnet18_cifar10.pt", weights_only=True))  # strict
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), saved(x))
    assert config["model"]["checkpoint"] == "resnet18_cifar10.pt"  # the file name the example writes
    assert "anchors" not in _callback_args(config)  # eps=None: radii scaled to 32x32 (2, 4, 8), as the FAQ advises
    example = (REPO / "examples" / "04_cifar10_resnet18.py").read_text()
    assert 'InstanceUnlearning(receipt_dir=args.out / "receipts", seed=args.seed)' in example


def test_cifar_config_loads_the_example_weights_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped CIFAR-10 config with CIFAR-sized stand-in data for its datasets: the weights load, a 2-instance
    request runs (anchors cut to 2 per instance and 2 PGD steps, 2 steps, then the edit) and writes its outputs.
    """
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    classifier = _example_04().build_classifier().eval()
    torch.save(classifier.state_dict(), tmp_path / "resnet18_cifar10.pt")
    inputs = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        labels = classifier(inputs).argmax(-1)  # the model "remembers" every instance at the start
    torch.save({"inputs": inputs, "labels": labels}, tmp_path / "data.pt")
    config = yaml.safe_load(shipped_configs()["cifar10_resnet18"].read_text())
    stand_in = {"class_path": f"{__name__}.CifarStandIn", "init_args": {"path": str(tmp_path / "data.pt")}}
    config["data"].update(dataset=stand_in, test_dataset=stand_in, forget_indices=[0, 1])
    config["model"]["checkpoint"] = str(tmp_path / "resnet18_cifar10.pt")
    anchors = {"class_path": "lightning_unlearn.PGDAnchors", "init_args": {"per_instance": 2, "steps": 2}}
    _callback_args(config).update(max_steps=2, anchors=anchors)
    _quiet(config, tmp_path)
    path = tmp_path / "cifar10.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["fit", "--config", str(path)])
    [summary] = json.loads((tmp_path / "summary.json").read_text())["requests"]
    assert code == 0 and summary["k"] == 2 and summary["remaining_before"] == 2 and summary["unlearned"]
    assert summary["finished_by"] in ("fisher_edit", "steps", "steps+edit", "edit") and summary["anchors"] == 4
    assert (tmp_path / "unlearned_classifier.pt").is_file()


def test_every_shipped_config_is_run_above() -> None:
    assert sorted(shipped_configs()) == ["cifar10_resnet18", "digits"]


# --------------------------------------------------------------------------- README: inputs and limits
README = (REPO / "README.md").read_text()


def _in_readme(message: str) -> None:
    assert message in README.replace("\n", " "), f"the README does not quote the message the code gives: {message!r}"


def test_readme_quotes_the_refusals_of_the_inputs(digits: Split, digits_cnn: nn.Module) -> None:
    with pytest.raises(ValueError) as error:
        ForgetSet(torch.randint(0, 50, (4, 6)), torch.tensor([0, 1, 2, 0]))
    _in_readme(str(error.value))
    with pytest.raises(ValueError) as error:
        PGDAnchors(input_range=(0.0, 1.0)).check_inputs(digits.x_train[:32] * 2 - 1)  # images normalised to [-1, 1]
    _in_readme(str(error.value))
    with pytest.raises(ValueError) as error:
        UnlearningModule(digits_cnn, num_classes=5).check_output(digits.x_train[:4])
    _in_readme(str(error.value))


def test_readme_quotes_the_warnings_and_the_strategy_refusal(digits: Split) -> None:
    x = digits.x_train[:4].unsqueeze(1)  # volumes [4, 1, 1, 8, 8]: no copies for them
    request = Request(0, 4, (x, digits.y_train[:4], None), {}, seed=0)
    with pytest.warns(UserWarning) as record:
        assert len(ShiftedCopies().make_inputs(RequestContext(request, None, None))) == 0  # type: ignore[arg-type]
    _in_readme(str(record[0].message))
    request = Request(0, 4, (digits.x_train[:4], digits.y_train[:4], None), {}, seed=0)
    module = UnlearningModule(nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten()), num_classes=10)  # no nn.Linear
    with pytest.warns(UserWarning) as record:
        LastLayerEdit().setup(RequestContext(request, module, None))  # type: ignore[arg-type]
    _in_readme(str(record[0].message))

    trainer = SimpleNamespace(strategy=FSDPStrategy.__new__(FSDPStrategy))  # refused before anything else is read
    with pytest.raises(ValueError) as error:
        InstanceUnlearning().setup(trainer, UnlearningModule(nn.Linear(4, 2), num_classes=2), "fit")  # type: ignore[arg-type]
    _in_readme(str(error.value))
