"""``python -m course_lib.bench``: print benchmark tables, optionally as CSV too."""

from __future__ import annotations

import argparse
import platform

import torch

from . import SUITES, format_table, run_suite, write_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.bench", description=__doc__)
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--csv", help="also write the rows to this CSV file (with a 'suite' column)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run that checks the output only")
    args = parser.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
