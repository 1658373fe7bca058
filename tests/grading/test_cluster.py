"""``course-grade --scheduler``: a Dask LocalCluster of 2 workers gives the grades ``--jobs 2`` gives, and
a worker killed while it grades a student costs that student a retry on another worker, not the class."""

import csv
import os
import signal
import time
from concurrent import futures
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


SLOW = "asleep"  # first in the class, the right answers after a pause: the student whose worker is killed
PAUSE = 5.0  # seconds their first cell sleeps: time to see which worker grades them, and kill it meanwhile


def write_class(folder: Path, codes: dict[str, str]) -> None:
    folder.mkdir()
    for name, code in codes.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, folder / f"{name}.ipynb")


def poll(what, deadline: float, message: str):
    """``what()`` once it is truthy, asked every 50 ms until ``deadline`` (``time.monotonic``)."""
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {message}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def executing(dask_worker) -> list[str]:
    """On a worker: the keys of the tasks it is running now (not those only assigned to it)."""
    return [ts.key for ts in dask_worker.state.executing]


def idle_with_two_workers(dask_scheduler) -> bool:
    """On the scheduler: the last class is forgotten, and the killed worker's replacement has joined."""
    return not dask_scheduler.tasks and len(dask_scheduler.workers) == 2


def kill_while_grading(client, argv: list[str]) -> tuple[int, int, list[dict]]:
    """``cli.main(argv)`` in a thread; SIGKILL the worker process grading ``SLOW`` while it does.
    Return the exit code, the killed pid, and what the scheduler logged about that worker."""
    poll(lambda: client.run_on_scheduler(idle_with_two_workers), time.monotonic() + 60, "two workers wait")
    pids = client.run(os.getpid)
    with futures.ThreadPoolExecutor(1) as thread:
        grading = thread.submit(cli.main, argv)

        def grading_slow() -> list[str]:
            assert not grading.done(), f"{SLOW} was graded before a worker running it was found: {grading.result()}"
            return [w for w, keys in client.run(executing).items() if f"grade-{SLOW}" in keys]

        [worker] = poll(grading_slow, time.monotonic() + 60, f"a worker runs grade-{SLOW}")
        os.kill(pids[worker], signal.SIGKILL)
        code = grading.result(timeout=120)
    poll(lambda: gone(pids[worker]), time.monotonic() + 30, f"the killed worker {pids[worker]} is gone")
    events = [e for _, e in client.get_events("all") if e.get("worker") == worker and e["action"] != "add-worker"]
    return code, pids[worker], events


def test_a_worker_killed_mid_grading_costs_a_retry_not_the_class(tmp_path):
    from dask.distributed import Client, LocalCluster

    write_class(tmp_path / "class", {**CODES, SLOW: f"import time\ntime.sleep({PAUSE})\n\n{CODES['right']}"})
    base = [str(tmp_path / "class"), "--tests", str(TOY_TESTS), "--jobs", "2", "--no-run"]
    assert cli.main([*base, "--out", str(tmp_path / "calm")]) == 0  # the grades without a kill
    calm = rows(tmp_path / "calm")
    assert calm[SLOW]["total"] == calm["right"]["total"] == calm["right"]["max"]

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:  # workers under nannies: a killed worker is replaced
        base += ["--scheduler", cluster.scheduler_address]
        # the scheduler's default, distributed.scheduler.allowed-failures: 3 workers may die under a task
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 3
        code, pid, events = kill_while_grading(client, [*base, "--out", str(tmp_path / "killed")])
        assert gone(pid) and [e["action"] for e in events] == ["remove-worker"] and not events[0]["expected"]
        assert f"grade-{SLOW}" in events[0]["processing-tasks"]  # the worker died grading the slow student
        assert code == 0, (tmp_path / "killed" / "grader.log").read_text()  # no grading failure
        assert rows(tmp_path / "killed") == calm  # every student graded, the slow one too, as without the kill
        story = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.story(f"grade-{SLOW}"))
        moves = [(t.start, t.finish, t.stimulus_id.rsplit("-", 1)[0]) for t in story]
        killed = moves.index(("processing", "released", "handle-worker-cleanup"))  # taken off the dead worker
        assert ("waiting", "processing") in [m[:2] for m in moves[killed:]]  # sent to a live one
        assert [m[1] for m in moves].count("memory") == 1  # and graded there, once

        # what saved them: the scheduler counts a worker's death against allowed-failures (submit's retries=
        # counts only exceptions the task raises). With none allowed, the same kill fails the slow student,
        # and only those the killed worker held: every student's task goes out at once, two to a worker
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0))
        code, pid, events = kill_while_grading(client, [*base, "--out", str(tmp_path / "no-retry")])
        assert gone(pid) and [e["action"] for e in events] == ["remove-worker"]
        held = {key.removeprefix("grade-") for key in events[0]["processing-tasks"]}
        assert SLOW in held and code == 1
        no_retry = rows(tmp_path / "no-retry")
        assert {s for s, r in no_retry.items() if r["status"] == "error" and r["total"] == "0"} == held
        assert {s: r for s, r in no_retry.items() if s not in held} == {s: r for s, r in calm.items() if s not in held}
        log = (tmp_path / "no-retry" / "grader.log").read_text()
        assert all(f"{s}: the grading process failed: KilledWorker" in log for s in held)
