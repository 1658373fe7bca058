"""Hidden tests are well formed: points, a task that names a solution cell, assertion messages."""

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = sorted((ROOT / "tests" / "exercises").glob("test_[0-9][0-9]_*.py"))


def markers(node: ast.AST) -> dict[str, list]:
    found = {}
    for deco in getattr(node, "decorator_list", []):
        if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute):
            found[deco.func.attr] = [ast.literal_eval(a) for a in deco.args if isinstance(a, ast.Constant)]
    return found


def hidden_tests_in(path: Path):
    """(test function, its markers merged with its class's) for every test in a hidden-test file."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            outer = markers(node)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test_"):
                    yield item, {**outer, **markers(item)}
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            yield node, markers(node)


@pytest.mark.parametrize("path", HIDDEN, ids=[p.stem for p in HIDDEN])
def test_every_hidden_test_has_points_and_a_task_of_the_solution(path):
    solution = next((ROOT / "solutions").glob(f"{path.stem[5:7]}_*.ipynb"))
    grade_ids = {
        c.metadata["nbgrader"]["grade_id"]
        for c in nbformat.read(solution, as_version=4).cells
        if "nbgrader" in c.get("metadata", {})
    }
    tasks = set()
    for fn, marks in hidden_tests_in(path):
        assert marks.get("points") and marks["points"][0] > 0, f"{fn.name} has no @pytest.mark.points(n)"
        assert marks.get("task"), f"{fn.name} has no @pytest.mark.task(name)"
        tasks.add(marks["task"][0])
    assert tasks == grade_ids, f"tasks {sorted(tasks)} should be the solution's grade_ids {sorted(grade_ids)}"


@pytest.mark.parametrize("path", HIDDEN, ids=[p.stem for p in HIDDEN])
def test_every_assertion_has_a_message_for_the_student(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assert):
            assert node.msg is not None, f"{path.name}, line {node.lineno}: assert without a message"


@pytest.mark.parametrize("path", HIDDEN, ids=[p.stem for p in HIDDEN])
def test_every_exercise_has_self_checks_and_mutants(path):
    number = path.stem[5:7]
    assert (ROOT / "course_lib" / "checks" / f"ex{number}.py").exists()
    assert list((ROOT / "tests" / "exercises").glob(f"mutants_{number}_*.py"))
    assert re.match(r"test_\d\d_\w+\.py", path.name)
