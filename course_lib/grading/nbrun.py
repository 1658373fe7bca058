"""The test "the notebook runs top to bottom": ``pytest --nbval-lax`` under the grader's rules.

The student's notebook (code cells only, nbval's skip/raises markers neutralised) runs
through ``pytest --nbval-lax``, started by the notebook's box (``box.py``) in its sandbox,
under resource limits, as the unprivileged user when there is one. The kernel spec's
launcher (``kernel_launcher.py``) gets the kernel from the box: forked warm and fenced
like a worker, with the audit hook. Each cell has the per-cell time limit; the whole run
has the submission's time budget.

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
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import nbformat

from . import isolation
from .session import Limits

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
    """One notebook's run: ``prepare`` writes its files, the box starts it, ``begin`` and ``finish`` follow it."""

    notebook: nbformat.NotebookNode
    limits: Limits
    folder: Path
    box_spec: dict = field(default_factory=dict)  # what the box needs to start pytest (``Box(pytest=...)``)
    readonly: list[str] = field(default_factory=list)  # what the sandbox must show (``isolation.wrap``)
    scratch: list[str] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    read_end: int = -1  # the report pipe's; its write end goes to pytest
    reader: threading.Thread | None = None
    reports: list[dict] = field(default_factory=list)
    started: float = 0.0
    box: object = None
    result: RunResult | None = None

    def box_options(self) -> dict:
        """How the box must start pytest, and what its sandbox must show: ``Box(**run.box_options())``."""
        return {"pytest": self.box_spec, "readonly": self.readonly, "scratch": self.scratch, "files": self.files}

    @property
    def log_path(self) -> Path:
        return self.folder / "pytest-output.txt"

    def begin(self, box) -> None:
        """The box has started pytest: read its reports from now on."""
        self.box, self.started = box, time.monotonic()
        os.close(self.box_spec["report_fd"])
        self.reader = threading.Thread(target=_read_reports, args=(self.read_end, self.reports), daemon=True)
        self.reader.start()

    def finish(self) -> RunResult:
        """Wait for pytest to end (within the notebook's time budget) and say whether every cell passed.

        Past the budget, the whole box is stopped: call this after the hidden tests are done.
        """
        if self.result is not None:
            return self.result
        self.reader.join(max(self.limits.budget - (time.monotonic() - self.started), 1.0))
        timed_out = self.reader.is_alive()
        if timed_out:
            self.box.close()
            self.reader.join(5)
        seconds = time.monotonic() - self.started
        try:
            text = self.log_path.read_bytes()[-20000:].decode("utf-8", "replace")
        except OSError:
            text = ""
        self.result = _verdict(self.notebook, self.reports, timed_out, self.limits, text, seconds)
        return self.result


def prepare(notebook: nbformat.NotebookNode, folder: Path, limits: Limits) -> Run:
    """Write what ``pytest --nbval-lax`` needs into ``folder`` (created here); the box starts it.

    A notebook without code cells gets its result at once (``Run.result``).
    """
    run = Run(notebook, limits, folder)
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
    if limits.isolation == "bwrap":  # work is an empty in-memory folder there; the notebook is mounted into it
        nbformat.write(notebook, folder / "notebook.ipynb")
        run.readonly, run.scratch = [str(folder)], [str(work)]
        run.files = [(str(folder / "notebook.ipynb"), str(path)), *isolation.font_cache(str(work / ".matplotlib"))]
    else:
        nbformat.write(notebook, path)
        _own(path, limits.user)
        _copy_font_cache(work / ".matplotlib", limits.user)

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
    )
    run.read_end, write_end = os.pipe()
    env["COURSE_REPORT_FD"] = str(write_end)
    timeout = f"{limits.timeout:g}"
    argv = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "-c", str(folder / "pytest.ini"), "--rootdir", str(folder), "--nbval-lax",
        "--nbval-kernel-name", KERNEL_NAME, "--nbval-cell-timeout", timeout,
        "--nbval-kernel-startup-timeout", "120", "--durations=5", str(path),
    ]  # fmt: skip
    address_space = (KERNEL_BASE_MB + limits.memory_mb) * 2**20
    run.box_spec = {"argv": argv, "env": env, "cwd": str(work), "report_fd": write_end, "kernel_workdir": str(work),
                    "address_space": address_space}  # fmt: skip
    return run


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
