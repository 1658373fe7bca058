"""A class past one machine: each submission graded by a Dask worker, results gathered here.

    course-grade submissions/ --scheduler tcp://HOST:8786   # workers started with `dask worker`
    course-grade submissions/ --scheduler local --jobs 4     # a LocalCluster of 4 workers here

Each task carries what it needs as bytes (the student's notebooks and the hidden tests), so
a worker needs only the course installed and bubblewrap, not the teacher's files. The worker
writes them to a private temporary folder, grades the student with the same sandbox as
``--jobs``, and returns the ``StudentGrade``; only this process writes ``--out``.

A worker that dies mid-grading costs its students a retry on another worker, not the
class: the scheduler sends a lost worker's tasks elsewhere, up to its
``distributed.scheduler.allowed-failures`` times (3 by default; ``tests/grading/test_cluster.py``
kills a worker to check). ``RETRIES`` is for a task that raises instead.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .grade import StudentGrade, grade_student

RETRIES = 2  # a task that raised (the grader failed there) runs again, on any worker
_tests_written: dict[str, Path] = {}  # in a worker: the hidden tests' folder, by their content


def _hidden_tests(test_files: dict[str, tuple[str, bytes]]) -> dict[str, Path]:
    """The hidden tests written once per worker process: pytest, run in this process for every
    student, imports a test module once, so later students must find it at the same path."""
    digest = hashlib.sha256(repr(sorted(test_files.items())).encode()).hexdigest()
    folder = _tests_written.get(digest)
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="course-grade-tests-"))
        for name, data in test_files.values():
            (folder / name).write_bytes(data)
        _tests_written[digest] = folder
    return {n: folder / name for n, (name, _) in test_files.items()}


def pack(job: tuple) -> tuple:
    """A job of ``cli.run`` with its files read: what a worker on another machine needs."""
    student, notebooks, test_files, settings, _, notes = job
    notebooks = {n: (p.name, p.read_bytes()) for n, p in notebooks.items()}
    test_files = {n: (p.name, p.read_bytes()) for n, p in test_files.items()}
    return student, notebooks, test_files, settings, notes


def grade_packed(packed: tuple) -> StudentGrade:
    """On a worker: write the files to a private folder, grade the student there, clean up."""
    student, notebooks, test_files, settings, notes = packed
    root = Path(tempfile.mkdtemp(prefix="course-grade-"))
    try:
        root.chmod(0o711)
        (root / "submission").mkdir()
        (root / "work").mkdir(mode=0o711)
        paths = {n: root / "submission" / name for n, (name, _) in notebooks.items()}
        for number, (_, data) in notebooks.items():
            paths[number].write_bytes(data)
        return grade_student(student, paths, _hidden_tests(test_files), settings, root / "work", notes)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(jobs_list: list[tuple], scheduler: str, workers: int, done: Callable, failed: Callable) -> None:
    """Grade every job on the Dask cluster at ``scheduler`` (``local``: start one of ``workers``)."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            pending = {}
            for job in jobs_list:
                future = client.submit(grade_packed, pack(job), retries=RETRIES, pure=False, key=f"grade-{job[0]}")
                pending[future] = job
            for future in as_completed(pending):
                job = pending.pop(future)
                try:
                    grade = future.result()
                except Exception as err:  # every retry failed: the grader's failure, not the student's
                    failed(job, err)
                else:
                    done(grade)
                future.release()  # a result already here is not graded again if its worker dies later
    finally:
        if cluster is not None:
            cluster.close()
