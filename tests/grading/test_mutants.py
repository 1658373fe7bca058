"""Deliberately wrong solutions lose points, each under the hidden test meant to catch it.

For every exercise NN with ``tests/exercises/mutants_NN_*.py``, each mutant replaces the
solution region of one task in ``solutions/NN_*.ipynb`` (see ``docs/authoring.md``). The
mutant must fail at least one of the tests it names, and keep full marks on every other
task: one mistake costs only its own task's points.
"""

import concurrent.futures as futures
import importlib.util
import multiprocessing
import tempfile
import textwrap
from pathlib import Path

import nbformat
import pytest

from course_lib.grading.build import BEGIN_SOLUTION, END_SOLUTION
from course_lib.grading.grade import ExerciseGrade, Settings, grade_notebook
from course_lib.grading.plugin import deny_paths

ROOT = Path(__file__).resolve().parents[2]
EXERCISE_TESTS = ROOT / "tests" / "exercises"


def _mutants() -> dict[str, tuple]:
    """``{"NN: name": (number, task, code, caught_by)}`` for every exercise's mutants file."""
    found = {}
    for path in sorted(EXERCISE_TESTS.glob("mutants_[0-9][0-9]_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        number = path.stem.split("_")[1]
        for name, (task, code, caught_by) in module.MUTANTS.items():
            found[f"{number}: {name}"] = (number, task, code, caught_by)
    return found


MUTANTS = _mutants()


def mutate(solution: Path, task: str, code: str, target: Path) -> None:
    """Write ``solution`` with the solution region of the cell ``task`` replaced by ``code``."""
    nb = nbformat.read(solution, as_version=4)
    cells = [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == task]
    assert len(cells) == 1, f"no cell with grade_id {task!r} in {solution.name}"
    lines = cells[0].source.splitlines()
    begin = next(i for i, ln in enumerate(lines) if ln.strip() == BEGIN_SOLUTION)
    end = next(i for i, ln in enumerate(lines) if ln.strip() == END_SOLUTION)
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    body = textwrap.indent(textwrap.dedent(code).strip("\n"), indent).splitlines()
    cells[0].source = "\n".join(lines[:begin] + body + lines[end + 1 :])
    nbformat.write(nb, target)


def grade_mutant(job: tuple) -> ExerciseGrade:
    key, folder = job
    number, task, code, _ = MUTANTS[key]
    solution = next((ROOT / "solutions").glob(f"{number}_*.ipynb"))
    work = Path(tempfile.mkdtemp(dir=folder))
    mutate(solution, task, code, work / solution.name)
    test_file = next(EXERCISE_TESTS.glob(f"test_{number}_*.py"))
    settings = Settings(deny=deny_paths(test_file), run_notebook=False)
    return grade_notebook(work / solution.name, test_file, settings, work)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every mutant graded, two at a time (each grading process forks its own workers)."""
    folder = tmp_path_factory.mktemp("mutants")
    with futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        return dict(zip(MUTANTS, pool.map(grade_mutant, [(key, folder) for key in MUTANTS])))


@pytest.mark.slow
@pytest.mark.parametrize("key", list(MUTANTS))
def test_each_mutant_loses_points_where_it_should(graded, key):
    _, task, _, caught_by = MUTANTS[key]
    result = graded[key]
    assert result.status in ("graded", "timeout") and result.internal_error is None, result.log
    failed = {r.nodeid.split("::")[-1].split("[")[0]: r for r in result.results if r.outcome != "passed"}
    assert failed, f"no hidden test caught this mutant of {task}"
    assert set(caught_by) & set(failed), f"expected {caught_by} to fail, but only {sorted(failed)} did"
    others = [r for r in result.results if r.task != task and r.outcome != "passed"]
    assert not others, f"a mistake in {task} also cost points elsewhere: {[(r.task, r.name) for r in others]}"
    for r in failed.values():
        assert r.message and "hidden check failed" not in r.message, r


def test_every_mutant_file_has_its_solution():
    for path in EXERCISE_TESTS.glob("mutants_[0-9][0-9]_*.py"):
        assert list((ROOT / "solutions").glob(f"{path.stem.split('_')[1]}_*.ipynb")), path.name
