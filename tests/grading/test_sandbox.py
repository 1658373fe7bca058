"""The audit hook, in a fresh interpreter (a hook cannot be removed once installed)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from course_lib.grading import sandbox

SCRIPT = textwrap.dedent(
    """
    import ctypes, os, subprocess, sys
    sys.path.insert(0, {grading!r})
    import sandbox
    os.chdir({work!r})
    sandbox.install({work!r}, [{secret!r}])

    def attempt(label, action):
        try:
            action()
            print("ALLOWED", label)
        except PermissionError:
            print("refused", label)

    attempt("read a denied file", lambda: open({secret!r} + "/tests.py").read())
    attempt("read it by a relative path", lambda: open(os.path.relpath({secret!r}) + "/tests.py").read())
    attempt("read it through /proc/self/root", lambda: open("/proc/self/root" + {secret!r} + "/tests.py").read())
    attempt("list a denied folder", lambda: os.listdir({secret!r}))
    attempt("open a folder for dir_fd tricks", lambda: os.open("/", os.O_RDONLY))
    attempt("read the parent's /proc entry", lambda: open(f"/proc/{{os.getppid()}}/cmdline").read())
    attempt("write outside the working folder", lambda: open({outside!r}, "w"))
    attempt("rename into another folder", lambda: os.rename("mine.txt", {outside!r}))
    attempt("make a symlink", lambda: os.symlink({secret!r}, "link"))
    attempt("start a process", lambda: subprocess.run(["true"]))
    attempt("os.system", lambda: os.system("true"))
    attempt("signal the parent", lambda: os.kill(os.getppid(), 0))
    attempt("call C through ctypes", lambda: ctypes.CDLL(None).getpid())
    attempt("replace the hook's code", lambda: setattr(sandbox._hook, "__code__", (lambda e, a: None).__code__))
    attempt("replace the hook's defaults", lambda: setattr(sandbox._check_read, "__defaults__", ()))
    import builtins
    builtins.str = lambda *a: "/"
    attempt("read after patching builtins", lambda: open({secret!r} + "/tests.py").read())
    builtins.str = type("")
    attempt("write inside the working folder", lambda: open("mine.txt", "w").write("ok"))
    attempt("read inside the working folder", lambda: open("mine.txt").read())
    attempt("read /proc/self", lambda: open("/proc/self/status").read())
    attempt("import a module not yet loaded", lambda: __import__("fractions"))
    """
)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox")
    work, secret = root / "work", root / "hidden"
    work.mkdir()
    secret.mkdir()
    (secret / "tests.py").write_text("SECRET")
    (work / "mine.txt").write_text("")
    script = SCRIPT.format(
        grading=str(Path(sandbox.__file__).parent), work=str(work), secret=str(secret), outside=str(root / "x.txt")
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(line.split(" ", 1)[::-1] for line in out.stdout.splitlines())


ALLOWED = [
    "write inside the working folder",
    "read inside the working folder",
    "read /proc/self",
    "import a module not yet loaded",
]


def test_everything_outside_the_fence_is_refused(outcomes):
    refused = [label for label, verdict in outcomes.items() if label not in ALLOWED]
    assert len(refused) == 16
    assert all(outcomes[label] == "refused" for label in refused), outcomes


def test_ordinary_work_inside_the_fence_is_allowed(outcomes):
    assert all(outcomes[label] == "ALLOWED" for label in ALLOWED), outcomes
