"""The test "the notebook runs top to bottom": ``pytest --nbval-lax`` under the grader's rules.

The student's notebook (code cells only, nbval's skip/raises markers neutralised) runs in
its own folder through ``pytest --nbval-lax`` in a subprocess, started through
``limits.py`` (memory, CPU time, file size), as the unprivileged user when there is one.
The kernel is ``kernel_launcher.py``: ipykernel with the sandbox's audit hook. Each cell
has the per-cell time limit; the whole run has the submission's time budget.

The outcome of each cell comes back through a pipe that only the pytest process holds
(the kernel, which runs the student's code, does not inherit it), written by a small
conftest in a folder the kernel may not write to. So printing "PASSED" from a notebook
cannot fake a pass.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import nbformat

from . import kernel
from .session import Limits, process_settings, start_process, stop_process

HERE = Path(__file__).resolve().parent
KERNEL_NAME = "course-grader-sandbox"
KERNEL_BASE_MB = 1024  # Python, ipykernel, numpy and torch map about this much; --memory comes on top
ENV_KEPT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Yet|Failed)\b(:|$)")

CONFTEST = '''\
"""Loads nbval, and reports each cell's outcome to the grader through a pipe the kernel lacks."""
import json
import os
import sys

# jsonschema's optional IRI checker (rfc3987_syntax) takes seconds to import; nbformat never uses it.
sys.modules.setdefault("rfc3987_syntax", None)
pytest_plugins = ["nbval.plugin"]

_out = os.fdopen(int(os.environ.pop("COURSE_REPORT_FD")), "w", buffering=1)
try:  # the kernel runs as the same user in the sandbox: keep it out of this process's memory (ptrace, /proc)
    import ctypes

    ctypes.CDLL(None).prctl(4, 0)  # PR_SET_DUMPABLE
except (OSError, AttributeError):
    pass


def pytest_collectreport(report):
    if report.failed:
        _out.write(json.dumps({"cell": None, "outcome": "failed", "text": str(report.longrepr)[-3000:]}) + "\\n")


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        cell = getattr(report, "nodeid", "").rpartition("::Cell ")[2]
        text = str(report.longrepr)[-3000:] if report.longrepr else ""
        _out.write(json.dumps({"cell": cell, "when": report.when, "outcome": report.outcome, "text": text}) + "\\n")


def pytest_sessionfinish(session, exitstatus):
    _out.write(json.dumps({"exit": int(exitstatus)}) + "\\n")
    _out.flush()
'''


@dataclass
class RunResult:
    passed: bool
    message: str  # for the student
    timed_out: bool = False
    log: str = ""  # pytest's own output, for the teacher
    problems: list[str] = field(default_factory=list)


def _first_line(source: str) -> str:
    return next((ln.strip() for ln in source.splitlines() if ln.strip()), "")[:60]


def _error_line(text: str, kernel_died: bool = False) -> str:
    """The last line of a cell's traceback, e.g. ``NameError: name 'x' is not defined``."""
    text = _ANSI.sub("", text)
    if "Kernel dead" in text:
        return "not run: the kernel had died in an earlier cell"
    if "Failed to interrupt kernel" in text and kernel_died:
        return "the kernel died while running it (os._exit()? a crash?)"
    if "Timeout" in text and "exceeded" in text:
        return "it ran past the time limit"
    tail = text.split("Traceback:")[-1]
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip() and not ln.strip().startswith("-----")]
    # The exception's own line ("NameError: ..."), not a note added after it; else a self-check's "❌" line.
    errors = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    checks = [ln for ln in lines if ln.startswith("❌")]
    hints = [ln for ln in lines if ln.startswith("hint:")]
    if errors:
        return errors[-1][:300]
    if checks:
        return (checks[0] + (f" ({hints[0]})" if hints else ""))[:400]
    return lines[-1][:300] if lines else "it failed"


def _own(path: Path, user: tuple[int, int] | None) -> None:
    if user is not None:
        os.chown(path, *user)


@dataclass
class Run:
    """A ``pytest --nbval-lax`` run in progress (see ``start``)."""

    notebook: nbformat.NotebookNode
    limits: Limits
    process: subprocess.Popen | None = None
    log: object = None
    reader: threading.Thread | None = None
    reports: list[dict] = field(default_factory=list)
    warm_kernel: object = None
    socket_dir: Path | None = None
    started: float = 0.0
    result: RunResult | None = None

    def finish(self) -> RunResult:
        """Wait for the run (within the notebook's time budget) and say whether every cell passed."""
        if self.result is not None:
            return self.result
        timed_out = False
        try:
            self.process.wait(timeout=max(self.limits.budget - (time.monotonic() - self.started), 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.reader.join(5)
        if self.warm_kernel is not None:
            stop_process(self.warm_kernel)
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        self.log.seek(0)
        text = self.log.read()[-20000:].decode("utf-8", "replace")
        self.log.close()
        seconds = time.monotonic() - self.started
        self.result = _verdict(self.notebook, self.reports, timed_out, self.limits, text, seconds)
        return self.result


def start(notebook: nbformat.NotebookNode, folder: Path, limits: Limits, deny: list[str], *, warm: bool = True) -> Run:
    """Start running ``notebook`` top to bottom in ``folder`` (created here); ``Run.finish()`` waits.

    ``warm``: fork the kernel from the grader's warm server (``kernel.py``) rather than
    letting jupyter_client start a cold one; the result is the same, seconds sooner.
    Everything but reading the report pipe happens in the calling thread.
    """
    run = Run(notebook, limits)
    if not notebook.cells:
        run.result = RunResult(False, "the notebook has no code cells")
        return run
    work = folder / "work"  # the kernel's working folder, the only place student code may write
    kernels = folder / "jupyter" / "kernels" / KERNEL_NAME
    kernels.mkdir(parents=True)
    work.mkdir(mode=0o700)
    _own(work, limits.user)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, str(HERE / "kernel_launcher.py"), "-f", "{connection_file}"],
                "display_name": "Python 3 (grader sandbox)",
                "language": "python",
            }
        )
    )
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "conftest.py").write_text(CONFTEST)
    path = work / "notebook.ipynb"
    isolated = limits.isolation == "bwrap"
    if isolated:  # work is an empty in-memory folder in the sandbox; the notebook is mounted into it
        nbformat.write(notebook, folder / "notebook.ipynb")
        warm = False  # the kernel starts inside the sandbox, from the kernel spec
    else:
        nbformat.write(notebook, path)
        _own(path, limits.user)

    env = {k: os.environ[k] for k in ENV_KEPT if k in os.environ}
    env.update(
        HOME=str(work),
        TMPDIR=str(work),
        IPYTHONDIR=str(work / ".ipython"),
        MPLCONFIGDIR=str(work / ".matplotlib"),
        JUPYTER_PATH=str(folder / "jupyter"),
        JUPYTER_CONFIG_DIR=str(work / ".jupyter"),
        JUPYTER_RUNTIME_DIR=str(work / ".jupyter-runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MALLOC_ARENA_MAX="2",
        MPLBACKEND="Agg",
        TRITON_INTERPRET="1",  # as in the workers (worker._fence): the sandbox cannot compile for a GPU
        COURSE_SANDBOX=json.dumps({"workdir": str(work), "deny": deny}),
    )
    if not isolated:
        _copy_font_cache(work / ".matplotlib", limits.user)
    if warm:
        # A short path: unix socket paths are limited to about 100 characters.
        run.socket_dir = Path(tempfile.mkdtemp(prefix="course-kernel-"))
        run.socket_dir.chmod(0o711)
        settings = {**process_settings(str(work), deny, limits), "socket": str(run.socket_dir / "kernel.sock")}
        run.warm_kernel = start_process(kernel.main, settings)
        env["COURSE_WARM_KERNEL"] = settings["socket"]
    read_end, write_end = os.pipe()
    env["COURSE_REPORT_FD"] = str(write_end)
    timeout = f"{limits.timeout:g}"
    command = [
        sys.executable, str(HERE / "limits.py"),
        "--address-space", str((KERNEL_BASE_MB + limits.memory_mb) * 2**20),
        "--cpu", str(int(limits.budget) + 30),
        "--file-size", str(limits.file_size_mb * 2**20),
        "--", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "-c", str(folder / "pytest.ini"), "--rootdir", str(folder), "--nbval-lax",
        "--nbval-kernel-name", KERNEL_NAME, "--nbval-cell-timeout", timeout,
        "--nbval-kernel-startup-timeout", "120", "--durations=5", str(path),
    ]  # fmt: skip
    user = {"user": limits.user[0], "group": limits.user[1], "extra_groups": []} if limits.user else {}
    if isolated:
        from . import isolation

        files = [(str(folder / "notebook.ipynb"), str(path)), *isolation.font_cache(str(work / ".matplotlib"))]
        command = isolation.wrap(command, readonly=[str(folder)], scratch=[str(work)], files=files,
                                 disk_mb=limits.disk_mb, processes=limits.processes)  # fmt: skip
        user = {}
    run.log = open(folder / "pytest-output.txt", "w+b")  # closed by finish()
    run.started = time.monotonic()
    run.process = subprocess.Popen(
        command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=run.log, stderr=subprocess.STDOUT,
        pass_fds=(write_end,), start_new_session=True, **user,
    )  # fmt: skip
    os.close(write_end)
    run.reader = threading.Thread(target=_read_reports, args=(read_end, run.reports), daemon=True)
    run.reader.start()
    return run


def run_notebook(
    notebook: nbformat.NotebookNode, folder: Path, limits: Limits, deny: list[str], *, warm: bool = True
) -> RunResult:
    """Run ``notebook`` top to bottom in ``folder`` and say whether every cell passed."""
    return start(notebook, folder, limits, deny, warm=warm).finish()


def _copy_font_cache(target: Path, user: tuple[int, int] | None) -> None:
    """Give the kernel matplotlib's font cache, which takes seconds to rebuild."""
    target.mkdir()
    _own(target, user)
    try:
        for cache in Path(matplotlib.get_cachedir()).glob("fontlist-*.json"):
            shutil.copy(cache, target / cache.name)
            _own(target / cache.name, user)
    except Exception:  # no cache to copy: matplotlib builds one
        pass


def _read_reports(fd: int, reports: list[dict]) -> None:
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as stream:
        for line in stream:
            try:
                reports.append(json.loads(line))
            except ValueError:
                pass


def _verdict(notebook, reports: list[dict], timed_out: bool, limits: Limits, log: str, seconds: float) -> RunResult:
    exit_code = next((r["exit"] for r in reports if "exit" in r), None)
    died = any("Kernel dead" in r.get("text", "") for r in reports)
    problems = []
    passed_cells = 0
    for report in reports:
        if "exit" in report:
            continue
        if report.get("cell") is None:
            problems.append(f"the notebook could not be read: {_error_line(report.get('text', ''))}")
            continue
        index = int(report["cell"]) if str(report["cell"]).isdigit() else None
        if report["outcome"] == "passed":
            passed_cells += 1
            continue
        where = "a cell"
        if index is not None and index < len(notebook.cells):
            where = f"code cell {index + 1} (`{_first_line(notebook.cells[index].source)}`)"
        problems.append(f"{where}: {_error_line(report.get('text', ''), died)}")
    if timed_out:
        problems.append(f"the run was stopped after {limits.budget:g} s (the notebook's time budget)")
    elif exit_code is None:
        problems.append("the run ended abruptly (the kernel or pytest died)")
    passed = not problems and exit_code == 0 and passed_cells == len(notebook.cells)
    if passed:
        message = f"all {passed_cells} code cells ran without an error ({seconds:.0f} s)"
    else:
        shown = problems[:5] + ([f"... and {len(problems) - 5} more"] if len(problems) > 5 else [])
        message = "the notebook does not run top to bottom without errors:\n" + "\n".join(f"- {p}" for p in shown)
    return RunResult(passed, message, timed_out or any("time limit" in p for p in problems), log, problems)
