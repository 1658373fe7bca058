"""Suite ``sparse``: dense vs band vs latent vs linear cross-attention as the source grows.

    python -m course_lib.bench --suite sparse [--quick]

The source has ``N`` keys and the target ``N / 4`` queries (a speech-like slope of 4
frames per token), so dense attention costs ``O(N²)`` and the others ``O(N)``. Inputs
come from ``alignment_qkv``: a synthetic monotonic alignment, so that the band's error
means something. Every row reports the median time, the peak memory of the tensors the
method allocates, its error against dense attention on the same inputs, and its ratios
to dense attention measured in the same run.

Rows (``method``):

* ``dense``: ``course_lib.scaled_dot_product_attention``, the textbook ``O(Lq·Lk)`` baseline;
* ``dense+mask``: the same with ``band_mask``: a mask changes the answer, not the cost;
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``, PyTorch's fused dense
  kernel, for an honest reference;
* ``band``: ``band_attention`` (``width`` keys per query, gathered);
* ``latent``: ``M`` latent queries read the source, then the queries read the latents
  (the attention core of ``LatentCrossAttention`` plus its read-out). It is a different
  model, so it has no error against dense attention;
* ``linear``: ``linear_attention`` (``φ = elu + 1``), also a different model: its error
  shows how far it is from softmax attention on the same inputs, not how well a trained
  linear model would do.

Time and memory come from ``course_lib.complexity.measure_in_turns``, as in lesson 05: the
methods of one length are timed in ``repeats`` rounds of one call each, in a new order every
round, and each reports the median of its calls by ``clock``, and the peak memory allocated during one call above
what existed before it (the inputs are not counted). On the CPU that peak comes from the
profiler's allocation events, so the scratch buffers a fused kernel such as ``sdpa``
allocates inside itself are counted too; on CUDA from ``torch.cuda.max_memory_allocated``.
Other devices have no peak counter: ``MiB`` and ``mem_ratio`` are NaN there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F

from ..attention import scaled_dot_product_attention
from ..complexity import attention_flops, measure_in_turns
from ..device import default_device
from ..sparse import (
    band_attention,
    band_attention_flops,
    band_mask,
    latent_attention_flops,
    linear_attention,
    linear_attention_flops,
)

MiB = 2**20


# --- a synthetic monotonic alignment ---------------------------------------------------------
def smooth_features(
    batch: int, heads: int, length: int, dim: int, *, smooth: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(batch, heads, length, dim)`` random features that vary slowly along ``length``.

    White noise blurred by a Gaussian of ``smooth`` positions, then scaled to norm ``√dim``
    per position: neighbours are similar, as neighbouring speech frames are.
    """
    z = torch.randn(batch * heads * dim, 1, length, generator=generator)
    radius = int(3 * smooth) + 1
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / smooth) ** 2).view(1, 1, -1)
    x = F.conv1d(z, kernel, padding=radius).view(batch, heads, dim, length).transpose(-2, -1).contiguous()
    return x / x.norm(dim=-1, keepdim=True) * math.sqrt(dim)


def alignment_qkv(
    batch: int,
    heads: int,
    len_q: int,
    len_k: int,
    head_dim: int,
    *,
    smooth: float = 3.0,
    sharpness: float = 2.0,
    noise: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values of a monotonic alignment, as in speech or TTS.

    Keys and values are ``smooth_features`` of the source. Query ``i`` is a noisy copy of
    the key at the centre of its slice of the source, ``round((i + ½)·len_k/len_q − ½)``,
    times ``sharpness``: its scores peak there, and the attention mass sits near the
    diagonal that ``band_mask`` follows.

    Returns:
        ``query (batch, heads, len_q, head_dim)``, ``key`` and ``value``
        ``(batch, heads, len_k, head_dim)``, float32.
    """
    key = smooth_features(batch, heads, len_k, head_dim, smooth=smooth, generator=generator)
    value = smooth_features(batch, heads, len_k, head_dim, smooth=smooth, generator=generator)
    centre = ((torch.arange(len_q) + 0.5) * len_k / len_q - 0.5).round().long()
    jitter = noise * torch.randn(batch, heads, len_q, head_dim, generator=generator)
    return sharpness * (key[:, :, centre] + jitter), key, value


# --- the methods compared --------------------------------------------------------------------
def latent_core(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """The attention core of latent cross-attention, projections left out.

    ``latents (batch, heads, M, head_dim)`` read the source (``O(M·Lk)``); the queries then
    read the ``M`` results, used directly as keys and values (``O(Lq·M)``).
    """
    summary = scaled_dot_product_attention(latents, key, value)
    return scaled_dot_product_attention(query, summary, summary)


def methods(len_q: int, len_k: int, *, width: int, latents: torch.Tensor) -> dict[str, Callable]:
    """``name -> f(query, key, value)`` for every method of the suite."""
    mask = band_mask(len_q, len_k, width, device=latents.device)
    return {
        "dense": lambda q, k, v: scaled_dot_product_attention(q, k, v),
        "dense+mask": lambda q, k, v: scaled_dot_product_attention(q, k, v, mask),
        "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
        "band": lambda q, k, v: band_attention(q, k, v, width),
        "latent": lambda q, k, v: latent_core(q, k, v, latents),
        "linear": lambda q, k, v: linear_attention(q, k, v),
    }


def model_flops(name: str, b: int, h: int, len_q: int, len_k: int, d: int, *, width: int, num_latents: int) -> int:
    """Forward FLOPs of the attention core of each method (``complexity.attention_flops`` for dense)."""
    if name in ("dense", "dense+mask", "sdpa"):
        return attention_flops(b, h, len_q, len_k, d)
    if name == "band":
        return band_attention_flops(b, h, len_q, width, d)
    if name == "latent":
        return latent_attention_flops(b, h, num_latents, len_k, d, len_q=len_q)
    return linear_attention_flops(b, h, len_q, len_k, d)


def sweep(
    lengths: Sequence[int],
    *,
    ratio: int = 4,
    batch: int = 1,
    heads: int = 4,
    head_dim: int = 64,
    width: int = 16,
    num_latents: int = 64,
    repeats: int = 3,
    names: Sequence[str] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    clock: str = "wall",
) -> list[dict]:
    """Measure every method for sources of ``len_k`` in ``lengths`` and ``len_q = len_k // ratio``.

    Returns one row per (length, method): ``method, len_q, len_k, ms, MiB, GFLOP,
    rel_err`` (relative error ‖out − dense‖ / ‖dense‖; absent for ``latent``), and
    ``speedup`` and ``mem_ratio`` against ``dense`` at the same length. ``ms`` and ``MiB``
    are ``complexity.measure_in_turns``'s median time (by ``clock``: ``"wall"`` or ``"cpu"``, the
    latter with one thread) and peak memory (NaN where the device has no counter).
    ``names`` picks the methods (all by default); ``dense`` is always measured, as the
    baseline.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for len_k in lengths:
        len_q = max(len_k // ratio, 1)
        q, k, v = (t.to(device) for t in alignment_qkv(batch, heads, len_q, len_k, head_dim, generator=gen))
        latents = torch.randn(batch, heads, num_latents, head_dim, generator=gen).to(device)
        fns = methods(len_q, len_k, width=width, latents=latents)
        wanted = ["dense", *(n for n in names or fns if n != "dense")]  # dense is always the baseline
        calls = {name: partial(fns[name], q, k, v) for name in wanted}
        outs = {name: call() for name, call in calls.items()}  # to compare with dense; also a warm-up
        # In turns: a burst of load, or the allocator's state, slows one call, not one method.
        measured = measure_in_turns(calls, repeat=repeats, warmup=0, device=device, clock=clock)
        reference, dense = outs["dense"], measured["dense"]
        for name in wanted:
            out, m = outs[name], measured[name]
            if name == "dense" and names is not None and "dense" not in names:
                continue  # measured only as the baseline of the ratios
            row = {
                "method": name,
                "len_q": len_q,
                "len_k": len_k,
                "ms": m.ms,
                "MiB": _mib(m.peak_bytes),
                "GFLOP": model_flops(name, batch, heads, len_q, len_k, head_dim, width=width, num_latents=num_latents)
                / 1e9,
            }
            if name != "latent":
                row["rel_err"] = float((out - reference).norm() / reference.norm())
            row["speedup"] = dense.seconds / m.seconds
            row["mem_ratio"] = _mib(m.peak_bytes) / _mib(dense.peak_bytes)
            rows.append(row)
    return rows


def _mib(nbytes: int | None) -> float:
    return math.nan if nbytes is None else nbytes / MiB


def run(quick: bool = False) -> list[dict]:
    """The suite's table, on the default device. ``quick``: two small sources, one repeat (a smoke test)."""
    device = default_device()
    if quick:
        return sweep([256, 512], repeats=1, device=device)
    return sweep([1024, 2048, 4096, 8192], repeats=3, device=device)
