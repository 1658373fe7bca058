"""The box on its own: it forks workers warm, after trusted cells if asked, and fails clearly."""

import os
import time

import pytest

from course_lib.grading import WorkerCrashed, defined
from course_lib.grading.box import Box, BoxError
from course_lib.grading.remote import Student
from course_lib.grading.session import Limits, WorkerSession

LIMITS = Limits(timeout=10, budget=120)
TRUSTED = [
    "import os\ncounter = 41",
    "open('made_by_the_box.txt', 'w').write('state')",
    "def answer():\n    return counter + 1",
]


@pytest.fixture
def box(tmp_path):
    box = Box(LIMITS, [], str(tmp_path / "box"))
    (tmp_path / "box").mkdir()
    yield box
    box.close()


def session_for(box, cells, folder):
    folder.mkdir()
    return WorkerSession(cells, str(folder), LIMITS, [], box=box)


def test_a_worker_starts_after_the_trusted_cells_it_shares(box, tmp_path):
    box.advance(TRUSTED, 0)
    variant = [*TRUSTED[:2], "def answer():\n    return counter - 1\n\nfiles = sorted(os.listdir())"]
    session = session_for(box, variant, tmp_path / "w1")
    try:
        student = Student(session)
        assert student.answer() == 40  # the variant's own last cell, on the box's state
        assert "made_by_the_box.txt" in student.files  # the box's files were copied into the worker's folder
        assert session.start == 2 and box.position == 2
        assert set(session.reports) == {2}  # only the changed cell ran in the worker
    finally:
        session.close()
    with pytest.raises(BoxError, match="cannot go back to 1"):
        box.advance(TRUSTED, 1)


def test_once_the_trusted_cells_start_a_thread_workers_start_from_the_first_cell(box, tmp_path):
    cells = ["import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
             "def answer():\n    return 42"]  # fmt: skip
    box.advance(cells, 0)
    session = session_for(box, [cells[0], "def answer():\n    return 41"], tmp_path / "w1")
    try:
        assert Student(session).answer() == 41
        assert box.threaded and session.start == 0 and set(session.reports) == {0, 1}
    finally:
        session.close()


def test_a_trusted_cell_that_fails_stops_the_box_with_its_error(box):
    with pytest.raises(BoxError, match=r"code cell 2 failed: ZeroDivisionError"):
        box.advance(["x = 1", "1 / 0", "y = 2"], 3)


NOBODY = (65534, 65534)


@pytest.mark.parametrize("user", [None, NOBODY], ids=["same user", "nobody"])
def test_a_box_that_dies_fails_the_request_and_the_next_one_cleanly(request, tmp_path, user):
    """The worker dies with its box, also as another user (a change of user clears the parent-death signal)."""
    work = request.getfixturevalue("nobodys_workdir") if user else tmp_path / "w"
    work.mkdir(exist_ok=True)
    limits = Limits(timeout=10, budget=120, user=user)
    session = WorkerSession(["def add(a, b):\n    return a + b"], str(work), limits, [])
    try:
        student = Student(session)
        assert student.add(1, 2) == 3
        worker = session.process.pid  # without bubblewrap, a pid of this machine's
        os.killpg(session.box.process.pid, 9)
        session.box.process.wait()
        end = time.monotonic() + 10
        while os.path.exists(f"/proc/{worker}") and time.monotonic() < end:  # the worker dies with its box
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{worker}")
        with pytest.raises(WorkerCrashed):
            student.add(1, 2)
        with pytest.raises(WorkerCrashed, match="did not start"):
            student.add(1, 2)
    finally:
        session.close()


def test_the_worker_output_file_is_never_opened_through_a_link(tmp_path, nobodys_workdir):
    """A link planted in the work folder (by an earlier, unhooked child) must not lead a restarted worker,
    started as root, to write into a root-only file."""
    secret = tmp_path / "root-only"
    secret.write_text("untouched")
    secret.chmod(0o600)
    work = nobodys_workdir
    os.symlink(secret, work / ".worker-output")
    limits = Limits(timeout=10, budget=120, user=NOBODY)
    session = WorkerSession(["import os\nos.write(1, b'PWNED')"], str(work), limits, [])
    try:
        with pytest.raises(WorkerCrashed, match="did not start"):
            defined(Student(session), "anything")
    finally:
        session.close()
    assert secret.read_text() == "untouched"
