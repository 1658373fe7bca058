"""Solutions → exercises: stubs, cleared outputs, hidden tests dropped, clear marker errors, --check."""

import io

import nbformat
import pytest

from course_lib.grading import build

SOLUTION_CELL = '''def softmax(x, axis=-1):
    """Docstring the student keeps."""
    ### BEGIN SOLUTION
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
    ### END SOLUTION'''


def nbgrader(grade_id):
    return {"nbgrader": {"solution": True, "grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3}}


def solution_notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def code(source, grade_id=None, outputs=True):
    cell = nbformat.v4.new_code_cell(source, metadata=nbgrader(grade_id) if grade_id else {})
    if outputs:
        cell.outputs = [nbformat.v4.new_output("stream", text="printed\n")]
        cell.execution_count = 3
    return cell


def test_a_solution_region_becomes_a_stub_at_its_indentation():
    nb = build.make_exercise(solution_notebook(code(SOLUTION_CELL, "softmax")), "01_x.ipynb")
    assert nb.cells[0].source == (
        'def softmax(x, axis=-1):\n    """Docstring the student keeps."""\n'
        "    # YOUR CODE HERE\n    raise NotImplementedError"
    )
    assert nb.cells[0].metadata["nbgrader"]["grade_id"] == "softmax"  # nbgrader can still use it


def test_outputs_and_execution_counts_are_cleared_and_metadata_names_the_exercise():
    nb = build.make_exercise(solution_notebook(code("print('hi')"), code(SOLUTION_CELL, "softmax")), "01_x.ipynb")
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells)
    assert nb.metadata["course"] == {"exercise": "01_x"}


def test_hidden_tests_do_not_survive():
    source = "x = 1\n### BEGIN HIDDEN TESTS\nassert secret() == 42\n### END HIDDEN TESTS\ny = 2"
    nb = build.make_exercise(solution_notebook(code(source)), "01_x.ipynb")
    assert nb.cells[0].source == "x = 1\ny = 2"


def test_a_markdown_answer_becomes_your_answer_here():
    source = "Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION"
    cell = nbformat.v4.new_markdown_cell(source, metadata=nbgrader("why"))
    nb = build.make_exercise(solution_notebook(cell), "01_x.ipynb")
    assert nb.cells[0].source == "Why?\nYOUR ANSWER HERE"


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1", "line 1: the solution region is never closed"),
        ("x = 1\n### END SOLUTION", "line 2: '### END SOLUTION' without a matching BEGIN"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "line 2: '### BEGIN SOLUTION' inside"),
        ("### BEGIN SOLUTION\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS", "regions cannot nest"),
        ("### BEGIN SOLUTION\nx = 1\n### END HIDDEN TESTS", "without a matching BEGIN"),
        ("## BEGIN SOLUTION\nx = 1\n### END SOLUTION", "line 1: '## BEGIN SOLUTION' looks like a marker"),
        ("### BEGIN SOLUTIONS\nx = 1", "looks like a marker"),
    ],
)
def test_marker_errors_name_the_notebook_cell_and_line(source, message):
    nb = solution_notebook(nbformat.v4.new_markdown_cell("intro"), code(source, "task_a"))
    with pytest.raises(build.MarkerError) as err:
        build.make_exercise(nb, "solutions/03_y.ipynb")
    assert "solutions/03_y.ipynb, cell 2 (grade_id 'task_a')" in str(err.value)
    assert message in str(err.value)


def test_solution_cells_must_carry_nbgrader_metadata_and_unique_grade_ids():
    with pytest.raises(build.MarkerError, match="no nbgrader solution metadata"):
        build.make_exercise(solution_notebook(code(SOLUTION_CELL)), "01_x.ipynb")
    with pytest.raises(build.MarkerError, match="without '### BEGIN SOLUTION' markers"):
        build.make_exercise(solution_notebook(code("x = 1", "task_a")), "01_x.ipynb")
    twice = solution_notebook(code(SOLUTION_CELL, "softmax"), code(SOLUTION_CELL, "softmax"))
    with pytest.raises(build.MarkerError, match="grade_id 'softmax' is also used by 01_x.ipynb, cell 1"):
        build.make_exercise(twice, "01_x.ipynb")


def write(path, *cells):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(solution_notebook(*cells), path)


def run(*args, **kwargs):
    out = io.StringIO()
    return build.build(*args, out=out, **kwargs), out.getvalue()


def test_check_fails_on_drift_and_passes_once_rebuilt(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    write(solutions / "01_x.ipynb", code(SOLUTION_CELL, "softmax"))
    code_, text = run(solutions, exercises, check=True)
    assert code_ == 1 and "exercises/01_x.ipynb is missing" in text
    assert run(solutions, exercises) == (0, "wrote exercises/01_x.ipynb\n")
    assert run(solutions, exercises, check=True)[0] == 0
    write(solutions / "01_x.ipynb", code(SOLUTION_CELL.replace("Docstring", "A new docstring"), "softmax"))
    code_, text = run(solutions, exercises, check=True)
    assert code_ == 1 and "differs from its solution notebook" in text
    run(solutions, exercises)
    write(exercises / "02_stale.ipynb", code("x = 1"))
    code_, text = run(solutions, exercises, check=True)
    assert code_ == 1 and "exercises/02_stale.ipynb has no solution notebook" in text


def test_a_marker_error_stops_the_build_with_exit_code_2(tmp_path):
    write(tmp_path / "solutions" / "01_x.ipynb", code("### BEGIN SOLUTION\nx = 1", "task_a"))
    code_, text = run(tmp_path / "solutions", tmp_path / "exercises")
    assert code_ == 2 and "error: solutions/01_x.ipynb, cell 1" in text
    assert not (tmp_path / "exercises").exists()


def test_the_course_exercises_are_up_to_date(monkeypatch):
    root = build.Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    assert build.main(["--check"]) == 0
