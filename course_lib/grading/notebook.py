"""Read a student's notebook whatever state it is in, and tell which exercise it is.

``load(path)`` returns the code cells and a clean nbformat-4 copy of the notebook for
the top-to-bottom run, or raises ``NotebookUnreadable`` with a message for the student:
not UTF-8, not JSON, JSON that is not a notebook, an unknown nbformat. Old nbformat 3
notebooks are converted. Damaged cells are skipped with a note rather than failing the
whole notebook.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .errors import NotebookUnreadable

MAX_BYTES = 50 * 2**20
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
# nbval obeys these comments; a student must not be able to skip or excuse a failing cell.
_NBVAL_MARKER = re.compile(r"^(\s*#+\s*)(NBVAL_\w+|PYTEST_VALIDATE_\w+)\s*$", re.M)


@dataclass
class Loaded:
    cells: list[str]  # the sources of the code cells, in order
    notebook: nbformat.NotebookNode  # code cells only, outputs cleared, nbval markers neutralised
    notes: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)  # the notebook's own metadata (for matching)


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    if isinstance(source, list):
        return "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


def parse(text: str, name: str) -> Loaded:
    """Parse notebook JSON text; ``name`` is how messages refer to the file."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise NotebookUnreadable(
            f"{name} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
            "was it saved by Jupyter, and not renamed from another kind of file?"
        ) from None
    if not isinstance(data, dict) or "nbformat" not in data or not ({"cells", "worksheets"} & data.keys()):
        raise NotebookUnreadable(f"{name} is JSON but not a Jupyter notebook (no 'nbformat' and 'cells')")
    notes = []
    major = data.get("nbformat")
    if major in (1, 2, 3):
        try:
            data = json.loads(nbformat.writes(nbformat.reads(text, as_version=4)))
        except Exception as err:
            message = f"{name} uses the old nbformat {major} and could not be converted: {err}"
            raise NotebookUnreadable(message) from None
        notes.append(f"{name} was converted from the old notebook format {major} to format 4")
    elif major != 4:
        raise NotebookUnreadable(f"{name} has nbformat {major!r}; the grader reads nbformat 3 and 4")
    cells = data.get("cells")
    if not isinstance(cells, list):
        raise NotebookUnreadable(f"{name} is damaged: its 'cells' is not a list")
    sources = []
    for number, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or not isinstance(cell.get("source", ""), (str, list)):
            notes.append(f"{name}: cell {number} is damaged and was ignored")
            continue
        if cell.get("cell_type") == "code":
            sources.append(_source(cell))
    clean = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    for source in sources:
        clean.cells.append(nbformat.v4.new_code_cell(_NBVAL_MARKER.sub(r"\1\2 (ignored by the grader)", source)))
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    return Loaded(sources, clean, notes, metadata)


def load(path: Path) -> Loaded:
    """Read a submitted notebook file (see ``parse``)."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise NotebookUnreadable(f"{path.name} is larger than {MAX_BYTES // 2**20} MB; clear its outputs")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise NotebookUnreadable(f"{path.name} is not a text file (not UTF-8); a notebook is JSON text") from None
    except OSError as err:
        raise NotebookUnreadable(f"{path.name} could not be read: {err.strerror}") from None
    return parse(text, path.name)


def exercise_of(path: Path, keys: dict[str, str], *, fallback: bool = True) -> str | None:
    """Which exercise a notebook file is: by its ``NN_`` prefix or name, else by its metadata.

    ``keys`` maps exercise numbers to names, e.g. ``{"01": "01_attention_from_the_formula"}``.
    A file named after the student (``alice.ipynb``) is matched through the metadata that
    ``course-build-exercises`` writes into every exercise notebook, or, when only one
    exercise is graded and ``fallback`` is true, to that one, unless its name or metadata
    say it is another exercise.
    """
    match = re.match(r"(\d\d)_", path.name)
    if match:
        return match.group(1) if match.group(1) in keys else None
    for number, name in keys.items():
        if name in path.stem:
            return number
    try:
        meta = json.loads(path.read_bytes()[:MAX_BYTES]).get("metadata", {}).get("course", {})
        stem = meta.get("exercise", "") if isinstance(meta, dict) else ""
    except (ValueError, AttributeError, OSError):
        stem = ""
    match = re.match(r"(\d\d)_", stem if isinstance(stem, str) else "")
    if match:
        return match.group(1) if match.group(1) in keys else None
    if fallback and len(keys) == 1:
        return next(iter(keys))
    return None
