"""Plots of an unlearning run (matplotlib, an optional dependency: ``lightning-unlearn[demo]``)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_unlearn.io import atomic_write_text, json_safe


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
