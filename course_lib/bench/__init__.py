"""Benchmarks: ``python -m course_lib.bench --suite NAME [--csv PATH] [--quick]``.

Each suite is a module of this package with a function ``run(quick: bool) -> list[dict]``.
A row is one measurement; the runner prints the rows as a table and can write them
as CSV. Every suite measures its own baseline in the same run and reports ratios
against it, so numbers from different machines are never compared directly.
"""

from __future__ import annotations

import csv
import importlib
from collections.abc import Sequence
from pathlib import Path

SUITES = ("complexity", "efficient", "sparse")


def run_suite(name: str, quick: bool = False) -> list[dict]:
    """Run one suite and return its rows."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.run(quick=quick)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def format_table(rows: Sequence[dict]) -> str:
    """Rows of dicts as an aligned text table; columns in first-seen order."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_csv(rows: Sequence[dict], path: str | Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
