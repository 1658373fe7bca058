"""Grade one notebook against its hidden tests, and one student against every exercise.

For one notebook, two things run side by side, both in the notebook's box (``box.py``):

* the hidden tests, with ``pytest.main`` in this (the grader's) process, calling the
  student's code in a worker process (``session.py``); the comparisons and the points
  are computed here;
* the test "the notebook runs top to bottom" (``nbrun.py``).
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import nbrun
from . import notebook as nbload
from .box import Box
from .errors import NotebookUnreadable
from .plugin import Collector, Result
from .session import Limits, WorkerSession

RUNS_TASK = "runs"
RUNS_TITLE = "the notebook runs top to bottom (pytest --nbval-lax)"


@dataclass
class Settings:
    limits: Limits = field(default_factory=Limits)
    deny: list[str] = field(default_factory=list)  # what student code may not read
    run_notebook: bool = True  # also run the "runs top to bottom" test


@dataclass
class ExerciseGrade:
    exercise: str  # "01"
    title: str  # "01_attention_from_the_formula"
    notebook: str | None  # the file graded, or None when the student has none
    results: list[Result]
    notes: list[str] = field(default_factory=list)  # for the student: what happened to their cells
    status: str = "graded"  # graded, missing (not handed in), error (grade it again) or timeout
    log: str = ""  # for the teacher: pytest's output, tracebacks of the tests' own errors
    internal_error: str | None = None  # the hidden tests themselves are broken

    @property
    def score(self) -> float:
        return sum(r.points for r in self.results if r.outcome == "passed")

    @property
    def max_score(self) -> float:
        return sum(r.points for r in self.results)


def runs_points(test_file: Path) -> float:
    """``NOTEBOOK_RUNS_POINTS = n`` at the top level of the hidden-test file (default 1)."""
    for node in ast.parse(test_file.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "NOTEBOOK_RUNS_POINTS" for t in node.targets):
            return float(ast.literal_eval(node.value))
    return 1.0


def _folder(parent: Path, limits: Limits, *, private: bool) -> Path:
    """A new folder: for the unprivileged user (``private``) or traversable by it."""
    path = Path(tempfile.mkdtemp(dir=parent))
    if limits.user is not None:
        if private:
            os.chown(path, *limits.user)
        else:
            path.chmod(0o711)
    return path


def grade_notebook(
    path: Path | None,
    test_file: Path,
    settings: Settings,
    workroot: Path,
    *,
    missing: str = "no notebook was submitted for this exercise",
    box: Box | None = None,
) -> ExerciseGrade:
    """Grade the notebook at ``path`` (``None``: missing) with the hidden tests in ``test_file``.

    The notebook gets a box of its own, in its sandbox. The course's own tests may pass a
    ``box`` that has run a trusted notebook's first cells (``Box.advance``), to grade many
    variants of it quickly; ``settings.run_notebook`` must then be false.
    """
    if box is not None and settings.run_notebook:
        raise ValueError("a shared box cannot run each notebook top to bottom: use Settings(run_notebook=False)")
    title = test_file.stem.removeprefix("test_")
    folder = _folder(workroot, settings.limits, private=False)
    loaded, load_error = None, missing
    if path is not None:
        try:
            loaded, load_error = nbload.load(path), None
        except NotebookUnreadable as err:
            load_error = str(err)
    workdir = _folder(folder, settings.limits, private=True)
    running, own_box = None, None
    if loaded is not None and box is None:
        if settings.run_notebook:  # runs in the box while the hidden tests do
            running = nbrun.prepare(loaded.notebook, folder / "nbval", settings.limits)
        starts = running is not None and running.result is None
        log = open(running.log_path, "wb") if starts else None
        try:
            own_box = box = Box(settings.limits, settings.deny, str(workdir), log=log,
                                **(running.box_options() if starts else {}))  # fmt: skip
        finally:
            if log is not None:
                log.close()
        if starts:
            running.begin(box)
    session = WorkerSession(
        loaded.cells if loaded else [], str(workdir), settings.limits, settings.deny, load_error=load_error, box=box
    )
    collector = Collector(session)
    ini = folder / "pytest.ini"
    ini.write_text("[pytest]\n")
    args = [
        str(test_file), "-p", "course_lib.grading.plugin", "--assert=plain", "-p", "no:cacheprovider",
        "-q", "-c", str(ini), "--rootdir", str(test_file.parent), "--confcutdir", str(test_file.parent),
    ]  # fmt: skip
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            exit_code = pytest.main(args, plugins=[collector])
    finally:
        session.close()
        lost = own_box.failed if own_box is not None else None  # before the box is closed on purpose
        run = [running.finish()] if running is not None else []
        if own_box is not None:
            own_box.close()
    results = list(collector.tests.values())
    internal = None
    if collector.errors or int(exit_code) not in (0, 1) or not results:
        internal = "\n".join(collector.errors) or f"pytest exited with code {int(exit_code)} on {test_file}"
    if settings.run_notebook:
        passed = bool(run) and run[0].passed
        message = run[0].message if run else load_error or "the notebook was not run"
        outcome = "passed" if passed else "failed"
        results.append(Result("runs", RUNS_TITLE, RUNS_TASK, runs_points(test_file), "visible", outcome, message))
    for result in results:
        if result.outcome == "pending":  # never ran: the session ended early
            result.outcome, result.message = "failed", result.message or "this test did not run"
    notes = list(loaded.notes) if loaded else []
    notes += session.cell_problems()
    if lost and not session.exhausted:
        notes.append(f"the sandbox of this notebook stopped answering or died ({lost}); later tests did not run")
    timed_out = session.timeouts > 0 or session.exhausted or (bool(run) and run[0].timed_out)
    if path is None:
        status = "missing"
    else:
        lost = lost and not session.exhausted
        status = "error" if (load_error or internal or lost) else "timeout" if timed_out else "graded"
    log = output.getvalue()[-20000:]
    log += "".join(f"\n--- {r.nodeid}\n{r.detail}" for r in results if r.detail)
    if run:
        log += f"\n--- pytest --nbval-lax output\n{run[0].log[-5000:]}"
    shutil.rmtree(folder, ignore_errors=True)
    return ExerciseGrade(test_file.stem[5:7], title, path.name if path else None, results, notes, status, log, internal)


@dataclass
class StudentGrade:
    student: str
    exercises: list[ExerciseGrade]
    notes: list[str] = field(default_factory=list)  # about the submission as a whole

    @property
    def score(self) -> float:
        return sum(e.score for e in self.exercises)

    @property
    def max_score(self) -> float:
        return sum(e.max_score for e in self.exercises)

    @property
    def status(self) -> str:
        """The worst status of the exercises handed in; ``missing`` only when none was."""
        statuses = {e.status for e in self.exercises}
        for status in ("error", "timeout", "graded"):
            if status in statuses:
                return status
        return "missing" if statuses else "graded"

    @property
    def missing(self) -> list[str]:
        """The exercises (``"02"``) this student did not hand in."""
        return [e.exercise for e in self.exercises if e.status == "missing"]


def grade_student(
    student: str,
    notebooks: dict[str, Path],
    test_files: dict[str, Path],
    settings: Settings,
    workroot: Path,
    notes: list[str] | None = None,
) -> StudentGrade:
    """Grade each exercise in ``test_files`` (number → hidden tests) with the student's notebook for it."""
    grades = []
    for number, test_file in sorted(test_files.items()):
        title = test_file.stem.removeprefix("test_")
        missing = f"no notebook for exercise {title} was found in your submission"
        grades.append(grade_notebook(notebooks.get(number), test_file, settings, workroot, missing=missing))
    return StudentGrade(student, grades, list(notes or []))
