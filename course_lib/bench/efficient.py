"""Suite ``efficient``: tiled and Triton attention against naive attention and PyTorch's SDPA.

``python -m course_lib.bench --suite efficient [--quick] [--csv PATH]``

Every row is one measurement: backend, dtype, shape ``B×H×Lq×Lk×d``, the fraction of
keys that are padding, the pass (``fwd`` or ``fwd+bwd``), the median time, the
throughput, the peak extra memory, and the speed relative to SDPA measured in the
same run (``SDPA time / this time``: above 1 is faster than SDPA). Rows that carry a
target of docs/design.md § 6 say whether it is met.

* **CPU**: tiled attention's time at ``B=2, H=8, Lq=1024, Lk=4096, d=64`` fp32
  (target: at most 1.5× SDPA's, i.e. speed ≥ 0.67) and its peak extra memory at
  ``Lq=4096, Lk=8192`` (target: at most 1/20 of naive attention's). CPU rows are timed
  by the CPU time of one thread (``clock`` column ``cpu, 1 thread``), as lesson 05 does:
  the work done, steady even while other programs share the cores. Two rows repeat
  the time target by wall-clock time with every thread (``wall``): what a user waits
  for, noisy on a shared machine, where each of the tiled version's many small
  operations can wait for a busy core. Backends are timed in turns, round after round.
* **GPU**: the Triton kernel at ``B=8, H=16, Lq=1024, Lk=4096``, ``d`` 64 and 128,
  fp16 and bf16, against the fastest SDPA backend: forward with no padding (target
  ≥ 0.9), forward with half of the keys padding, given to SDPA as the equivalent
  boolean mask (target ≥ 1.3), and forward+backward (target ≥ 0.7); also
  ``flex_attention`` (compiled, fp16, d=64) with a key-padding block mask when torch has it.

Times and memory come from ``course_lib.complexity.measure_in_turns``, as in lessons 05 and
07: the median of the timed calls, and the peak memory allocated during one call above what
existed before it (the inputs are not counted; on the CPU it is read from the profiler's
allocation events, on one thread like the time; on CUDA from ``max_memory_allocated``).

FLOPs are ``4·B·H·Lq·Lk·d`` for the forward and 2.5 times that for the backward.
With padding only the real keys are counted (``Lk`` becomes the mean ``kv_len``) for
every backend, so the throughput is useful work and the rows compare directly.
``--quick`` runs tiny shapes only, to check that the suite works; its targets are
not judged.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from functools import partial

import torch
import torch.nn.functional as F

from course_lib.complexity import Measurement, measure_in_turns
from course_lib.efficient import attention_mask, flash_attention, tiled_attention

H100_DENSE_TFLOPS = 989.0  # fp16/bf16 dense tensor-core peak of an H100 SXM
CPU_TIME_TARGET = 1.5  # tiled time <= 1.5 x SDPA time
CPU_MEMORY_TARGET = 20  # tiled peak <= naive peak / 20
GPU_TARGETS = {"fwd": 0.9, "fwd, padded": 1.3, "fwd+bwd": 0.7}  # speed vs SDPA


def half_padding_lens(batch: int, len_k: int) -> list[int]:
    """Lengths spread from 1/8 to 7/8 of ``len_k``: half of the batch's keys are padding."""
    if batch == 1:
        return [len_k // 2]
    return [round(len_k * (0.125 + 0.75 * i / (batch - 1))) for i in range(batch)]


def attention_flops(batch: int, heads: int, len_q: int, kv_total: int, dim: int, backward: bool = False) -> float:
    """``4·H·Lq·d`` per real key summed over the batch (``kv_total``), times 3.5 with the backward."""
    flops = 4.0 * heads * len_q * kv_total * dim
    return flops * 3.5 if backward else flops


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (``None``: leave the setting alone)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _in_turns(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, clock: str = "wall", memory: bool = False
) -> dict[str, Measurement]:
    """``complexity.measure_in_turns`` after one warm-up round (first-call allocations, Triton
    compilation and autotuning). ``clock="cpu"``: on one thread, timed by the CPU time of that
    thread: the work done, not the moments spent waiting for a core that another program holds.
    """
    with _threads(1 if clock == "cpu" else None):
        return measure_in_turns(fns, repeat=repeats, warmup=1, memory=memory, device=device, clock=clock)


def _inputs(shape, dtype, device, requires_grad=False, seed=0):
    batch, heads, len_q, len_k, dim = shape
    gen = torch.Generator(device=device).manual_seed(seed)
    make = lambda n: torch.randn(batch, heads, n, dim, generator=gen, device=device, dtype=dtype)  # noqa: E731
    q, k, v = make(len_q), make(len_k), make(len_k)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def _fwd_bwd(attend, q, k, v, dout):
    def run():
        out = attend(q, k, v)
        return torch.autograd.grad(out, (q, k, v), dout)

    return run


def _row(backend, dtype, shape, lens, pass_, m: Measurement, sdpa_ms, *, device, backward=False):
    batch, heads, len_q, len_k, dim = shape
    kv_total = batch * len_k if lens is None else sum(lens)
    flops = attention_flops(batch, heads, len_q, kv_total, dim, backward)
    row = {
        "backend": backend,
        "dtype": str(dtype).removeprefix("torch."),
        "shape": "x".join(map(str, shape)),
        "padding": round(1 - kv_total / (batch * len_k), 3),
        "pass": pass_,
        "clock": "cpu, 1 thread" if m.clock == "cpu" else "wall",
        "ms": round(m.ms, 3),
    }
    if device.type == "cuda":
        row["TFLOP/s"] = round(flops / m.ms / 1e9, 1)
        row["% of 989 peak"] = round(100 * flops / m.ms / 1e9 / H100_DENSE_TFLOPS, 1)
    else:
        row["GFLOP/s"] = round(flops / m.ms / 1e6, 2)
    row["peak MiB"] = "" if m.peak_bytes is None else round(m.peak_bytes / 2**20, 2)
    row["speed vs SDPA"] = "" if sdpa_ms is None else round(sdpa_ms / m.ms, 3)
    return row


def _judge(row: dict, target: str, ok: bool | None) -> dict:
    row["target"] = target
    row["ok"] = "-" if ok is None else ("PASS" if ok else "FAIL")
    return row


# --- CPU ---------------------------------------------------------------------------------
def _cpu_rows(quick: bool) -> list[dict]:
    device = torch.device("cpu")
    dtype = torch.float32
    rows = []
    shape = (1, 2, 64, 256, 32) if quick else (2, 8, 1024, 4096, 64)
    repeats = 3 if quick else 9
    q, k, v = _inputs(shape, dtype, device)
    sdpa = F.scaled_dot_product_attention
    naive = partial(flash_attention, backend="naive")
    row = lambda *args, **kw: _row(*args, device=device, **kw)  # noqa: E731

    # The time target, by CPU time on one thread: steady even when other programs share the cores.
    fwd = {"sdpa": partial(sdpa, q, k, v), "tiled": partial(tiled_attention, q, k, v)}
    found = _in_turns(fwd, repeats, device, clock="cpu", memory=True)
    found["naive"] = _in_turns({"naive": partial(naive, q, k, v)}, 3, device, clock="cpu", memory=True)["naive"]
    for name in ("sdpa", "naive", "tiled"):
        rows.append(row(name, dtype, shape, None, "fwd", found[name], found["sdpa"].ms))
    ratio = found["tiled"].seconds / found["sdpa"].seconds
    _judge(rows[-1], f"time <= {CPU_TIME_TARGET}x SDPA", None if quick else ratio <= CPU_TIME_TARGET)

    # The same by wall-clock time with every thread: what a user waits for (noisy on a shared machine).
    wall = _in_turns(fwd, max(3, repeats // 2), device)
    for name in ("sdpa", "tiled"):
        rows.append(row(name, dtype, shape, None, "fwd", wall[name], wall["sdpa"].ms))

    # Half of the keys are padding: SDPA gets the boolean mask, tiled skips the blocks past each length.
    lens = half_padding_lens(shape[0], shape[3])
    mask = attention_mask(torch.tensor(lens), shape[2], shape[3], causal=False)
    padded = {"sdpa": partial(sdpa, q, k, v, attn_mask=mask), "tiled": partial(tiled_attention, q, k, v, kv_lens=lens)}
    padded = _in_turns(padded, repeats, device, clock="cpu")
    for name in ("sdpa", "tiled"):
        rows.append(row(name, dtype, shape, lens, "fwd", padded[name], padded["sdpa"].ms))

    # Forward and backward.
    qg, kg, vg = _inputs(shape, dtype, device, requires_grad=True)
    dout = torch.randn_like(qg)
    both = {"sdpa": _fwd_bwd(sdpa, qg, kg, vg, dout), "tiled": _fwd_bwd(tiled_attention, qg, kg, vg, dout)}
    both = _in_turns(both, max(3, repeats // 2), device, clock="cpu")
    for name in ("sdpa", "tiled"):
        rows.append(row(name, dtype, shape, None, "fwd+bwd", both[name], both["sdpa"].ms, backward=True))

    # The memory target: peak extra memory at a long source.
    mem_shape = (1, 1, 256, 512, 32) if quick else (1, 1, 4096, 8192, 64)
    q, k, v = _inputs(mem_shape, dtype, device, seed=1)
    fns = {"sdpa": partial(sdpa, q, k, v), "naive": partial(naive, q, k, v), "tiled": partial(tiled_attention, q, k, v)}
    mem = _in_turns(fns, 3, device, clock="cpu", memory=True)
    for name in fns:
        r = row(name, dtype, mem_shape, None, "fwd", mem[name], mem["sdpa"].ms)
        r["memory vs naive"] = round(mem[name].peak_bytes / mem["naive"].peak_bytes, 4)
        rows.append(r)
    ok = mem["tiled"].peak_bytes * CPU_MEMORY_TARGET <= mem["naive"].peak_bytes
    _judge(rows[-1], f"peak <= naive/{CPU_MEMORY_TARGET}", None if quick else ok)
    return rows


# --- GPU ------------------------------------------------------------------------------
def _sdpa_backends():
    from torch.nn.attention import SDPBackend

    names = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")  # MATH is never the fastest here
    return {name.split("_")[0].lower(): getattr(SDPBackend, name) for name in names if hasattr(SDPBackend, name)}


def _best_sdpa(fn: Callable[[], object], repeats: int, device) -> tuple[str, Measurement]:
    """The fastest SDPA backend that accepts this call: (its name, its measurement).

    When none of the fast backends accepts it, PyTorch's own choice (``"default"``).
    """
    from torch.nn.attention import sdpa_kernel

    found = {}
    for name, backend in _sdpa_backends().items():

        def pinned(backend=backend):
            with sdpa_kernel(backend):
                return fn()

        try:
            found[name] = _in_turns({name: pinned}, repeats, device, memory=True)[name]
        except RuntimeError:  # this backend does not support these inputs (mask, dtype, head dim...)
            continue
    if not found:
        found["default"] = _in_turns({"default": fn}, repeats, device, memory=True)["default"]
    return min(found.items(), key=lambda item: item[1].seconds)


def _flex_fn(q, k, v, lens):
    """``flex_attention`` with a key-padding block mask (skips empty blocks), or None when unavailable."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    lens_t = torch.tensor(lens, device=q.device)
    block_mask = create_block_mask(
        lambda b, h, i, j: j < lens_t[b], q.shape[0], None, q.shape[2], k.shape[2], device=q.device
    )
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda: compiled(q, k, v, block_mask=block_mask)


def _gpu_rows(quick: bool) -> list[dict]:
    rows = []
    for dim in (64,) if quick else (64, 128):
        for dtype in (torch.float16,) if quick else (torch.float16, torch.bfloat16):
            new = _gpu_rows_for(dim, dtype, quick)
            for row in new:  # as they come: a run cut short by a time limit still leaves these in its log
                print("row:", row, file=sys.stderr, flush=True)
            rows += new
    return rows


def _gpu_rows_for(dim: int, dtype: torch.dtype, quick: bool) -> list[dict]:
    from course_lib.efficient.triton_flash import triton_attention

    device = torch.device("cuda")
    repeats = 3 if quick else 10
    shape = (2, 2, 128, 512, dim) if quick else (8, 16, 1024, 4096, dim)
    q, k, v = _inputs(shape, dtype, device)
    qg, kg, vg = _inputs(shape, dtype, device, requires_grad=True)
    dout = torch.randn_like(qg)
    lens = half_padding_lens(shape[0], shape[3])
    mask = attention_mask(torch.tensor(lens, device=device), shape[2], shape[3], causal=False)
    sdpa = F.scaled_dot_product_attention
    cases = {  # label: (kv_lens, SDPA call, Triton call)
        "fwd": (None, lambda: sdpa(q, k, v), lambda: triton_attention(q, k, v)),
        "fwd, padded": (lens, lambda: sdpa(q, k, v, attn_mask=mask), lambda: triton_attention(q, k, v, kv_lens=lens)),
        "fwd+bwd": (None, _fwd_bwd(sdpa, qg, kg, vg, dout), _fwd_bwd(triton_attention, qg, kg, vg, dout)),
    }
    rows, sdpa_times = [], {}
    for label, (case_lens, sdpa_fn, ours) in cases.items():
        backward = label == "fwd+bwd"
        pass_ = "fwd+bwd" if backward else "fwd"
        sdpa_name, sdpa_m = _best_sdpa(sdpa_fn, repeats, device)
        sdpa_times[label] = sdpa_m.ms
        m = _in_turns({"triton": ours}, repeats, device, memory=True)["triton"]
        common = {"device": device, "backward": backward}
        rows.append(_row(f"sdpa ({sdpa_name})", dtype, shape, case_lens, pass_, sdpa_m, sdpa_m.ms, **common))
        row = _row("triton", dtype, shape, case_lens, pass_, m, sdpa_m.ms, **common)
        target = GPU_TARGETS[label]
        rows.append(_judge(row, f"speed >= {target}x SDPA", None if quick else sdpa_m.seconds / m.seconds >= target))
    if not quick and dtype == torch.float16 and dim == 64:  # one flex case: its compilation takes a while
        rows.append(_flex_row(q, k, v, lens, shape, sdpa_times["fwd, padded"], repeats, device))
    return rows


def _flex_row(q, k, v, lens, shape, sdpa_ms, repeats, device) -> dict:
    try:
        flex = _flex_fn(q, k, v, lens)
        if flex is None:
            return {"backend": "flex_attention", "target": "not available in this torch"}
        m = _in_turns({"flex": flex}, repeats, device, memory=True)["flex"]
    except Exception as exc:  # noqa: BLE001 - one failed comparison must not abort the whole table
        return {"backend": "flex_attention", "target": f"failed: {type(exc).__name__}: {exc}"[:100]}
    return _row("flex_attention", q.dtype, shape, lens, "fwd", m, sdpa_ms, device=device)


def run(quick: bool = False) -> list[dict]:
    """The suite's rows: GPU measurements when CUDA is available, CPU ones otherwise."""
    torch.manual_seed(0)
    return _gpu_rows(quick) if torch.cuda.is_available() else _cpu_rows(quick)
