"""``course-grade --scheduler local``: a Dask LocalCluster of 2 workers gives the grades ``--jobs 2`` gives."""

import csv
import os
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import cli, isolation

TOY_TESTS = Path(__file__).resolve().parent / "fixtures" / "hidden"

pytest.importorskip("distributed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(isolation.problem() is not None and not os.environ.get("REQUIRE_SANDBOX"),
                       reason=f"{isolation.problem()}"),  # fmt: skip
]

CODES = {
    "right": "def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return a * b",
    "half": "def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return a + b",
    "broken": "def add(a, b):\n    return a - b\n\nraise RuntimeError('oops')",
}


def rows(out):
    with open(out / "grades.csv") as f:
        return {r["student"]: {k: v for k, v in r.items()} for r in csv.DictReader(f)}


def test_a_local_dask_cluster_grades_as_two_jobs_do(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    for name, code in CODES.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, folder / f"{name}.ipynb")
    base = [str(folder), "--tests", str(TOY_TESTS), "--jobs", "2", "--no-run"]
    assert cli.main([*base, "--out", str(tmp_path / "jobs")]) == 0
    assert cli.main([*base, "--out", str(tmp_path / "dask"), "--scheduler", "local"]) == 0
    by_jobs, by_dask = rows(tmp_path / "jobs"), rows(tmp_path / "dask")
    assert by_dask == by_jobs
    assert by_dask["right"]["total"] == by_dask["right"]["max"] != by_dask["broken"]["total"]
    assert (tmp_path / "dask" / "half" / "feedback.md").exists()
