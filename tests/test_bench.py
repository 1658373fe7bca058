"""Smoke runs of ``python -m course_lib.bench``: the output is sane (not fast)."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# the bench runs on default_device(); peak memory is measured on CUDA and the CPU (NaN elsewhere, e.g. MPS)
PEAK_MEMORY_COUNTER = torch.cuda.is_available() or not torch.backends.mps.is_available()


def run_bench(suite: str, csv_path: Path) -> str:
    """Run ``python -m course_lib.bench --suite SUITE --quick --csv PATH`` on this checkout; return stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "course_lib.bench", "--suite", suite, "--quick", "--csv", str(csv_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


COMPLEXITY_COLUMNS = [
    "suite", "sweep", "implementation", "shape", "median_ms", "GFLOP/s", "peak_MiB", "baseline", "time_vs_baseline",
]  # fmt: skip


def test_complexity_suite_quick(tmp_path):
    out = run_bench("complexity", tmp_path / "complexity.csv")
    assert "== suite: complexity ==" in out
    header = out.split("== suite: complexity ==")[1].strip().splitlines()[0].split()
    assert header == COMPLEXITY_COLUMNS[1:]  # the printed table has the same columns as the CSV, less 'suite'
    with open(tmp_path / "complexity.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == COMPLEXITY_COLUMNS
    assert {r["sweep"] for r in rows} == {"len_q", "len_k", "both", "decode"}
    for r in rows:
        numbers = {c: float(r[c]) for c in ("median_ms", "GFLOP/s", "time_vs_baseline")}
        assert all(math.isfinite(x) and x > 0 for x in numbers.values()), r
        peak = float(r["peak_MiB"])
        assert (math.isfinite(peak) and peak > 0) or (math.isnan(peak) and not PEAK_MEMORY_COUNTER), r
        if r["implementation"] == r["baseline"]:
            assert numbers["time_vs_baseline"] == 1.0
    # every shape of every sweep has its baseline, measured in the same run
    for sweep in ("len_q", "len_k", "both", "decode"):
        shapes = {r["shape"] for r in rows if r["sweep"] == sweep}
        baselines = {r["shape"] for r in rows if r["sweep"] == sweep and r["implementation"] == r["baseline"]}
        assert shapes == baselines


SPARSE_COLUMNS = ["suite", "method", "len_q", "len_k", "ms", "MiB", "GFLOP", "rel_err", "speedup", "mem_ratio"]


def test_sparse_suite_quick(tmp_path):
    out = run_bench("sparse", tmp_path / "sparse.csv")
    header = out.split("== suite: sparse ==")[1].strip().splitlines()[0].split()
    assert header == SPARSE_COLUMNS[1:]
    with open(tmp_path / "sparse.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == SPARSE_COLUMNS
    assert {r["method"] for r in rows} == {"dense", "dense+mask", "sdpa", "band", "latent", "linear"}
    for r in rows:
        numbers = {c: float(r[c]) for c in ("ms", "GFLOP", "speedup")}
        assert all(math.isfinite(x) and x > 0 for x in numbers.values()), r
        for c in ("MiB", "mem_ratio"):  # complexity.measure's peak, or NaN where the device has none
            x = float(r[c])
            assert (math.isfinite(x) and x > 0) or (math.isnan(x) and not PEAK_MEMORY_COUNTER), r
        assert (r["rel_err"] == "") == (r["method"] == "latent"), r  # latent is a different model
        if r["method"] == "dense":
            assert float(r["speedup"]) == 1.0 and float(r["rel_err"]) == 0.0
            assert float(r["mem_ratio"]) == 1.0 or not PEAK_MEMORY_COUNTER
