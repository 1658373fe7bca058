"""Self-checks of exercise 05, complexity.

from course_lib.checks import (check_score_matrix_bytes, check_attention_flops, check_layer_flops,
                               check_fit_exponent, check_cached_cross_attention, check_cached_self_attention)

The ``*_mistake`` functions compare what came back with the usual wrong answers and name
the mistake; the hidden tests reuse them. ``ProjectionsOnly`` is the layer that the
checks of tasks 5 and 6 (and the grader) hand to the student's classes: its four projections
work, its own attention methods refuse to run, so that the classes are written from the projections.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..attention import scaled_dot_product_attention as _reference_attention
from ..complexity import attention_flops as _reference_attention_flops
from ..complexity import fit_power_law as _reference_fit
from ..complexity import projection_flops as _reference_projection_flops
from ..masks import key_padding_to_attn_mask
from ..multihead import MultiHeadAttention, merge_heads, split_heads
from ._common import Check, describe, difference

__all__ = [
    "ProjectionsOnly",
    "bytes_mistake",
    "check_attention_flops",
    "check_cached_cross_attention",
    "check_cached_self_attention",
    "check_fit_exponent",
    "check_layer_flops",
    "check_score_matrix_bytes",
    "fit_mistake",
    "flops_mistake",
    "layer_flops_mistake",
    "reference_fit",
    "reference_layer_flops",
    "reference_self_steps",
    "self_step_mistake",
    "step_mistake",
]


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (int, float, numpy or 0-d tensor), else None."""
    if hasattr(value, "detach") and hasattr(value, "numel") and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _explain(got: float, candidates: dict[str, float]) -> str | None:
    """The explanation of the first candidate that ``got`` equals (to 1e-9 relative)."""
    for explanation, value in candidates.items():
        if math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-12):
            return explanation
    return None


# -- task 1: bytes of the score matrix ---------------------------------------------------


def bytes_mistake(got: Any, batch: int, heads: int, len_q: int, len_k: int, itemsize: int) -> str | None:
    """Name the usual mistake that explains ``got`` (the student's score matrix bytes), if one does."""
    value = _number(got)
    if value is None:
        return None
    n = batch * heads * len_q * len_k
    candidates = {
        "that is in bits: a float32 number is 4 bytes, not 32 (dtype.itemsize gives bytes)": 8 * n * itemsize,
        "that is the number of scores; multiply by the bytes per element (dtype.itemsize)": n,
        "that is in MiB; return bytes (the caller can divide by 2**20)": n * itemsize / 2**20,
        "that counts two matrices; this task asks for one score matrix, S = Q Kᵀ": 2 * n * itemsize,
        "there are len_q × len_k scores per head, not len_q × len_q": batch * heads * len_q * len_q * itemsize,
        "there are len_q × len_k scores per head, not len_k × len_k": batch * heads * len_k * len_k * itemsize,
        "each head has its own score matrix: multiply by heads": batch * len_q * len_k * itemsize,
        "each sequence of the batch has its own score matrices: multiply by batch": heads * len_q * len_k * itemsize,
    }
    if itemsize != 4:
        candidates = {
            f"the bytes per element depend on the dtype: {itemsize} here, not 4 (use dtype.itemsize)": 4 * n,
            **candidates,
        }
    return _explain(value, {k: v for k, v in candidates.items() if not math.isclose(v, n * itemsize)})


def check_score_matrix_bytes(score_matrix_bytes: Callable) -> None:
    """Check ``score_matrix_bytes(batch, heads, len_q, len_k, dtype=torch.float32)``."""
    c = Check("score_matrix_bytes")
    got = c.call(score_matrix_bytes, 1, 1, 3, 5)
    value = _number(got)
    c.true(value is not None, "score_matrix_bytes should return a number of bytes", got=describe(got))
    c.true(
        value == 60,
        "one float32 score matrix of 3 queries × 5 keys takes 3·5·4 = 60 bytes",
        got=got,
        hint=bytes_mistake(got, 1, 1, 3, 5, 4) or "len_q · len_k scores, 4 bytes each in float32",
    )
    got = c.call(score_matrix_bytes, 2, 4, 10, 30, torch.float16)
    c.true(
        _number(got) == 2 * 4 * 10 * 30 * 2,
        "batch 2, 4 heads, 10 queries × 30 keys in float16 (2 bytes each) take 4800 bytes",
        got=got,
        hint=bytes_mistake(got, 2, 4, 10, 30, 2) or "batch · heads · len_q · len_k · dtype.itemsize",
    )
    q, k = torch.randn(3, 2, 16, 8, dtype=torch.float64), torch.randn(3, 2, 40, 8, dtype=torch.float64)
    allocated = (q @ k.transpose(-2, -1)).nbytes  # the real thing
    got = c.call(score_matrix_bytes, 3, 2, 16, 40, torch.float64)
    c.true(
        _number(got) == allocated,
        f"the scores of q (3, 2, 16, 8) and k (3, 2, 40, 8) in float64 hold {allocated} bytes once allocated",
        got=got,
        hint=bytes_mistake(got, 3, 2, 16, 40, 8) or "float64 takes 8 bytes per element",
    )
    c.done()


# -- task 2: FLOPs of the attention core -------------------------------------------------


def flops_mistake(
    got: Any, batch: int, heads: int, len_q: int, len_k: int, head_dim: int, dim_v: int, backward: bool
) -> str | None:
    """Name the usual mistake that explains ``got`` (the student's attention FLOPs), if one does."""
    value = _number(got)
    if value is None:
        return None
    pairs = batch * heads * len_q * len_k  # one score per (query, key) pair, per head
    d, dv = head_dim, dim_v
    forward = 2 * pairs * (d + dv)
    if backward:
        candidates = {
            "that is autograd's count (4 matmuls, P stored); the convention recomputes Q Kᵀ: 5 matmuls": 2 * forward,
            "backward=True should give the backward pass, not the forward": forward,
            "2.5 × forward holds only when d_v = d: count the five matmuls, 2·Lq·Lk·(3·d + 2·d_v) per head": 2.5
            * forward,
            "count 2 FLOPs per multiply-add (one multiply, one add)": pairs * (3 * d + 2 * dv),
            "three of the five backward matmuls have size d and two have size d_v, not the other way round": 2
            * pairs
            * (2 * d + 3 * dv),
            "the backward also includes recomputing the scores Q Kᵀ: five matmuls": 2 * pairs * (2 * d + 2 * dv),
            "dV = Pᵀ dO and dP = dO Vᵀ have the values' size d_v (dim_v), not d": 10 * pairs * d,
        }
    else:
        candidates = {}
        if d == dv:  # then half the count is either mistake below
            half = "that is half the count: count 2 FLOPs per multiply-add, and both products, Q Kᵀ and P V"
            candidates[half] = 2 * pairs * d
        candidates |= {
            "count 2 FLOPs per multiply-add (one multiply, one add)": pairs * (d + dv),
            "the value matmul P V is missing: it costs 2·Lq·Lk·d_v per head": 2 * pairs * d,
            "P V multiplies by values of size d_v, not d: 2·Lq·Lk·(d + d_v) per head": 4 * pairs * d,
            "Q Kᵀ has size d and P V size d_v: don't use d_v for both": 4 * pairs * dv,
            "count every head: multiply by heads": 2 * batch * len_q * len_k * (d + dv),
            "a forward pass counts 2 FLOPs per multiply-add, not 4": 4 * pairs * (d + dv),
        }
    correct = _reference_attention_flops(batch, heads, len_q, len_k, d, dim_v=dv, backward=backward)
    return _explain(value, {k: v for k, v in candidates.items() if not math.isclose(v, correct)})


def check_attention_flops(attention_flops: Callable) -> None:
    """Check ``attention_flops(batch, heads, len_q, len_k, head_dim, *, dim_v=None, backward=False)``."""
    c = Check("attention_flops")
    got = c.call(attention_flops, 2, 3, 5, 7, 4)
    c.true(_number(got) is not None, "attention_flops should return a number", got=describe(got))
    expected = 2 * 2 * (2 * 3 * 5 * 7 * 4)
    c.true(
        _number(got) == expected,
        f"batch 2, 3 heads, 5 queries, 7 keys, d = 4: two products of 2·Lq·Lk·d FLOPs per head, {expected} in all",
        got=got,
        hint=flops_mistake(got, 2, 3, 5, 7, 4, 4, False) or "two matmuls, each 2·Lq·Lk·d per (batch, head)",
    )
    got = c.call(attention_flops, 2, 3, 5, 7, 4, dim_v=6)
    expected = 2 * 2 * 3 * 5 * 7 * (4 + 6)
    c.true(
        _number(got) == expected,
        f"the same with values of size d_v = 6: Q Kᵀ costs 2·Lq·Lk·d, P V 2·Lq·Lk·d_v; {expected} in all",
        got=got,
        hint=flops_mistake(got, 2, 3, 5, 7, 4, 6, False) or "Q Kᵀ costs 2·Lq·Lk·d, P V costs 2·Lq·Lk·d_v",
    )
    got = c.call(attention_flops, 1, 2, 3, 5, 8, backward=True)
    expected = 5 * 2 * 2 * 3 * 5 * 8
    c.true(
        _number(got) == expected,
        f"the backward pass of 2 heads, 3 queries, 5 keys, d = 8 is five matmuls: 5 · 2·Lq·Lk·d · heads = {expected}",
        got=got,
        hint=flops_mistake(got, 1, 2, 3, 5, 8, 8, True),
    )
    got = c.call(attention_flops, 1, 2, 3, 5, 8, dim_v=2, backward=True)
    expected = 2 * 2 * 3 * 5 * (3 * 8 + 2 * 2)
    c.true(
        _number(got) == expected,
        f"with d = 8 and d_v = 2 the five backward matmuls cost 2·heads·Lq·Lk·(3·d + 2·d_v) = {expected}",
        got=got,
        hint=flops_mistake(got, 1, 2, 3, 5, 8, 2, True) or "which backward matmuls have size d, which d_v?",
    )
    c.done()


# -- task 3: FLOPs of a cross-attention layer ---------------------------------------------


def reference_layer_flops(
    batch: int,
    len_q: int,
    len_k: int,
    d_model: int,
    num_heads: int,
    *,
    d_context: int | None = None,
    cached_kv: bool = False,
) -> int:
    """FLOPs of ``MultiHeadAttention(d_model, num_heads, d_context=...)`` on ``len_q`` queries and ``len_k`` keys."""
    attention = _reference_attention_flops(batch, num_heads, len_q, len_k, d_model // num_heads)
    return _reference_projection_flops(batch, len_q, len_k, d_model, d_context, cached_kv=cached_kv) + attention


def layer_flops_mistake(
    got: Any,
    batch: int,
    len_q: int,
    len_k: int,
    d_model: int,
    num_heads: int,
    d_context: int | None,
    cached_kv: bool,
) -> str | None:
    """Name the usual mistake that explains ``got`` (the student's layer FLOPs), if one does."""
    value = _number(got)
    if value is None:
        return None
    dc = d_model if d_context is None else d_context
    b, lq, lk, d = batch, len_q, len_k, d_model
    attention = 4 * b * lq * lk * d
    q_o = 4 * b * lq * d * d
    k_v = 0 if cached_kv else 4 * b * lk * dc * d
    candidates = {
        "count the output projection W_o too: 2·Lq·d_model² per sequence": attention + q_o / 2 + k_v,
        "W_k and W_v read the context: (Lk, d_context) @ (d_context, d_model)": attention + q_o + 4 * b * lk * d * d,
        "W_k and W_v project the Lk context tokens, not the Lq queries": attention + q_o + 4 * b * lq * dc * d,
        "each head has head_dim = d_model / num_heads: the heads together cost what one head of width d_model "
        "would; the number of heads does not change the FLOPs": num_heads * attention + q_o + k_v,
        "count 2 FLOPs per multiply-add in the projections too": attention + (q_o + k_v) / 2,
        "the attention core is part of the layer: add attention_flops": q_o + k_v,
        "the projections are part of the layer: W_q, W_k, W_v and W_o": attention,
    }
    if cached_kv:
        candidates = {
            "with cached_kv the keys and values come from the cache: W_k and W_v do not run": attention
            + q_o
            + 4 * b * lk * dc * d,
            "with cached_kv only W_k and W_v are skipped: the new queries still go through W_q and W_o": attention,
            **candidates,
        }
    correct = reference_layer_flops(batch, len_q, len_k, d_model, num_heads, d_context=d_context, cached_kv=cached_kv)
    return _explain(value, {k: v for k, v in candidates.items() if not math.isclose(v, correct)})


def check_layer_flops(layer_flops: Callable) -> None:
    """Check ``layer_flops(batch, len_q, len_k, d_model, num_heads, *, d_context=None, cached_kv=False)``."""
    c = Check("layer_flops")
    got = c.call(layer_flops, 2, 5, 7, 12, 3, d_context=10)
    c.true(_number(got) is not None, "layer_flops should return a number", got=describe(got))
    expected = reference_layer_flops(2, 5, 7, 12, 3, d_context=10)
    c.true(
        _number(got) == expected,
        f"MultiHeadAttention(12, 3, d_context=10) on x (2, 5, 12) and a context (2, 7, 10) does {expected} FLOPs",
        got=got,
        hint=layer_flops_mistake(got, 2, 5, 7, 12, 3, 10, False)
        or "four projections (2 FLOPs per multiply-add) plus attention_flops with head_dim = d_model // num_heads",
    )
    got = c.call(layer_flops, 2, 1, 7, 12, 3, d_context=10, cached_kv=True)
    expected = reference_layer_flops(2, 1, 7, 12, 3, d_context=10, cached_kv=True)
    c.true(
        _number(got) == expected,
        f"one cached decoding step of that layer (len_q = 1, cached_kv=True) does {expected} FLOPs",
        got=got,
        hint=layer_flops_mistake(got, 2, 1, 7, 12, 3, 10, True) or "with cached_kv, W_k and W_v do not run",
    )
    got = c.call(layer_flops, 1, 4, 4, 16, 1)
    expected = reference_layer_flops(1, 4, 4, 16, 1)
    c.true(
        _number(got) == expected,
        f"MultiHeadAttention(16, 1) on 4 queries and 4 context tokens (d_context = d_model) does {expected} FLOPs",
        got=got,
        hint=layer_flops_mistake(got, 1, 4, 4, 16, 1, None, False) or "d_context is d_model when None",
    )
    c.done()


# -- task 4: fitting an exponent ---------------------------------------------------------


def reference_fit(xs: Any, ys: Any) -> tuple[float, float]:
    """``(exponent, prefactor)`` of the least-squares line through ``(log x, log y)``."""
    fit = _reference_fit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
    return fit.exponent, fit.prefactor


def fit_mistake(xs: Any, ys: Any, exponent: Any, prefactor: Any) -> str | None:
    """Name the usual mistake that explains a fitted ``(exponent, prefactor)``, if one does."""
    b, a = _number(exponent), _number(prefactor)
    if b is None:
        return None
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    if not math.isclose(b, slope, rel_tol=1e-6, abs_tol=1e-9):
        same_log = "use the same logarithm on both axes: np.log10 on one axis and np.log on the other scale the slope"
        slopes = {
            "fit the line to log x and log y: a power law is a straight line only on log-log axes": np.polyfit(x, y, 1)[
                0
            ],
            "take the log of the ys too: log y = log a + b log x": np.polyfit(lx, y, 1)[0],
            "take the log of the xs too: log y = log a + b log x": np.polyfit(x, ly, 1)[0],
            f"{same_log} by 1 / 2.303": slope / math.log(10),
            f"{same_log} by 2.303": slope * math.log(10),
            "regress log y on log x (y depends on x), not log x on log y": np.polyfit(ly, lx, 1)[0],
            "regress log y on log x, not log x on log y and invert": 1 / np.polyfit(ly, lx, 1)[0],
            "fit all the points by least squares, not a line through the first and the last": (ly[-1] - ly[0])
            / (lx[-1] - lx[0]),
            "fit all the points at once by least squares, not the average of the slopes between neighbours": float(
                np.mean(np.diff(ly) / np.diff(lx))
            ),
        }
        return _explain(b, {k: float(v) for k, v in slopes.items()})
    if a is None or math.isclose(a, math.exp(intercept), rel_tol=1e-6):
        return None
    prefactors = {
        "the prefactor is a = e^intercept (or 10^intercept with log10): you returned the intercept, log a": intercept,
        "the prefactor is a = 10^intercept with log10: you returned the intercept, log10 a": intercept / math.log(10),
        "undo the logarithm you fitted with: e^intercept after np.log (10^intercept after np.log10)": 10**intercept,
        "undo the logarithm you fitted with: 10^intercept after np.log10 (e^intercept after np.log)": math.exp(
            intercept / math.log(10)
        ),
    }
    return _explain(a, prefactors)


def check_fit_exponent(fit_exponent: Callable) -> None:
    """Check ``fit_exponent(xs, ys) -> (exponent, prefactor)``."""
    c = Check("fit_exponent")
    xs = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    ys = 5.0 * xs**2
    result = c.call(fit_exponent, xs, ys)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2,
        "fit_exponent should return two numbers: (exponent, prefactor)",
        got=describe(result),
    )
    b, a = _number(result[0]), _number(result[1])
    c.true(b is not None and a is not None, "the exponent and the prefactor should be numbers", got=describe(result))
    c.close(b, 2.0, "the exponent of y = 5·x² at x = 1, 2, 4, 8, 16", fit_mistake(xs, ys, b, a), atol=1e-6)
    c.close(a, 5.0, "the prefactor of y = 5·x²", fit_mistake(xs, ys, b, a), atol=1e-6)

    xs = [100, 200, 400, 800, 1600, 3200]  # a plain list, as measurements often are
    ys = [0.011, 0.019, 0.043, 0.078, 0.17, 0.33]
    b, a = (_number(r) for r in c.call(fit_exponent, xs, ys))
    expected_b, expected_a = reference_fit(xs, ys)
    c.close(
        b,
        expected_b,
        "the least-squares exponent of six noisy times (given as lists)",
        fit_mistake(xs, ys, b, a) or "least squares on (log x, log y): np.polyfit(np.log(xs), np.log(ys), 1)",
    )
    c.close(a, expected_a, "the prefactor of six noisy times", fit_mistake(xs, ys, b, a), rtol=1e-5)

    for xs, ys, what in [([1, 2, 4], [3.0, 0.0, 5.0], "a y of 0"), ([0, 2, 4], [3.0, 4.0, 5.0], "an x of 0")]:
        call = f"fit_exponent({xs}, {[int(y) for y in ys]})"
        try:
            fit_exponent(xs, ys)
        except ValueError:
            raised = True
        except NotImplementedError:
            raise
        except Exception as err:  # any other error is a missing check too
            c.fail(
                f"{call} raised {type(err).__name__}, not ValueError",
                hint="check that every x and y is > 0 and raise ValueError with a message that says so",
            )
        else:
            raised = False
        c.true(
            raised,
            f"{call} should raise ValueError ({what}): log(0) is -inf, no line fits it",
            hint="check that every x AND every y is > 0 (np.any(... <= 0)) and raise ValueError",
        )
    c.done()


# -- task 5: cached cross-attention --------------------------------------------------------

SHORTCUT = (
    "a cache class must not call the layer's own attention (layer(...), layer.forward, "
    "layer.precompute_context, layer.new_cache, layer.step): that is the computation you are writing. Use its "
    "projections "
    "layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj and its layer.num_heads"
)


class ProjectionsOnly(MultiHeadAttention):
    """A ``MultiHeadAttention`` whose projections work and whose attention methods refuse to run.

    Task 5 writes cached cross-attention from the four projections; the check and the
    grader hand this layer to the student's class, so that calling ``layer.step`` (the
    answer) is reported instead of graded. ``calls`` counts how often each projection ran.
    """

    def __init__(self, d_model: int, num_heads: int, *, d_context: int | None = None, bias: bool = True) -> None:
        super().__init__(d_model, num_heads, d_context=d_context, bias=bias)
        self.calls = {name: 0 for name in ("q_proj", "k_proj", "v_proj", "out_proj")}
        for name in self.calls:
            getattr(self, name).register_forward_hook(self._counter(name))
        self.eval()

    def _counter(self, name: str) -> Callable:
        def count(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            self.calls[name] += 1

        return count

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(SHORTCUT)

    def precompute_context(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(SHORTCUT)

    def step(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(SHORTCUT)

    def new_cache(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(SHORTCUT)


def step_mistake(
    layer: MultiHeadAttention, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None, got: Any
) -> str | None:
    """Name the usual mistake that explains ``got``, a cached step's output for ``x``, if one does.

    ``layer`` is the reference (a ``MultiHeadAttention`` with the same weights as the
    student's), ``x`` ``(batch, t, d_model)``, ``context`` ``(batch, len_k, d_context)``,
    ``context_mask`` ``(batch, len_k)`` bool or None.
    """
    if not isinstance(got, torch.Tensor) or not got.is_floating_point():
        return None
    with torch.no_grad():
        h = layer.num_heads
        q = split_heads(layer.q_proj(x), h)
        k, v = split_heads(layer.k_proj(context), h), split_heads(layer.v_proj(context), h)
        mask = None if context_mask is None else key_padding_to_attn_mask(context_mask)

        def attend(scale: float | None = None, attn_mask: torch.Tensor | None = mask) -> torch.Tensor:
            return _reference_attention(q, k, v, attn_mask, scale=scale)

        out = attend()
        batch, t, width = x.shape
        candidates = {
            "scale the scores by 1/√head_dim, the size of each head's queries and keys, not 1/√d_model": layer.out_proj(
                merge_heads(attend(1 / math.sqrt(layer.d_model)))
            ),
            "the scores are not scaled: divide Q Kᵀ by √head_dim": layer.out_proj(merge_heads(attend(1.0))),
            "finish with the output projection: layer.out_proj(merged heads)": merge_heads(out),
            "merge the heads with a transpose before the reshape, (batch, heads, t, head_dim) → (batch, t, heads, "
            "head_dim) → (batch, t, d_model); a bare reshape mixes tokens and heads": layer.out_proj(
                out.reshape(batch, t, width)
            ),
        }
        if context_mask is not None and not bool(context_mask.all()):
            inverted = key_padding_to_attn_mask(~context_mask)
            candidates["the padding mask is ignored: padded source tokens must get no weight"] = layer.out_proj(
                merge_heads(attend(attn_mask=None))
            )
            candidates["the mask is inverted: True means a real token that may be attended (course convention)"] = (
                layer.out_proj(merge_heads(attend(attn_mask=inverted)))
            )
        for explanation, value in candidates.items():
            if got.shape == value.shape and torch.allclose(got.float(), value, atol=1e-5, rtol=1e-4):
                return explanation
    return None


def check_cached_cross_attention(cached_cross_attention: Callable) -> None:
    """Check the class ``CachedCrossAttention(layer, context, context_mask=None)`` and its ``step(x_t)``."""
    c = Check("CachedCrossAttention")
    torch.manual_seed(5)
    d_model, heads, d_context, len_k = 16, 4, 8, 5
    layer = ProjectionsOnly(d_model, heads, d_context=d_context)
    reference = MultiHeadAttention(d_model, heads, d_context=d_context).eval()
    reference.load_state_dict(layer.state_dict())
    context = torch.randn(2, len_k, d_context)
    context[1, 3:] = 50.0  # padding: garbage that must get no weight
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    targets = torch.randn(2, 3, d_model)

    with torch.no_grad():
        cache = c.call(cached_cross_attention, layer, context, mask)
        key = getattr(cache, "key", None)
        value = getattr(cache, "value", None)
        expected_shape = (2, heads, len_k, d_model // heads)
        hint = "project the source once, in __init__, and split the heads: split_heads(layer.k_proj(context), heads)"
        c.true(isinstance(key, torch.Tensor), "keep the keys in self.key", got=describe(key), hint=hint)
        c.shape(key, expected_shape, "self.key, for 2 sources of 5 tokens and 4 heads of 4", hint)
        c.shape(value, expected_shape, "self.value", hint)
        c.close(key, split_heads(reference.k_proj(context), heads), "self.key", hint, atol=1e-5)
        c.close(value, split_heads(reference.v_proj(context), heads), "self.value", hint, atol=1e-5)

        projections_before = dict(layer.calls)
        outputs = []
        for t in range(targets.shape[1]):
            x_t = targets[:, t : t + 1]
            out = c.call(cache.step, x_t, hint="x_t is (batch, 1, d_model): one new query per sequence")
            c.true(isinstance(out, torch.Tensor), "step should return a tensor", got=describe(out))
            c.shape(out, (2, 1, d_model), "step(x_t) for x_t of shape (2, 1, 16)", "one output per new query")
            expected = reference(x_t, context, context_mask=mask)
            c.close(
                out,
                expected,
                f"step {t}: the output, compared with the full computation layer(x_t, context, context_mask)",
                step_mistake(reference, x_t, context, mask, out)
                or "q = split_heads(layer.q_proj(x_t)); attention over self.key, self.value with the mask; "
                "merge_heads; layer.out_proj",
                atol=1e-5,
            )
            outputs.append(out)
        extra = {name: layer.calls[name] - projections_before[name] for name in ("k_proj", "v_proj")}
        c.true(
            extra == {"k_proj": 0, "v_proj": 0},
            "step() should not project the source again: its keys and values are in the cache",
            got=f"during 3 steps, k_proj ran {extra['k_proj']} more time(s) and v_proj {extra['v_proj']}",
            hint="project in __init__ only; step() uses self.key and self.value",
        )
    c.done()


# -- task 6: the growing self-attention cache --------------------------------------------


def reference_self_steps(layer: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """What causal self-attention gives at every position of ``x`` ``(batch, n, d_model)``: ``(batch, n, d_model)``.

    Decoding ``x`` in steps of any sizes must give these rows, step by step.
    """
    n = x.shape[1]
    with torch.no_grad():
        return layer(x, attn_mask=torch.ones(n, n, dtype=torch.bool).tril())


def self_step_mistake(layer: MultiHeadAttention, x: torch.Tensor, past: int, got: Any) -> str | None:
    """Name the usual mistake that explains ``got``, the step's output for the new tokens ``x[:, past:]``.

    ``layer`` is the reference, ``x`` ``(batch, n, d_model)`` every token fed so far, the step's
    ``t = n - past`` new ones last.
    """
    if not isinstance(got, torch.Tensor) or not got.is_floating_point():
        return None
    n = x.shape[1]
    t = n - past
    with torch.no_grad():
        h = layer.num_heads
        q = split_heads(layer.q_proj(x[:, past:]), h)
        k, v = split_heads(layer.k_proj(x), h), split_heads(layer.v_proj(x), h)

        def attend(keys: slice, mask: torch.Tensor | None) -> torch.Tensor:
            out = _reference_attention(q, k[:, :, keys], v[:, :, keys], mask)
            return layer.out_proj(merge_heads(out))

        top_left = torch.ones(t, n, dtype=torch.bool).tril()
        candidates = {}
        if past:
            candidates["the causal mask is aligned top-left (torch.ones(t, n).tril(), or is_causal=True of "
                       "F.scaled_dot_product_attention): the new tokens are the last t of n, so new query i sees "
                       "keys j <= i + (n - t), aligned bottom-right"] = attend(slice(0, n), top_left)
            own = torch.ones(t, t, dtype=torch.bool).tril()  # the new tokens among themselves
            candidates["the cache does not grow: append the new keys and values to those of the earlier steps "
                       "(torch.cat along the length axis, dim=2)"] = attend(slice(past, n), own)
            candidates["the new keys and values are appended after the attention: a token must attend to itself, "
                       "so append first, then attend"] = attend(slice(0, past), None)
        if t > 1:
            candidates["no causal mask among the new tokens: with several new tokens in one step, token i must "
                       "not see the new tokens after it"] = attend(slice(0, n), None)
        for explanation, value in candidates.items():
            if got.shape == value.shape and torch.allclose(got.float(), value, atol=1e-5, rtol=1e-4):
                return explanation
    return None


def check_cached_self_attention(cached_self_attention: Callable) -> None:
    """Check the class ``CachedSelfAttention(layer)`` and its ``step(x_t)``, in steps of 3, 1 and 2 tokens."""
    c = Check("CachedSelfAttention")
    torch.manual_seed(6)
    d_model, heads = 16, 4
    layer = ProjectionsOnly(d_model, heads)
    reference = MultiHeadAttention(d_model, heads).eval()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 6, d_model)
    expected_all = reference_self_steps(reference, x)
    with torch.no_grad():
        cache = c.call(cached_self_attention, layer)
        past = 0
        for t in (3, 1, 2):  # a prompt of 3 tokens, then one generated token, then 2 at once
            x_t = x[:, past : past + t]
            out = c.call(cache.step, x_t, hint=f"x_t is (batch, t, d_model), here t = {t} new tokens")
            c.true(isinstance(out, torch.Tensor), "step should return a tensor", got=describe(out))
            c.shape(out, (2, t, d_model), f"step(x_t) for x_t of shape (2, {t}, 16)", "one output per new token")
            key = getattr(cache, "key", None)
            c.true(isinstance(key, torch.Tensor), "keep the keys of every token so far in self.key", got=describe(key))
            want_shape = (2, heads, past + t, d_model // heads)
            c.true(tuple(key.shape) == want_shape,
                   f"self.key after {past + t} tokens should be (batch, heads, n, head_dim) = {want_shape}: append "
                   "each step's new keys along the length axis, torch.cat([self.key, k], dim=2)",
                   got=f"shape {tuple(key.shape)}")
            want = expected_all[:, past : past + t]
            what = f"step of {t} new token(s) after {past}"
            if not torch.allclose(out.float(), want, atol=1e-5, rtol=1e-5):
                mistake = self_step_mistake(reference, x[:, : past + t], past, out)
                if mistake:  # the mistake first: it names what went wrong
                    c.fail(f"{what}: {mistake}", got=difference(out, want, atol=1e-5))
            c.close(out, want, f"{what}, compared with causal self-attention over the whole sequence, rows "
                    f"{past}..{past + t - 1}", atol=1e-5)
            past += t
    c.done()
