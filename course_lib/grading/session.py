"""The grader's side of one student's worker: start it, time it, restart it, talk to it.

``WorkerSession(cells, workdir, limits, deny)`` starts nothing until a hidden test first
needs the student's code. Then it forks a worker (``worker.py``) from a warm server,
sends it the notebook's code cells and watches them run, one time limit per cell. A cell
that runs too long or kills the process is recorded, and the worker is started again
with that cell skipped, so one runaway cell costs only what depends on it. After that,
every request has its own time limit, and all of them together share the submission's
time budget. A worker that dies or hangs during a request fails only that request; the
next one starts a fresh worker (re-running the notebook).

Replies are decoded with ``protocol.loads`` (plain data only) and read with a deadline,
so nothing the student's code writes to the pipe can run code here or block the grader.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .errors import (
    BudgetExceeded,
    CallTimeout,
    NotDefined,
    NotebookUnreadable,
    NotImplementedYet,
    NotPlainData,
    StudentRaised,
    WorkerCrashed,
)

# Imported once by the server that forks the workers, so that a worker starts warm.
PRELOAD = [
    "numpy",
    "torch",
    "matplotlib.pyplot",
    "IPython.core.interactiveshell",
    "course_lib",
    "course_lib.checks",
    "course_lib.viz",
    "course_lib.grading.worker",
    "ipykernel.kernelapp",
    "matplotlib_inline.backend_inline",
    "course_lib.grading.kernel",
]
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MALLOC_ARENA_MAX": "2", "MPLBACKEND": "Agg"}  # fmt: skip
STARTUP_SECONDS = 120.0  # the first fork waits for the server to import torch & co.

_context = None


def _forget_forkserver() -> None:
    """In a forked child (a grading process of ``--jobs N``), start a fork server of its own.

    The parent's fork server is not this process's child, so multiprocessing could not check
    on it (``waitpid`` fails); forgetting it makes the first worker start a new one.
    The child also computes on one thread: an OpenMP thread pool started by the parent
    before the fork does not exist in the child, and using it can hang.
    """
    global _context
    _context = None
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is None:
        return
    if server._forkserver_alive_fd is not None:
        try:
            os.close(server._forkserver_alive_fd)
        except OSError:
            pass
    for name in ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid", "_inherited_fds"):
        if hasattr(server, name):
            setattr(server, name, None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_forkserver)


def _forkserver():
    global _context
    if _context is None:
        # Inherited by the fork server before it imports torch: one thread per worker.
        for key, value in THREAD_ENV.items():
            os.environ.setdefault(key, value)
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


@contextmanager
def _main_module_hidden():
    """Start processes without multiprocessing re-importing the grader's ``__main__`` in them.

    A forkserver child normally re-imports the parent's main module (the CLI script, or
    pytest): that costs time in every worker and runs a script that lacks an
    ``if __name__ == "__main__":`` guard. A bare module in its place makes it skip that.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


_start_lock = threading.Lock()  # the nbval thread and the tests' thread both start processes


def warm_up() -> None:
    """Start the warm server now, so that its imports overlap with other work."""
    with _start_lock:
        _forkserver()
        multiprocessing.forkserver.ensure_running()


def start_process(target, *args) -> multiprocessing.Process:
    """Fork ``target(*args)`` from the warm server (a worker, or a kernel for nbval)."""
    with _start_lock:
        process = _forkserver().Process(target=target, args=args, daemon=False)
        with _main_module_hidden():
            process.start()
    return process


def stop_process(process: multiprocessing.Process) -> None:
    """Kill a process started by ``start_process``, with everything it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)  # it leads its own process group
    except (ProcessLookupError, PermissionError):
        pass
    process.kill()
    process.join(5)


class Sandboxed(subprocess.Popen):
    """A process in a bubblewrap sandbox, as ``stop_process`` and ``WorkerSession`` use a worker."""

    def join(self, timeout: float | None = None) -> None:
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    @property
    def exitcode(self) -> int | None:
        """The code the process inside exited with; minus the signal that killed it (bwrap: 128 + signal)."""
        code = self.poll()
        return -(code - 128) if code is not None and 128 < code < 160 else code


@dataclass
class Limits:
    """What one submission may use."""

    timeout: float = 60.0  # seconds for each notebook cell and each call from a test
    budget: float = 600.0  # seconds of wall time for all of them together
    memory_mb: int = 2048  # memory the student's code may allocate, beyond Python, numpy and torch
    file_size_mb: int = 64  # largest file the student's code may write
    user: tuple[int, int] | None = None  # (uid, gid) to run as, when the grader runs as root
    isolation: str = "none"  # "bwrap": each process in a bubblewrap sandbox (isolation.py); "none": fenced only
    disk_mb: int = 256  # what the student's code may write in all, with isolation (an in-memory work folder)
    processes: int = 64  # processes and threads the sandbox's user may run, with isolation


def process_settings(workdir: str, deny: list[str], limits: Limits) -> dict:
    """What a forked worker or kernel needs to fence itself (see ``worker._fence``)."""
    uid, gid = limits.user or (None, None)
    return {
        "workdir": workdir,
        "deny": list(deny),
        "memory_mb": limits.memory_mb,
        "file_size_mb": limits.file_size_mb,
        "cpu_seconds": limits.budget + 30,
        "uid": uid,
        "gid": gid,
    }


class _Timeout(Exception):
    def __init__(self, budget: bool) -> None:
        self.budget = budget


class _Died(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


SIGNALS = {
    signal.SIGSEGV: "it crashed (segmentation fault)",
    signal.SIGABRT: "it aborted (os.abort() or a failed C-level check)",
    signal.SIGKILL: "it was killed (out of memory?)",
    signal.SIGBUS: "it crashed (bus error)",
    signal.SIGFPE: "it crashed (floating-point exception)",
    signal.SIGILL: "it crashed (illegal instruction)",
    signal.SIGXCPU: "it used up its CPU time",
}


def exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return SIGNALS.get(-exitcode, f"it was stopped by {name}")
    return f"it exited with code {exitcode} (did the code call os._exit()?)"


@dataclass
class CellReport:
    """What happened to one code cell in the worker's last complete run."""

    error: dict | None = None  # describe_exception() of what it raised
    stopped: str | None = None  # why it was stopped and skipped (time limit, crash)
    output: str = ""


@dataclass
class WorkerSession:
    """One student's notebook, run in a worker process and called from hidden tests."""

    cells: list[str]
    workdir: str
    limits: Limits = field(default_factory=Limits)
    deny: list[str] = field(default_factory=list)
    load_error: str | None = None  # the notebook could not be read: every request fails with this

    def __post_init__(self) -> None:
        self.process = None
        self.reports: dict[int, CellReport] = {}
        self.skipped: dict[int, str] = {}
        self.timed_out_names: set[str] = set()
        self.generation = 0
        self.deadline: float | None = None
        self.exhausted = False
        self.crashes = 0
        self.timeouts = 0
        self.notes: list[str] = []

    # -- framing with deadlines (multiprocessing.Connection's format) -------------------
    def _left(self, limit: float) -> tuple[float, bool]:
        """Seconds to wait, and whether the budget (rather than ``limit``) is what ends it."""
        if self.deadline is None:  # the clock starts when the first worker is ready
            return limit, False
        budget_left = self.deadline - time.monotonic()
        return (limit, False) if limit <= budget_left else (max(budget_left, 0.0), True)

    def _read_exactly(self, fd: int, n: int, end: float, budget: bool) -> bytes:
        chunks, got = [], 0
        while got < n:
            wait = end - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise _Timeout(budget)
            try:
                chunk = os.read(fd, min(n - got, 1 << 20))
            except BlockingIOError:
                continue
            except OSError as err:
                raise _Died(f"its pipe broke ({err})") from None
            if not chunk:
                raise _Died(self._reap())
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _receive(self, limit: float) -> tuple:
        wait, budget = self._left(limit)
        end = time.monotonic() + wait
        fd = self.from_worker.fileno()
        (size,) = struct.unpack("!i", self._read_exactly(fd, 4, end, budget))
        if size == -1:
            (size,) = struct.unpack("!Q", self._read_exactly(fd, 8, end, budget))
        if not 0 <= size <= protocol.MAX_MESSAGE:
            raise _Died(f"it sent a message of {size} bytes, more than the grader accepts")
        data = self._read_exactly(fd, size, end, budget)
        try:
            message = protocol.loads(data, self._make_remote)
        except protocol.ProtocolError as err:
            raise _Died(f"it sent something that is not a valid reply ({err})") from None
        if type(message) is not tuple or not message or type(message[0]) is not str:
            raise _Died("it sent something that is not a valid reply")
        return message

    def _send(self, message: tuple) -> None:
        data = protocol.dumps(message, _ref_of)
        header = struct.pack("!i", len(data)) if len(data) < 2**31 - 1 else struct.pack("!iQ", -1, len(data))
        view = memoryview(header + data)
        wait, budget = self._left(self.limits.timeout)
        end = time.monotonic() + wait
        fd = self.to_worker.fileno()
        while view:
            left = end - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise _Timeout(budget)
            try:
                view = view[os.write(fd, view[: 1 << 16]) :]
            except BlockingIOError:
                continue
            except OSError:
                raise _Died(self._reap()) from None

    # -- the process -------------------------------------------------------------------
    def _settings(self) -> dict:
        return process_settings(self.workdir, self.deny, self.limits)

    def _spawn(self) -> None:
        if self.limits.isolation == "bwrap":
            return self._spawn_isolated()
        from . import worker

        ctx = _forkserver()
        requests_r, requests_w = ctx.Pipe(duplex=False)
        replies_r, replies_w = ctx.Pipe(duplex=False)
        process = start_process(worker.main, requests_r, replies_w, self._settings())
        requests_r.close()
        replies_w.close()
        for conn in (requests_w, replies_r):
            os.set_blocking(conn.fileno(), False)
        self.process, self.to_worker, self.from_worker = process, requests_w, replies_r

    def _spawn_isolated(self) -> None:
        """A cold worker in a bubblewrap sandbox of its own, its work folder an empty in-memory one."""
        from . import isolation

        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        command = [sys.executable, "-m", "course_lib.grading.worker", str(requests_r), str(replies_w),
                   json.dumps(self._settings())]  # fmt: skip
        command = isolation.wrap(
            command,
            scratch=[self.workdir],
            files=isolation.font_cache(os.path.join(self.workdir, ".matplotlib")),
            disk_mb=self.limits.disk_mb,
            processes=self.limits.processes,
        )
        env = {**isolation.environment(), **THREAD_ENV}
        quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        process = Sandboxed(command, env=env, pass_fds=(requests_r, replies_w), start_new_session=True, **quiet)
        os.close(requests_r)
        os.close(replies_w)
        to_worker = multiprocessing.connection.Connection(requests_w, readable=False)
        from_worker = multiprocessing.connection.Connection(replies_r, writable=False)
        for conn in (to_worker, from_worker):
            os.set_blocking(conn.fileno(), False)
        self.process, self.to_worker, self.from_worker = process, to_worker, from_worker

    def _reap(self) -> str:
        """Wait briefly for the dead worker and say why it died."""
        if self.process is None:
            return "it is gone"
        self.process.join(2)
        return exit_reason(self.process.exitcode)

    def _kill(self) -> None:
        if self.process is None:
            return
        stop_process(self.process)
        for conn in (self.to_worker, self.from_worker):
            conn.close()
        self.process = None

    def close(self) -> None:
        self._kill()

    def _ensure_started(self) -> None:
        if self.load_error is not None:
            raise NotebookUnreadable(self.load_error)
        if self.exhausted:
            raise BudgetExceeded(self._budget_message())
        if self.process is not None:
            return
        while True:
            self._spawn()
            self.reports = {}
            current = None
            try:
                self._send(self._run_request())
                while True:
                    message = self._receive(self.limits.timeout if current is not None else STARTUP_SECONDS)
                    if self.deadline is None:  # the grader's own start-up is not the student's time
                        self.deadline = time.monotonic() + self.limits.budget
                    if message[0] == "cell":
                        current = message[1]
                    elif message[0] == "cell_done":
                        self.reports[message[1]] = CellReport(error=message[2], output=message[3])
                        current = None
                    elif message[0] == "ready":
                        break
                    else:
                        raise _Died("it sent something that is not a valid reply")
            except _Timeout as stop:
                self._kill()
                if stop.budget:
                    self.exhausted = True
                    raise BudgetExceeded(self._budget_message()) from None
                if current is None:
                    raise WorkerCrashed("the grader could not start the process that runs your code") from None
                self.timeouts += 1
                self.skipped[current] = f"it ran longer than {self.limits.timeout:g} s and was stopped"
                continue
            except _Died as died:
                self._kill()
                if current is None:
                    raise WorkerCrashed(f"the process that runs your code did not start: {died.reason}") from None
                self.crashes += 1
                self.skipped[current] = f"it stopped the process running your code: {died.reason}"
                continue
            for index, reason in self.skipped.items():
                self.reports[index] = CellReport(stopped=reason)
            self.generation += 1
            return

    def _run_request(self) -> tuple:
        """What a fresh worker is asked to run: every code cell but the skipped ones."""
        return ("run", self.cells, sorted(self.skipped))

    def _budget_message(self) -> str:
        return (
            f"your notebook used up its time budget ({self.limits.budget:g} s for running it and every test); "
            "the remaining tests were not run"
        )

    # -- requests from the tests ---------------------------------------------------------
    def request(self, message: tuple, what: str) -> tuple:
        """Send one request and return the reply; ``what`` names the call in messages."""
        self._ensure_started()
        try:
            self._send(message)
            return self._receive(self.limits.timeout)
        except _Timeout as stop:
            self._kill()
            if stop.budget:
                self.exhausted = True
                raise BudgetExceeded(self._budget_message()) from None
            self.timeouts += 1
            raise CallTimeout(
                f"{what} did not finish within {self.limits.timeout:g} s (an infinite loop?); it was stopped"
            ) from None
        except _Died as died:
            self._kill()
            self.crashes += 1
            raise WorkerCrashed(f"the process running your code died during {what}: {died.reason}") from None

    def value(self, reply: tuple, what: str) -> Any:
        """The value in a reply, or the student-facing error it stands for."""
        kind = reply[0]
        if kind in ("ok", "ok_args"):
            return reply[1] if kind == "ok" else reply[1:]
        if kind == "raised":
            error = reply[1]
            if error["type"] == "NotImplementedError" and not error["message"]:
                raise NotImplementedYet(f"{what} is not implemented yet (it still raises NotImplementedError)")
            if "NotImplementedError" in error["mro"]:
                raise NotImplementedYet(f"{what} is not implemented yet: {error['message']}")
            where = f"\n  at {error['frames'][-1]}" if error["frames"] else ""
            text = f": {error['message']}" if error["message"] else ""
            raise StudentRaised(f"{what} raised {error['type']}{text}{where}", error["type"], tuple(error["mro"]),
                                error["message"])  # fmt: skip
        if kind == "missing":
            raise NotDefined(self.not_defined_message(reply[1], reply[2]))
        if kind == "unsendable":
            raise NotPlainData(f"{what} returned something the grader could not receive: {reply[1]}")
        raise WorkerCrashed(f"the process running your code sent an unexpected reply to {what}")

    def not_defined_message(self, name: str, similar: list[str]) -> str:
        """Why ``name`` is missing, from what happened to the cell that defines it."""
        pattern = re.compile(rf"^(?:(?:async\s+)?def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*[:=]", re.M)
        for index, source in enumerate(self.cells):
            if pattern.search(source):
                report = self.reports.get(index, CellReport())
                where = f"`{name}` is not defined: code cell {index + 1}, which defines it,"
                if report.stopped:
                    return f"{where} was skipped: {report.stopped}"
                if report.error:
                    return f"{where} failed with {report.error['type']}: {report.error['message']}"
        hint = f" (did you mean `{similar[0]}`?)" if similar else ""
        return f"`{name}` is not defined in your notebook — did you rename it or skip its cell?{hint}"

    def _make_remote(self, ref: protocol.HandleRef):
        from .remote import Remote

        return Remote(self, ref, self.generation)

    # -- what the feedback needs --------------------------------------------------------
    def cell_problems(self) -> list[str]:
        """One line per code cell that raised or was stopped in the last complete run."""
        lines = []
        for index in sorted(self.reports):
            report = self.reports[index]
            first = next((ln.strip() for ln in self.cells[index].splitlines() if ln.strip()), "")
            where = f"code cell {index + 1} (`{first[:60]}`)"
            if report.stopped:
                lines.append(f"{where} was skipped: {report.stopped}")
            elif report.error:
                err = report.error
                at = f" at {err['frames'][-1]}" if err["frames"] else ""
                lines.append(f"{where} raised {err['type']}: {err['message'][:300]}{at}")
        return lines


def _ref_of(obj: Any) -> protocol.HandleRef:
    """Arguments that are the student's own objects go back to the worker as handles."""
    from .remote import Remote

    if isinstance(obj, Remote):
        return obj._live_ref()
    raise TypeError(f"a hidden test cannot send a {type(obj).__qualname__} to the student's code")
