"""The worker: a process that runs one student's notebook and answers the hidden tests' calls.

The box (``box.py``) forks it, warm, in the notebook's sandbox, and hands it two pipes to
the grader (``session.py``). ``fence`` first closes it in: its own session and process
group, standard streams to a file in its working folder, a clean environment, resource
limits, an unprivileged user when the grader runs as root without bubblewrap, and the
audit hook of ``sandbox.py`` as a second line behind the sandbox. Then it runs the
notebook's code cells with IPython's ``InteractiveShell`` (magics work; no kernel
needed), reporting each cell's start and end, and finally serves requests: look up a
name, call a function, get an attribute... Results that are plain data go back by value,
anything else as a handle.

A cell that raises does not stop the run: later cells still run, as in nbgrader, so a
broken task costs only its own points. Nothing of the hidden tests ever reaches this
process; it only sees the inputs the tests send.
"""

from __future__ import annotations

import functools
import importlib
import linecache
import os
import re
import signal
import sys
import traceback
from typing import Any

from . import protocol

try:
    import resource
except ImportError:  # not Linux: no limits (the grader refuses to run there)
    resource = None

OUTPUT_LIMIT = 20_000  # characters of a cell's printed output kept for the feedback
SUBSTITUTABLE = ("course_lib.", "numpy.", "torch.", "math.")
ENV_KEPT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "MALLOC_ARENA_MAX", "MPLBACKEND")  # fmt: skip


class CappedText:
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit, self.parts, self.kept, self.dropped = limit, [], 0, 0

    def write(self, text: Any) -> int:
        text = str(text)
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 1

    def getvalue(self) -> str:
        more = f"\n... ({self.dropped} more characters not kept)" if self.dropped else ""
        return "".join(self.parts) + more


def cell_name(index: int) -> str:
    return f"<code cell {index + 1}>"


def describe_exception(err: BaseException) -> dict:
    """An exception as plain data: type, MRO, message and the frames in notebook cells."""
    try:
        message = str(err)
    except Exception:
        message = "<the exception's message could not be printed>"
    frames = []
    for frame in traceback.extract_tb(err.__traceback__):
        if frame.filename.startswith("<code cell "):
            where = frame.filename.strip("<>")
            code = f": {frame.line.strip()}" if frame.line else ""
            frames.append(f"{where}, line {frame.lineno}, in {frame.name}{code}")
    if isinstance(err, SyntaxError) and err.filename and err.filename.startswith("<code cell "):
        text = (err.text or "").strip()
        frames.append(f"{err.filename.strip('<>')}, line {err.lineno}" + (f": {text}" if text else ""))
        message = err.msg
    if isinstance(err, SystemExit):
        message = f"sys.exit({err.code!r}) was called"
    mro = [c.__qualname__ for c in type(err).__mro__]
    return {"type": type(err).__qualname__, "mro": mro, "message": message[:2000], "frames": frames[-6:]}


class Worker:
    """Runs the cells, then serves the grader's requests until the pipe closes."""

    def __init__(self, shell, requests, replies) -> None:
        self.shell, self.requests, self.replies = shell, requests, replies
        self.ns = shell.user_ns
        self.handles: dict[int, Any] = {}
        self.saved: dict[str, list] = {}

    # -- transport ---------------------------------------------------------------
    def register(self, obj: Any) -> protocol.HandleRef:
        handle_id = len(self.handles) + 1
        self.handles[handle_id] = obj
        return protocol.describe_object(obj, handle_id)

    def lookup(self, ref: protocol.HandleRef) -> Any:
        return self.handles[ref.id]

    def send(self, message: tuple) -> None:
        try:
            data = protocol.dumps(message, self.register)
        except (TypeError, RecursionError, ValueError, OverflowError) as err:
            data = protocol.dumps(("unsendable", f"{type(err).__name__}: {err}"))
        self.replies.send_bytes(data)

    # -- the notebook --------------------------------------------------------------
    def run_cell(self, source: str, index: int) -> dict | None:
        name = cell_name(index)
        try:
            code = self.shell.transform_cell(source)
            compiled = compile(code, name, "exec")
        except BaseException as err:  # SyntaxError, or an error in an IPython transformer
            return describe_exception(err)
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        try:
            exec(compiled, self.ns)
        except BaseException as err:  # every error, sys.exit() included, is the student's
            return describe_exception(err)
        finally:
            pyplot = sys.modules.get("matplotlib.pyplot")
            if pyplot is not None:  # figures are for people; the tests never look at them
                try:
                    pyplot.close("all")
                except Exception:
                    pass
        return None

    def run_cells(self, cells: list[str], skip: set[int], start: int = 0, stop: int | None = None) -> None:
        """Run ``cells[start:stop]`` but those in ``skip`` (the cells before ``start`` already ran)."""
        for index, source in enumerate(cells[:stop]):
            if index < start or index in skip:
                continue
            self.send(("cell", index))
            out = CappedText()
            sys.stdout = sys.stderr = out
            try:
                error = self.run_cell(source, index)
            finally:
                sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            self.send(("cell_done", index, error, out.getvalue()[-4000:]))
        self.send(("ready",))

    # -- requests ------------------------------------------------------------------
    def resolve(self, dotted: str) -> Any:
        if not dotted.startswith(SUBSTITUTABLE):
            raise ValueError(f"cannot substitute {dotted!r}")
        module, _, attr = dotted.rpartition(".")
        return getattr(importlib.import_module(module), attr)

    def handle(self, op: str, args: tuple) -> tuple:
        if op == "global":
            (name,) = args
            if name not in self.ns:
                import difflib

                names = [n for n in self.ns if not n.startswith("_")]
                return ("missing", name, difflib.get_close_matches(name, names, n=2))
            return ("ok", self.ns[name])
        if op == "call":
            target, call_args, call_kwargs, keep, with_args = args
            result = target(*call_args, **call_kwargs)
            if keep:
                return ("ok", self.register(result))
            if with_args:
                return ("ok_args", result, call_args, call_kwargs)
            return ("ok", result)
        if op == "getattr":
            return ("ok", getattr(args[0], args[1]))
        if op == "getattr_keep":
            return ("ok", self.register(getattr(args[0], args[1])))
        if op == "setattr":
            setattr(args[0], args[1], args[2])
            return ("ok", None)
        if op == "getitem":
            return ("ok", args[0][args[1]])
        if op == "len":
            return ("ok", len(args[0]))
        if op == "list":
            return ("ok", list(args[0]))
        if op == "substitute":
            name, dotted, fixed = args
            self.saved.setdefault(name, []).append(self.ns.get(name, _MISSING))
            target = self.resolve(dotted)
            self.ns[name] = functools.partial(target, **fixed) if fixed else target
            return ("ok", None)
        if op == "restore":
            (name,) = args
            previous = self.saved[name].pop()
            if previous is _MISSING:
                self.ns.pop(name, None)
            else:
                self.ns[name] = previous
            return ("ok", None)
        raise ValueError(f"unknown request {op!r}")

    def serve(self) -> None:
        while True:
            try:
                data = self.requests.recv_bytes()
            except (EOFError, OSError):
                return
            message = protocol.loads(data, self.lookup)
            op, args = message[0], message[1:]
            if op == "run":
                self.run_cells(args[0], set(args[1]), *args[2:])
                continue
            out = CappedText(2000)
            sys.stdout = sys.stderr = out
            try:
                reply = self.handle(op, args)
            except BaseException as err:  # the student's code raised (or called sys.exit)
                reply = ("raised", describe_exception(err))
            finally:
                sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            self.send(reply)


_MISSING = object()


def current_address_space() -> int:
    """Bytes of address space this process maps now (0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            return int(re.search(r"^VmSize:\s+(\d+) kB", status.read(), re.M).group(1)) * 1024
    except (OSError, AttributeError):
        return 0


def _set(which: int, value: int) -> None:
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):  # best effort
        pass


def set_limits(*, address_space: int | None, cpu: int | None, file_size: int | None, open_files: int = 256) -> None:
    """Cap memory (address space, bytes), CPU time (s) and file size (bytes); no core dumps.

    Soft and hard limits are set equal, so an unprivileged process cannot raise them again.
    """
    if resource is None:
        return
    if address_space:
        _set(resource.RLIMIT_AS, address_space)
    if cpu:
        _set(resource.RLIMIT_CPU, cpu)
    if file_size:
        _set(resource.RLIMIT_FSIZE, file_size)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG, not a kill
    _set(resource.RLIMIT_CORE, 0)
    _set(resource.RLIMIT_NOFILE, open_files)


def _close_fds(keep: set[int]) -> None:
    """Close every inherited descriptor but stdio and ``keep`` (the box's included)."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent (the box) dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def fence(settings: dict, keep_fds: set[int]) -> None:
    """Everything that must happen in a forked worker or kernel before the first line of student code.

    The user is switched first (when the grader runs as root without bubblewrap), so that no
    file in the student-writable work folder is opened as root, and before the parent-death
    signal, which a change of user clears.
    """
    workdir = settings["workdir"]
    os.setsid()  # own process group: the box kills the whole group
    _close_fds(keep_fds)
    if settings.get("uid") is not None:
        os.setgroups([])
        os.setgid(settings["gid"])
        os.setuid(settings["uid"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    # Output written straight to the descriptors (C code, os.write) lands in a file, never through a link.
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    log = os.open(os.path.join(workdir, ".worker-output"), flags, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
    _die_with_parent()
    env = {k: os.environ[k] for k in ENV_KEPT if k in os.environ}
    env.update(HOME=workdir, TMPDIR=workdir, IPYTHONDIR=os.path.join(workdir, ".ipython"),
               MPLCONFIGDIR=os.path.join(workdir, ".matplotlib"))  # fmt: skip
    # Student code runs Triton kernels in Triton's interpreter, even on a GPU machine: compiling
    # for the GPU runs ptxas and loads the modules it builds, both refused by the sandbox.
    env["TRITON_INTERPRET"] = "1"
    os.environ.clear()
    os.environ.update(env)
    import tempfile

    tempfile.tempdir = workdir
    os.chdir(workdir)
    deny = [os.path.realpath(p) for p in settings["deny"]]
    sys.path[:] = [p for p in sys.path if not any(_under(os.path.realpath(p or "."), d) for d in deny)]
    set_limits(
        address_space=current_address_space() + settings["memory_mb"] * 2**20,
        cpu=int(settings["cpu_seconds"]),
        file_size=settings["file_size_mb"] * 2**20,
    )


def make_shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class Shell(InteractiveShell):
        """No GUI and no figures: ``%matplotlib inline`` keeps the Agg backend, which draws nothing."""

        def enable_gui(self, gui=None):
            pass

        def enable_matplotlib(self, gui=None):
            return gui, "agg"

    config = Config()
    config.HistoryAccessor.enabled = False  # no sqlite file, no history thread
    config.InteractiveShell.colors = "nocolor"
    shell = Shell.instance(config=config)
    shell.user_ns["__name__"] = "__main__"
    return shell
