"""Deliberately wrong solutions lose points, each under the hidden test meant to catch it.

For every exercise NN with ``tests/exercises/mutants_NN_*.py``, each mutant replaces the
solution region of one task in ``solutions/NN_*.ipynb`` (see ``docs/authoring.md``). The
mutant must fail at least one of the tests it names, and keep full marks on every other
task: one mistake costs only its own task's points. A mutant may add a fourth element, a
dict of what the student must be told: ``"feedback"``, text that one of its failed hidden
tests shows, and ``"self_check"``, text of the failure that the task's self-check cell
raises in the notebook (``True``: any failure of a self-check), so that a wrong answer that
the self-check lets through is caught here too.

Each mutant is graded by ``grade_notebook`` itself: its notebook file is read by the
grader, the hidden-test file runs in ``pytest.main`` with the grader's plugin, and the
``student`` proxy talks to a fenced worker process forked by a box. Only which box differs,
to save the seconds of running every notebook from the top: one box per exercise
(``course_lib/grading/box.py``) runs the solution's code cells once and forks each
mutant's worker at the mutant's first changed cell, in the state a fresh worker would have
reached there; the worker then runs the mutant's remaining cells.
One control per exercise (the solution with a comment added to its last task, so forked
after the most cells) must get full marks through the same path, and so must fail the
mutant check: the check can fail.
"""

import concurrent.futures as futures
import gc
import importlib.util
import multiprocessing
import tempfile
import textwrap
import traceback
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import notebook as nbload
from course_lib.grading.box import Box, first_difference
from course_lib.grading.build import BEGIN_SOLUTION, END_SOLUTION
from course_lib.grading.grade import ExerciseGrade, Settings, grade_notebook
from course_lib.grading.plugin import deny_paths

ROOT = Path(__file__).resolve().parents[2]
EXERCISE_TESTS = ROOT / "tests" / "exercises"
CONTROL = "(control) the solution, unchanged but for a comment"


def _mutants() -> dict[str, tuple]:
    """``{"NN: name": (number, task, code, caught_by, expectations)}`` for every exercise's mutants file."""
    found = {}
    for path in sorted(EXERCISE_TESTS.glob("mutants_[0-9][0-9]_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        number = path.stem.split("_")[1]
        for name, (task, code, caught_by, *told) in module.MUTANTS.items():
            found[f"{number}: {name}"] = (number, task, code, caught_by, told[0] if told else {})
    return found


MUTANTS = _mutants()
NUMBERS = sorted({number for number, *_ in MUTANTS.values()})


def solution_of(number: str) -> Path:
    return next((ROOT / "solutions").glob(f"{number}_*.ipynb"))


def hidden_tests_of(number: str) -> Path:
    return next(EXERCISE_TESTS.glob(f"test_{number}_*.py"))


def _task_cell(nb: nbformat.NotebookNode, task: str, name: str) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == task]
    assert len(cells) == 1, f"no cell with grade_id {task!r} in {name}"
    return cells[0]


def _region(lines: list[str]) -> tuple[int, int]:
    begin = next(i for i, ln in enumerate(lines) if ln.strip() == BEGIN_SOLUTION)
    return begin, next(i for i in range(begin, len(lines)) if lines[i].strip() == END_SOLUTION)


def mutate(solution: Path, task: str, code: str, target: Path) -> None:
    """Write ``solution`` with the solution region of the cell ``task`` replaced by ``code``."""
    nb = nbformat.read(solution, as_version=4)
    cell = _task_cell(nb, task, solution.name)
    lines = cell.source.splitlines()
    begin, end = _region(lines)
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    body = textwrap.indent(textwrap.dedent(code).strip("\n"), indent).splitlines()
    cell.source = "\n".join(lines[:begin] + body + lines[end + 1 :])
    nbformat.write(nb, target)


def control_of(number: str) -> tuple:
    """A mutant entry that is no mistake: the last task's own solution, plus a comment."""
    nb = nbformat.read(solution_of(number), as_version=4)
    cell = [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id")][-1]
    lines = cell.source.splitlines()
    begin, end = _region(lines)
    code = textwrap.dedent("\n".join(lines[begin + 1 : end])) + "\n# the solution, unchanged"
    return number, cell.metadata.nbgrader.grade_id, code, [], {}


CONTROLS = {f"{number}: {CONTROL}": control_of(number) for number in NUMBERS}


def grade_exercise(job: tuple) -> dict[str, ExerciseGrade | str]:
    """Grade the entries ``keys`` of one exercise, each worker forked from one box of the solution's cells.

    Returns each key's grade, or the traceback that stopped this exercise's grading.
    """
    number, keys, folder = job
    gc.freeze()  # pytest collects garbage after each session: not torch's objects again and again
    entries = {**MUTANTS, **CONTROLS}
    solution, test_file = solution_of(number), hidden_tests_of(number)
    settings = Settings(deny=deny_paths(test_file), run_notebook=False)
    cells = nbload.load(solution).cells
    variants = []
    for key in keys:
        work = Path(tempfile.mkdtemp(dir=folder))
        _, task, code, *_ = entries[key]
        mutate(solution, task, code, work / solution.name)
        variants.append((first_difference(cells, nbload.load(work / solution.name).cells), key, work))
    graded: dict[str, ExerciseGrade | str] = {}
    box = Box(settings.limits, settings.deny, tempfile.mkdtemp(dir=folder))
    try:
        box.advance(cells, 0)
        for _, key, work in sorted(variants):  # the box only moves forward
            notebook = work / solution.name
            graded[key] = grade_notebook(notebook, test_file, settings, work, box=box)
    except Exception:
        error = traceback.format_exc()
        graded.update({key: error for key in keys if key not in graded})
    finally:
        box.close()
    return graded


@pytest.fixture(scope="module")
def graded(request, tmp_path_factory) -> dict[str, ExerciseGrade | str]:
    """Every selected mutant and control graded, one exercise per process, two processes at a time.

    Only the entries of the tests that pytest selected are graded (``-k "04:"`` grades exercise 04's).
    """
    folder = tmp_path_factory.mktemp("mutants")
    entries = {**MUTANTS, **CONTROLS}
    selected = {
        item.callspec.params.get("key")
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    entries = {key: entry for key, entry in entries.items() if key in selected}
    by_exercise = {n: [k for k, entry in entries.items() if entry[0] == n] for n in NUMBERS}
    by_exercise = {n: keys for n, keys in by_exercise.items() if keys}
    jobs = [(n, keys, folder) for n, keys in sorted(by_exercise.items(), key=lambda item: -len(item[1]))]
    results = {}
    with futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        for grades in pool.map(grade_exercise, jobs):
            results.update(grades)
    return results


def problems(result: ExerciseGrade | str, task: str, caught_by: list[str], told: dict | None = None) -> list[str]:
    """Why ``result`` does not show a mistake in ``task`` caught by ``caught_by`` alone (empty: it does).

    ``told``: what the student must read (see the module's docstring).
    """
    if isinstance(result, str):
        return [f"grading stopped:\n{result}"]
    if result.status not in ("graded", "timeout") or result.internal_error is not None:
        return [f"grading failed ({result.status}): {result.internal_error}\n{result.log}"]
    if "BoxError" in result.log:
        return [f"the box of the solution's cells failed during grading:\n{result.log}"]
    found = []
    failed = {r.nodeid.split("::")[-1].split("[")[0]: r for r in result.results if r.outcome != "passed"}
    if not failed:
        found.append(f"no hidden test caught this mutant of {task}")
    elif not set(caught_by) & set(failed):
        found.append(f"expected {caught_by} to fail, but only {sorted(failed)} did")
    others = [(r.task, r.name) for r in result.results if r.task != task and r.outcome != "passed"]
    if others:
        found.append(f"a mistake in {task} also cost points elsewhere: {others}")
    found += [f"failed without real feedback: {r}" for r in failed.values()
              if not r.message or "hidden check failed" in r.message]  # fmt: skip
    told = told or {}
    if "feedback" in told and not any(told["feedback"] in r.message for r in failed.values()):
        found.append(f"no failed test says {told['feedback']!r}: {[r.message for r in failed.values()]}")
    if "self_check" in told:
        raised = [n for n in result.notes if "CheckFailed" in n or "NotImplementedYet" in n]
        wanted = told["self_check"]
        if not any(wanted is True or wanted in n for n in raised):
            found.append(f"the self-check did not fail with {wanted!r}; the notebook's cells reported {raised}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("key", list(MUTANTS))
def test_each_mutant_loses_points_where_it_should(graded, key):
    _, task, _, caught_by, told = MUTANTS[key]
    found = problems(graded[key], task, caught_by, told)
    assert not found, "\n".join(found)


@pytest.mark.slow
@pytest.mark.parametrize("key", list(CONTROLS))
def test_the_control_keeps_full_marks_and_fails_the_mutant_check(graded, key):
    """Graded through the same box, the unchanged solution gets every point: a mutant that changes
    nothing would fail ``test_each_mutant_loses_points_where_it_should``."""
    task = CONTROLS[key][1]
    result = graded[key]
    assert not isinstance(result, str), result
    lost = [(r.name, r.message) for r in result.results if r.outcome != "passed"]
    assert not lost and result.score == result.max_score > 0 and result.status == "graded", lost
    assert problems(result, task, ["test_anything"]) == [f"no hidden test caught this mutant of {task}"]


def test_every_mutant_file_has_its_solution():
    for path in EXERCISE_TESTS.glob("mutants_[0-9][0-9]_*.py"):
        assert list((ROOT / "solutions").glob(f"{path.stem.split('_')[1]}_*.ipynb")), path.name
