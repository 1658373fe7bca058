"""The grader's side of one student's worker: start it, time it, restart it, talk to it.

``WorkerSession(cells, workdir, limits, deny)`` starts nothing until a hidden test first
needs the student's code. Then the notebook's box (``box.py``, in its sandbox) forks a
worker (``worker.py``), and the session sends it the notebook's code cells and watches
them run, one time limit per cell. A cell that runs too long or kills the process is
recorded, and a fresh worker is forked with that cell skipped, so one runaway cell costs
only what depends on it. After that, every request has its own time limit, and all of
them together share the submission's time budget. A worker that dies or hangs during a
request fails only that request; the next one starts a fresh worker (re-running the
notebook).

Replies come through a ``protocol.Channel``: plain data only, read with a deadline, so
nothing the student's code writes to the pipe can run code here or block the grader.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .box import STARTUP_SECONDS, Box, BoxError, Threaded, first_difference
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


def _one_thread() -> None:
    """In a forked grading process (``--jobs N``): compute on one thread. An OpenMP pool that the
    parent started before the fork does not exist in the child, and using it can hang."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread)


@dataclass
class Limits:
    """What one submission may use."""

    timeout: float = 60.0  # seconds for each notebook cell and each call from a test
    budget: float = 600.0  # seconds of wall time for all of them together
    memory_mb: int = 2048  # memory the student's code may allocate, beyond Python, numpy and torch
    file_size_mb: int = 64  # largest file the student's code may write
    user: tuple[int, int] | None = None  # (uid, gid) to run as, when the grader runs as root
    isolation: str = "none"  # "bwrap": each notebook's box in a bubblewrap sandbox (isolation.py); "none": fenced only
    disk_mb: int = 256  # what the student's code may write in all, with isolation (an in-memory work folder)
    processes: int = 96  # processes and threads of one notebook's sandbox (box, pytest, kernel, worker)


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
    """One student's notebook, run in a worker process and called from hidden tests.

    ``box``: the notebook's box, shared with its "runs top to bottom" test; without one, the
    session starts a box of its own with its first worker and closes it in ``close``.
    A box that has run trusted cells (``Box.advance``) forks workers that start at the first
    cell where ``cells`` differ from its own.
    """

    cells: list[str]
    workdir: str
    limits: Limits = field(default_factory=Limits)
    deny: list[str] = field(default_factory=list)
    load_error: str | None = None  # the notebook could not be read: every request fails with this
    box: Box | None = None

    def __post_init__(self) -> None:
        self.process: _Forked | None = None
        self.channel: protocol.Channel | None = None
        self.own_box = self.box is None
        self.start = 0  # cells[:start] ran in the box before it forked the worker
        self.reports: dict[int, CellReport] = {}
        self.skipped: dict[int, str] = {}
        self.timed_out_names: set[str] = set()
        self.generation = 0
        self.deadline: float | None = None
        self.exhausted = False
        self.crashes = 0
        self.timeouts = 0
        self.notes: list[str] = []

    # -- messages, with deadlines ----------------------------------------------------------
    def _end(self, limit: float) -> tuple[float, bool]:
        """When to give up waiting, and whether the budget (rather than ``limit``) is what ends it."""
        now = time.monotonic()
        if self.deadline is None:  # the clock starts when the first worker is ready
            return now + limit, False
        return (now + limit, False) if now + limit <= self.deadline else (self.deadline, True)

    def _receive(self, limit: float) -> tuple:
        end, budget = self._end(limit)
        try:
            return self.channel.receive(end)
        except protocol.Timeout:
            raise _Timeout(budget) from None
        except protocol.Closed as closed:
            raise _Died(str(closed) or self._reap()) from None

    def _send(self, message: tuple) -> None:
        end, budget = self._end(self.limits.timeout)
        try:
            self.channel.send(message, end)
        except protocol.Timeout:
            raise _Timeout(budget) from None
        except protocol.Closed as closed:
            raise _Died(str(closed) or self._reap()) from None

    # -- the process -------------------------------------------------------------------
    def _spawn(self) -> None:
        """A fresh worker, forked by the box: after the box's trusted cells, or from the first cell."""
        if self.box is None:
            self.box = Box(self.limits, self.deny, self.workdir)
        box, self.start = self.box, 0
        if box.cells and box.threaded:  # it can fork no more: a box without its cells forks from the first cell
            box = box.fresh()
        elif box.cells:  # a box of trusted cells: fork where this notebook starts to differ
            self.start = first_difference(box.cells, self.cells)
            box.advance(box.cells, self.start)
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        try:
            pid = box.fork(self.workdir, self.deny, (requests_r, replies_w), self.deadline)
        except BoxError as err:
            for fd in (requests_w, replies_r):
                os.close(fd)
            if isinstance(err, Threaded):
                return self._spawn()
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise _Timeout(True) from None
            raise _Died(str(err)) from None
        finally:
            os.close(requests_r)
            os.close(replies_w)
        self.process = _Forked(box, pid, self)
        self.channel = protocol.Channel(replies_r, requests_w, self._make_remote, _ref_of)

    def _reap(self) -> str:
        """Wait briefly for the dead worker and say why it died."""
        if self.process is None:
            return "it is gone"
        self.process.join(2)
        return exit_reason(self.process.exitcode)

    def _kill(self) -> None:
        if self.process is None:
            return
        self.process.kill()
        self.channel.close()
        self.process = None

    def close(self) -> None:
        self._kill()
        if self.own_box and self.box is not None:
            self.box.close()
            self.box = None

    def _ensure_started(self) -> None:
        if self.load_error is not None:
            raise NotebookUnreadable(self.load_error)
        if self.exhausted:
            raise BudgetExceeded(self._budget_message())
        if self.process is not None:
            return
        while True:
            self.reports = {}
            current = None
            try:
                self._spawn()
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
        """What a fresh worker is asked to run: every code cell but the skipped ones (and those the box ran)."""
        return ("run", self.cells, sorted(self.skipped), self.start)

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


class _Forked:
    """A worker forked by the box, as ``WorkerSession`` uses it: its pid is the box's to kill and reap.

    The box is asked within the session's budget; once it has failed to answer, it is not asked again.
    """

    def __init__(self, box: Box, pid: int, session: WorkerSession) -> None:
        self.box, self.pid, self.session, self.exitcode = box, pid, session, None

    def kill(self) -> None:
        if self.exitcode is None:
            try:
                self.box.kill(self.pid, self.session.deadline)
            except BoxError:  # the box is gone or stopped: its workers die with it when it is closed
                pass

    def join(self, timeout: float | None = None) -> None:
        if self.exitcode is None:
            try:
                self.exitcode = self.box.wait(self.pid, 5.0 if timeout is None else timeout, self.session.deadline)
            except BoxError:
                pass
