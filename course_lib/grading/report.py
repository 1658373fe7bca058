"""What the grader writes: the class CSV, Gradescope JSON, feedback, and the summary table.

    OUT/grades.csv                 one row per student: points per task, total, max, status, notes
    OUT/<student>/results.json     Gradescope's autograder format
    OUT/<student>/feedback.md      for the student: each test's result and message
    OUT/grader.log                 for the teacher: pytest output and the tests' own errors

Nothing here contains hidden-test source: a test's name is its docstring's first line
and its message is its assertion's message.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from .grade import RUNS_TASK, ExerciseGrade, StudentGrade


def _num(x: float) -> str:
    return f"{x:g}"


def columns(grades: Iterable[StudentGrade]) -> list[tuple[str, str]]:
    """(exercise, task) pairs in the order the tests first appear, the runs test last per exercise."""
    seen: dict[tuple[str, str], None] = {}
    for grade in grades:
        for exercise in grade.exercises:
            for result in exercise.results:
                seen.setdefault((exercise.exercise, result.task), None)
    order = sorted(seen, key=lambda key: (key[0], key[1] == RUNS_TASK))
    return order


def task_points(exercise: ExerciseGrade, task: str) -> tuple[float, float]:
    results = [r for r in exercise.results if r.task == task]
    return sum(r.points for r in results if r.outcome == "passed"), sum(r.points for r in results)


def notes_line(grade: StudentGrade) -> str:
    """A short reason for a status other than graded, for the CSV and the summary."""
    parts = list(grade.notes)
    if grade.missing:
        parts.append(f"not handed in: {', '.join(grade.missing)}")
    for exercise in grade.exercises:
        if exercise.status in ("graded", "missing"):
            continue
        failed = [r for r in exercise.results if r.outcome != "passed"]
        reason = failed[0].message.splitlines()[0] if failed else exercise.status
        if exercise.internal_error:
            reason = "the hidden tests could not run (see grader.log)"
        elif exercise.status == "timeout":
            stopped = [n for n in exercise.notes if "longer than" in n or "time" in n]
            reason = stopped[0] if stopped else "a time limit was reached"
        parts.append(f"{exercise.exercise}: {reason}")
    return "; ".join(parts)[:300]


def write_csv(grades: list[StudentGrade], path: Path) -> list[str]:
    keys = columns(grades)
    header = ["student"] + [f"{ex}_{task}" for ex, task in keys] + ["total", "max", "status", "notes"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for grade in sorted(grades, key=lambda g: g.student):
            by_ex = {e.exercise: e for e in grade.exercises}
            row = [grade.student]
            for ex, task in keys:
                exercise = by_ex.get(ex)
                row.append(_num(task_points(exercise, task)[0]) if exercise else "")
            row += [_num(grade.score), _num(grade.max_score), grade.status, notes_line(grade)]
            writer.writerow(row)
    return header


def gradescope(grade: StudentGrade) -> dict:
    tests = []
    for exercise in grade.exercises:
        for i, result in enumerate(exercise.results, 1):
            tests.append(
                {
                    "name": f"{exercise.exercise} {result.task}: {result.name}",
                    "number": f"{int(exercise.exercise)}.{i}",
                    "score": result.points if result.outcome == "passed" else 0.0,
                    "max_score": result.points,
                    "status": "passed" if result.outcome == "passed" else "failed",
                    "output": result.message if result.outcome != "passed" else (result.message or ""),
                    "visibility": result.visibility,
                }
            )
    summary = [
        f"{e.title}: {_num(e.score)} / {_num(e.max_score)}" + (" (not handed in)" if e.status == "missing" else "")
        for e in grade.exercises
    ]
    notes = [n for e in grade.exercises for n in e.notes] + grade.notes
    output = "\n".join(summary + ([""] + [f"- {n}" for n in notes] if notes else []))
    return {
        "score": grade.score,
        "output": output,
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def feedback(grade: StudentGrade) -> str:
    lines = [f"# Feedback for {grade.student}", "", f"**Total: {_num(grade.score)} / {_num(grade.max_score)}**", ""]
    for note in grade.notes:
        lines.append(f"- {note}")
    for exercise in grade.exercises:
        graded = f" (graded: `{exercise.notebook}`)" if exercise.notebook else ""
        lines += ["", f"## {exercise.title}: {_num(exercise.score)} / {_num(exercise.max_score)}{graded}", ""]
        lines += ["| | test | points |", "|---|---|---|"]
        for r in exercise.results:
            mark = "✅" if r.outcome == "passed" else "❌"
            got = r.points if r.outcome == "passed" else 0
            lines.append(f"| {mark} | {r.task}: {r.name} | {_num(got)} / {_num(r.points)} |")
        failed = [r for r in exercise.results if r.outcome != "passed"]
        if failed:
            lines += ["", "### What to look at", ""]
            for r in failed:
                message = r.message.strip().replace("\n", "\n  ")
                lines.append(f"- **{r.task}: {r.name}**: {message}")
        if exercise.notes:
            lines += ["", "### Your notebook, run by the grader", ""]
            lines += [f"- {note}" for note in exercise.notes]
    return "\n".join(lines) + "\n"


def safe_name(student: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in student).strip(".")
    return cleaned or "student"


def write_student(grade: StudentGrade, out: Path) -> Path:
    folder = out / safe_name(grade.student)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(gradescope(grade), indent=2) + "\n", encoding="utf-8")
    (folder / "feedback.md").write_text(feedback(grade), encoding="utf-8")
    return folder


def _cell(exercise: ExerciseGrade | None) -> str:
    """One exercise in the table: ``7/10``, or ``missing`` when it was not handed in."""
    if exercise is None or exercise.status == "missing":
        return "missing"
    return f"{_num(exercise.score)}/{_num(exercise.max_score)}"


def summary(grades: list[StudentGrade], seconds: float, jobs: int) -> str:
    """The table printed after the progress bar."""
    grades = sorted(grades, key=lambda g: g.student)
    keys = columns(grades)
    exercises = sorted({ex for ex, _ in keys})
    width = max([len(g.student) for g in grades] + [7])
    head = f"{'student':<{width}}  " + "  ".join(f"{ex:>7}" for ex in exercises) + "    total  status   notes"
    lines = [head, "-" * len(head)]
    for g in grades:
        by_ex = {e.exercise: e for e in g.exercises}
        cells = [f"{_cell(by_ex.get(ex)):>7}" for ex in exercises]
        total = f"{_num(g.score)}/{_num(g.max_score)}"
        row = f"{g.student:<{width}}  " + "  ".join(cells) + f"  {total:>7}  {g.status:<7}  {notes_line(g)[:60]}"
        lines.append(row)
    counts = {s: sum(g.status == s for g in grades) for s in ("graded", "timeout", "error", "missing")}
    counts = {s: n for s, n in counts.items() if n or s != "missing"}
    not_handed_in = sum(len(g.missing) for g in grades)
    mean = sum(g.score for g in grades) / max(len(grades), 1)
    top = max((g.max_score for g in grades), default=0)
    lines += [
        "",
        f"{len(grades)} submission(s) in {seconds:.1f} s with {jobs} job(s): mean {mean:.1f} / {_num(top)}; "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; {not_handed_in} exercise(s) not handed in",
    ]
    per_task = []
    for ex, task in keys:
        scored = [task_points(e, task) for g in grades for e in g.exercises if e.exercise == ex]
        if scored:
            per_task.append(f"{ex}_{task} {sum(s for s, _ in scored) / len(scored):.1f}/{_num(scored[0][1])}")
    lines.append("mean per task: " + ", ".join(per_task))
    return "\n".join(lines)
