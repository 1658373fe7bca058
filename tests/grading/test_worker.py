"""The worker process on its own: isolation from the grader, restarts, limits."""

import os

import numpy as np
import pytest

from course_lib.grading import (
    BudgetExceeded,
    CallTimeout,
    NotDefined,
    StudentRaised,
    WorkerCrashed,
    call_with_args,
    keep,
    keep_attr,
)
from course_lib.grading.remote import Student
from course_lib.grading.session import Limits, WorkerSession

CELLS = [
    "import os\nimport numpy as np\nimport torch",
    "def add(a, b):\n    return a + b",
    "def whoami():\n    return os.getuid(), os.getpid()",
    "class Scale(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    "        self.w = torch.nn.Parameter(torch.ones(3))\n    def forward(self, x):\n        return self.w * x",
    "def shift(x):\n    x -= 1\n    return x",
    "def crash():\n    os._exit(7)",
    "def spin():\n    while True:\n        pass",
]


@pytest.fixture
def student(tmp_path):
    session = WorkerSession(CELLS, str(tmp_path), Limits(timeout=5, budget=120), deny=[])
    yield Student(session)
    session.close()


def test_calls_run_in_another_process_and_values_come_back(student):
    assert student.add(2, 3) == 5
    assert np.array_equal(student.add(np.ones(2), 1), np.full(2, 2.0))
    assert student.whoami()[1] != os.getpid()


def test_classes_live_in_the_worker_and_gradients_can_be_read_there(student):
    layer = student.Scale()
    assert str(type(layer).__name__) == "Remote"
    out = keep(layer, __import__("torch").tensor([1.0, 2.0, 3.0]))
    keep(out.sum).backward()
    grad = keep_attr(layer, "w").grad
    assert grad.tolist() == [1.0, 2.0, 3.0]


def test_in_place_changes_to_arguments_are_visible(student):
    _, args, _ = call_with_args(student.shift, np.zeros(2))
    assert args[0].tolist() == [-1.0, -1.0]


def test_a_crash_fails_one_call_and_the_next_starts_a_fresh_worker(student):
    first = student.whoami()[1]
    with pytest.raises(WorkerCrashed, match="exited with code 7"):
        student.crash()
    assert student.add(1, 1) == 2
    assert student.whoami()[1] != first


def test_a_call_past_the_time_limit_is_stopped_and_not_repeated(student):
    with pytest.raises(CallTimeout, match="did not finish within 5 s"):
        student.spin()
    with pytest.raises(Exception, match="ran past the time limit in an earlier test"):
        student.spin()
    assert student.add(1, 2) == 3


def test_errors_name_the_student_code(student):
    with pytest.raises(StudentRaised, match=r"`add` raised TypeError") as err:
        student.add(1, "a")
    assert err.value.is_a(TypeError) and "code cell 2, line 2" in str(err.value)
    with pytest.raises(NotDefined, match="`sub` is not defined in your notebook"):
        student.sub(1, 2)


def test_the_worker_can_run_as_an_unprivileged_user(nobodys_workdir):
    session = WorkerSession(CELLS, str(nobodys_workdir), Limits(timeout=5, user=(65534, 65534)), deny=[])
    try:
        assert Student(session).whoami()[0] == 65534
    finally:
        session.close()


def test_the_time_budget_ends_a_submission(tmp_path):
    cells = ["import time\ndef slow():\n    time.sleep(1.5)\n    return 1"]
    session = WorkerSession(cells, str(tmp_path), Limits(timeout=5, budget=4), deny=[])
    student = Student(session)
    try:
        assert student.slow() == 1 and student.slow() == 1
        with pytest.raises(BudgetExceeded, match="used up its time budget"):
            student.slow()
        with pytest.raises(BudgetExceeded):  # and later tests fail at once
            student.slow()
        assert session.exhausted
    finally:
        session.close()
