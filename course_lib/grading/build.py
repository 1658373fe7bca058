"""Write the exercise notebooks from the solution notebooks, their single source.

    course-build-exercises [--check] [--solutions DIR] [--exercises DIR]
    python -m course_lib.grading.build [--check] ...

In ``solutions/NN_*.ipynb`` a code cell marks what the student must write::

    def softmax(x, axis=-1):
        \"\"\"...docstring the student keeps...\"\"\"
        ### BEGIN SOLUTION
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
        ### END SOLUTION

and ``exercises/NN_*.ipynb`` gets, at the marker's indentation::

        # YOUR CODE HERE
        raise NotImplementedError

Lines between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` are dropped.
Outputs and execution counts are cleared. A cell with a solution region must carry
nbgrader's cell metadata (``tools/nbtool.py py2nb`` adds it), so that teachers can
also use ``solutions/`` as nbgrader source notebooks. ``--check`` writes nothing and
exits with 1 when ``exercises/`` differs from what would be written (CI runs it).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError")
TEXT_STUB = "YOUR ANSWER HERE"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"

_REGIONS = {BEGIN_SOLUTION: ("solution", END_SOLUTION), BEGIN_HIDDEN: ("hidden tests", END_HIDDEN)}
_ENDS = {END_SOLUTION: "solution", END_HIDDEN: "hidden tests"}
# Anything that looks like a marker but is not exactly one: a typo here would leak the solution.
_NEAR_MISS = re.compile(r"^#+\s*(BEGIN|END)\s*(SOLUTIONS?|HIDDEN\s*TESTS?)\b", re.IGNORECASE)


class MarkerError(ValueError):
    """A solution notebook whose markers or metadata cannot be turned into an exercise."""


@dataclass(frozen=True)
class Where:
    """A cell, named the way an author finds it: notebook, cell number, grade id."""

    notebook: str
    index: int  # 1-based, counting every cell (markdown included), as in Jupyter's table of cells
    grade_id: str | None = None

    def __str__(self) -> str:
        gid = f" (grade_id {self.grade_id!r})" if self.grade_id else ""
        return f"{self.notebook}, cell {self.index}{gid}"


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def strip_markers(source: str, cell_type: str, where: Where) -> tuple[str, int]:
    """Replace solution regions by a stub and drop hidden-test regions.

    Returns the new source and the number of solution regions found. Raises
    ``MarkerError`` (naming the notebook, cell and line) for unclosed, unmatched,
    nested or misspelled markers.
    """
    out: list[str] = []
    region: tuple[str, str, int] | None = None  # (kind, expected end marker, line number)
    solutions = 0
    for lineno, line in enumerate(source.splitlines(), 1):
        marker = line.strip()
        if marker in _REGIONS:
            kind, end = _REGIONS[marker]
            if region is not None:
                raise MarkerError(
                    f"{where}, line {lineno}: {marker!r} inside the {region[0]} region opened on line "
                    f"{region[2]}; regions cannot nest (close it with {region[1]!r} first)"
                )
            region = (kind, end, lineno)
            if kind == "solution":
                solutions += 1
                if cell_type == "code":
                    out += [_indent(line) + stub for stub in CODE_STUB]
                else:
                    out.append(TEXT_STUB)
        elif marker in _ENDS:
            if region is None or region[1] != marker:
                opened = f" (the open region is {region[0]}, opened on line {region[2]})" if region else ""
                raise MarkerError(f"{where}, line {lineno}: {marker!r} without a matching BEGIN marker{opened}")
            region = None
        elif _NEAR_MISS.match(marker):
            raise MarkerError(
                f"{where}, line {lineno}: {marker!r} looks like a marker but is not one; write exactly "
                f"{BEGIN_SOLUTION!r}, {END_SOLUTION!r}, {BEGIN_HIDDEN!r} or {END_HIDDEN!r}"
            )
        elif region is None:
            out.append(line)
    if region is not None:
        raise MarkerError(f"{where}, line {region[2]}: the {region[0]} region is never closed (add {region[1]!r})")
    return "\n".join(out), solutions


def make_exercise(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The exercise notebook for one solution notebook (``name`` is used in error messages)."""
    nb = copy.deepcopy(solution)
    seen: dict[str, Where] = {}
    for index, cell in enumerate(nb.cells, 1):
        meta = cell.get("metadata", {}).get("nbgrader")
        where = Where(name, index, meta.get("grade_id") if meta else None)
        cell.source, regions = strip_markers(cell.source, cell.cell_type, where)
        if regions and not (meta and meta.get("solution")):
            raise MarkerError(
                f"{where}: has a solution region but no nbgrader solution metadata; name the cell "
                "(`# %% id=task_name` in tools/nbtool.py's percent format) so that py2nb adds it"
            )
        if meta and meta.get("solution") and not regions:
            raise MarkerError(f"{where}: is an nbgrader solution cell without {BEGIN_SOLUTION!r} markers")
        if meta and meta.get("grade_id"):
            if meta["grade_id"] in seen:
                raise MarkerError(f"{where}: grade_id {meta['grade_id']!r} is also used by {seen[meta['grade_id']]}")
            seen[meta["grade_id"]] = where
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    # Lets the grader tell which exercise a renamed notebook (alice.ipynb) is.
    nb.metadata["course"] = {"exercise": Path(name).stem}
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    """The exact text ``nbformat.write`` produces, so that ``--check`` can compare files."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def build(solutions: Path, exercises: Path, *, check: bool = False, out=sys.stdout) -> int:
    """Write (or, with ``check``, compare) every exercise. Returns the exit code."""
    sources = sorted(solutions.glob(NOTEBOOK_GLOB))
    if not sources:
        print(f"no solution notebooks ({NOTEBOOK_GLOB}) in {solutions}", file=out)
        return 2
    problems = []
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        try:
            text = render(make_exercise(nb, f"{solutions.name}/{path.name}"))
        except MarkerError as err:
            print(f"error: {err}", file=out)
            return 2
        target = exercises / path.name
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        if check:
            state = "is missing" if current is None else "differs from its solution notebook"
            problems.append(f"{exercises.name}/{path.name} {state}")
        else:
            exercises.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {exercises.name}/{path.name}", file=out)
    names = {p.name for p in sources}
    for stale in sorted(exercises.glob(NOTEBOOK_GLOB)):
        if stale.name not in names:
            problems.append(f"{exercises.name}/{stale.name} has no solution notebook in {solutions.name}/")
    for problem in problems:
        print(f"{'error' if check else 'warning'}: {problem}", file=out)
    if check:
        if problems:
            print("run `course-build-exercises` (python -m course_lib.grading.build) and commit the result", file=out)
            return 1
        print(f"{len(sources)} exercise notebook(s) up to date", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="course-build-exercises", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if exercises/ is out of date")
    parser.add_argument("--solutions", type=Path, default=Path("solutions"), help="default: ./solutions")
    parser.add_argument("--exercises", type=Path, default=Path("exercises"), help="default: ./exercises")
    args = parser.parse_args(argv)
    return build(args.solutions, args.exercises, check=args.check)


if __name__ == "__main__":
    raise SystemExit(main())
