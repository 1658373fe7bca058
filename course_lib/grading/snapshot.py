"""Grade many variants of one trusted notebook without running each from the top.

The course proves that its hidden tests catch typical mistakes by grading dozens of
mutants of each solution notebook (``tests/grading/test_mutants.py``). A mutant differs
from the solution from one cell on, so a fresh worker per mutant would run the same
first cells again and again. A ``Snapshot`` runs them once: a process forked from the
warm server and fenced like a worker runs the solution's code cells up to the first cell
a mutant changes, then forks a worker for that mutant. The forked worker starts in the
state a fresh worker has after those same cells, fences itself in its own folder (a copy
of the snapshot's), installs the sandbox, runs the mutant's remaining cells and serves
the hidden tests: from there on it is the worker of ``worker.py``, driven by the same
``WorkerSession`` code, with the same time limits, restarts (a fresh fork) and feedback.

    snapshot = Snapshot(solution_cells, workdir, limits, deny)
    grade_notebook(mutant_path, test_file, settings, workroot, make_session=snapshot.session)

Forking needs ``os.fork``, which the sandbox refuses, so the snapshot process runs its
own cells without the sandbox: it is only for notebooks the course trusts (its
solutions), and grading students never uses it. The snapshot only moves forward: grade
the variants in the order of their first changed cell (``first_difference``).

A fork copies only the thread that calls it, so the snapshot forks only while it runs a
single thread (it refuses otherwise), and the child computes with torch on one thread
(``session._forget_forkserver`` runs after every fork).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

from . import protocol, sandbox, worker
from .session import STARTUP_SECONDS, Limits, WorkerSession, _forkserver, process_settings, start_process, stop_process


class SnapshotError(RuntimeError):
    """The snapshot process failed: a broken course notebook or a grader bug, never a student's mistake."""


class Threaded(SnapshotError):
    """The cells so far started a thread that the snapshot cannot stop (a profiler's, say): no more forks."""


def first_difference(cells: list[str], other: list[str]) -> int:
    """Index of the first code cell where ``other`` differs from ``cells`` (the shorter length if none)."""
    return next((i for i, (a, b) in enumerate(zip(cells, other)) if a != b), min(len(cells), len(other)))


# -- the snapshot process ------------------------------------------------------------------


def _wait(pid: int, seconds: float) -> int | None:
    """Reap the forked worker ``pid``: its exit code (minus the signal that killed it), or None."""
    end = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= end:
            return None
        time.sleep(0.01)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


class _Snapshotting(worker.Worker):
    """Runs cells as far as asked, and forks a worker there on request."""

    def __init__(self, shell, conn: Connection, settings: dict) -> None:
        super().__init__(shell, conn, conn)
        self.settings = settings
        self.position = 0  # cells[:position] have run

    def serve_snapshot(self) -> None:
        while True:
            try:
                op, *args = protocol.loads(self.requests.recv_bytes())
            except (EOFError, OSError):
                return
            if op == "run":
                cells, stop = args
                self.run_cells(cells, set(), self.position, stop)
                self.position = stop
            elif op == "fork":
                workdir, deny = args
                with socket.fromfd(self.requests.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    _, fds, _, _ = socket.recv_fds(sock, 1, 2)
                if _threads() != 1:  # a lock held by another thread would stay locked in the child
                    for fd in fds:
                        os.close(fd)
                    self.send(("threads", _threads()))
                    continue
                pid = os.fork()
                if pid == 0:
                    self._become_worker(workdir, deny, *fds)
                for fd in fds:
                    os.close(fd)
                self.send(("forked", pid))
            elif op == "wait":
                pid, seconds = args
                self.send(("exited", _wait(pid, seconds)))
            else:
                self.send(("error", f"unknown request {op!r}"))

    def _become_worker(self, workdir: str, deny: list[str], requests_fd: int, replies_fd: int) -> None:
        """In the forked child: fence it in ``workdir`` as ``worker.main`` does, then serve."""
        code = 0
        try:
            # Files that the cells so far wrote are part of the state: the worker gets a copy.
            shutil.copytree(self.settings["workdir"], workdir, symlinks=True, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".worker-output"))  # fmt: skip
            worker._fence(dict(self.settings, workdir=workdir, deny=deny), {requests_fd, replies_fd}, set_limits=False)
            sandbox.install(workdir, deny)
            requests = Connection(requests_fd, writable=False)
            replies = Connection(replies_fd, readable=False)
            worker.Worker(self.shell, requests, replies).serve()
        except BaseException:
            traceback.print_exc()
            code = 70
        finally:
            os._exit(code)


def snapshot_main(conn: Connection, settings: dict) -> None:
    """The snapshot process's entry point (forked from the warm server like a worker)."""
    code = 0
    try:
        worker._fence(settings, {conn.fileno()})
        shell = worker._make_shell()
        worker._drop_privileges(settings)
        # tqdm starts a monitor thread with its first progress bar, even a disabled one (course_lib.models.train
        # makes one), and a process with a second thread cannot be forked safely. The monitor only tunes how
        # often a bar redraws, so without it the cells compute the same.
        from tqdm import std

        std.tqdm.monitor_interval = 0
        _Snapshotting(shell, conn, settings).serve_snapshot()
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)


# -- the grader's side ---------------------------------------------------------------------


class Snapshot:
    """A trusted notebook's code ``cells``, run once as far as needed, forking a worker per variant."""

    def __init__(self, cells: list[str], workdir: str, limits: Limits | None = None, deny: list[str] = ()) -> None:
        self.cells = list(cells)
        self.limits = limits or Limits()
        self.position = 0  # cells[:position] have run in the snapshot process
        self.conn, theirs = _forkserver().Pipe(duplex=True)  # a socket pair: forks need descriptors sent
        self.process = start_process(snapshot_main, theirs, process_settings(workdir, list(deny), self.limits))
        theirs.close()
        self.started = False
        self.threaded = False  # once set, each variant gets a fresh worker (see ``ForkedSession._spawn``)

    def _receive(self, seconds: float) -> tuple:
        try:
            if not self.conn.poll(seconds):
                raise SnapshotError(f"the snapshot process did not answer within {seconds:g} s")
            message = protocol.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            self.process.join(2)
            raise SnapshotError(f"the snapshot process died: {self.process.exitcode=}") from None
        if message[0] == "error":
            raise SnapshotError(message[1])
        return message

    def advance(self, stop: int) -> None:
        """Run the cells up to ``stop`` (excluded); every one of them must succeed."""
        if stop < self.position:
            raise SnapshotError(f"the snapshot has run {self.position} cells, it cannot go back to {stop}")
        if stop == self.position:
            return
        self.conn.send_bytes(protocol.dumps(("run", self.cells, stop)))
        while True:
            message = self._receive(self.limits.timeout if self.started else STARTUP_SECONDS)
            self.started = True
            if message[0] == "cell_done" and message[2] is not None:
                error = message[2]
                raise SnapshotError(f"code cell {message[1] + 1} failed: {error['type']}: {error['message']}")
            if message[0] == "ready":
                break
        self.position = stop

    def fork(self, start: int, workdir: str, deny: list[str], fds: tuple[int, int]) -> int:
        """Fork a worker after ``cells[:start]``, talking through ``fds`` (its requests' and replies' ends)."""
        self.advance(start)
        self.conn.send_bytes(protocol.dumps(("fork", workdir, list(deny))))
        with socket.fromfd(self.conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            socket.send_fds(sock, [b"F"], list(fds))
        reply = self._receive(self.limits.timeout)
        if reply[0] == "threads":
            self.threaded = True
            raise Threaded(f"the snapshot process runs {reply[1]} threads")
        return reply[1]

    def wait(self, pid: int, seconds: float) -> int | None:
        self.conn.send_bytes(protocol.dumps(("wait", pid, seconds)))
        return self._receive(seconds + self.limits.timeout)[1]

    def session(self, cells: list[str], workdir: str, limits: Limits, deny: list[str], load_error=None):
        """A ``WorkerSession`` for a variant of the notebook (called like ``WorkerSession``)."""
        if limits != self.limits:  # the forked worker inherits the snapshot's resource limits
            raise ValueError(f"the snapshot runs under {self.limits}, not {limits}")
        return ForkedSession(cells, workdir, limits, deny, load_error, snapshot=self)

    def close(self) -> None:
        """Stop the snapshot process; its forked workers die with it."""
        stop_process(self.process)
        self.conn.close()


class _Forked:
    """A worker forked by the snapshot process, as ``stop_process`` and ``WorkerSession`` use it."""

    def __init__(self, snapshot: Snapshot, pid: int) -> None:
        self.snapshot, self.pid, self.exitcode = snapshot, pid, None

    def kill(self) -> None:
        if self.exitcode is None:  # not reaped yet, so the pid is still this process's
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def join(self, timeout: float | None = None) -> None:
        if self.exitcode is None:
            self.exitcode = self.snapshot.wait(self.pid, 5.0 if timeout is None else timeout)


@dataclass
class ForkedSession(WorkerSession):
    """A ``WorkerSession`` whose workers are forked from ``snapshot`` at the first changed cell."""

    snapshot: Snapshot | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.start = first_difference(self.snapshot.cells, self.cells)

    def _spawn(self) -> None:
        if self.snapshot.threaded:  # forking is unsafe from here on: the ordinary fresh worker, from cell 0
            self.start = 0
            return super()._spawn()
        requests_r, requests_w = _forkserver().Pipe(duplex=False)
        replies_r, replies_w = _forkserver().Pipe(duplex=False)
        try:
            pid = self.snapshot.fork(self.start, self.workdir, self.deny, (requests_r.fileno(), replies_w.fileno()))
        except Threaded:
            requests_w.close()
            replies_r.close()
            return self._spawn()
        finally:
            requests_r.close()
            replies_w.close()
        for conn in (requests_w, replies_r):
            os.set_blocking(conn.fileno(), False)
        self.process, self.to_worker, self.from_worker = _Forked(self.snapshot, pid), requests_w, replies_r

    def _run_request(self) -> tuple:
        return ("run", self.cells, sorted(self.skipped), self.start)
