"""Authoring helper for the course's notebooks (for authors, not students).

    python tools/nbtool.py py2nb lesson.py notebooks/NN_name.ipynb   # percent script -> notebook
    python tools/nbtool.py nb2py notebooks/NN_name.ipynb lesson.py   # notebook -> percent script
    python tools/nbtool.py run notebooks/NN_name.ipynb ...            # run top to bottom, keep outputs

Percent format: a line ``# %%`` starts a code cell and ``# %% [markdown]`` a markdown
cell whose lines start with ``# ``. ``# %% id=softmax`` names the cell; a code cell
that holds ``### BEGIN SOLUTION`` gets nbgrader's solution metadata with that id as
its ``grade_id``. ``run`` executes in a fresh kernel, from the notebook's folder, so
that execution counts go 1, 2, 3... as ``pytest --nbval`` expects.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat

HEADER = re.compile(r"^# %%(?: \[(?P<kind>markdown)\])?(?: id=(?P<id>[\w-]+))?\s*$")
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def nbgrader_solution(grade_id: str) -> dict:
    return {"solution": True, "grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3}


def py2nb(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    cells: list[tuple[str, str | None, list[str]]] = []
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            cells.append((m["kind"] or "code", m["id"], []))
        elif cells:
            cells[-1][2].append(line)
    for n, (kind, cell_id, lines) in enumerate(cells):
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind == "markdown":
            body = "\n".join(re.sub(r"^# ?", "", ln) for ln in lines)
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines))
            if "### BEGIN SOLUTION" in cell.source:
                cell.metadata["nbgrader"] = nbgrader_solution(cell_id or f"cell-{n}")
        if cell_id:
            cell.id = cell_id
        nb.cells.append(cell)
    return nb


def nb2py(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        tag = f" id={grade_id}" if grade_id else ""
        if cell.cell_type == "markdown":
            body = "\n".join(("# " + ln).rstrip() for ln in cell.source.splitlines())
            parts.append(f"# %% [markdown]{tag}\n{body}")
        else:
            parts.append(f"# %%{tag}\n{cell.source}")
    return "\n\n".join(parts) + "\n"


def run(path: Path, timeout: int = 600) -> float:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=resources).execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "py2nb":
        nbformat.write(py2nb(Path(args[0]).read_text()), args[1])
    elif cmd == "nb2py":
        Path(args[1]).write_text(nb2py(nbformat.read(args[0], as_version=4)))
    elif cmd == "run":
        for name in args:
            print(f"{name}: {run(Path(name)):.1f} s", flush=True)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
