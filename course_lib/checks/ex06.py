"""Self-checks of exercise 06, efficient attention.

    from course_lib.checks import (check_online_softmax_update, check_merge_softmax_states,
                                   check_combine_splits, check_tiled_attention, check_triton_attention)

A *softmax state* of a query row over a set of keys is three numbers per row:
``m`` the largest score, ``l = Σ exp(s − m)`` and ``acc = Σ exp(s − m) · v``. An empty
set of keys has the state ``(−inf, 0, 0)``. ``softmax_state`` computes a state directly
from all the scores; the student's update and merge must agree with it.

The module also holds what the hidden tests share with the checks: the references that
replace a student's earlier task while a later one is graded
(``reference_online_softmax_update``, ``reference_merge_softmax_states``), and the
diagnostics (``*_mistake``) that name the usual mistake behind a wrong result.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..attention import scaled_dot_product_attention as _reference_attention
from ._common import Check, describe, difference

__all__ = [
    "check_combine_splits",
    "check_merge_softmax_states",
    "check_online_softmax_update",
    "check_tiled_attention",
    "check_triton_attention",
    "combine_mistake",
    "merge_states_mistake",
    "padded_attention",
    "reference_combine_splits",
    "split_results",
    "softmax_state",
    "tiled_mistake",
    "triton_mistake",
    "update_mistake",
]

NEG_INF = -math.inf


# -- references ---------------------------------------------------------------------------


def softmax_state(scores: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The state ``(m, l, acc)`` of a set of keys, computed from all their scores at once.

    ``scores`` ``(..., len_q, n)`` (``-inf`` = masked), ``values`` ``(..., n, d_v)`` →
    ``m`` and ``l`` ``(..., len_q)``, ``acc`` ``(..., len_q, d_v)``. A row with no finite
    score gets ``(-inf, 0, 0)``.
    """
    m = scores.amax(dim=-1)
    p = torch.exp(scores - m.masked_fill(m == NEG_INF, 0.0)[..., None])
    return m, p.sum(dim=-1), p @ values


def empty_state(rows: tuple[int, ...], d_v: int, dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    """The state of no key at all: ``m = -inf``, ``l = 0``, ``acc = 0``, for ``rows = (..., len_q)``."""
    return torch.full(rows, NEG_INF, dtype=dtype), torch.zeros(rows, dtype=dtype), torch.zeros(*rows, d_v, dtype=dtype)


def reference_online_softmax_update(m_i, l_i, acc, scores, values):
    """Fold one block of keys into a state (task 1, done right)."""
    m_new = torch.maximum(m_i, scores.amax(dim=-1))
    m_safe = m_new.masked_fill(m_new == NEG_INF, 0.0)
    alpha = torch.exp(m_i - m_safe)
    p = torch.exp(scores - m_safe[..., None])
    return m_new, l_i * alpha + p.sum(dim=-1), acc * alpha[..., None] + p @ values


def reference_merge_softmax_states(m1, l1, acc1, m2, l2, acc2):
    """Merge two states (task 2, done right)."""
    m = torch.maximum(m1, m2)
    m_safe = m.masked_fill(m == NEG_INF, 0.0)
    a1, a2 = torch.exp(m1 - m_safe), torch.exp(m2 - m_safe)
    return m, l1 * a1 + l2 * a2, acc1 * a1[..., None] + acc2 * a2[..., None]


def reference_combine_splits(outputs: torch.Tensor, lses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine normalised split outputs ``(splits, ..., len_q, d_v)`` by their log-sum-exps ``(splits, ..., len_q)``.

    Returns ``(out, lse)``, ``(..., len_q, d_v)`` and ``(..., len_q)``: 0 and ``-inf`` where every split is empty.
    """
    m = lses.amax(dim=0)
    m_safe = torch.where(m == NEG_INF, torch.zeros_like(m), m)
    w = torch.exp(lses - m_safe)  # (splits, ..., len_q), each at most 1
    total = w.sum(dim=0)
    out = (w[..., None] * outputs).sum(dim=0) / torch.where(total == 0, torch.ones_like(total), total)[..., None]
    return out, m_safe + torch.log(total)


def split_results(scores: torch.Tensor, values: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over each split of the keys alone: ``(outputs, lses)``, stacked on a new first axis.

    ``scores`` ``(..., len_q, len_k)`` (``-inf`` = masked), ``values`` ``(..., len_k, d_v)``, ``sizes`` the
    splits' numbers of keys (summing to ``len_k``). A split whose keys are all masked for a row gives
    that row 0 and ``-inf``, as an attention kernel does.
    """
    outputs, lses, start = [], [], 0
    for n in sizes:
        s, v = scores[..., start : start + n], values[..., start : start + n, :]
        lse = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - torch.where(lse == NEG_INF, torch.zeros_like(lse), lse)[..., None])
        outputs.append(p @ v)
        lses.append(lse)
        start += n
    return torch.stack(outputs), torch.stack(lses)


def padded_attention(query, key, value, kv_lens=None, scale=None) -> torch.Tensor:
    """Attention in float64 where batch ``b`` sees only its first ``kv_lens[b]`` keys; rows with none are 0."""
    q, k, v = (torch.as_tensor(t).double() for t in (query, key, value))
    mask = None
    if kv_lens is not None:
        lens = torch.as_tensor(kv_lens)
        mask = (torch.arange(k.shape[-2]) < lens[:, None])[:, None, None, :]
    return _reference_attention(q, k, v, mask, scale=scale)


# -- diagnostics ---------------------------------------------------------------------------


def _close(got, expected, atol=1e-6) -> bool:
    if got is None or expected is None:
        return False
    got, expected = torch.as_tensor(got).double(), torch.as_tensor(expected).double()
    return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=1e-5, atol=atol))


def _maybe(fn: Callable):
    """``fn()``, or ``None`` when it does not broadcast: some wrong answers only exist for some shapes."""
    try:
        return fn()
    except RuntimeError:
        return None


def _as_triple(result):
    if isinstance(result, (tuple, list)) and len(result) == 3 and all(isinstance(t, torch.Tensor) for t in result):
        return tuple(t.double() for t in result)
    return None


def update_mistake(m_i, l_i, acc, scores, values, result) -> str | None:
    """Name the usual mistake that explains ``result``, the student's update of ``(m_i, l_i, acc)``, if one does."""
    got = _as_triple(result)
    if got is None:
        return "return a tuple of three tensors, (m_new, l_new, acc_new)"
    m, l_old, acc, scores, values = (t.double() for t in (m_i, l_i, acc, scores, values))
    gm, gl, gacc = got
    em, el, eacc = reference_online_softmax_update(m, l_old, acc, scores, values)
    if gm.shape != em.shape or gl.shape != el.shape or gacc.shape != eacc.shape:
        return (
            f"m_new, l_new and acc_new keep the shapes of m_i {tuple(m.shape)}, l_i {tuple(l_old.shape)} and acc "
            f"{tuple(acc.shape)}: reduce the scores over the keys (the last axis) without keepdim"
        )
    if not _close(gm, em) and not torch.isnan(gm).any():
        if _close(gm, scores.amax(dim=-1)):
            return "m_new is the max of everything seen so far: torch.maximum(m_i, scores.amax(dim=-1))"
        return "m_new should be torch.maximum(m_i, scores.amax(dim=-1)), the largest score seen so far"
    finite = torch.isfinite(el).all() and torch.isfinite(eacc).all()
    if finite and not (torch.isfinite(gl).all() and torch.isfinite(gacc).all()):
        if ((m == NEG_INF) & (scores == NEG_INF).all(dim=-1)).any():
            return (
                "a row that has seen no key yet, with a fully masked block, has m_new = -inf, and "
                "exp(-inf - (-inf)) = exp(nan): subtract 0 instead of m_new where m_new is -inf (torch.where)"
            )
        if (m == NEG_INF).any() and _close(gm, em):
            return (
                "NaN or inf where the old max m_i is -inf: compute m_new first, then subtract it, "
                "exp(scores - m_new), never the old m"
            )
        return "exp overflowed: subtract the new running max, m_new = max(m, max of the block), before exp"
    m_safe = em.masked_fill(em == NEG_INF, 0.0)
    p = torch.exp(scores - m_safe[..., None])
    with np.errstate(all="ignore"):
        if not _close(gl, el):
            if _close(gl, l_old + p.sum(dim=-1)):
                return (
                    "l_i was summed against the old max: multiply it by alpha = exp(m_i - m_new) before adding "
                    "the block's exp(scores - m_new)"
                )
            if _close(gl, l_old * torch.exp(m_safe - m) + p.sum(dim=-1)):
                return "alpha = exp(m_i - m_new), old max minus new max (at most 1), not exp(m_new - m_i)"
            p_old = torch.exp(scores - m[..., None])
            if _close(gl, l_old + p_old.sum(dim=-1)) or _close(gl, l_old * torch.exp(m - m_safe) + p_old.sum(dim=-1)):
                return "use the new max in exp(scores - m_new): compute m_new before the exponentials"
            return "l_new = l_i * exp(m_i - m_new) + exp(scores - m_new).sum(dim=-1)"
        if not _close(gacc, eacc):
            alpha = torch.exp(m - m_safe)
            if _close(gacc, acc + p @ values):
                return "acc must be rescaled like l_i: acc * alpha[..., None] + p @ values, alpha = exp(m_i - m_new)"
            if _close(gacc, eacc / el.masked_fill(el == 0, 1.0)[..., None]):
                return "acc stays unnormalised: divide by l_i only once, after the last block (in tiled_attention)"
            if _close(gacc, _maybe(lambda: acc * alpha + p @ values)):
                return (
                    "alpha has one value per query row, shape (..., len_q): give it a last axis, "
                    "alpha[..., None], so that it scales the rows of acc (not its columns)"
                )
            return "acc_new = acc * alpha[..., None] + exp(scores - m_new) @ values, with alpha = exp(m_i - m_new)"
    return None


def merge_states_mistake(a, b, result) -> str | None:
    """Name the usual mistake behind ``result``, the student's merge of states ``a`` and ``b``, if one does."""
    got = _as_triple(result)
    if got is None:
        return "return a tuple of three tensors, (m, l, acc)"
    (m1, l1, acc1), (m2, l2, acc2) = (tuple(t.double() for t in s) for s in (a, b))
    gm, gl, gacc = got
    em, el, eacc = reference_merge_softmax_states(m1, l1, acc1, m2, l2, acc2)
    if gm.shape != em.shape or gl.shape != el.shape or gacc.shape != eacc.shape:
        return f"the merged state keeps the shapes of the inputs: m and l {tuple(m1.shape)}, acc {tuple(acc1.shape)}"
    if torch.isfinite(el).all() and not (torch.isfinite(gl).all() and torch.isfinite(gacc).all()):
        if ((m1 == NEG_INF) & (m2 == NEG_INF)).any():
            return (
                "two empty states (m = -inf) give exp(-inf - (-inf)) = NaN: subtract 0 where the joint max "
                "is -inf (torch.where)"
            )
        return "exp overflowed: rescale both states to the joint max m = max(m1, m2), exp(m1 - m) <= 1"
    if not _close(gm, em):
        return "the merged m is the joint max, torch.maximum(m1, m2)"
    with np.errstate(all="ignore"):
        if not _close(gl, el) or not _close(gacc, eacc):
            if _close(gl, l1 + l2) or _close(gacc, acc1 + acc2):
                return (
                    "the two states were summed against different maxima: rescale each to the joint max "
                    "m = max(m1, m2) (multiply l1 and acc1 by exp(m1 - m), l2 and acc2 by exp(m2 - m)) "
                    "before adding"
                )
            m_safe = em.masked_fill(em == NEG_INF, 0.0)
            a1, a2 = torch.exp(m1 - m_safe), torch.exp(m2 - m_safe)
            if _close(gacc, _maybe(lambda: acc1 * a1 + acc2 * a2)):
                return "the weights exp(m1 - m) have one value per row: use a1[..., None] to scale the rows of acc"
            if _close(gl, el) and not _close(gacc, eacc):
                return "acc needs the same weights as l: acc1 * exp(m1 - m)[..., None] + acc2 * exp(m2 - m)[..., None]"
            return "l = l1 * exp(m1 - m) + l2 * exp(m2 - m) with m = max(m1, m2), and acc with the same weights"
    return None


def combine_mistake(outputs: torch.Tensor, lses: torch.Tensor, result) -> str | None:
    """Name the usual mistake behind ``result``, the student's combination of ``outputs`` by ``lses``, if one does."""
    pair = isinstance(result, (tuple, list)) and len(result) == 2
    if not (pair and all(isinstance(t, torch.Tensor) for t in result)):
        return "return a tuple of two tensors, (out, lse)"
    got_out, got_lse = (t.double() for t in result)
    outputs, lses = outputs.double(), lses.double()
    out, lse = reference_combine_splits(outputs, lses)
    if got_out.shape != out.shape or got_lse.shape != lse.shape:
        return (
            f"the splits axis is the first one, and it goes: out is (..., len_q, d_v) = {tuple(out.shape)}, "
            f"lse (..., len_q) = {tuple(lse.shape)}"
        )
    if not torch.isfinite(got_out).all():
        if (lses == NEG_INF).all(dim=0).any():
            return (
                "a row whose every split is empty (all lse = -inf) gives exp(-inf - (-inf)) = NaN, or 0 / 0: "
                "subtract 0 where the largest lse is -inf, and give such a row the output 0"
            )
        finite = lses[torch.isfinite(lses)]
        if finite.numel() and finite.abs().max() > 80:
            return (
                "exp(lse) overflows for large scores: subtract the largest lse of each row first, exp(lse_s - m) <= 1"
            )
    m = lses.amax(dim=0)
    m_safe = torch.where(m == NEG_INF, torch.zeros_like(m), m)
    w = torch.exp(lses - m_safe)
    normalised = w / torch.where(w.sum(0) == 0, torch.ones_like(m), w.sum(0))
    with np.errstate(all="ignore"):
        if not _close(got_out, out):
            candidates = {
                "each split's output is already normalised over its own keys: weigh it by exp(lse_s - lse), its "
                "share of the whole softmax, not equally (a plain mean ignores how much mass each split holds)":
                    outputs.mean(dim=0),
                "the weights exp(lse_s - m) must be divided by their sum: the weights of the splits add up to 1":
                    (w[..., None] * outputs).sum(dim=0),
                "the weights have one value per row, shape (splits, ..., len_q): give them a last axis, "
                "w[..., None], to scale the rows of the outputs": _maybe(lambda: (normalised * outputs).sum(dim=0)),
            }
            for text, value in candidates.items():
                if _close(got_out, value):
                    return text
        if not _close(got_lse, lse):
            for text, value in {
                "lse is the log-sum-exp of the splits' lse, m + log(Σ exp(lse_s - m)), not their max": m,
                "lse is the log-sum-exp of the splits' lse, m + log(Σ exp(lse_s - m)), not their sum": lses.sum(0),
            }.items():
                if _close(got_lse, value):
                    return text
    return None


def tiled_mistake(query, key, value, kv_lens, got, block_size=None) -> str | None:
    """Name the usual mistake that explains ``got``, the student's padded attention, if one does."""
    try:
        got = torch.as_tensor(got).double()
    except (TypeError, ValueError, RuntimeError):
        return None
    q, k, v = (torch.as_tensor(t).double() for t in (query, key, value))
    len_k, d = k.shape[-2], q.shape[-1]
    expected = padded_attention(q, k, v, kv_lens)
    if got.shape != expected.shape:
        return None
    lens = torch.full((q.shape[0],), len_k) if kv_lens is None else torch.as_tensor(kv_lens).long()
    if torch.isnan(got).any() and not torch.isnan(expected).any():
        if (lens == 0).any() and torch.isnan(got[lens == 0]).any():
            return (
                "a source with kv_len = 0 has l = 0 at the end, and acc / l = 0 / 0 = NaN: its output is 0 "
                "(divide by torch.where(l == 0, 1, l))"
            )
        return None
    variants = [
        (padded_attention(q, k, v, kv_lens, scale=1.0), "scale the scores by 1/√d (d = the query size)"),
        (padded_attention(q, k, v, kv_lens, scale=1.0 / d), "scale the scores by 1/√d, not 1/d"),
    ]
    if kv_lens is not None:
        variants += [
            (padded_attention(q, k, v, None), "keys past kv_lens[b] are padding: set their scores to -inf"),
            (
                padded_attention(q, k, v, (lens + 1).clamp(max=len_k)),
                "key number kv_lens[b] is already padding: keep keys j < kv_lens[b], not j <= kv_lens[b]",
            ),
        ]
    if block_size:
        full = len_k // block_size * block_size
        if 0 < full < len_k:
            cut = lens.clamp(max=full)
            variants.append(
                (
                    padded_attention(q[..., :, :], k[..., :full, :], v[..., :full, :], cut),
                    "the last block is missing: when len_k is not a multiple of block_size, the last block is "
                    "shorter; loop over range(0, len_k, block_size)",
                )
            )
    for wrong, hint in variants:
        if not _close(wrong, expected) and _close(got, wrong, atol=1e-5):
            return hint
    return None


def triton_mistake(query, key, value, kv_lens, got, block_m: int = 16, block_n: int = 16) -> str | None:
    """Name the usual mistake that explains ``got``, the output of the student's kernel, if one does."""
    try:
        got = torch.as_tensor(got).double()
    except (TypeError, ValueError, RuntimeError):
        return None
    q, k, v = (torch.as_tensor(t).double() for t in (query, key, value))
    batch, len_k = q.shape[0], k.shape[-2]
    lens = torch.full((batch,), len_k) if kv_lens is None else torch.as_tensor(kv_lens).long()
    expected = padded_attention(q, k, v, lens)
    if got.shape != expected.shape:
        return None
    if torch.isnan(got).any():
        if (lens == 0).any() and torch.isnan(got[lens == 0]).any():
            return (
                "a sequence with kv_len = 0 gives NaN: either a block with no real key made "
                "exp(-inf - (-inf)) (stop the loop at kv_len), or the output divided 0 by l = 0 (its output is 0)"
            )
        return (
            "NaN in the output. The usual causes: a tl.load or tl.store without mask= touched memory past a "
            "tensor's end or past kv_len (NaN here); or exp overflowed, or got -inf - (-inf): m_new is the max "
            "over the keys, tl.maximum(m_i, tl.max(s, axis=1)), and exp takes s - m_new"
        )
    # Keys of the last block past kv_len, loaded as 0 (other=0.0) but not masked: score 0, value 0.
    ragged = (-(-lens // block_n) * block_n).clamp(min=0)
    longest = int(ragged.max())
    k0 = torch.zeros(*k.shape[:2], longest, k.shape[-1], dtype=k.dtype)
    v0 = torch.zeros_like(k0)
    for b in range(batch):
        n = int(lens[b])
        k0[b, :, :n], v0[b, :, :n] = k[b, :, :n], v[b, :, :n]
    leaky = padded_attention(q, k0, v0, ragged)
    if not _close(leaky, expected) and _close(got, leaky, atol=1e-4):
        return "the keys of the last block past kv_len got weight: set their scores to -inf (tl.where(key_ok, s, ...))"
    if _close(got, padded_attention(q, k, v, lens, scale=1.0), atol=1e-4):
        return "multiply the scores by scale (1/√d)"
    # Rows past len_q of a head's last query block, stored without a mask, land on the next head's first rows.
    len_q = q.shape[-2]
    spill = -len_q % block_m
    wrong = ~torch.isclose(got, expected, rtol=1e-5, atol=1e-4).all(dim=-1).reshape(-1, len_q)  # (batch*heads, len_q)
    if spill and wrong.any() and not wrong[0].any() and not wrong[:, spill:].any():
        return (
            "the first rows of every head but the first are overwritten: the last block of queries runs past "
            "len_q into the next head's output. Store with mask=row_ok[:, None]"
        )
    return None


# -- the self-checks -----------------------------------------------------------------------


def _state_of(c: Check, result, what: str):
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 3,
        f"{what} should return three tensors, (m, l, acc)",
        got=describe(result),
    )
    return tuple(c.array(t, name) for t, name in zip(result, ("m", "l", "acc")))


def check_online_softmax_update(update: Callable) -> None:
    """Check ``online_softmax_update(m_i, l_i, acc, scores, values) -> (m_new, l_new, acc_new)``."""
    c = Check("online_softmax_update")
    g = torch.Generator().manual_seed(60)
    s1 = torch.randn(2, 3, generator=g, dtype=torch.float64)  # 2 query rows, a block of 3 keys
    s2 = torch.randn(2, 4, generator=g, dtype=torch.float64) + 2.0  # a second block, with larger scores
    v1 = torch.randn(3, 5, generator=g, dtype=torch.float64)
    v2 = torch.randn(4, 5, generator=g, dtype=torch.float64)

    start = empty_state((2,), 5)
    first = c.call(update, *start, s1, v1)
    hint = update_mistake(*start, s1, v1, first)
    m, l_i, acc = _state_of(c, first, "online_softmax_update")
    expected = softmax_state(s1, v1)
    c.shape(acc, (2, 5), "acc for 2 query rows and values of size 5", hint)
    c.close(m, expected[0], "m after the first block (its row max)", hint)
    c.close(l_i, expected[1], "l after the first block", hint)
    c.close(acc, expected[2], "acc after the first block", hint)

    state = tuple(torch.as_tensor(t) for t in first)
    second = c.call(update, *state, s2, v2)
    hint = update_mistake(*expected, s2, v2, second)
    m, l_i, acc = _state_of(c, second, "online_softmax_update")
    expected = softmax_state(torch.cat([s1, s2], -1), torch.cat([v1, v2], -2))
    c.close(m, expected[0], "m after a second block with larger scores", hint)
    c.close(l_i, expected[1], "l after a second block with larger scores", hint)
    c.close(acc, expected[2], "acc after a second block with larger scores", hint)

    masked = torch.tensor([[NEG_INF, NEG_INF, NEG_INF], [0.5, NEG_INF, 1.0]], dtype=torch.float64)
    got = c.call(update, *empty_state((2,), 5), masked, v1)
    hint = update_mistake(*empty_state((2,), 5), masked, v1, got)
    m, l_i, acc = _state_of(c, got, "online_softmax_update")
    c.finite(np.concatenate([l_i, acc.ravel()]), "l and acc after a fully masked row (all scores -inf)", hint)
    c.close(l_i, [0.0, float(softmax_state(masked, v1)[1][1])], "l when row 0 is fully masked", hint)
    c.done()


def check_merge_softmax_states(merge: Callable) -> None:
    """Check ``merge_softmax_states(m1, l1, acc1, m2, l2, acc2) -> (m, l, acc)``."""
    c = Check("merge_softmax_states")
    g = torch.Generator().manual_seed(61)
    s = torch.randn(3, 7, generator=g, dtype=torch.float64) * 2
    s[1, :4] += 5.0  # row 1: the first part holds the larger scores; row 2: the second part
    s[2, 4:] += 5.0
    v = torch.randn(7, 2, generator=g, dtype=torch.float64)
    a, b = softmax_state(s[:, :4], v[:4]), softmax_state(s[:, 4:], v[4:])
    got = c.call(merge, *a, *b)
    hint = merge_states_mistake(a, b, got)
    m, l_i, acc = _state_of(c, got, "merge_softmax_states")
    expected = softmax_state(s, v)
    c.close(m, expected[0], "m of the merged state (the joint max)", hint)
    c.close(l_i, expected[1], "l of the merged state, for keys 0-3 merged with keys 4-6", hint)
    c.close(acc, expected[2], "acc of the merged state", hint)

    empty = empty_state((3,), 2)
    got = c.call(merge, *a, *empty)
    hint = merge_states_mistake(a, empty, got)
    merged = _state_of(c, got, "merge_softmax_states")
    c.finite(np.concatenate([merged[1], merged[2].ravel()]), "merging a state with an empty one", hint)
    c.close(merged[2], a[2], "acc after merging with an empty state (it should not change)", hint)

    got = c.call(merge, *empty, *empty)
    hint = merge_states_mistake(empty, empty, got)
    merged = _state_of(c, got, "merge_softmax_states")
    c.finite(np.concatenate([merged[1], merged[2].ravel()]), "merging two empty states (m = -inf)", hint)
    c.done()


def check_combine_splits(combine: Callable) -> None:
    """Check ``combine_splits(outputs, lses) -> (out, lse)`` on 3 uneven splits, large scores and empty splits."""
    c = Check("combine_splits")
    g = torch.Generator().manual_seed(62)
    scores = torch.randn(4, 11, generator=g, dtype=torch.float64) * 2  # 4 query rows, 11 keys
    values = torch.randn(11, 3, generator=g, dtype=torch.float64)
    scores[1] += 1000.0  # row 1: scores in the thousands
    scores[2, :6] = NEG_INF  # row 2: its first two splits hold only masked keys
    scores[3] = NEG_INF  # row 3: no key at all
    sizes = [2, 4, 5]
    outputs, lses = split_results(scores, values, sizes)
    result = c.call(combine, outputs, lses, hint=lambda err: (
        "the weights have one value per row: w[..., None] scales the rows of the outputs"
        if "size of tensor" in str(err) else None))
    hint = combine_mistake(outputs, lses, result)
    c.true(isinstance(result, (tuple, list)) and len(result) == 2, "combine_splits should return (out, lse)",
           got=describe(result), hint=hint)
    out, lse = c.array(result[0], "out"), c.array(result[1], "lse")
    full_lse = torch.logsumexp(scores, dim=-1)
    full_out = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0) @ values
    c.shape(out, (4, 3), "out, for splits of 2, 4 and 5 keys, 4 rows, d_v = 3", hint)
    if hint and not (np.allclose(out, full_out, atol=1e-6) and np.allclose(lse[:3], full_lse[:3])):
        c.fail(hint, got=f"out: {difference(out, full_out)}; lse: {difference(lse, full_lse)}")  # the mistake first
    c.finite(out, "out (rows with scores near 1000, a row with two empty splits, a row with no key)", hint)
    c.close(out[:3], full_out[:3], "out of rows 0-2, compared with attention over all 11 keys", hint)
    c.close(out[3], full_out[3], "out of row 3, whose every split is empty (it should be 0)", hint)
    c.shape(lse, (4,), "lse", hint)
    c.close(lse[:3], full_lse[:3], "lse of rows 0-2, compared with logsumexp over all 11 scores", hint)
    c.true(bool(lse[3] == NEG_INF), "the lse of a row with no key at all is -inf", got=describe(lse[3]), hint=hint)
    c.done()


def check_tiled_attention(tiled: Callable) -> None:
    """Check ``tiled_attention(query, key, value, kv_lens=None, block_size=16) -> output``."""
    c = Check("tiled_attention")
    g = torch.Generator().manual_seed(62)
    q = torch.randn(2, 1, 3, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 1, 10, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 1, 10, 6, generator=g, dtype=torch.float64)
    got = c.array(c.call(tiled, q, k, v, block_size=4), "tiled_attention(q, k, v, block_size=4)")
    hint = tiled_mistake(q, k, v, None, got, 4) or (
        "the scores of a block are query @ key_blockᵀ / √d; each block goes through your online_softmax_update "
        "(its self-check must pass), and acc / l_i comes once, after the loop"
    )
    c.shape(got, (2, 1, 3, 6), "output for 2 batches, 1 head, 3 queries and values of size 6", hint)
    c.close(got, padded_attention(q, k, v), "output with blocks of 4 keys (10 keys: 4 + 4 + 2)", hint)

    lens = [7, 0]
    got = c.array(c.call(tiled, q, k, v, kv_lens=lens, block_size=4), "tiled_attention with kv_lens=[7, 0]")
    hint = tiled_mistake(q, k, v, lens, got, 4)
    c.finite(got, "output with kv_lens=[7, 0] (the second source is empty)", hint)
    c.close(got, padded_attention(q, k, v, lens), "output with kv_lens=[7, 0]", hint)
    c.done()


def check_triton_attention(attend: Callable) -> None:
    """Check the kernel through its launcher ``triton_attention(query, key, value, kv_lens=None)``."""
    c = Check("flash_forward_kernel")
    g = torch.Generator().manual_seed(63)
    q = torch.randn(2, 1, 19, 16, generator=g)
    k = torch.randn(2, 1, 21, 16, generator=g)
    v = torch.randn(2, 1, 21, 16, generator=g)
    got = c.array(c.call(attend, q, k, v), "triton_attention(q, k, v)")
    hint = triton_mistake(q, k, v, None, got)
    c.shape(got, (2, 1, 19, 16), "output for 19 queries", hint)
    c.finite(got, "output for 19 queries and 21 keys (blocks of 16: both ragged)", hint)
    c.close(got, padded_attention(q, k, v), "output for 19 queries and 21 keys", hint, atol=1e-5)

    lens = [5, 0]
    got = c.array(c.call(attend, q, k, v, kv_lens=lens), "triton_attention with kv_lens=[5, 0]")
    hint = triton_mistake(q, k, v, lens, got)
    c.finite(got, "output with kv_lens=[5, 0] (the second source is empty)", hint)
    c.close(got, padded_attention(q, k, v, lens), "output with kv_lens=[5, 0]", hint, atol=1e-5)
    c.done()
