"""Merge benchmark JSON files into the markdown tables of docs/benchmarks.md.

    python benchmarks/report.py benchmarks/results/digits_main.json benchmarks/results/digits_neggrad.json ...

Rows of a method that appears in a later file replace that method's rows from earlier files (a re-run wins).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from unlearn_digits import table


def merge(paths: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        new = json.loads(path.read_text())["rows"]
        replaced = {(r["method"], r["k"], r["seed"]) for r in new}
        rows = [r for r in rows if (r["method"], r["k"], r["seed"]) not in replaced] + new
    return rows


def main() -> None:
    rows = merge([Path(p) for p in sys.argv[1:]])
    print(table(rows))


if __name__ == "__main__":
    main()
