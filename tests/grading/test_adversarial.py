"""A class of good and hostile submissions, graded in parallel: each gets a clear result, none harms another.

One class run (``--jobs 2``) grades every case of ``fixtures/submissions.py`` against
the toy hidden tests in ``fixtures/hidden``; the tests below then read its outputs.
"""

import csv
import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import cli
from course_lib.grading.grade import RUNS_TITLE

HERE = Path(__file__).resolve().parent
TOY_TESTS = HERE / "fixtures" / "hidden"
_spec = importlib.util.spec_from_file_location("toy_submissions", HERE / "fixtures" / "submissions.py")
submissions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(submissions)

TITLES = {
    "add": "99 add: add adds two numbers",
    "mul": "99 mul: mul multiplies two numbers",
    "mul_negative": "99 mul: mul handles negative numbers",
    "add_again": "99 add: add still works after the tests before it",
    "runs": f"99 runs: {RUNS_TITLE}",
}
POINTS = {"add": 1, "mul": 2, "mul_negative": 1, "add_again": 1, "runs": 1}
EXPECTED = {name: expected for name, (_, expected) in {**submissions.CASES, **submissions.RAW}.items()}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    folder, out = root / "submissions", root / "out"
    folder.mkdir()
    for name, (cells, _) in submissions.CASES.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(c.format(tests=str(TOY_TESTS), out=str(out))) for c in cells]
        nbformat.write(nb, folder / f"{name}.ipynb")
    for name, (text, _) in submissions.RAW.items():
        (folder / f"{name}.ipynb").write_text(text)
    limits = ["--jobs", "2", "--timeout", "5", "--budget", "90"]
    code = cli.main([str(folder), "--tests", str(TOY_TESTS), "--out", str(out), *limits])
    return code, out


def test_the_class_run_succeeds_and_writes_one_row_per_submission(class_run):
    code, out = class_run
    assert code == 0
    rows = list(csv.DictReader(open(out / "grades.csv")))
    assert sorted(r["student"] for r in rows) == sorted(EXPECTED)
    assert list(rows[0])[:1] + list(rows[0])[-4:] == ["student", "total", "max", "status", "notes"]
    assert {"99_add", "99_mul", "99_runs"} <= set(rows[0])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_submission_gets_its_expected_result(class_run, name):
    _, out = class_run
    expected = EXPECTED[name]
    results = json.loads((out / name / "results.json").read_text())
    by_name = {t["name"]: t for t in results["tests"]}
    for key, title in TITLES.items():
        test = by_name[title]
        want = "passed" if expected[key] else "failed"
        assert test["status"] == want, (key, test)
        assert test["score"] == (POINTS[key] if expected[key] else 0) and test["max_score"] == POINTS[key]
        if not expected[key]:
            assert test["output"], f"{key} failed without an explanation"
    assert results["score"] == sum(POINTS[k] for k in POINTS if expected[k])
    row = next(r for r in csv.DictReader(open(out / "grades.csv")) if r["student"] == name)
    assert row["status"] == expected["status"], row
    assert float(row["total"]) == results["score"] and float(row["max"]) == sum(POINTS.values())
    feedback = (out / name / "feedback.md").read_text()
    for phrase in expected.get("feedback", []):
        assert phrase in feedback + json.dumps(results), (phrase, feedback)


def test_no_output_file_contains_hidden_test_source(class_run):
    _, out = class_run
    for path in out.rglob("*"):
        if path.is_file() and path.name != "grader.log":  # the teacher's log may quote tests
            assert "SECRET-HIDDEN-TEST-SOURCE" not in path.read_text(errors="replace"), path


def test_student_code_cannot_write_into_out(class_run):
    _, out = class_run
    assert "hacked" not in (out / "grades.csv").read_text()
    assert json.loads((out / "good" / "results.json").read_text())["score"] == sum(POINTS.values())
