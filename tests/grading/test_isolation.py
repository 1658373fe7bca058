"""A hostile class: each submission attacks the grader once, beside honest neighbours.

Every attack here goes around Python's audit hook: native readers and writers
(``torch.from_file``, ``torch.save``), a fresh interpreter started by multiprocessing's
spawn (no hook in it), shell commands from there. What stops them is the bubblewrap sandbox
(``course_lib/grading/isolation.py``): the hidden tests, the output folder, other students'
files and the teacher's files are not mounted; the loopback is the sandbox's own; pids,
processes and disk are its own. An attack that gets something out shows it in the student's
own feedback (it raises with what it found), so the test looks for the secrets in every file
the grader wrote. The control at the end grades one attack with ``--insecure-no-sandbox`` and
sees it succeed: the checks here can fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import cli, isolation

HERE = Path(__file__).resolve().parent
TOY = HERE / "fixtures" / "hidden" / "test_99_toy.py"
HIDDEN_MARK = "SECRET-HIDDEN-TEST-SOURCE"
TEACHER_MARK = "TEACHER-ONLY-4f1c"
ENV_MARK = "GRADER-ENV-TOKEN-9b2e"
LEFT_MARK = "604.0417"  # the daemon's `sleep` argument: found in /proc if it outlived grading

# Where bubblewrap cannot run these are skipped, except where REQUIRE_SANDBOX=1 (CI): there they fail.
pytestmark = pytest.mark.skipif(
    isolation.problem() is not None and not os.environ.get("REQUIRE_SANDBOX"), reason=f"{isolation.problem()}"
)

HONEST = "def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return a * b\n"

# A child interpreter with no audit hook, running a shell command: what the sandbox must contain.
SHELL = """
import multiprocessing, os
def shell(command):
    child = multiprocessing.get_context("spawn").Process(target=os.system, args=(command,))
    child.start()
    child.join(10)  # what it starts may keep it from being joined: go on regardless
"""


def attacks(paths: dict[str, str], port: int, victim: int) -> dict[str, str]:
    """Each attack's code cell; it raises with whatever it managed to read."""
    p = paths
    read = "import torch\n" + "".join(
        f"try:\n    found.append(bytes(torch.from_file({p[k]!r}, size=os.path.getsize({p[k]!r}), "
        f"dtype=torch.uint8).tolist()).decode())\nexcept Exception as err:\n    found.append(repr(err))\n"
        for k in ("hidden", "teacher", "neighbour")
    )
    return {
        "reads_files_natively": "import os\nfound = []\n" + read + "raise RuntimeError(' | '.join(found))",
        "writes_files_natively": "import torch\nfor target in "
        + repr([p["canary_new"], p["package_new"], p["tests_new"], p["grades_csv"]])
        + ":\n    try:\n        torch.save(torch.zeros(3), target)\n    except Exception:\n        pass",
        "reads_files_from_an_unfenced_child": SHELL
        + f"shell('cat {p['hidden']} {p['teacher']} {p['neighbour']} > stolen.txt 2>&1')\n"
        "raise RuntimeError(open('stolen.txt').read())",
        "writes_files_from_an_unfenced_child": SHELL
        + f"shell('echo pwned > {p['canary_new']}; echo pwned > {p['package_new']}; echo pwned >> {p['grades_csv']}')",
        "connects_to_the_grader_loopback": SHELL
        + f"shell({sys.executable!r} + ' -c \"import socket; socket.create_connection((\\'127.0.0.1\\', {port}), 3)"
        + ".sendall(b\\'PWNED\\')\"')",
        "reads_the_grader_environment": SHELL
        + "shell('cat /proc/*/environ > environ.txt 2>/dev/null')\n"
        "raise RuntimeError(open('environ.txt', 'rb').read().decode(errors='replace'))",
        "kills_a_teacher_process": SHELL + f"shell('kill -9 {victim}')",
        "leaves_a_daemon_behind": SHELL + f"shell('setsid sh -c \"sleep {LEFT_MARK}\" > /dev/null 2>&1 &')",
        "starts_a_hundred_processes": SHELL
        + "shell('for i in $(seq 100); do sleep 30 & done 2>/dev/null')\n"
        "raise RuntimeError('RUNNING %d' % sum(p.isdigit() for p in os.listdir('/proc')))",
        "fills_the_disk_and_shared_memory": SHELL
        + "shell('head -c 400000000 /dev/zero > big; head -c 400000000 /dev/zero > /dev/shm/course-big')\n"
        "raise RuntimeError('WROTE %d' % os.path.getsize('big'))",
    }


def write(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["course"] = {"exercise": "99_toy"}
    nbformat.write(nb, path)


class Listener:
    """A server on the grader's loopback that records whoever connects."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.got.append(conn.recv(100) or b"(connected)")
            conn.close()


@pytest.fixture
def scene(tmp_path, monkeypatch):
    tests = TOY.parent  # the course's toy hidden tests, at their own path (pytest imports a test module once)
    teacher = tmp_path / "teacher.txt"
    teacher.write_text(TEACHER_MARK)
    teacher.chmod(0o600)
    canary = tmp_path / "canary"
    canary.mkdir()
    submissions, out = tmp_path / "class", tmp_path / "out"
    submissions.mkdir()
    neighbour = submissions / "honest_a.ipynb"
    write(neighbour, HONEST + f"# {TEACHER_MARK}-neighbour")
    write(submissions / "honest_b.ipynb", HONEST)
    package = Path(cli.__file__).resolve().parents[1]
    paths = {
        "hidden": str(tests / TOY.name), "teacher": str(teacher), "neighbour": str(neighbour),
        "canary_new": str(canary / "pwned"), "package_new": str(package / "pwned_by_a_student"),
        "tests_new": str(tests / "test_00_pwned.py"), "grades_csv": str(out / "grades.csv"),
    }  # fmt: skip
    monkeypatch.setenv("COURSE_TEACHER_SECRET", ENV_MARK)
    yield {"tests": tests, "submissions": submissions, "out": out, "paths": paths, "package": package}
    for key in ("package_new", "tests_new"):
        Path(paths[key]).unlink(missing_ok=True)


def grade(scene, *extra: str) -> int:
    args = [str(scene["submissions"]), "--tests", str(scene["tests"]), "--out", str(scene["out"]),
            "--timeout", "120", "--budget", "400", *extra]  # fmt: skip
    return cli.main(args)


def everything_written(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())


def left_behind() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if LEFT_MARK.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_a_hostile_class_is_contained_and_honest_neighbours_keep_full_marks(scene):
    listener = Listener()
    victim = subprocess.Popen(["sleep", "300"])
    try:
        for name, code in attacks(scene["paths"], listener.port, victim.pid).items():
            write(scene["submissions"] / f"{name}.ipynb", HONEST, code)
        assert grade(scene, "--jobs", "2") == 0
        assert victim.poll() is None, "a student killed a teacher's process"
    finally:
        victim.kill()
    out = scene["out"]
    written = everything_written(out)
    for mark in (HIDDEN_MARK, TEACHER_MARK, ENV_MARK):
        assert mark not in written, f"{mark} reached the grader's output"
    for key in ("canary_new", "package_new", "tests_new"):
        assert not Path(scene["paths"][key]).exists(), f"a student wrote {scene['paths'][key]}"
    assert "pwned" not in (out / "grades.csv").read_text()
    assert listener.got == [], f"a student reached the grader's loopback: {listener.got}"
    assert left_behind() == [], "a student's process outlived the grading"
    assert not Path("/dev/shm/course-big").exists()
    stolen = (out / "reads_files_from_an_unfenced_child" / "feedback.md").read_text()
    assert "No such file" in stolen  # the attack ran, and found nothing to read
    feedback = (out / "starts_a_hundred_processes" / "feedback.md").read_text()
    running = int(feedback.split("RUNNING ")[1].split()[0].strip("`'\")"))
    assert running < 100, f"{running} processes ran in one sandbox"
    disk = (out / "fills_the_disk_and_shared_memory" / "feedback.md").read_text()
    assert "WROTE" not in disk or int(disk.split("WROTE ")[1].split()[0].strip("`'\")")) < 400_000_000
    rows = {line.split(",")[0]: line for line in (out / "grades.csv").read_text().splitlines()[1:]}
    for honest in ("honest_a", "honest_b"):
        total, top = rows[honest].split(",")[-4:-2]
        assert float(total) == float(top) > 0, rows[honest]


def test_without_the_sandbox_the_same_attack_reads_the_hidden_tests(scene):
    listener = Listener()
    code = attacks(scene["paths"], listener.port, os.getpid())["reads_files_natively"]
    write(scene["submissions"] / "thief.ipynb", HONEST, code)
    assert grade(scene, "--insecure-no-sandbox", "--no-run") == 0
    assert HIDDEN_MARK in (scene["out"] / "thief" / "feedback.md").read_text()


def test_without_bubblewrap_the_grader_refuses_and_says_how_to_install_it(scene, monkeypatch, capsys):
    monkeypatch.setattr(isolation, "problem", lambda: "bubblewrap (bwrap) is not installed; install bubblewrap")
    assert grade(scene) == 2
    assert "install bubblewrap" in capsys.readouterr().err
    assert not scene["out"].exists() or not (scene["out"] / "grades.csv").exists()


def test_the_sandbox_is_a_user_of_its_own_without_capabilities():
    command = isolation.wrap([sys.executable, "-c", "import os; print(os.getuid(), open('/proc/self/status').read())"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=isolation.environment())
    uid, status = done.stdout.split(" ", 1)
    assert int(uid) != 0 and int(uid) != os.getuid()
    assert "CapEff:\t0000000000000000" in status and "CapBnd:\t0000000000000000" in status


@pytest.mark.slow
def test_a_notebook_that_stops_its_own_box_costs_one_time_limit_and_is_marked_error(tmp_path):
    """The box shares the sandbox's user, so student code can stop it. The grader then waits one time
    limit (not one per test, nor past the budget) and flags the notebook for a second look."""
    folder, out = tmp_path / "class", tmp_path / "out"
    folder.mkdir()
    stopper = SHELL + "shell('kill -STOP %d' % os.getppid())\ndef add(a, b):\n    os._exit(3)\n\nmul = add\n"
    write(folder / "stopper.ipynb", stopper)
    start = time.monotonic()
    args = [str(folder), "--tests", str(TOY.parent), "--out", str(out), "--timeout", "10", "--budget", "300"]
    assert cli.main([*args, "--no-run"]) == 0
    seconds = time.monotonic() - start
    result = json.loads((out / "stopper" / "results.json").read_text())
    row = (out / "grades.csv").read_text().splitlines()[1]
    assert ",error," in row and "stopped answering" in row, row
    assert result["score"] == 0
    assert seconds < 40, f"grading took {seconds:.0f} s: each test waited for the stopped box"
