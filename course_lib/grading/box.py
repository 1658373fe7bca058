"""The box: one warm process per graded notebook, in its sandbox, that forks the student's processes.

Python with numpy, torch and IPython takes seconds to start, and one notebook needs
several processes that run student code: the worker that the hidden tests call (a fresh
one after each crash or time-out) and the Jupyter kernel of the "runs top to bottom"
test. So the grader starts one box per notebook, under bubblewrap (``isolation.wrap``):

    grader ── Box ──socket──▶ box (python -m course_lib.grading.box, in the sandbox)
                               ├── pytest --nbval-lax ── kernel launcher ─┐
                               ├── kernel   (forked when the launcher asks)◀┘
                               └── worker   (forked when the grader asks)

The box imports everything once and starts ``pytest --nbval-lax`` beside itself; then it
forks a worker on the grader's request, and the kernel when the kernel spec's launcher
(``kernel_launcher.py``) connects. Each child fences itself (``worker.fence``) before
the first line of student code. The box runs no student code itself; nothing in it is
secret, and it is not dumpable, so its children cannot trace it. With
``--insecure-no-sandbox`` the same box runs without bubblewrap.

Grader and box speak ``protocol``'s frames over a unix socket; every reply is plain data
read with a deadline, and a child's pipes travel as descriptors (``SCM_RIGHTS``).

For the course's own notebooks the box can also run trusted cells before it forks
(``Box.advance``): the test that grades hundreds of mutants of a solution runs the
solution's first cells once, and forks each mutant's worker at its first changed cell, in
the state a fresh worker would have there (``WorkerSession.start``).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from . import isolation, protocol, sandbox, worker

if TYPE_CHECKING:
    from .session import Limits

# Imported by the box before it forks anything, so that every child starts warm.
PRELOAD = ["numpy", "torch", "matplotlib.pyplot", "IPython.core.interactiveshell", "course_lib", "course_lib.checks",
           "course_lib.viz", "ipykernel.kernelapp", "matplotlib_inline.backend_inline"]  # fmt: skip
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MALLOC_ARENA_MAX": "2", "MPLBACKEND": "Agg"}  # fmt: skip
STARTUP_SECONDS = 120.0  # the first answer waits for the box to import torch & co.
KERNEL_REQUEST_SECONDS = 10.0


class BoxError(RuntimeError):
    """The box failed or stopped answering: the grader's problem (or a trusted notebook's), not a student's."""


class Threaded(BoxError):
    """The trusted cells started a thread (a profiler's, say): the box can fork no more."""


def first_difference(cells: list[str], other: list[str]) -> int:
    """Index of the first code cell where ``other`` differs from ``cells`` (the shorter length if none)."""
    return next((i for i, (a, b) in enumerate(zip(cells, other)) if a != b), min(len(cells), len(other)))


# -- in the sandbox ------------------------------------------------------------------------


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _not_dumpable() -> None:
    """Keep processes of the same user (the box's children) out of this one's memory: no ptrace, no /proc/PID/mem."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0)  # PR_SET_DUMPABLE
    except (OSError, AttributeError):
        pass


def _then_exit(run, *args) -> None:
    """Run ``run(*args)`` and end this process (the box, or a child it forked): never return to the caller.

    A failure of the grader's own code is printed to the process's output, and exits with 70.
    """
    code = 0
    try:
        run(*args)
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)


def _watch(conn: socket.socket) -> None:
    """In the kernel: exit when the launcher (jupyter_client's view of this kernel) is gone."""
    try:
        while conn.recv(1024):
            pass
    except OSError:
        pass
    os._exit(0)


class _Box:
    """The box's loop: requests from the grader on ``control``, the kernel launcher on a listening socket."""

    def __init__(self, control: socket.socket, settings: dict) -> None:
        self.control = control
        self.conn = Connection(control.fileno())
        self.settings = settings
        self.shell = None  # made by the first trusted cells, inherited by the workers forked after them
        self.position = 0  # trusted cells[:position] have run here
        self.exited: dict[int, int] = {}  # pid -> exit code (minus the signal), of reaped children
        self.children: set[int] = set()  # each leads its own process group, but pytest
        self.listener = None
        self.pytest = None

    def reply(self, *message) -> None:
        self.conn.send_bytes(protocol.dumps(message))

    # -- pytest and the kernel ---------------------------------------------------------
    def start_pytest(self) -> None:
        """Start ``pytest --nbval-lax`` (``nbrun.py`` wrote its command) and listen for its kernel's launcher."""
        spec = self.settings["pytest"]
        folder = tempfile.mkdtemp(prefix="course-kernel-")  # a short path: a socket's is limited to ~100 characters
        os.chmod(folder, 0o711)
        path = os.path.join(folder, "kernel.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o777)  # the launcher may run as the unprivileged user
        self.listener.listen(1)
        uid, gid = self.settings["uid"], self.settings["gid"]
        as_user = {"user": uid, "group": gid, "extra_groups": []} if uid is not None else {}
        limits = {"address_space": spec["address_space"], "cpu": int(self.settings["cpu_seconds"]),
                  "file_size": self.settings["file_size_mb"] * 2**20}  # fmt: skip
        report = spec["report_fd"]
        self.pytest = subprocess.Popen(
            spec["argv"], cwd=spec["cwd"], env={**spec["env"], "COURSE_KERNEL_SOCKET": path},
            stdin=subprocess.DEVNULL, pass_fds=(report,), preexec_fn=lambda: worker.set_limits(**limits), **as_user,
        )  # fmt: skip
        os.close(report)  # only pytest holds the report pipe now
        self.children.add(self.pytest.pid)

    def _from_pytest(self, conn: socket.socket) -> bool:
        """Whether the peer is a child of pytest (jupyter_client's launcher), not a student's process."""
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid = struct.unpack("3i", creds)[0]
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        return self.pytest is not None and parent == self.pytest.pid

    def kernel(self) -> None:
        """Fork the kernel for pytest's launcher; then stop listening: one kernel per notebook."""
        conn, _ = self.listener.accept()
        if not self._from_pytest(conn):
            conn.close()
            return
        self.listener.close()
        self.listener = None
        conn.settimeout(KERNEL_REQUEST_SECONDS)
        try:
            request = json.loads(conn.makefile("r").readline(4096))
            connection_file = str(request["connection_file"])
            pid = os.fork()
        except (OSError, ValueError, KeyError, TypeError):
            conn.close()
            return
        if pid == 0:
            _then_exit(self._become_kernel, conn, connection_file)
        self.exited.pop(pid, None)
        self.children.add(pid)
        try:
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:
            pass
        conn.close()

    def _become_kernel(self, conn: socket.socket, connection_file: str) -> None:
        conn.settimeout(None)
        workdir = self.settings["pytest"]["kernel_workdir"]
        worker.fence(dict(self.settings, workdir=workdir), {conn.fileno()})
        os.environ.pop("MPLBACKEND", None)  # ipykernel then makes the inline backend the default
        threading.Thread(target=_watch, args=(conn,), daemon=True).start()
        from ipykernel.kernelapp import IPKernelApp

        sys.argv = ["ipykernel", "-f", connection_file]
        app = IPKernelApp.instance()
        app.initialize(["-f", connection_file])
        sandbox.install(workdir, self.settings["deny"])
        app.start()

    # -- requests from the grader --------------------------------------------------------
    def run(self, cells: list[str], stop: int) -> None:
        """Run trusted ``cells[position:stop]`` here, reporting each as a worker does."""
        if self.shell is None:
            os.chdir(self.settings["workdir"])
            # tqdm starts a monitor thread with its first progress bar (course_lib.models.train makes one), and
            # a process with a second thread cannot fork safely. Without it, bars only redraw less smartly.
            from tqdm import std

            std.tqdm.monitor_interval = 0
            self.shell = worker.make_shell()
        worker.Worker(self.shell, self.conn, self.conn).run_cells(cells, set(), self.position, stop)
        self.position = stop

    def fork(self, workdir: str, deny: list[str]) -> None:
        """Fork a worker that talks through the two descriptors sent after this request."""
        with socket.fromfd(self.control.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            _, fds, _, _ = socket.recv_fds(sock, 1, 2)
        if len(fds) != 2 or _threads() != 1:  # a lock held by another thread would stay locked in the child
            for fd in fds:
                os.close(fd)
            return self.reply("threads", _threads()) if len(fds) == 2 else self.reply("error", "no descriptors")
        try:
            pid = os.fork()
        except OSError as err:  # the sandbox's process cap
            pid = None
            self.reply("error", f"fork failed: {err}")
        if pid == 0:
            _then_exit(self._become_worker, workdir, deny, *fds)
        for fd in fds:
            os.close(fd)
        if pid is not None:
            self.exited.pop(pid, None)
            self.children.add(pid)
            self.reply("forked", pid)

    def _become_worker(self, workdir: str, deny: list[str], requests_fd: int, replies_fd: int) -> None:
        if self.position:  # files the trusted cells wrote are part of the state: the worker gets a copy
            shutil.copytree(self.settings["workdir"], workdir, symlinks=True, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".worker-output"))  # fmt: skip
        settings = dict(self.settings, workdir=workdir, deny=deny)
        worker.fence(settings, {requests_fd, replies_fd})
        shell = self.shell or worker.make_shell()
        sandbox.install(workdir, deny)
        requests = Connection(requests_fd, writable=False)
        replies = Connection(replies_fd, readable=False)
        worker.Worker(shell, requests, replies).serve()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exited[pid] = os.waitstatus_to_exitcode(status)

    def wait(self, pid: int, seconds: float) -> None:
        """Reply with the exit code of child ``pid`` (minus the signal that killed it), or None if it still runs."""
        end = time.monotonic() + min(seconds, 30.0)
        while True:
            self.reap()
            if pid in self.exited or time.monotonic() >= end:
                return self.reply("exited", self.exited.get(pid))
            time.sleep(0.01)

    def kill(self, pid: int) -> None:
        """Kill child ``pid`` with everything it started (it leads its own process group)."""
        if pid not in self.exited:
            for send in (os.killpg, os.kill):
                try:
                    send(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.wait(pid, 5.0)

    def serve(self) -> None:
        while True:
            self.reap()
            watched = [self.control] + ([self.listener] if self.listener is not None else [])
            ready = select.select(watched, [], [], 1.0)[0]
            if self.listener is not None and self.listener in ready:
                self.kernel()
            if self.control not in ready:
                continue
            try:
                op, *args = protocol.loads(self.conn.recv_bytes())
            except (EOFError, OSError):  # the grader is done with this notebook: so is everything in the box
                for pid in self.children - set(self.exited):
                    for send in (os.killpg, os.kill):
                        try:
                            send(pid, signal.SIGKILL)
                        except (ProcessLookupError, PermissionError):
                            pass
                return
            handler = {"run": self.run, "fork": self.fork, "wait": self.wait, "kill": self.kill}.get(op)
            if handler is None:
                self.reply("error", f"unknown request {op!r}")
            else:
                handler(*args)


def main(control_fd: int, settings: dict) -> None:
    """The box's entry point: ``python -m course_lib.grading.box CONTROL_FD SETTINGS_JSON``."""
    import importlib

    _not_dumpable()
    box = _Box(socket.socket(fileno=control_fd), settings)
    if settings.get("pytest"):
        box.start_pytest()
    for name in PRELOAD:
        importlib.import_module(name)
    box.serve()


# -- the grader's side -----------------------------------------------------------------------


class Box:
    """One notebook's box, started now; ``fork`` asks it for a worker, ``close`` ends everything in it.

    ``workdir``: the box's own folder (trusted cells run there, and are copied from there
    into each forked worker's). ``scratch``: every folder a child works in (with bubblewrap:
    empty in-memory folders); ``readonly`` and ``files``: what else the sandbox shows
    (``isolation.wrap``). ``pytest``: the notebook run's command (``nbrun.Run.box_spec``), whose
    report descriptor is passed in. ``log``: a file for the box's and pytest's output.
    """

    def __init__(self, limits: Limits, deny: list[str], workdir: str, *, scratch: list[str] = (),
                 readonly: list[str] = (), files: list[tuple[str, str]] = (), pytest: dict | None = None,
                 log=None) -> None:  # fmt: skip
        self.limits, self.deny, self.workdir = limits, list(deny), workdir
        self.started = False
        self.threaded = False  # set once the trusted cells have started a thread (``fresh``)
        self.failed: str | None = None  # why the box can no longer be used (it stopped answering, or died)
        self._fresh: Box | None = None
        uid, gid = limits.user or (None, None)
        settings = {
            "workdir": workdir, "deny": list(deny), "memory_mb": limits.memory_mb, "file_size_mb": limits.file_size_mb,
            "cpu_seconds": limits.budget + 30, "uid": uid, "gid": gid, "pytest": pytest,
        }  # fmt: skip
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [sys.executable, "-m", "course_lib.grading.box", str(theirs.fileno()), json.dumps(settings)]
        if limits.isolation == "bwrap":
            scratch = list(dict.fromkeys([workdir, *scratch]))
            files = [*files, *isolation.font_cache(os.path.join(workdir, ".matplotlib"))]
            command = isolation.wrap(command, readonly=readonly, scratch=scratch, files=files,
                                     disk_mb=limits.disk_mb, processes=limits.processes)  # fmt: skip
        env = {**isolation.environment(), **THREAD_ENV}
        if limits.isolation == "bwrap":  # a home in the sandbox, where matplotlib's font list is mounted
            env.update(HOME=workdir, MPLCONFIGDIR=os.path.join(workdir, ".matplotlib"))
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        fds = (theirs.fileno(), *([pytest["report_fd"]] if pytest else []))
        output = subprocess.DEVNULL if log is None else log
        self.process = subprocess.Popen(command, cwd="/", env=env, pass_fds=fds, start_new_session=True,
                                        stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
        theirs.close()
        self.socket = ours
        self.channel = protocol.Channel(ours.fileno(), ours.fileno())
        self.cells: list[str] = []  # the trusted cells this box runs before it forks (``advance``)
        self.position = 0

    def _ask(self, message: tuple, seconds: float, fds: tuple[int, ...] = (), deadline: float | None = None) -> tuple:
        """Send ``message`` and return the reply, within ``seconds`` and by ``deadline`` (a budget's end).

        A box that did not answer in time is out of step with this side, so it is not asked again.
        """
        if self.failed is not None:
            raise BoxError(self.failed)
        wait = seconds if self.started else max(seconds, STARTUP_SECONDS)
        end = time.monotonic() + wait if deadline is None else min(time.monotonic() + wait, deadline)
        try:
            self.channel.send(message, end)
            if fds:
                self.socket.setblocking(True)
                self.socket.settimeout(max(end - time.monotonic(), 0.1))
                socket.send_fds(self.socket, [b"F"], list(fds))
                self.socket.setblocking(False)
            reply = self.channel.receive(end)
        except (protocol.Timeout, TimeoutError):
            self.failed = f"the sandbox's box did not answer within {wait:g} s"
            raise BoxError(self.failed) from None
        except (protocol.Closed, OSError) as err:
            self.failed = f"the sandbox's box is gone ({err or f'exit code {self.process.poll()}'})"
            raise BoxError(self.failed) from None
        self.started = True
        if reply[0] == "error":
            raise BoxError(reply[1])
        return reply

    def fork(self, workdir: str, deny: list[str], fds: tuple[int, int], deadline: float | None = None) -> int:
        """A worker forked after the trusted cells so far, working in ``workdir``, talking through ``fds``."""
        reply = self._ask(("fork", workdir, list(deny)), self.limits.timeout, fds, deadline)
        if reply[0] == "threads":
            self.threaded = True
            raise Threaded(f"the box runs {reply[1]} threads")
        if reply[0] != "forked" or type(reply[1]) is not int:
            raise BoxError(f"the box could not fork a worker: {reply[1:]}")
        return reply[1]

    def wait(self, pid: int, seconds: float, deadline: float | None = None) -> int | None:
        reply = self._ask(("wait", pid, seconds), seconds + self.limits.timeout, deadline=deadline)
        return reply[1] if type(reply[1]) is int else None

    def kill(self, pid: int, deadline: float | None = None) -> None:
        self._ask(("kill", pid), self.limits.timeout, deadline=deadline)

    def advance(self, cells: list[str], stop: int) -> None:
        """Run the trusted ``cells`` up to ``stop`` (excluded) in the box; every one of them must succeed.

        The box only moves forward: grade a notebook's variants in the order of their first changed cell.
        """
        if cells[: self.position] != self.cells[: self.position]:
            raise BoxError("the box has run other cells")
        if stop < self.position:
            raise BoxError(f"the box has run {self.position} cells, it cannot go back to {stop}")
        self.cells = list(cells)
        if stop == self.position:
            return
        reply = self._ask(("run", self.cells, stop), self.limits.timeout)
        while reply[0] != "ready":
            if reply[0] == "cell_done" and reply[2] is not None:
                error = reply[2]
                raise BoxError(f"code cell {reply[1] + 1} failed: {error['type']}: {error['message']}")
            try:
                reply = self.channel.receive(time.monotonic() + self.limits.timeout)
            except (protocol.Timeout, protocol.Closed) as err:
                raise BoxError(f"the box stopped while running the trusted cells ({type(err).__name__})") from None
        self.position = stop

    def fresh(self) -> Box:
        """A box without trusted cells, started once: it forks the workers that this one no longer can."""
        if self._fresh is None:
            self._fresh = Box(self.limits, self.deny, self.workdir)
        return self._fresh

    def close(self) -> None:
        """Kill the box and everything in it (bubblewrap's pid namespace dies with its first process)."""
        if self._fresh is not None:
            self._fresh.close()
        if self.process.returncode is not None:  # closed already: its pid may be another's by now
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.kill()
        self.process.wait()
        self.failed = self.failed or "the box was closed"
        self.socket.close()  # the channel's descriptor


if __name__ == "__main__":
    _then_exit(main, int(sys.argv[1]), json.loads(sys.argv[2]))
