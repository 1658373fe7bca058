"""How long grading takes: one submission, and a class of 30 graded with ``--jobs 2``.

    python benchmarks/grade_class.py [--students 30] [--jobs 2]

Each measurement runs ``python -m course_lib.grading`` as a teacher would, start-up
included. The class is copies of ``solutions/01_attention_from_the_formula.ipynb`` plus a
few broken submissions (the generated exercise, a syntax error, a wrong task, an exception
at the top level). One submission is also graded with ``--insecure-no-sandbox``: the
difference is what the bubblewrap sandbox costs per submission. With ``--dask``, the class is
graded again on a Dask LocalCluster of ``--jobs`` workers (``--scheduler local``), which must
give the same CSV. Targets (docs/design.md § 6):
one submission under 15 s, a class of 30 under 3 minutes with ``--jobs 2``. The load
average is printed too: on a shared machine the times depend on what else runs.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "01_attention_from_the_formula.ipynb"
EXERCISE = ROOT / "exercises" / "01_attention_from_the_formula.ipynb"


def broken(path: Path, old: str, new: str) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if old in cell.source:
            cell.source = cell.source.replace(old, new)
            return nb
    raise ValueError(f"{old!r} not found in {path.name}")


def as_submitted(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A solution as a student submits it: with the exercise's metadata, which names the exercise."""
    nb.metadata["course"] = nbformat.read(EXERCISE, as_version=4).metadata["course"]
    return nb


def make_class(folder: Path, students: int) -> dict[str, str]:
    """Write the class's notebooks (named after the students); return the expected kind of each."""
    kinds = {}
    bad = {
        "not_started": nbformat.read(EXERCISE, as_version=4),
        "syntax_error": broken(SOLUTION, "def softmax(x, axis=-1):", "def softmax(x, axis=-1)"),
        "no_scale": broken(SOLUTION, "/ np.sqrt(d)  # (..., len_q, len_k)", "# (..., len_q, len_k)"),
        "top_level_error": broken(SOLUTION, "check_alignment(align)", "check_alignment(align)\nraise RuntimeError"),
    }
    solved = as_submitted(nbformat.read(SOLUTION, as_version=4))
    for i in range(students - len(bad)):
        nbformat.write(solved, folder / f"student{i + 1:02d}.ipynb")
        kinds[f"student{i + 1:02d}"] = "solution"
    for name, nb in bad.items():
        nbformat.write(as_submitted(nb), folder / f"{name}.ipynb")
        kinds[name] = name
    return kinds


def grade(args: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "course_lib.grading", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
    return time.perf_counter() - start, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dask", action="store_true", help="also grade the class with --scheduler local")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="grade-bench-") as tmp:
        tmp = Path(tmp)
        load = os.getloadavg()[0]
        seconds, code = grade([str(SOLUTION), "--out", str(tmp / "one")])
        rows.append(("one submission (the solution)", seconds, 15.0, code))
        bare, code = grade([str(SOLUTION), "--out", str(tmp / "bare"), "--insecure-no-sandbox"])
        rows.append(("the same, --insecure-no-sandbox", bare, 15.0, code))
        sandbox_cost = seconds - bare
        folder = tmp / "class"
        folder.mkdir()
        kinds = make_class(folder, args.students)
        seconds, code = grade([str(folder), "--out", str(tmp / "class-out"), "--jobs", str(args.jobs)])
        rows.append((f"class of {args.students}, --jobs {args.jobs}", seconds, 180.0, code))
        grades = {r["student"]: r for r in csv.DictReader(open(tmp / "class-out" / "grades.csv"))}
        same_on_dask = None
        if args.dask:
            seconds, code = grade([str(folder), "--out", str(tmp / "dask-out"), "--jobs", str(args.jobs),
                                   "--scheduler", "local"])  # fmt: skip
            rows.append((f"the same, --scheduler local ({args.jobs} workers)", seconds, 180.0, code))
            on_dask = {r["student"]: r for r in csv.DictReader(open(tmp / "dask-out" / "grades.csv"))}
            same_on_dask = on_dask == grades
        load = max(load, os.getloadavg()[0])
    print(f"machine: {os.cpu_count()} CPUs, load average up to {load:.1f} during the run (shared machine)")
    print(f"{'measurement':<40} {'seconds':>8} {'target':>8}  exit")
    for name, seconds, target, code in rows:
        print(f"{name:<40} {seconds:8.1f} {target:8.0f}  {code}")
    print(f"sandbox cost per submission: {sandbox_cost:+.1f} s (bubblewrap around the notebook's box)")
    full = sum(g["total"] == g["max"] for g in grades.values())
    wrong = [s for s, g in grades.items() if (kinds[s] == "solution") != (g["total"] == g["max"])]
    print(f"class: {full} full marks, {len(grades) - full} not; misgraded: {wrong or 'none'}")
    if same_on_dask is not None:
        print(f"Dask gives the same CSV as --jobs {args.jobs}: {'yes' if same_on_dask else 'NO'}")
    return 1 if wrong or same_on_dask is False or any(code != 0 for *_, code in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
