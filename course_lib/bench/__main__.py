"""``python -m course_lib.bench``: print benchmark tables, optionally as CSV and markdown too."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

from . import SUITES, _cell, format_table, run_suite, write_csv


def format_markdown(rows: Sequence[dict], title: str) -> str:
    """Rows of dicts as a markdown table under a ``# title`` line; columns in first-seen order."""
    lines = [f"# {title}", ""]
    if not rows:
        return "\n".join([*lines, "(no rows)", ""])
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")).replace("|", "/") for c in columns) + " |")
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.bench", description=__doc__)
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--csv", help="also write the rows to this CSV file (with a 'suite' column)")
    parser.add_argument("--markdown", help="also write the rows to this markdown file, titled by device and date")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run that checks the output only")
    parser.add_argument(
        "--budget-s",
        type=float,
        help="efficient suite on a GPU: start no new case after this many seconds (the rest is listed as left out)",
    )
    args = parser.parse_args(argv)
    if args.budget_s is not None:
        os.environ["COURSE_BENCH_BUDGET_S"] = str(args.budget_s)
    if args.csv:  # a run cut short by a time limit still leaves the rows measured so far
        os.environ["COURSE_BENCH_PARTIAL_CSV"] = args.csv
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or 'cpu'})"
    print(f"device: {device}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    all_rows = []
    for name in SUITES if args.suite == "all" else (args.suite,):
        rows = run_suite(name, quick=args.quick)
        print(f"\n== suite: {name} ==")
        print(format_table(rows))
        all_rows += [{"suite": name, **row} for row in rows]
    if args.csv:
        write_csv(all_rows, args.csv)
        print(f"\nwrote {len(all_rows)} rows to {args.csv}")
    if args.markdown:
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        title = f"course_lib.bench --suite {args.suite}: {device}, torch {torch.__version__}, {date}"
        Path(args.markdown).write_text(format_markdown(all_rows, title))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
