"""Every solution gets full marks, every generated exercise gets zero and runs up to its first stub.

Parametrised over ``solutions/NN_*.ipynb``, so that each new exercise is covered.
"""

import concurrent.futures as futures
import multiprocessing
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from course_lib.grading.grade import Settings, grade_notebook
from course_lib.grading.plugin import deny_paths

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in SOLUTIONS]

pytestmark = pytest.mark.slow


def hidden_tests(notebook: Path) -> Path:
    found = list((ROOT / "tests" / "exercises").glob(f"test_{notebook.name[:2]}_*.py"))
    assert len(found) == 1, f"expected one tests/exercises/test_{notebook.name[:2]}_*.py, found {found}"
    return found[0]


def grade(job: tuple):
    notebook, workroot = job
    test_file = hidden_tests(notebook)
    return grade_notebook(notebook, test_file, Settings(deny=deny_paths(test_file)), workroot)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Each solution and its exercise, graded two at a time: ``{(kind, stem): ExerciseGrade}``."""
    folder = tmp_path_factory.mktemp("solutions")
    jobs = {("solution", p.stem): p for p in SOLUTIONS}
    jobs.update({("exercise", p.stem): ROOT / "exercises" / p.name for p in SOLUTIONS})
    with futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        return dict(zip(jobs, pool.map(grade, [(path, folder) for path in jobs.values()])))


@pytest.mark.parametrize("solution", SOLUTIONS, ids=IDS)
def test_the_solution_gets_full_marks(graded, solution):
    result = graded["solution", solution.stem]
    failed = [(r.name, r.message) for r in result.results if r.outcome != "passed"]
    assert not failed and result.score == result.max_score > 0, failed
    assert result.status == "graded" and not result.notes, result.notes


@pytest.mark.parametrize("solution", SOLUTIONS, ids=IDS)
def test_the_exercise_gets_zero_with_not_implemented_feedback(graded, solution):
    result = graded["exercise", solution.stem]
    assert result.score == 0 and result.internal_error is None, result.log
    for r in result.results:
        assert r.outcome == "failed" and "not implemented yet" in r.message, (r.name, r.message)


@pytest.mark.parametrize("solution", SOLUTIONS, ids=IDS)
def test_the_exercise_runs_until_its_first_stub(solution):
    exercise = ROOT / "exercises" / solution.name
    nb = nbformat.read(exercise, as_version=4)
    resources = {"metadata": {"path": str(exercise.parent)}}
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources=resources)
    with pytest.raises(CellExecutionError) as err:
        client.execute()
    assert err.value.ename in ("NotImplementedError", "NotImplementedYet"), err.value
    code = [c for c in nb.cells if c.cell_type == "code"]
    failed = next(i for i, c in enumerate(code) if any(o.output_type == "error" for o in c.outputs))
    assert all(c.execution_count for c in code[: failed + 1]), "a cell before the first stub did not run"
    assert all(not c.execution_count for c in code[failed + 1 :])
    stubs = [i for i, c in enumerate(code) if "raise NotImplementedError" in c.source]
    assert stubs and stubs[0] < failed, "the first error should come from calling the first stub"
