"""``course-grade``: grade a class's notebooks against the hidden tests.

    course-grade SUBMISSION... [--tests DIR] [--out DIR] [--jobs N] [--timeout SECONDS]
                 [--budget SECONDS] [--memory MB] [--no-run] [--exercises NN,NN]
                 [--scheduler tcp://HOST:8786 | local] [--insecure-no-sandbox]
    python -m course_lib.grading ...

A SUBMISSION is a notebook (the student id is its file name), or a folder holding one
notebook or one subfolder per student (the id is the file or subfolder name; a subfolder
may hold several exercises' notebooks). A notebook is matched to the hidden tests
``test_NN_*.py`` by its ``NN_`` prefix, else by the metadata every exercise notebook
carries. The exercises graded are those any student submitted (or those ``--exercises``
names); a student who lacks one gets zero for it, with the status ``missing``.

Student code runs in a bubblewrap sandbox (``isolation.py``); where bubblewrap cannot run,
the grader refuses, unless told ``--insecure-no-sandbox``.

The exit code is 0 when every submission was graded (low scores and broken notebooks
included), 2 for a usage error, and 1 when the grader itself failed (the hidden tests do
not run, or a grading process died).
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import multiprocessing
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

from . import isolation, report
from .grade import ExerciseGrade, Settings, StudentGrade, grade_student
from .notebook import exercise_of
from .session import Limits

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def default_tests() -> Path:
    """The hidden tests shipped with the course: ``tests/exercises`` next to ``course_lib``."""
    return PACKAGE_ROOT / "tests" / "exercises"


def find_tests(folder: Path) -> dict[str, Path]:
    """``{"01": .../test_01_attention_from_the_formula.py, ...}``."""
    return {p.name[5:7]: p for p in sorted(folder.glob("test_[0-9][0-9]_*.py"))}


def discover(paths: list[Path], skip: tuple[Path, ...] = ()) -> tuple[list[tuple[str, list[Path]]], list[str]]:
    """``[(student id, notebooks)]`` from the command line's paths, and warnings.

    ``skip``: folders that are not submissions (the output folder, the hidden tests).
    """
    found, warnings = [], []
    for path in paths:
        if path.is_file():
            found.append((path.stem, [path]))
            continue
        for entry in sorted(path.iterdir()):
            if entry.name.startswith(".") or entry.resolve() in skip:
                continue
            if entry.is_dir():
                notebooks = sorted(p for p in entry.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
                found.append((entry.name, notebooks))
            elif entry.suffix == ".ipynb":
                found.append((entry.stem, [entry]))
            else:
                warnings.append(f"ignored {entry} (not a notebook nor a folder)")
    students, taken = [], set()  # taken: output folder names (report.safe_name), in lower case
    for student, notebooks in found:
        name, n = student, 1
        while report.safe_name(name).lower() in taken:  # same id, or same folder on disk
            n += 1
            name = f"{student}-{n}"
        if name != student:
            warnings.append(f"two submissions would share the name {student!r}; this one is graded as {name}")
        taken.add(report.safe_name(name).lower())
        students.append((name, notebooks))
    return students, warnings


def match(notebooks: list[Path], keys: dict[str, str]) -> tuple[dict[str, Path], list[str]]:
    """Each exercise's notebook and notes for the student.

    Of several notebooks for one exercise, one that names it (by file name or metadata)
    comes before one matched only because a single exercise is graded; then the newest
    (latest modification time) is graded, the first by name on a tie.
    """
    chosen: dict[str, list[tuple[bool, Path]]] = {}
    notes = []
    for path in notebooks:
        named = exercise_of(path, keys, fallback=False)
        number = named or exercise_of(path, keys)
        if number is None:
            notes.append(f"{path.name} matches no exercise ({', '.join(keys.values())}); it was not graded")
        else:
            chosen.setdefault(number, []).append((named is not None, path))
    result = {}
    for number, found in chosen.items():
        found.sort(key=lambda item: (not item[0], -item[1].stat().st_mtime, item[1].name))
        result[number] = found[0][1]
        if len(found) > 1:
            notes.append(f"several notebooks for {keys[number]}; graded {found[0][1].name}")
    if not notebooks:
        notes.append("no notebook (.ipynb) was found in the submission")
    return result, notes


def _readable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can reach and read ``path``."""
    path = path.resolve()
    for parent in list(reversed(path.parents)):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    mode = os.stat(path).st_mode
    return bool(mode & stat.S_IROTH) and (not stat.S_ISDIR(mode) or bool(mode & stat.S_IXOTH))


def sandbox_user() -> tuple[tuple[int, int] | None, str | None]:
    """``((uid, gid), None)`` of ``nobody`` when running as root and Python is readable by it."""
    if os.name != "posix" or os.geteuid() != 0:
        return None, None
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return None, "running as root, but there is no user 'nobody' to run student code as"
    needed = [Path(sys.executable), Path(sys.base_prefix) / "lib"]
    needed += [Path(p) for p in sys.path if p and Path(p).is_dir()]
    blocked = [str(p) for p in needed if not _readable_by_others(p)]
    if blocked:
        return None, (
            f"running as root, but {blocked[0]} is not readable by other users, so student code runs as root "
            "(fenced by the sandbox's audit hook only); install Python where all users can read it, or run "
            "the grader as an ordinary user"
        )
    return (nobody.pw_uid, nobody.pw_gid), None


def private_paths() -> list[Path]:
    """The course's own solutions, tests and git history, when graded from a checkout."""
    paths = [PACKAGE_ROOT / "solutions", PACKAGE_ROOT / "tests"]
    git = PACKAGE_ROOT / ".git"
    if git.is_file():  # a worktree: "gitdir: /path/.git/worktrees/name"
        found = re.match(r"gitdir:\s*(.+)", git.read_text())
        if found:
            gitdir = Path(found.group(1).strip())
            paths.append(gitdir.parent.parent if gitdir.parent.name == "worktrees" else gitdir)
    paths.append(git)
    return [p for p in paths if p.exists()]


NO_SANDBOX = (
    "--insecure-no-sandbox: student code runs without bubblewrap, fenced only by resource limits and an audit "
    "hook that native code can bypass; use it only where each submission has a container of its own"
)
NO_SANDBOX_NOTE = "graded without a sandbox (--insecure-no-sandbox)"
GRADER_FAILED = "the grader failed on this submission, not because of it: grade it again (see grader.log)"


def _grade_one(job: tuple) -> StudentGrade:
    student, notebooks, test_files, settings, workroot, notes = job
    return grade_student(student, notebooks, test_files, settings, workroot, notes)


def _not_graded(job: tuple, error: str) -> StudentGrade:
    """The row of a student whose grading failed: status error, no points, a note to grade again."""
    student, _, test_files, _, _, notes = job
    exercises = [
        ExerciseGrade(number, path.stem.removeprefix("test_"), None, [], status="error", log=error)
        for number, path in sorted(test_files.items())
    ]
    return StudentGrade(student, exercises, [GRADER_FAILED, *notes])


def _progress(total: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="submission", file=sys.stderr, dynamic_ncols=True)
    except ImportError:
        return None


def run(
    jobs_list: list[tuple], jobs: int, out: Path, scheduler: str | None = None
) -> tuple[list[StudentGrade], list[str]]:
    """Grade every job (in ``jobs`` processes, or on Dask at ``scheduler``); write each student's files."""
    grades, failures = [], []
    bar = _progress(len(jobs_list))

    def failed(job: tuple, err: Exception) -> None:  # the grader failed, not the student
        error = f"{job[0]}: the grading process failed: {type(err).__name__}: {err}"
        failures.append(error)
        done(_not_graded(job, error))

    def done(grade: StudentGrade) -> None:
        grades.append(grade)
        report.write_student(grade, out)
        for exercise in grade.exercises:
            if exercise.internal_error:
                failures.append(f"{grade.student}, {exercise.title}: {exercise.internal_error}")
        if bar is not None:
            bar.update(1)

    if scheduler:
        from . import cluster

        cluster.run(jobs_list, scheduler, jobs, done, failed)
    elif jobs <= 1:
        for job in jobs_list:
            try:
                grade = _grade_one(job)
            except Exception as err:
                failed(job, err)
            else:
                done(grade)
    else:
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            pending = {pool.submit(_grade_one, job): job for job in jobs_list}
            for future in futures.as_completed(pending):
                try:
                    grade = future.result()
                except Exception as err:  # the grading process died
                    failed(pending[future], err)
                else:
                    done(grade)
    if bar is not None:
        bar.close()
    return grades, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="course-grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION")
    parser.add_argument("--tests", type=Path, default=None, help="hidden tests folder (default: the course's)")
    parser.add_argument("--out", type=Path, default=Path("grades"), help="output folder (default: ./grades)")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per notebook cell and per call (60)")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per notebook in all (600)")
    parser.add_argument("--memory", type=int, default=2048, help="MB student code may allocate (2048)")
    parser.add_argument("--no-run", action="store_true", help="skip the 'runs top to bottom' test")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="grade on Dask: tcp://HOST:8786, or 'local' for --jobs workers here")  # fmt: skip
    parser.add_argument("--insecure-no-sandbox", action="store_true",
                        help="run student code without bubblewrap (only in a container per submission)")  # fmt: skip
    parser.add_argument("--exercises", default=None, metavar="NN,NN",
                        help="grade only these exercises, e.g. 01,02 (default: every exercise handed in)")  # fmt: skip
    args = parser.parse_args(argv)

    tests = (args.tests or default_tests()).resolve()
    test_files = find_tests(tests) if tests.is_dir() else {}
    if not test_files:
        print(f"course-grade: no hidden tests (test_NN_*.py) in {tests}; give --tests DIR", file=sys.stderr)
        return 2
    if args.exercises:
        wanted = {n.strip().zfill(2) for n in args.exercises.split(",") if n.strip()}
        unknown = sorted(wanted - set(test_files))
        if unknown:
            print(f"course-grade: no hidden tests for exercise(s) {', '.join(unknown)} in {tests}", file=sys.stderr)
            return 2
    else:
        wanted = set(test_files)
    missing = [str(p) for p in args.submissions if not p.exists()]
    if missing:
        print(f"course-grade: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    students, warnings = discover(args.submissions, skip=(args.out.resolve(), tests))
    keys = {number: path.stem.removeprefix("test_") for number, path in test_files.items()}
    matched = [(student, *match(notebooks, keys)) for student, notebooks in students]
    test_files = {number: path for number, path in test_files.items() if number in wanted}
    matched = [(s, {n: p for n, p in nbs.items() if n in wanted}, notes) for s, nbs, notes in matched]
    graded = sorted({number for _, notebooks, _ in matched for number in notebooks})
    if not graded:
        print(f"course-grade: no submitted notebook matches the hidden tests in {tests}", file=sys.stderr)
        return 2

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.insecure_no_sandbox:
        isolation_used, user, warning = "none", *sandbox_user()
        warnings += [warning] if warning else []
        warnings.append(NO_SANDBOX)
    else:
        why = isolation.problem()
        if why is not None:
            print(f"course-grade: student code must run in a sandbox, but {why}", file=sys.stderr)
            return 2
        isolation_used, user = "bwrap", None
    workroot = Path(tempfile.mkdtemp(prefix="course-grade-"))
    workroot.chmod(0o711)
    deny = [tests, out, workroot, *(p.resolve() for p in args.submissions), *private_paths()]
    limits = Limits(timeout=args.timeout, budget=args.budget, memory_mb=args.memory, user=user,
                    isolation=isolation_used)  # fmt: skip
    settings = Settings(limits=limits, deny=[str(p) for p in deny], run_notebook=not args.no_run)
    selected = {number: test_files[number] for number in graded}
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)

    start = time.monotonic()
    if isolation_used == "none":  # in the table and the CSV, beside every row
        matched = [(s, nbs, [*notes, NO_SANDBOX_NOTE]) for s, nbs, notes in matched]
    jobs_list = [(s, nbs, selected, settings, workroot, notes) for s, nbs, notes in matched]
    try:
        grades, failures = run(jobs_list, max(1, args.jobs), out, args.scheduler)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    seconds = time.monotonic() - start
    report.write_csv(grades, out / "grades.csv")
    with open(out / "grader.log", "w", encoding="utf-8") as log:
        for grade in sorted(grades, key=lambda g: g.student):
            for exercise in grade.exercises:
                log.write(f"===== {grade.student} / {exercise.title} ({exercise.status})\n{exercise.log}\n")
        for failure in failures:
            log.write(f"===== GRADER FAILURE\n{failure}\n")
    print(report.summary(grades, seconds, max(1, args.jobs)))
    print(f"wrote {out / 'grades.csv'}, and results.json and feedback.md for each student in {out}")
    if failures:
        print(f"course-grade: {len(failures)} grading failure(s); see {out / 'grader.log'}", file=sys.stderr)
        for failure in failures[:3]:
            print(failure.splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
