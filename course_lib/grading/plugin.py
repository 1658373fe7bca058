"""The pytest plugin of hidden tests: markers, the ``student`` fixture, result collection.

Markers (on a test, or on a class to cover its tests):

* ``@pytest.mark.points(2)``: what the test is worth (required);
* ``@pytest.mark.task("softmax")``: the task it grades, one column of the class CSV
  (required; use the task's ``grade_id`` from the solution notebook);
* ``@pytest.mark.visibility("after_due_date")``: Gradescope's visibility (default
  ``"visible"``).

The ``student`` fixture is the student's notebook (see ``remote.py``). Under the grader
it is the submission being graded. Run directly (``pytest tests/exercises``) it is the
solution notebook ``solutions/NN_*.ipynb`` matching the test file's ``test_NN_`` prefix,
or the notebook named by the ``COURSE_NOTEBOOK`` environment variable: that is how the
test suite proves that the solutions pass their hidden tests.

``Collector`` records, for the grader, each test's points and the feedback a student may
see: an assertion's message, or the message of a ``StudentCodeError``; never the test's
source or traceback (the grader runs pytest with ``--assert=plain``, so an assertion's
text is its message alone).
"""

from __future__ import annotations

import os
import re
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import notebook as nbload
from .errors import NotebookUnreadable, StudentCodeError
from .remote import Student
from .session import Limits, WorkerSession

SESSION_KEY = pytest.StashKey[WorkerSession]()
MARKERS = (
    "points(n): points a hidden test is worth",
    "task(name): the exercise task (grade_id) a hidden test grades",
    "visibility(kind): Gradescope visibility of a hidden test's result (visible, hidden, after_due_date...)",
)


def register_markers(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)


def pytest_configure(config: pytest.Config) -> None:
    register_markers(config)


def deny_paths(test_file: Path) -> list[str]:
    """What student code must not read when graded outside the command-line grader."""
    root = Path(__file__).resolve().parents[2]
    paths = [test_file.parent, root / "solutions", root / "tests", root / ".git"]
    return [str(p) for p in paths]


@pytest.fixture(scope="session")
def _standalone_sessions():
    """Sessions on solution notebooks, when hidden tests run outside the grader."""
    sessions: dict[Path, WorkerSession] = {}
    folder = tempfile.TemporaryDirectory(prefix="course-hidden-tests-")
    yield sessions, Path(folder.name)
    for session in sessions.values():
        session.close()
    folder.cleanup()


def _standalone_notebook(request: pytest.FixtureRequest) -> Path:
    if os.environ.get("COURSE_NOTEBOOK"):
        return Path(os.environ["COURSE_NOTEBOOK"])
    match = re.match(r"test_(\d\d)_", request.path.name)
    if not match:
        pytest.fail(f"{request.path.name} does not start with test_NN_, so no solution notebook matches it")
    candidates = sorted((request.config.rootpath / "solutions").glob(f"{match.group(1)}_*.ipynb"))
    if len(candidates) != 1:
        pytest.fail(f"expected one solutions/{match.group(1)}_*.ipynb, found {len(candidates)}")
    return candidates[0]


@pytest.fixture
def student(request: pytest.FixtureRequest, _standalone_sessions) -> Student:
    """The student's notebook: ``student.softmax(x)`` calls the notebook's ``softmax``."""
    session = request.config.stash.get(SESSION_KEY, None)
    if session is None:
        sessions, folder = _standalone_sessions
        path = _standalone_notebook(request).resolve()
        if path not in sessions:
            workdir = folder / f"w{len(sessions)}"
            workdir.mkdir()
            try:
                cells, error = nbload.load(path).cells, None
            except NotebookUnreadable as err:
                cells, error = [], str(err)
            sessions[path] = WorkerSession(cells, str(workdir), Limits(), deny_paths(request.path), load_error=error)
        session = sessions[path]
    return Student(session)


@dataclass
class Result:
    nodeid: str
    name: str  # shown to students: the docstring's first line, else the function name
    task: str
    points: float
    visibility: str = "visible"
    outcome: str = "failed"  # passed, failed, skipped
    message: str = ""  # feedback for the student (never test source)
    detail: str = ""  # for the teacher's log: the traceback of an unexpected error


def _title(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None)
    title = doc.strip().splitlines()[0].strip() if doc and doc.strip() else None
    if title is None:
        title = re.sub(r"^test_", "", getattr(item, "originalname", item.name)).replace("_", " ")
    callspec = getattr(item, "callspec", None)
    return f"{title} [{callspec.id}]" if callspec else title


def feedback_message(exc: BaseException) -> tuple[str, str]:
    """``(message for the student, detail for the teacher)`` for an exception in a test."""
    if isinstance(exc, StudentCodeError):
        return str(exc), ""
    if isinstance(exc, AssertionError):
        text = str(exc).strip()
        return (text or "a hidden check failed (this test has no description)"), ""
    detail = "".join(traceback.format_exception(exc))
    text = f"{type(exc).__name__}: {str(exc)[:300]}"
    return (
        f"the test could not use what your code returned ({text}); if you believe your answer is right, "
        "ask your teacher",
        detail,
    )


class Collector:
    """Given to ``pytest.main(plugins=[...])`` by the grader: supplies the session, records results."""

    def __init__(self, session: WorkerSession) -> None:
        self.session = session
        self.tests: dict[str, Result] = {}
        self.errors: list[str] = []  # problems of the hidden tests themselves (for the teacher)

    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[SESSION_KEY] = self.session

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.errors.append(f"collecting {report.nodeid or 'the tests'} failed:\n{report.longrepr}")

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            points, task = item.get_closest_marker("points"), item.get_closest_marker("task")
            if points is None or task is None:
                self.errors.append(f"{item.nodeid} needs @pytest.mark.points(n) and @pytest.mark.task(name)")
                continue
            visibility = item.get_closest_marker("visibility")
            self.tests[item.nodeid] = Result(
                item.nodeid,
                _title(item),
                str(task.args[0]),
                float(points.args[0]),
                str(visibility.args[0]) if visibility else "visible",
                outcome="pending",
            )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        info = self.tests.get(item.nodeid)
        if info is None:
            return
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            info.outcome, info.message = "skipped", f"not run: {reason}"
        elif report.failed and info.outcome != "failed":
            info.outcome = "failed"
            if call.excinfo is not None:
                info.message, info.detail = feedback_message(call.excinfo.value)
        elif report.when == "call" and report.passed and info.outcome == "pending":
            info.outcome = "passed"
