"""The ``efficient`` bench suite's quick run gives a sane table (not a fast one).

On the CPU it checks the CPU rows; on a CUDA machine the GPU rows (Triton against SDPA).
"""

import math

import torch

from course_lib.bench import efficient as bench


def test_quick_run_gives_a_sane_table():
    rows = bench.run(quick=True)
    assert rows
    for r in rows:
        assert math.isfinite(r["ms"]) and r["ms"] > 0, r
        assert math.isfinite(r["speed vs SDPA"]) and r["speed vs SDPA"] > 0, r
        assert r["peak MiB"] == "" or r["peak MiB"] >= 0, r
        assert r.get("ok", "-") == "-", r  # a quick run judges no target
        if r["backend"].startswith("sdpa"):
            assert r["speed vs SDPA"] == 1, r  # the baseline, measured in the same run
    if torch.cuda.is_available():
        assert all(r["peak MiB"] != "" for r in rows)  # every GPU row has its memory
        assert {r["backend"] for r in rows if not r["backend"].startswith("sdpa")} == {"triton"}
        return
    assert {r["clock"] for r in rows} == {"cpu, 1 thread", "wall"}
    by_memory = {r["backend"]: r for r in rows if "memory vs naive" in r}
    assert set(by_memory) == {"sdpa", "naive", "tiled"}
    assert by_memory["naive"]["memory vs naive"] == 1
    # naive attention holds its (256, 512) float32 scores and weights (0.5 MiB each); tiled holds tiles
    assert by_memory["naive"]["peak MiB"] >= 1.0
    assert by_memory["tiled"]["memory vs naive"] < 0.5
