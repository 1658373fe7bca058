"""How ``course-grade`` finds each student's notebooks, names their outputs, and survives its own failures."""

import csv
import json
import os
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import cli

HERE = Path(__file__).resolve().parent
TOY_TESTS = HERE / "fixtures" / "hidden"
KEYS = {"01": "01_attention"}


def notebook(path: Path, *, exercise: str | None = None, mtime: float = 1e9) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return a * b")]
    if exercise:
        nb.metadata["course"] = {"exercise": exercise}
    nbformat.write(nb, path)
    os.utime(path, (mtime, mtime))
    return path


def test_a_notebook_that_names_the_exercise_comes_before_a_newer_one_that_does_not(tmp_path):
    named = notebook(tmp_path / "alice.ipynb", exercise="01_attention", mtime=1e9)
    untitled = notebook(tmp_path / "Untitled.ipynb", mtime=2e9)  # newer, names nothing
    chosen, notes = cli.match([named, untitled], KEYS)
    assert chosen == {"01": named} and any("graded alice.ipynb" in n for n in notes)
    chosen, _ = cli.match([untitled], KEYS)  # alone, it is taken for the one exercise graded
    assert chosen == {"01": untitled}


def test_a_notebook_of_another_exercise_is_not_graded_as_the_only_one(tmp_path):
    other_name = notebook(tmp_path / "02_masking.ipynb")
    other_meta = notebook(tmp_path / "bob.ipynb", exercise="02_masking")
    chosen, notes = cli.match([other_name, other_meta], KEYS)
    assert chosen == {} and len([n for n in notes if "matches no exercise" in n]) == 2


def test_the_newest_is_graded_and_a_tie_goes_to_the_first_name(tmp_path):
    old = notebook(tmp_path / "01_attention.ipynb", mtime=1e9)
    new = notebook(tmp_path / "01_attention_v2.ipynb", mtime=2e9)
    assert cli.match([old, new], KEYS)[0] == {"01": new}
    os.utime(new, (1e9, 1e9))
    assert cli.match([new, old], KEYS)[0] == {"01": old}


def test_submissions_that_would_share_an_output_folder_get_distinct_names(tmp_path):
    for name in ("a b", "a_b", "Carol"):
        notebook(tmp_path / f"{name}.ipynb")
    (tmp_path / "carol").mkdir()
    notebook(tmp_path / "carol" / "mine.ipynb")
    students, warnings = cli.discover([tmp_path])
    names = [s for s, _ in students]
    folders = {cli.report.safe_name(s).lower() for s in names}
    assert len(names) == 4 and len(folders) == 4, names
    assert len(warnings) == 2 and all("graded as" in w for w in warnings)


_grade_one = cli._grade_one


def _unlucky_fails(job: tuple) -> cli.StudentGrade:
    if job[0] == "unlucky":
        raise RuntimeError("the grading process died")
    return _grade_one(job)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_student_whose_grading_fails_still_gets_a_row_and_feedback(tmp_path, monkeypatch, jobs):
    folder, out = tmp_path / "class", tmp_path / "out"
    folder.mkdir()
    for student in ("good", "unlucky"):
        notebook(folder / f"{student}.ipynb")
    monkeypatch.setattr(cli, "_grade_one", _unlucky_fails)  # forked workers (--jobs 2) inherit it
    code = cli.main([str(folder), "--tests", str(TOY_TESTS), "--out", str(out), "--jobs", str(jobs), "--no-run"])
    assert code == 1  # the teacher is told
    rows = {r["student"]: r for r in csv.DictReader(open(out / "grades.csv"))}
    assert set(rows) == {"good", "unlucky"}
    assert rows["good"]["status"] == "graded" and float(rows["good"]["total"]) == float(rows["good"]["max"]) > 0
    assert rows["unlucky"]["status"] == "error" and "grade it again" in rows["unlucky"]["notes"]
    assert "grade it again" in (out / "unlucky" / "feedback.md").read_text()
    assert json.loads((out / "unlucky" / "results.json").read_text())["score"] == 0
    assert "RuntimeError: the grading process died" in (out / "grader.log").read_text()


def two_exercises(folder: Path, names=("01_attention", "02_heads")) -> Path:
    """Hidden tests for exercises 01 and 02: the toy tests twice (names unique in this process)."""
    folder.mkdir()
    for name in (f"test_{n}.py" for n in names):
        (folder / name).write_text((TOY_TESTS / "test_99_toy.py").read_text())
    return folder


def test_an_exercise_not_handed_in_is_missing_not_an_error(tmp_path):
    tests, folder, out = two_exercises(tmp_path / "tests"), tmp_path / "class", tmp_path / "out"
    for student, exercises in {"alice": ["01_attention"], "bob": ["01_attention", "02_heads"]}.items():
        (folder / student).mkdir(parents=True)
        for exercise in exercises:
            notebook(folder / student / f"{exercise}.ipynb", exercise=exercise)
    code = cli.main([str(folder), "--tests", str(tests), "--out", str(out), "--no-run"])
    assert code == 0
    rows = {r["student"]: r for r in csv.DictReader(open(out / "grades.csv"))}
    assert rows["alice"]["status"] == rows["bob"]["status"] == "graded"
    assert "not handed in: 02" in rows["alice"]["notes"] and "not handed in" not in rows["bob"]["notes"]
    assert float(rows["alice"]["total"]) * 2 == float(rows["bob"]["total"]) == float(rows["bob"]["max"]) > 0
    assert float(rows["alice"]["max"]) == float(rows["bob"]["max"])  # a missing exercise still counts
    results = json.loads((out / "alice" / "results.json").read_text())
    assert "(not handed in)" in results["output"]


def test_exercises_grades_only_the_ones_named(tmp_path, capsys):
    names = ("01_softmax", "02_layer")
    tests, folder, out = two_exercises(tmp_path / "tests", names), tmp_path / "class", tmp_path / "out"
    (folder / "bob").mkdir(parents=True)
    for exercise in names:
        notebook(folder / "bob" / f"{exercise}.ipynb", exercise=exercise)
    code = cli.main([str(folder), "--tests", str(tests), "--out", str(out), "--no-run", "--exercises", "2"])
    assert code == 0
    header = next(csv.reader(open(out / "grades.csv")))
    assert any(h.startswith("02_") for h in header) and not any(h.startswith("01_") for h in header)
    printed = capsys.readouterr().out
    assert "0 exercise(s) not handed in" in printed and "matches no exercise" not in printed
    assert cli.main([str(folder), "--tests", str(tests), "--out", str(out), "--exercises", "07"]) == 2
