"""Suite ``complexity``: how attention's time and memory grow with ``len_q`` and ``len_k``.

    python -m course_lib.bench --suite complexity [--quick] [--csv PATH]

Two parts, each against a baseline measured in the same run, at the same shape:

* **sweeps** (``len_q`` with ``len_k`` fixed, ``len_k`` with ``len_q`` fixed, both):
  the course's naive ``scaled_dot_product_attention``, the shortest naive PyTorch
  expression, and the baseline ``torch.nn.functional.scaled_dot_product_attention``
  (a fused kernel on both CPU and GPU);
* **decode**: one decoding step of cross-attention, ``MultiHeadAttention.step`` with
  the source's keys and values cached, against the baseline that re-projects the
  source for every token (``forward(x_t, context)``).

Columns: ``sweep``, ``implementation``, ``shape``, ``median_ms`` (median wall time of one
call), ``GFLOP/s`` (from the FLOP formulas of ``course_lib.complexity``, not from a
counter), ``peak_MiB`` (memory allocated during one call, see ``complexity.measure``),
``baseline`` and ``time_vs_baseline`` (median time ÷ the baseline's median time; below 1
is faster). Default sizes finish in about a minute on 2 CPU cores; ``--quick`` is a
smoke run of a few seconds whose numbers mean nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..attention import scaled_dot_product_attention
from ..complexity import attention_flops, measure, projection_flops
from ..device import default_device
from ..multihead import MultiHeadAttention


def _matmul_softmax(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The shortest naive attention: two ``(len_q, len_k)`` matrices alive at its peak."""
    return torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1) @ v


ATTENTION: dict[str, Callable[..., torch.Tensor]] = {
    "torch SDPA": F.scaled_dot_product_attention,  # the baseline: first, so it is measured first
    "course_lib naive": scaled_dot_product_attention,
    "matmul+softmax": _matmul_softmax,
}
BASELINE = "torch SDPA"


def _row(sweep: str, name: str, shape: str, seconds: float, flops: int, peak: int | None, baseline: str) -> dict:
    return {
        "sweep": sweep,
        "implementation": name,
        "shape": shape,
        "median_ms": seconds * 1e3,
        "GFLOP/s": flops / seconds / 1e9,
        "peak_MiB": math.nan if peak is None else peak / 2**20,
        "baseline": baseline,
        "seconds": seconds,  # removed once the ratio is known
    }


def _with_ratios(rows: list[dict]) -> list[dict]:
    """Add ``time_vs_baseline``: each row against the baseline row of the same sweep and shape."""
    base = {(r["sweep"], r["shape"]): r["seconds"] for r in rows if r["implementation"] == r["baseline"]}
    for r in rows:
        r["time_vs_baseline"] = r.pop("seconds") / base[r["sweep"], r["shape"]]
    return rows


def sweep_rows(
    lengths: tuple[int, ...],
    fixed_len: int,
    *,
    batch: int,
    heads: int,
    head_dim: int,
    repeat: int,
    device: torch.device,
) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for sweep in ("len_q", "len_k", "both"):
        for n in lengths:
            len_q = fixed_len if sweep == "len_k" else n
            len_k = fixed_len if sweep == "len_q" else n
            q = torch.randn(batch, heads, len_q, head_dim, generator=gen).to(device)
            k, v = (torch.randn(batch, heads, len_k, head_dim, generator=gen).to(device) for _ in range(2))
            shape = f"B={batch} H={heads} Lq={len_q} Lk={len_k} d={head_dim}"
            flops = attention_flops(batch, heads, len_q, len_k, head_dim)
            for name, fn in ATTENTION.items():
                with torch.no_grad():
                    m = measure(fn, q, k, v, repeat=repeat, warmup=1, device=device)
                rows.append(_row(sweep, name, shape, m.seconds, flops, m.peak_bytes, BASELINE))
    return rows


def decode_rows(
    source_lengths: tuple[int, ...], *, d_model: int, heads: int, repeat: int, device: torch.device
) -> list[dict]:
    """One generated token's cross-attention, with and without the source's K/V cached."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model, heads).to(device).eval()
    x_t = torch.randn(1, 1, d_model, device=device)
    rows = []
    for len_k in source_lengths:
        source = torch.randn(1, len_k, d_model, device=device)
        shape = f"B=1 d_model={d_model} H={heads} Lq=1 Lk={len_k}"
        attn = attention_flops(1, heads, 1, len_k, d_model // heads)
        with torch.no_grad():
            cache = mha.precompute_context(source)
            full = measure(mha, x_t, source, repeat=repeat, warmup=1, device=device)
            step = measure(mha.step, x_t, cache, repeat=repeat, warmup=1, device=device)
        baseline = "forward: re-project source"
        flops_full = attn + projection_flops(1, 1, len_k, d_model)
        flops_step = attn + projection_flops(1, 1, len_k, d_model, cached_kv=True)
        rows.append(_row("decode", baseline, shape, full.seconds, flops_full, full.peak_bytes, baseline))
        rows.append(_row("decode", "step: cached K/V", shape, step.seconds, flops_step, step.peak_bytes, baseline))
    return rows


def run(quick: bool = False) -> list[dict]:
    """The suite's rows (see the module docstring); ``quick`` uses tiny sizes."""
    device = default_device()
    if quick:
        sweep = dict(lengths=(32, 64), fixed_len=64, batch=1, heads=2, head_dim=16, repeat=1)
        decode = dict(source_lengths=(64,), d_model=64, heads=2, repeat=1)
    else:
        sweep = dict(lengths=(128, 256, 512, 1024), fixed_len=512, batch=1, heads=8, head_dim=64, repeat=5)
        decode = dict(source_lengths=(256, 1024, 4096), d_model=512, heads=8, repeat=5)
    rows = sweep_rows(**sweep, device=device) + decode_rows(**decode, device=device)
    return _with_ratios(rows)
