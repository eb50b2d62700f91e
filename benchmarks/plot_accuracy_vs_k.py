"""Plot test accuracy after unlearning against k, one line per method, from digits benchmark JSON files.

    python benchmarks/plot_accuracy_vs_k.py benchmarks/results/digits_main.json benchmarks/results/digits_neggrad.json \
        --out docs/img/accuracy_vs_k.png

Files are merged as in ``benchmarks/report.py`` (a later file's rows replace the same method, k and seed). Each point is
the mean over seeds; the error bar spans the lowest and highest seed. The legend gives how many runs unlearned every
instance (a method that does not forget keeps its accuracy for free).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report import merge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("docs/img/accuracy_vs_k.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = merge(args.files)
    pretrained = rows[0]["pretrained_test_acc"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method in dict.fromkeys(r["method"] for r in rows):
        ks = sorted({r["k"] for r in rows if r["method"] == method})
        values = [[100 * r["test_acc"] for r in rows if r["method"] == method and r["k"] == k] for k in ks]
        means = [statistics.fmean(v) for v in values]
        low = [m - min(v) for m, v in zip(means, values)]
        high = [max(v) - m for m, v in zip(means, values)]
        group = [r for r in rows if r["method"] == method]
        unlearned = sum(bool(r["unlearned"]) for r in group)
        done = "reference" if method == "retrain" else f"{unlearned}/{len(group)} unlearned"
        ax.errorbar(ks, means, yerr=[low, high], marker="o", capsize=3, label=f"{method} ({done})")
    ax.axhline(100 * pretrained, color="grey", linestyle="--", linewidth=1, label="pre-trained")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (instances forgotten)")
    ax.set_ylabel("test accuracy after (%)")
    ax.set_title("scikit-learn digits, small CNN, misclassify mode")
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
