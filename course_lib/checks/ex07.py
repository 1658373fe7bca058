"""Self-checks of exercise 07, sparse and latent cross-attention.

from course_lib.checks import (check_band_mask, check_band_flops, check_bigbird_mask,
                               check_latent_cross_attention, check_linear_attention_explicit,
                               check_linear_attention)

The ``*_mistake`` functions name the usual mistake behind a wrong answer; the hidden tests
reuse them, so that a student hears the same diagnosis from both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..complexity import attention_flops
from ..masks import padding_mask
from ..multihead import MultiHeadAttention
from ..sparse import LatentCrossAttention as _ReferenceLatent
from ..sparse import band_mask as _reference_band_mask
from ..sparse import block_layout as _reference_block_layout
from ..sparse import block_sparse_mask as _reference_block_sparse_mask
from ..sparse import linear_attention as _reference_linear
from ._common import Check, describe, difference

__all__ = [
    "band_flops_mistake",
    "band_mask_mistake",
    "bigbird_mask_mistake",
    "check_band_flops",
    "check_band_mask",
    "check_bigbird_mask",
    "check_latent_cross_attention",
    "check_linear_attention",
    "check_linear_attention_explicit",
    "keys_read",
    "linear_attention_mistake",
    "reference_bigbird_mask",
]


# --- task 1: the band mask ------------------------------------------------------------------
def _window(len_k: int, width: int, start: np.ndarray) -> np.ndarray:
    j = np.arange(len_k)[None, :]
    start = np.asarray(start, dtype=np.int64)[:, None]
    return (j >= start) & (j < start + width)


def _band_variants(len_q: int, len_k: int, width: int) -> dict[str, np.ndarray]:
    """The usual wrong bands, each with what to tell the student."""
    i = np.arange(len_q)
    s = len_k / len_q
    w = width
    slope = (
        "with len_q ≠ len_k the band follows the slope s = len_k / len_q: query i's window is centred on "
        "(i + ½)·s − ½, so start_i = ceil((i + ½)·s − width/2)"
    )
    exact = -((-((2 * i + 1) * len_k - w * len_q)) // (2 * len_q))
    centre = (i + 0.5) * s - 0.5
    j = np.arange(len_k)[None, :]
    return {
        "each window has width + 1 keys: the end is excluded, start_i <= j < start_i + width": _window(
            len_k, w + 1, exact
        ),
        "each window has width − 1 keys: it holds the keys start_i <= j < start_i + width": _window(
            len_k, w - 1, exact
        ),
        "|j − centre| <= width / 2 does not always hold `width` keys; take the `width` keys from start_i = "
        "ceil((i + ½)·s − width/2), start_i <= j < start_i + width": np.abs(j - centre[:, None]) <= w / 2,
        "|j − centre| <= (width − 1) / 2 does not always hold `width` keys; take the `width` keys from start_i = "
        "ceil((i + ½)·s − width/2), start_i <= j < start_i + width": np.abs(j - centre[:, None]) <= (w - 1) / 2,
        "the band follows the diagonal j ≈ i; " + slope: _window(len_k, w, np.ceil(i + 0.5 - w / 2)),
        "the slope is s = len_k / len_q (keys per query), not len_q / len_k": _window(
            len_k, w, np.ceil((i + 0.5) * (len_q / len_k) - w / 2)
        ),
        "query i stands for the keys [i·s, (i+1)·s): its window is centred on (i + ½)·s − ½, not on i·s; "
        "start_i = ceil((i + ½)·s − width/2)": _window(len_k, w, np.ceil(i * s - w / 2)),
        "the window is centred on i·s; query i stands for the keys [i·s, (i+1)·s), whose centre is (i + ½)·s − ½: "
        "start_i = ceil((i + ½)·s − width/2)": _window(len_k, w, np.ceil(i * s - (w - 1) / 2)),
        "the window is shifted by half a key: its centre is (i + ½)·s − ½ (the −½ matters), so start_i = "
        "ceil((i + ½)·s − width/2)": _window(len_k, w, np.ceil((i + 0.5) * s - (w - 1) / 2)),
        "round up, not down: start_i = ceil((i + ½)·s − width/2), not floor": _window(
            len_k, w, np.floor((i + 0.5) * s - w / 2)
        ),
        "floating-point rounding: len_k / len_q is not exact in floating point (29/7 · 3.5 − 0.5 gives "
        "14.000000000000002, whose ceil is 15). Compute start_i with integers: numerator (2i + 1)·len_k − "
        "width·len_q, denominator 2·len_q, and ceil(a / b) = -((-a) // b)": _window(
            len_k, w, np.ceil((i + 0.5) * s - w / 2)
        ),
        "floating-point rounding (float32): len_k / len_q is not exact. Compute start_i with integers: "
        "numerator (2i + 1)·len_k − width·len_q, denominator 2·len_q, and ceil(a / b) = -((-a) // b)": _window(
            len_k, w, np.ceil((i.astype(np.float32) + np.float32(0.5)) * np.float32(s) - np.float32(w / 2))
        ),
    }


def _as_bool_array(value: Any) -> np.ndarray | None:
    """A student's mask as a numpy bool array (nonzero = True), or None if it is not an array of numbers."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray) or not (value.dtype == bool or np.issubdtype(value.dtype, np.number)):
        return None
    return value != 0


def keys_read(row: np.ndarray) -> str:
    """The keys a mask row lets through, as ``"keys 4..7"``, ``"keys [1, 3]"`` or ``"no key"``."""
    idx = np.flatnonzero(row)
    if idx.size == 0:
        return "no key"
    if idx[-1] - idx[0] + 1 == idx.size:
        return f"key {idx[0]}" if idx.size == 1 else f"keys {idx[0]}..{idx[-1]}"
    return f"keys {idx.tolist()}"


def band_mask_mistake(len_q: int, len_k: int, width: int, got: Any) -> str | None:
    """Name the usual mistake that explains ``got``, the student's ``band_mask(len_q, len_k, width)``."""
    mask = _as_bool_array(got)
    if mask is None:
        return None
    expected = _reference_band_mask(len_q, len_k, width).numpy()
    if mask.shape != expected.shape:
        if mask.shape == expected.shape[::-1]:
            return "the mask is transposed: it is (len_q, len_k), one row per query"
        return None
    for problem, variant in _band_variants(len_q, len_k, width).items():
        if not np.array_equal(variant, expected) and np.array_equal(mask, variant):
            return problem
    return None


def _first_wrong_row(expected: np.ndarray, got: np.ndarray) -> str:
    i = int(np.flatnonzero((expected != got).any(-1))[0])
    return f"query {i} should read {keys_read(expected[i])}, got {keys_read(got[i])}"


def _check_one_band(c: Check, band_mask: Callable, len_q: int, len_k: int, width: int, hint: str | None = None):
    what = f"band_mask({len_q}, {len_k}, {width})"
    got = c.call(band_mask, len_q, len_k, width)
    c.true(
        isinstance(got, (torch.Tensor, np.ndarray)),
        f"{what} should return a torch bool tensor",
        got=describe(got),
    )
    mask = _as_bool_array(got)
    c.true(mask is not None, f"{what} should be a tensor of booleans", got=describe(got))
    expected = _reference_band_mask(len_q, len_k, width).numpy()
    mistake = band_mask_mistake(len_q, len_k, width, got)
    c.shape(mask, expected.shape, what, mistake or "one row per query, one column per key: (len_q, len_k)")
    c.true(
        got.dtype in (torch.bool, np.bool_),
        f"{what} should have dtype bool (True = may attend)",
        got=describe(got, sums=False),
        hint="comparisons give booleans: (j >= start) & (j < start + width); do not convert them to int or float",
    )
    if not np.array_equal(mask, expected):
        c.fail(f"{what}: wrong band ({_first_wrong_row(expected, mask)})", hint=mistake or hint)
    c.count += 1


def check_band_mask(band_mask: Callable) -> None:
    """Check ``band_mask(len_q, len_k, width)`` on a few small bands."""
    c = Check("band_mask")
    _check_one_band(c, band_mask, 5, 5, 3, "with len_q == len_k and an odd width the band is |i − j| <= (width − 1)/2")
    _check_one_band(c, band_mask, 4, 16, 4, "with width = s = 4, query i reads exactly its own keys 4i..4i+3")
    _check_one_band(c, band_mask, 6, 15, 3, "s = 15/6 = 2.5: start_i = ceil((i + ½)·2.5 − 1.5)")
    _check_one_band(c, band_mask, 9, 4, 2, "len_q > len_k: s = 4/9 < 1, and neighbouring queries share keys")
    _check_one_band(c, band_mask, 7, 29, 1, "compute start_i with integers, not floats (lesson 07 § 2)")
    _check_one_band(c, band_mask, 13, 28, 2, "compute start_i with integers, not floats (lesson 07 § 2)")
    c.done()


# --- task 3: BigBird's pattern: a band of blocks and global tokens -----------------------------
def _blocks(n: int, block_size: int) -> int:
    return -(-n // block_size)


def _expand(layout: np.ndarray, block_size: int, len_q: int, len_k: int) -> np.ndarray:
    return layout.repeat(block_size, axis=0).repeat(block_size, axis=1)[:len_q, :len_k]


def reference_bigbird_mask(len_q: int, len_k: int, block_size: int, window: int, num_global: int) -> torch.Tensor:
    """BigBird's pattern without its random blocks, ``(len_q, len_k)`` bool, True = may attend.

    Query block ``a`` reads the ``window`` key blocks of ``band_mask(num_q_blocks, num_k_blocks, window)``;
    the first ``num_global`` keys are read by every query and the first ``num_global`` queries read every key.
    """
    nq, nk = _blocks(len_q, block_size), _blocks(len_k, block_size)
    mask = _reference_block_sparse_mask(
        len_q, len_k, block_size, _reference_block_layout(nq, nk, local=window), global_tokens=num_global
    )
    mask[:num_global] = True
    return mask


def _bigbird_variants(len_q: int, len_k: int, block_size: int, window: int, g: int) -> dict[str, np.ndarray]:
    """The usual wrong patterns, each with what to tell the student."""
    nq, nk = _blocks(len_q, block_size), _blocks(len_k, block_size)
    band = _expand(_reference_band_mask(nq, nk, window).numpy(), block_size, len_q, len_k)
    rows, cols = band.copy(), band.copy()
    rows[:g] = True
    cols[:, :g] = True
    both = rows | cols
    variants = {
        "the rows are missing: BigBird's global tokens go both ways, the first num_global keys are read by every "
        "query (columns) AND the first num_global queries read every key (rows)": cols,
        "the columns are missing: BigBird's global tokens go both ways, the first num_global queries read every "
        "key (rows) AND the first num_global keys are read by every query (columns)": rows,
        "the window is counted in blocks: query block a reads the key blocks of band_mask(num_q_blocks, "
        "num_k_blocks, window), expanded to tokens; a token-level band of window·block_size keys is another "
        "pattern": None,
        "the global tokens are the first num_global queries and keys, not the last ones": None,
    }
    token_band = _reference_band_mask(len_q, len_k, window * block_size).numpy()
    token_band[:g] = True
    token_band[:, :g] = True
    keys = list(variants)
    variants[keys[2]] = token_band
    last = band.copy()
    if g:
        last[-g:] = True
        last[:, -g:] = True
    variants[keys[3]] = last
    diagonal = np.abs(np.arange(nq)[:, None] - np.arange(nk)[None, :]) <= (window - 1) // 2
    diag = _expand(diagonal, block_size, len_q, len_k) | (both & ~band)
    variants[
        "the band of blocks follows the slope num_k_blocks / num_q_blocks when the counts differ: use your "
        "band_mask of task 1 on the block counts, not |a − b| <= (window − 1)/2"
    ] = diag
    return variants


def bigbird_mask_mistake(len_q: int, len_k: int, block_size: int, window: int, num_global: int, got: Any) -> str | None:
    """Name the usual mistake that explains ``got``, the student's ``bigbird_mask(...)``, if one does."""
    mask = _as_bool_array(got)
    if mask is None:
        return None
    expected = reference_bigbird_mask(len_q, len_k, block_size, window, num_global).numpy()
    if mask.shape != expected.shape:
        nq, nk = _blocks(len_q, block_size), _blocks(len_k, block_size)
        if mask.shape == (nq * block_size, nk * block_size):
            return (
                "the last blocks are partial when a length is not a multiple of block_size: cut the expanded "
                "mask to (len_q, len_k), e.g. [:len_q, :len_k]"
            )
        if mask.shape == ((len_q // block_size) * block_size, (len_k // block_size) * block_size):
            return (
                "count the blocks with a ceiling, ceil(len / block_size) = -(-len // block_size): the last, partial "
                "block holds tokens too"
            )
        if mask.shape == (nq, nk):
            return "that is the block layout: expand each block to block_size × block_size tokens (repeat_interleave)"
        if mask.shape == expected.shape[::-1]:
            return "the mask is transposed: it is (len_q, len_k), one row per query"
        return None
    for problem, variant in _bigbird_variants(len_q, len_k, block_size, window, num_global).items():
        if not np.array_equal(variant, expected) and np.array_equal(mask, variant):
            return problem
    return None


def _check_one_bigbird(c: Check, bigbird_mask: Callable, len_q: int, len_k: int, bs: int, window: int, g: int):
    what = f"bigbird_mask({len_q}, {len_k}, block_size={bs}, window={window}, num_global={g})"
    got = c.call(bigbird_mask, len_q, len_k, bs, window, g)
    mask = _as_bool_array(got)
    c.true(isinstance(got, torch.Tensor) and mask is not None, f"{what} should return a torch bool tensor",
           got=describe(got))
    expected = reference_bigbird_mask(len_q, len_k, bs, window, g).numpy()
    mistake = bigbird_mask_mistake(len_q, len_k, bs, window, g, got)
    c.shape(mask, expected.shape, what, mistake or "one row per query, one column per key: (len_q, len_k)")
    c.true(got.dtype == torch.bool, f"{what} should have dtype bool (True = may attend)",
           got=describe(got, sums=False), hint="combine boolean masks with |, and keep them boolean")
    if not np.array_equal(mask, expected):
        if mistake:  # the mistake first: it names what went wrong
            c.fail(f"{what}: {mistake}", got=_first_wrong_row(expected, mask))
        c.fail(f"{what}: wrong pattern ({_first_wrong_row(expected, mask)})")
    c.count += 1


def check_bigbird_mask(bigbird_mask: Callable) -> None:
    """Check ``bigbird_mask(len_q, len_k, block_size, window, num_global)`` on a few small patterns."""
    c = Check("bigbird_mask")
    _check_one_bigbird(c, bigbird_mask, 8, 8, 2, 1, 0)  # the band of blocks alone, on the diagonal
    _check_one_bigbird(c, bigbird_mask, 8, 16, 2, 3, 0)  # 4 query blocks, 8 key blocks: the slope 2
    _check_one_bigbird(c, bigbird_mask, 8, 16, 2, 3, 1)  # plus one global token, both ways
    _check_one_bigbird(c, bigbird_mask, 7, 11, 3, 1, 2)  # partial last blocks
    c.done()


# --- task 2: the FLOPs of a band ---------------------------------------------------------------
def _flops(batch: int, heads: int, len_q: int, len_k: int, head_dim: int, dim_v: int) -> int:
    return attention_flops(batch, heads, len_q, len_k, head_dim, dim_v=dim_v)


def _dense_mistake(b: int, h: int, lq: int, lk: int, d: int, dv: int, got: Any) -> str | None:
    candidates = {
        "the values have their own size: weights @ V costs 2·Lq·Lk·d_v, so dense attention is 2·B·H·Lq·Lk·(d + d_v)": [
            4 * b * h * lq * lk * d,
            4 * b * h * lq * lk * dv,
        ],
        "count both matrix products: Q Kᵀ costs 2·Lq·Lk·d per head and weights @ V costs 2·Lq·Lk·d_v, "
        "with 2 FLOPs per multiply-add": [
            b * h * lq * lk * (d + dv),
            2 * b * h * lq * lk * d,
            2 * b * h * lq * lk * dv,
        ],
        "every head of every batch element does its own attention: multiply by batch and heads": [
            _flops(1, h, lq, lk, d, dv),
            _flops(b, 1, lq, lk, d, dv),
            _flops(1, 1, lq, lk, d, dv),
        ],
    }
    expected = _flops(b, h, lq, lk, d, dv)
    for hint, values in candidates.items():
        if any(v != expected and got == v for v in values):
            return hint
    return None


def _band_mistake(b: int, h: int, lq: int, lk: int, w: int, d: int, dv: int, g: int, got: Any) -> str | None:
    expected = _flops(b, h, lq, g + w, d, dv)
    mask = _reference_band_mask(lq, lk, w, global_tokens=g)
    candidates = {
        "each query also scores the global tokens: it computes W = global_tokens + width slots": [
            _flops(b, h, lq, w, d, dv)
        ],
        "band_attention computes all W = global_tokens + width slots of every query, also those clipped at the "
        "ends of the source (they are masked, not skipped): count Lq·W scores, not the mask's True entries": [
            2 * b * h * int(mask.sum()) * (d + dv),
            2 * b * h * int(_reference_band_mask(lq, lk, w).sum()) * (d + dv),
            2 * b * h * (int(_reference_band_mask(lq, lk, w).sum()) + lq * g) * (d + dv),
        ],
        "the band is dense attention over W = global_tokens + width keys per query instead of len_k: its cost "
        "does not depend on len_k": [_flops(b, h, lq, lk, d, dv)],
    }
    for hint, values in candidates.items():
        if any(v != expected and got == v for v in values):
            return hint
    dense_hint = _dense_mistake(b, h, lq, g + w, d, dv, got)
    if dense_hint:
        return dense_hint.replace("Lk", "W")
    return None


def band_flops_mistake(
    sizes: tuple[int, int, int, int, int, int], dim_v: int | None, global_tokens: int, result: Any
) -> str | None:
    """Name the usual mistake behind ``result = band_flops(*sizes, dim_v=..., global_tokens=...)``."""
    b, h, lq, lk, w, d = sizes
    dv = d if dim_v is None else dim_v
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        return "return three values: (dense_flops, band_flops, saving)"
    dense, band, saving = result
    if dense != _flops(b, h, lq, lk, d, dv):
        return _dense_mistake(b, h, lq, lk, d, dv, dense)
    if band != _flops(b, h, lq, w + global_tokens, d, dv):
        return _band_mistake(b, h, lq, lk, w, d, dv, global_tokens, band)
    try:
        if band and dense and abs(float(saving) - band / dense) < 1e-9 * max(1.0, band / dense):
            return "the saving is dense / band (how many times fewer FLOPs), not band / dense"
    except (TypeError, ValueError):
        return None
    return None


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_band_flops_case(c: Check, band_flops: Callable, sizes: tuple, dim_v: int | None, global_tokens: int):
    b, h, lq, lk, w, d = sizes
    dv = d if dim_v is None else dim_v
    kwargs = {}
    if dim_v is not None:
        kwargs["dim_v"] = dim_v
    if global_tokens:
        kwargs["global_tokens"] = global_tokens
    shown = ", ".join([*map(str, sizes), *(f"{k}={v}" for k, v in kwargs.items())])
    what = f"band_flops({shown})"
    result = c.call(band_flops, *sizes, **kwargs)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 3,
        f"{what} should return three values: (dense_flops, band_flops, saving)",
        got=describe(result),
    )
    dense, band, saving = result
    hint = band_flops_mistake(sizes, dim_v, global_tokens, result)
    c.true(
        _is_int(dense) and _is_int(band),
        "FLOP counts are whole numbers: return ints",
        got=f"{dense!r}, {band!r}",
        hint="multiply integers; `/` gives a float, and int(...) of a float can round wrongly for large counts",
    )
    expected_dense, expected_band = _flops(b, h, lq, lk, d, dv), _flops(b, h, lq, global_tokens + w, d, dv)
    if dense != expected_dense:
        c.fail(
            f"{what}: wrong dense count",
            expected=f"{expected_dense:,}",
            got=f"{dense:,}",
            hint=hint or "dense attention costs 2·B·H·Lq·Lk·(d + d_v): two products, 2 FLOPs per multiply-add",
        )
    c.count += 1
    if band != expected_band:
        c.fail(
            f"{what}: wrong band count",
            expected=f"{expected_band:,}",
            got=f"{band:,}",
            hint=hint or "the band is dense attention over W = global_tokens + width keys instead of len_k",
        )
    c.count += 1
    c.close(saving, expected_dense / expected_band, f"{what}: the saving", hint or "saving = dense / band", atol=1e-9)


def check_band_flops(band_flops: Callable) -> None:
    """Check ``band_flops(batch, heads, len_q, len_k, width, head_dim, *, dim_v=None, global_tokens=0)``."""
    c = Check("band_flops")
    _check_band_flops_case(c, band_flops, (2, 4, 100, 400, 16, 32), None, 0)
    _check_band_flops_case(c, band_flops, (1, 2, 10, 50, 4, 8), 16, 0)
    _check_band_flops_case(c, band_flops, (3, 1, 12, 30, 5, 8), None, 2)
    c.done()


# --- task 3: latent cross-attention -----------------------------------------------------------
def reference_latent(d_model: int, num_heads: int, num_latents: int, d_context: int | None, seed: int) -> nn.Module:
    """``course_lib.sparse.LatentCrossAttention`` with seeded weights (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _ReferenceLatent(d_model, num_heads, num_latents, d_context=d_context).eval()


def check_latent_cross_attention(cls: Callable) -> None:
    """Check the class ``LatentCrossAttention(d_model, num_heads, num_latents, *, d_context=None)``."""
    c = Check("LatentCrossAttention")
    d_model, heads, m, d_context = 16, 2, 3, 8
    layer = c.call(cls, d_model, heads, m, d_context=d_context)
    c.true(
        isinstance(layer, nn.Module),
        "LatentCrossAttention(...) should be an nn.Module",
        got=describe(layer),
        hint="class LatentCrossAttention(nn.Module), with super().__init__() first in __init__",
    )
    latents = getattr(layer, "latents", None)
    c.true(
        isinstance(latents, nn.Parameter),
        "self.latents should be an nn.Parameter, so that the latents are learned",
        got=describe(latents),
        hint="self.latents = nn.Parameter(torch.randn(num_latents, d_model) / math.sqrt(d_model))",
    )
    c.shape(latents, (m, d_model), "self.latents for 3 latents of width 16", "(num_latents, d_model)")
    attn = getattr(layer, "attn", None)
    c.true(
        isinstance(attn, MultiHeadAttention),
        "self.attn should be a course_lib MultiHeadAttention",
        got=describe(attn),
        hint="self.attn = MultiHeadAttention(d_model, num_heads, d_context=d_context)",
    )
    reference = reference_latent(d_model, heads, m, d_context, seed=7)
    try:
        layer.load_state_dict(reference.state_dict())
    except RuntimeError as err:
        c.fail(
            "the reference weights do not fit your module",
            got=str(err).splitlines()[0][:300],
            hint="the parameters are exactly self.latents (num_latents, d_model) and self.attn = "
            "MultiHeadAttention(d_model, num_heads, d_context=d_context)",
        )
    layer.eval()
    g = torch.Generator().manual_seed(8)
    context = torch.randn(2, 5, d_context, generator=g)
    with torch.no_grad():
        out = c.call(layer, context)
        c.true(isinstance(out, torch.Tensor), "the forward pass should return a tensor", got=describe(out))
        hint = "the latents are the queries: (batch, num_latents, d_model), whatever the source's length"
        if tuple(out.shape) == (2, 5, d_model):
            hint = "that is one row per source token: the latents must attend to the context, not the reverse"
        c.shape(out, (2, m, d_model), "the output for a batch of 2 sources of 5 tokens", hint)
        c.close(
            out,
            reference(context),
            "the output, with the reference weights",
            "self.attn(latents, context), with the latents expanded over the batch",
            atol=1e-5,
        )
        mask = padding_mask([5, 3])
        out = c.call(layer, context, context_mask=mask)
        c.close(
            out,
            reference(context, context_mask=mask),
            "the output with a context_mask (lengths 5 and 3)",
            "pass context_mask on to self.attn, so that padded tokens are ignored",
            atol=1e-5,
        )
    c.done()


# --- tasks 4 and 5: linear attention -------------------------------------------------------------
def _phi(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


def _explicit(q, k, v, mask, eps: float, *, phi_q=_phi, phi_k=_phi, mask_num=True, mask_den=True, over_queries=False):
    """The explicit form in float64, with knobs that reproduce the usual mistakes."""
    q, k, v = (torch.as_tensor(t).double() for t in (q, k, v))
    a = phi_q(q) @ phi_k(k).transpose(-2, -1)  # (..., len_q, len_k)
    num_a = den_a = a
    if mask is not None:
        drop = ~torch.as_tensor(mask)[:, None, None, :]
        num_a = a.masked_fill(drop, 0.0) if mask_num else a
        den_a = a.masked_fill(drop, 0.0) if mask_den else a
    if over_queries:
        return (num_a / (den_a.sum(-2, keepdim=True) + eps)) @ v
    return (num_a @ v) / (den_a.sum(-1, keepdim=True) + eps)


def _similar(got: torch.Tensor, candidate: torch.Tensor) -> bool:
    """Most entries agree: float32 rounding may blow up where a wrong normaliser is near 0."""
    if got.shape != candidate.shape:
        return False
    ok = (got - candidate).abs() <= 1e-4 + 1e-3 * candidate.abs()
    return bool(ok.double().mean() > 0.9)


def linear_attention_mistake(query, key, value, key_mask, eps: float, got: Any) -> str | None:
    """Name the usual linear-attention mistake that explains ``got``, if one does.

    It builds ``len_q × len_k`` matrices: call it on small inputs only.
    """
    try:
        return _linear_attention_mistake(query, key, value, key_mask, eps, got)
    except (TypeError, ValueError, RuntimeError):  # not a tensor of the right kind: nothing to diagnose
        return None


def _linear_attention_mistake(query, key, value, key_mask, eps, got) -> str | None:
    if isinstance(got, np.ndarray):
        got = torch.from_numpy(got)
    if not isinstance(got, torch.Tensor) or not got.is_floating_point():
        return None
    got = got.double()
    q, k, v = (torch.as_tensor(t).double() for t in (query, key, value))
    if tuple(got.shape) != (*q.shape[:-1], v.shape[-1]):
        if tuple(got.shape) == (*q.shape[:-1], k.shape[-2]):
            return "you returned the weights φ(Q)φ(K)ᵀ (len_q, len_k); multiply them by the values"
        return None
    d = q.shape[-1]
    masked = key_mask is not None and not bool(torch.as_tensor(key_mask).all())
    if masked and not bool(torch.isfinite(got).all()):
        a = _explicit(q, k, v, key_mask, eps)
        if bool(torch.isfinite(a).all()):
            return (
                "set the weights of padded keys to 0, not −inf: there is no softmax here to turn −inf into 0, "
                "and −inf in a sum gives NaN"
            )

    def identity(x: torch.Tensor) -> torch.Tensor:
        return x

    variants = {
        "φ(x) = elu(x) + 1: without the +1 the features can be negative, so the weights can be negative "
        "and the normaliser can cross zero": dict(phi_q=F.elu, phi_k=F.elu),
        "apply φ(x) = elu(x) + 1 to the queries themselves (no √d scaling in linear attention)": dict(
            phi_q=lambda x: _phi(x / d**0.5)
        ),
        "apply φ = elu + 1 to the queries too: the weights are φ(q_i)·φ(k_j)": dict(phi_q=identity),
        "apply φ = elu + 1 to the keys too: the weights are φ(q_i)·φ(k_j)": dict(phi_k=identity),
        "normalise over the keys: the normaliser of query i is Σ_j φ(q_i)·φ(k_j), a sum over j": dict(
            over_queries=True
        ),
    }
    if masked:
        variants.update(
            {
                "padded keys (key_mask False) must add nothing: zero their φ(k_j), in the sum over values and in "
                "the normaliser": dict(mask_num=False, mask_den=False),
                "padded keys leak into the normaliser: leave them out of Σ_j φ(k_j) too": dict(mask_den=False),
                "padded keys leak into the values' sum: leave them out of Σ_j φ(k_j) v_jᵀ too": dict(mask_num=False),
            }
        )
    for hint, knobs in variants.items():
        if _similar(got, _explicit(q, k, v, key_mask, eps, **knobs)):
            return hint
    if _similar(got, torch.softmax(q @ k.transpose(-2, -1) / d**0.5, -1) @ v):
        return "that is softmax attention: linear attention weighs key j by φ(q_i)·φ(k_j), φ = elu + 1, not by exp"
    a = _phi(q) @ _phi(k).transpose(-2, -1)
    if key_mask is not None:
        a = a.masked_fill(~torch.as_tensor(key_mask)[:, None, None, :], 0.0)
    if _similar(got, a @ v):
        return "divide by the normaliser Σ_j φ(q_i)·φ(k_j), so that each query's weights sum to 1"
    return None


def _random_qkv(seed: int, batch: int, heads: int, len_q: int, len_k: int, d: int, dv: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(batch, heads, n, w, generator=g, dtype=dtype) for n, w in ((len_q, d), (len_k, d), (len_k, dv))
    )


class _LargestTensor(TorchFunctionMode):
    """Within the block, remember the largest tensor that a torch function returned.

    A torch-function mode sees every torch call (``@``, ``einsum``, ``sum``...) at no cost;
    a dispatch mode would import ``torch._dynamo`` (seconds) the first time.
    """

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.shape = 0, ()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.shape = t.numel(), tuple(t.shape)
        return out


def _check_linear_common(c: Check, fn: Callable, name: str) -> None:
    q, k, v = _random_qkv(70, 1, 2, 3, 5, 4, 6)
    out = c.call(fn, q, k, v)
    c.true(isinstance(out, torch.Tensor), f"{name} should return a tensor", got=describe(out))
    expected = _reference_linear(q, k, v)
    hint = linear_attention_mistake(q, k, v, None, 1e-6, out)
    c.shape(
        out,
        (1, 2, 3, 6),
        f"{name} of 3 queries over 5 keys, values of size 6",
        hint or "(batch, heads, len_q, dim_v): one output per query",
    )
    c.close(out, expected, f"{name}(query, key, value)", hint, atol=1e-8, rtol=1e-7)

    q, k, v = _random_qkv(71, 2, 1, 4, 6, 3, 2)
    mask = padding_mask([6, 2], 6)
    k[1, :, 2:], v[1, :, 2:] = 9.0, -9.0  # padding: whatever it holds must not matter
    out = c.call(fn, q, k, v, key_mask=mask)
    c.close(
        out,
        _reference_linear(q, k, v, key_mask=mask),
        f"{name} with key_mask (lengths 6 and 2)",
        linear_attention_mistake(q, k, v, mask, 1e-6, out) or "padded keys must add nothing",
        atol=1e-8,
        rtol=1e-7,
    )


def check_linear_attention_explicit(linear_attention_explicit: Callable) -> None:
    """Check ``linear_attention_explicit(query, key, value, key_mask=None, eps=1e-6)``."""
    c = Check("linear_attention_explicit")
    _check_linear_common(c, linear_attention_explicit, "linear_attention_explicit")
    c.done()


def check_linear_attention(linear_attention: Callable) -> None:
    """Check ``linear_attention(query, key, value, key_mask=None, eps=1e-6)``: the regrouped form."""
    c = Check("linear_attention")
    # float64 stays float64: only float16 and bfloat16 are computed in float32. First, before the tolerance of
    # the checks below hides it behind "wrong values".
    q64, k64, v64 = _random_qkv(74, 1, 2, 3, 40, 4, 3)
    out64 = c.call(linear_attention, q64, k64, v64)
    c.true(isinstance(out64, torch.Tensor) and out64.dtype == torch.float64,
           "float64 inputs should give a float64 output", got=describe(out64, sums=False),
           hint="convert the result back to the input's dtype: out.to(query.dtype)")
    expected64 = _reference_linear(q64, k64, v64)
    in_float32 = _reference_linear(q64.float(), k64.float(), v64.float()).double()
    if out64.shape == expected64.shape and not torch.allclose(out64, expected64, atol=1e-12, rtol=1e-12):
        if torch.allclose(out64, in_float32, atol=1e-6):  # the mistake first: it names what went wrong
            c.fail("float64 was computed in float32: upcast only float16 and bfloat16, keep float64 as it is",
                   got=difference(out64, expected64, atol=1e-12, rtol=1e-12))
    _check_linear_common(c, linear_attention, "linear_attention")
    c.close(out64, expected64, "linear_attention of float64 inputs, to 1e-12", atol=1e-12, rtol=1e-12)

    # The regrouped form never builds len_q × len_k: watch the tensors it creates.
    q, k, v = _random_qkv(72, 1, 1, 1000, 1200, 4, 4, dtype=torch.float32)
    with _LargestTensor() as seen:
        c.call(linear_attention, q, k, v)
    c.true(
        seen.numel < 1000 * 1200 // 10,
        "for 1000 queries and 1200 keys linear_attention built a tensor as big as φ(Q)φ(K)ᵀ (len_q × len_k)",
        got=f"a tensor of shape {seen.shape}",
        hint="regroup: kv = φ(K)ᵀ V (d × d_v) and z = Σ_j φ(k_j) first, then φ(Q) kv / (φ(Q) z + eps)",
    )

    # Half precision: the sums grow with len_k and overflow float16 (max 65504).
    q, k, v = _random_qkv(73, 1, 1, 2, 70_000, 4, 3, dtype=torch.float16)
    v = v + 1  # outputs near 1, so that a wrong 0 stands out
    out = c.call(linear_attention, q, k, v)
    c.true(
        isinstance(out, torch.Tensor) and out.dtype == torch.float16,
        "float16 inputs should give a float16 output",
        got=describe(out, sums=False),
        hint="compute in float32 and convert the result back: out.to(query.dtype)",
    )
    hint = (
        "over 70 000 keys Σ_j φ(k_j) is about 80 000, more than float16's largest number (65504): compute in "
        "float32 (query.float(), ...) and convert the result back to the input's dtype"
    )
    c.finite(c.array(out.float(), "the output"), "linear_attention of float16 inputs over 70 000 keys", hint)
    c.close(
        out.float(),
        _reference_linear(q, k, v).float(),
        "linear_attention in float16 over 70 000 keys",
        hint,
        atol=5e-3,
        rtol=5e-3,
    )
    c.done()
