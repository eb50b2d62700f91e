"""The record of an unlearning run: summaries, the trace of logged values, their JSON and plot (matplotlib, an optional
dependency: ``lightning-unlearn[demo]``), and the checkpoint state of the requests.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_unlearn.io import atomic_write_text, json_safe
from lightning_unlearn.summary import RequestSummary

if TYPE_CHECKING:
    from lightning_unlearn.plugins.base import UnlearningPlugin
    from lightning_unlearn.request import ForgetPart, Request


def write_summary(requests: Sequence[dict[str, Any]], trace: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Write request summaries and a trace of logged values as JSON (atomically; ``nan`` as ``null``).

    Examples:
        >>> import tempfile
        >>> trace = [{"step": 1.0, "forget/acc": float("nan")}]
        >>> file = write_summary([{"k": 1}], trace, Path(tempfile.mkdtemp()) / "s.json")
        >>> json.loads(file.read_text())["trace"]
        [{'step': 1.0, 'forget/acc': None}]
    """
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(file, json.dumps(json_safe({"requests": list(requests), "trace": list(trace)}), indent=1) + "\n")
    return file


def plot_trace(trace: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Plot every logged series of ``trace`` (``InstanceUnlearning.trace``) against the step, one line per name, the
    instances still remembered on a second axis and the end of each request as a dashed line.

    Raises:
        ModuleNotFoundError: if matplotlib is not installed.
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError("plotting needs matplotlib: pip install 'lightning-unlearn[demo]'.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k for point in trace for k in point if k not in ("request", "step") and k != "forget/remaining"})
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        points = [(p["step"], p[name]) for p in trace if name in p and p[name] == p[name]]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=name, marker="o" if len(points) < 30 else None, markersize=3)
    ends = {p["request"]: p["step"] for p in trace if "request" in p and "step" in p}
    for end in ends.values():  # the last step of each request
        ax.axvline(end, color="grey", linestyle="--", linewidth=1)
    remaining = [(p["step"], p["forget/remaining"]) for p in trace if "forget/remaining" in p]
    if remaining:
        twin = ax.twinx()
        xs, ys = zip(*remaining)
        twin.step(xs, ys, where="post", color="black", alpha=0.5, label="forget/remaining")
        twin.set_ylabel("instances still remembered")
        twin.set_ylim(bottom=0)
        twin.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("accuracy / agreement")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center right", fontsize=8)
    else:  # a request finished before any step (the Fisher edit) logs no per-step point
        ax.text(0.5, 0.5, "no optimizer step: finished before the first step", ha="center", transform=ax.transAxes)
    ax.set_title("Unlearning request")
    fig.tight_layout()
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=110)
    plt.close(fig)
    return file


class RequestRecord(Callback):
    """What :class:`~lightning_unlearn.InstanceUnlearning` keeps of its requests: :attr:`history` (one
    :class:`~lightning_unlearn.RequestSummary` per request), :attr:`trace` (the values at each stop check and
    validation), :attr:`receipts`; their JSON and plot; the checkpoint state (the history, what the plugins carry
    between requests and the request in progress, never forget data).
    """

    history: list[RequestSummary]
    trace: list[dict[str, float]]
    receipts: list[Path]
    keep_forget_data: bool
    plugins: list[UnlearningPlugin]
    _kept: list[ForgetPart]
    _request: Request | None
    _resume: dict[str, Any] | None

    @property
    def summary(self) -> RequestSummary | None:
        """The summary of the last request (``None`` before the first one ends); after ``ddp_spawn``/``ddp_fork``, rank
        0's, brought back to the main process with :attr:`history`, :attr:`trace` and :attr:`receipts`.
        """
        return self.history[-1] if self.history else None

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"history": [s.to_dict() for s in self.history], "in_progress": False}
        carried = {p.name: p.sequence_state() for p in self.plugins}
        state["plugins"] = {name: part for name, part in carried.items() if part}  # weights or values, never data
        if self._request is not None:
            state.update(in_progress=True, request=self._request.state_dict())
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [RequestSummary.from_dict(s) for s in state_dict.get("history", [])]
        self._resume = dict(state_dict) if state_dict.get("in_progress") else None
        carried = state_dict.get("plugins", {})
        for plugin in self.plugins:
            if plugin.name in carried:
                plugin.load_sequence_state(carried[plugin.name])
        if self.keep_forget_data and self.history and not self._kept:
            rank_zero_warn(
                f"`keep_forget_data=True`: the forget sets of this checkpoint's {len(self.history)} earlier requests"
                " are not in it (checkpoints never hold forget data), so later requests do not keep them unlearned."
            )

    def save_summary(self, path: str | Path) -> Path:
        """Write the summaries of all requests and the trace of logged values as JSON (call it on rank zero)."""
        return write_summary([s.to_dict() for s in self.history], self.trace, path)

    def plot(self, path: str | Path) -> Path:
        """Plot the trace against steps as a PNG (needs matplotlib: ``pip install 'lightning-unlearn[demo]'``)."""
        return plot_trace(self.trace, path)

    def _returned_state(self) -> dict[str, Any]:
        """What rank 0's worker hands back to this callback in the main process (``ddp_spawn``, ``ddp_fork``)."""
        return {"history": self.history, "trace": self.trace, "receipts": self.receipts}
