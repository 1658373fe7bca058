"""Self-checks of exercise 01, attention from the formula.

from course_lib.checks import check_softmax, check_score_std, check_attention, check_alignment
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from ..attention import scaled_dot_product_attention as _reference_attention
from ..attention import softmax as _reference_softmax
from ._common import Check, describe

__all__ = [
    "attention_error_hint",
    "attention_mistake",
    "online_mistake",
    "check_alignment",
    "check_attention",
    "check_online_update",
    "check_score_std",
    "check_softmax",
    "softmax_mistake",
]


def softmax_mistake(x: np.ndarray, got, axis: int) -> str | None:
    """Name the usual softmax mistake that explains ``got`` (the student's ``softmax(x, axis)``), if one does."""
    try:
        with np.errstate(all="ignore"):
            return _softmax_mistake(np.asarray(x, dtype=float), np.asarray(got, dtype=float), axis)
    except (TypeError, ValueError):  # not an array of numbers: nothing to diagnose
        return None


def _softmax_mistake(x: np.ndarray, got: np.ndarray, axis: int) -> str | None:
    if got.shape != x.shape:
        return "keep the input's shape: reduce with keepdims=True so that the division broadcasts"
    with np.errstate(all="ignore"):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        if np.allclose(got, e / e.sum(), atol=1e-6):
            return "you divided by the sum of the whole array; sum along `axis` only (keepdims=True)"
        for other in range(-x.ndim, 0):
            if other % x.ndim != axis % x.ndim and np.allclose(got, _reference_softmax(x, axis=other), atol=1e-6):
                return f"you normalised along axis {other}; use the `axis` argument in both max and sum"
    if not np.all(np.isfinite(got)):
        for name, shift in (
            ("mean", np.mean(x, axis=axis, keepdims=True)),
            ("min", np.min(x, axis=axis, keepdims=True)),
            ("first element", np.take(x, [0], axis=axis)),
        ):
            e = np.exp(x - shift)
            if np.allclose(got, e / e.sum(axis=axis, keepdims=True), equal_nan=True):
                return (
                    f"you shifted each row by its {name}: then the largest exponent can still be huge "
                    "(exp(750) overflows). Shift by the row's max, so that every exponent is at most 0"
                )
        shifted = np.exp(x - x.max())
        if np.allclose(got, shifted / shifted.sum(axis=axis, keepdims=True), equal_nan=True):
            return (
                "subtract each row's own max, np.max(x, axis=axis, keepdims=True), not the max of the whole "
                "array: a row far below that max underflows to 0 / 0"
            )
        return "exp() overflows for large scores: subtract each row's max (keepdims=True) before exp"
    return None


def _keepdims_hint(err: Exception) -> str | None:
    """The keepdims hint, only for the broadcast error that a reduction without keepdims causes."""
    if isinstance(err, ValueError) and "broadcast" in str(err):
        return (
            "np.max(x, axis=axis) drops that axis, so (3, 5) - (3,) cannot broadcast: "
            "reduce with keepdims=True, which keeps it as size 1, (3, 1)"
        )
    return None


def check_softmax(softmax: Callable) -> None:
    """Check a numpy ``softmax(x, axis=-1)`` on a few public cases."""
    c = Check("softmax")
    x = np.array([[0.0, 1.0, 2.0]])
    got = c.array(c.call(softmax, x.copy()), "softmax([[0, 1, 2]])")
    c.close(got, [[0.090, 0.245, 0.665]], "softmax([[0, 1, 2]])", softmax_mistake(x, got, -1), atol=5e-4)

    x = np.random.default_rng(0).normal(size=(3, 5))
    got = c.array(c.call(softmax, x.copy(), hint=_keepdims_hint), "softmax of a (3, 5) array")
    c.shape(got, x.shape, "softmax of a (3, 5) array", "the output has the input's shape")
    c.close(got.sum(axis=-1), np.ones(3), "the row sums of softmax(x)", softmax_mistake(x, got, -1))
    c.true(bool(np.all(got >= 0)), "softmax gave negative weights", got=describe(got))

    x = np.random.default_rng(1).normal(size=(4, 2))
    got = c.array(c.call(softmax, x.copy(), axis=0), "softmax(x, axis=0)")
    c.close(got, _reference_softmax(x, axis=0), "softmax(x, axis=0)", softmax_mistake(x, got, 0))

    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]])
    with np.errstate(all="ignore"):
        got = c.array(c.call(softmax, x.copy()), "softmax of large scores")
    hint = "exp(1000) overflows to inf: subtract each row's max (keepdims=True) before exp"
    c.finite(got, "softmax of [[1000, 1001, 1002], [-1000, -1001, -1002]]", hint)
    c.close(got, _reference_softmax(x), "softmax of large scores", softmax_mistake(x, got, -1) or hint)

    x = np.array([[0.0, 0.0, 0.0, 1000.0], [1000.0, 0.0, 0.0, 0.0], [-1000.0, 4.0, 0.0, 2.0]])
    with np.errstate(all="ignore"):
        got = c.array(c.call(softmax, x.copy()), "softmax of rows with a large spread")
    hint = softmax_mistake(x, got, -1) or "shift each row by its max, the only shift that keeps every exponent <= 0"
    c.finite(got, "softmax of [[0, 0, 0, 1000], [1000, 0, 0, 0], [-1000, 4, 0, 2]]", hint)
    c.close(got, _reference_softmax(x), "softmax of rows with a large spread", hint)

    x = np.array([[3.0, 1.0, 2.0]])
    kept = x.copy()
    c.call(softmax, x)
    c.true(
        bool(np.array_equal(x, kept)),
        "softmax changed its input array",
        got=f"x became {x.tolist()}",
        hint="`x -= x.max(...)` modifies the caller's array; write `shifted = x - x.max(...)` instead",
    )
    c.done()


def check_score_std(score_std: Callable) -> None:
    """Check ``score_std(d, num_pairs, seed) -> (raw std, scaled std)`` for d = 64."""
    c = Check("score_std")
    result = c.call(score_std, 64, num_pairs=4000, seed=1)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2,
        "score_std should return two numbers: (std of q·k, std of q·k / √d)",
        got=describe(result),
    )
    raw, scaled = (float(np.asarray(r)) for r in result)
    hint = None
    if abs(raw - 64) < 8:
        hint = "that is the variance (≈ d); return the standard deviation (≈ √d)"
    elif abs(raw - 1) < 0.15:
        hint = "the raw scores should be the dot products q·k, one per pair: np.sum(q * k, axis=-1)"
    c.true(abs(raw - 8.0) < 0.8, "the std of q·k for d = 64 should be close to √64 = 8", got=round(raw, 3), hint=hint)
    hint = "divide the scores by √d, not by d" if abs(scaled - 1 / 8) < 0.05 else "divide the scores by √d"
    c.true(abs(scaled - 1.0) < 0.1, "the std of q·k / √d should be close to 1", got=round(scaled, 3), hint=hint)
    again = c.call(score_std, 64, num_pairs=4000, seed=1)
    c.true(
        [float(np.asarray(r)) for r in again] == [raw, scaled],
        "two calls with the same seed gave different results",
        hint="draw from rng = np.random.default_rng(seed), not from np.random directly",
    )
    c.done()


def attention_mistake(query, key, value, output, weights) -> str | None:
    """Name the usual attention mistake that explains ``(output, weights)``, if one does.

    ``query`` ``(..., len_q, d)``, ``key`` ``(..., len_k, d)``, ``value`` ``(..., len_k, d_v)``;
    ``output`` and ``weights`` are what the student's function returned, whatever they are.
    """
    try:
        with np.errstate(all="ignore"):
            return _attention_mistake(query, key, value, output, weights)
    except (TypeError, ValueError):  # not arrays of numbers: nothing to diagnose
        return None


def _attention_mistake(query, key, value, output, weights) -> str | None:
    q, k, v = (np.asarray(t, dtype=float) for t in (query, key, value))
    d, kt = q.shape[-1], np.swapaxes(k, -1, -2)
    output, weights = np.asarray(output, dtype=float), np.asarray(weights, dtype=float)
    scaled = q @ kt / np.sqrt(d)
    expected_w = _reference_softmax(scaled)

    def same(scores: np.ndarray, axis: int = -1) -> bool:
        return weights.shape == scores.shape and np.allclose(weights, _reference_softmax(scores, axis), atol=1e-6)

    if weights.shape == scaled.shape and np.allclose(weights, _reference_softmax(q @ kt) / np.sqrt(d), atol=1e-6):
        return (
            "you divided by √d after the softmax, so each row sums to 1/√d: divide the scores by √d, then apply softmax"
        )
    if same(q @ kt):
        return "the scores are not scaled: divide Q Kᵀ by √d (d = the query/key size)"
    if same(q @ kt / d):
        return "divide the scores by √d, not by d"
    if any(n != d and same(q @ kt / np.sqrt(n)) for n in (q.shape[-2], k.shape[-2], v.shape[-1])):
        return "scale by √d where d is the query/key size (the last axis of the query), not another length"
    if k.shape[-2] == d and same(q @ k / np.sqrt(d)):
        return "the scores are Q Kᵀ: transpose the keys (np.swapaxes(key, -1, -2))"
    if same(scaled, axis=-2):
        return "the softmax runs over the queries; it must run over the keys (the last axis), so rows sum to 1"
    if weights.shape == scaled.shape and np.allclose(weights, scaled, atol=1e-6):
        return "the weights are the raw scores: apply softmax to the scaled scores"
    if weights.shape == expected_w.shape[:-2] + expected_w.shape[-1:-3:-1] and weights.shape != expected_w.shape:
        return "the weights are transposed: they are (len_q, len_k), one row per query"
    if output.shape != expected_w.shape[:-1] + v.shape[-1:] and output.shape[-2:] == expected_w.shape[-2:]:
        return "you returned the weights first: return (output, weights), in that order"
    return None


def attention_error_hint(error_type: str, error_text: str, query, key) -> str | None:
    """The usual cause of an exception raised by a batched attention, only when the exception shows it.

    ``error_type`` and ``error_text`` are the exception's class name and message; ``query``
    ``(..., len_q, d)`` and ``key`` ``(..., len_k, d)`` are the arrays (numpy or torch) it was given.
    The ``key.T`` hint is given only when ``query @ key.T`` raises this very error.
    """
    text = error_text.lower()
    if "einstein" in text or "einsum" in text or "subscripts" in text:
        return (
            "einsum's subscripts must name every axis of each operand: write the batch axes as '...', "
            "e.g. '...qd,...kd->...qk'"
        )
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            query @ key.T  # what a full-axis transpose gives
    except Exception as err:  # noqa: BLE001 (comparing with whatever the student's code raised)
        if type(err).__name__ == error_type and str(err) and str(err) in error_text:
            return (
                "key.T reverses every axis of a batched array: transpose only the last two, "
                "np.swapaxes(key, -1, -2) (torch: key.transpose(-2, -1))"
            )
    return None


def check_attention(attention: Callable) -> None:
    """Check ``scaled_dot_product_attention(query, key, value) -> (output, weights)``."""
    c = Check("scaled_dot_product_attention")
    rng = np.random.default_rng(2)
    q, k, v = rng.normal(size=(2, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 5))
    result = c.call(attention, q, k, v)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2,
        "return two arrays: (output, weights)",
        got=describe(result),
    )
    out, w = c.array(result[0], "output"), c.array(result[1], "weights")
    hint = attention_mistake(q, k, v, out, w)
    c.shape(w, (2, 3), "weights for 2 queries and 3 keys", hint or "one row per query, one column per key")
    c.shape(out, (2, 5), "output for 2 queries and values of size 5", hint or "output = weights @ value")
    c.close(w.sum(axis=-1), np.ones(2), "the row sums of the weights", hint or "softmax over the keys (last axis)")
    expected_out, expected_w = _reference_attention(q, k, v, return_weights=True)
    c.close(w, expected_w, "the weights", hint)
    c.close(out, expected_out, "the output", hint or "output = weights @ value")

    q, k, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 6, 4)), rng.normal(size=(2, 6, 2))
    result = c.call(attention, q, k, v, hint=lambda err: attention_error_hint(type(err).__name__, str(err), q, k))
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2,
        "return two arrays: (output, weights)",
        got=describe(result),
    )
    out, w = c.array(result[0], "output"), c.array(result[1], "weights")
    hint = attention_mistake(q, k, v, out, w)
    c.shape(w, (2, 3, 6), "weights for a batch of 2, 3 queries and 6 keys", hint)
    expected_out, expected_w = _reference_attention(q, k, v, return_weights=True)
    c.close(out, expected_out, "the output for a batch", hint)
    c.done()


def check_alignment(align: Callable) -> None:
    """Check ``align(target, source) -> index of the most attended source word per target word``."""
    c = Check("align")
    source = 3.0 * np.eye(4)  # four clearly different source words
    target = source[[2, 0, 3]] + 0.1  # each target word is close to one source word
    got = c.call(align, target, source)
    best = c.array(got, "align(target, source)")
    c.shape(
        best,
        (3,),
        "align() for 3 target words and 4 source words",
        "one index per target word: the queries come from the target, the keys from the source; "
        "take the argmax over the keys (the last axis)",
    )
    c.true(np.issubdtype(best.dtype, np.integer), "the indices should be integers", got=describe(best))
    c.true(
        best.tolist() == [2, 0, 3],
        "target word i resembles source word [2, 0, 3][i], so it should attend to it most",
        got=best.tolist(),
        hint="queries = target vectors, keys = values = source vectors; argmax of each row of the weights",
    )
    c.done()


def _online_reference(state, query, key, value, *, rescale: str = "both", running_max: bool = True):
    """The online-softmax update, or one of its usual mistakes.

    ``rescale``: which old sums (row_sum "l", acc) are multiplied by ``exp(m_old - m_new)``: "both" (right), "acc", "l",
    "none", or "inverse" (both, by ``exp(m_new - m_old)``); ``running_max=False`` keeps the chunk's max.
    """
    scores = query @ np.swapaxes(key, -1, -2) / np.sqrt(query.shape[-1])
    m_chunk = scores.max(axis=-1)
    if state is None:
        p = np.exp(scores - m_chunk[:, None])
        return m_chunk, p.sum(axis=-1), p @ value
    m, total, acc = (np.asarray(t, dtype=float) for t in state)
    m_new = np.maximum(m, m_chunk) if running_max else m_chunk
    p = np.exp(scores - m_new[:, None])
    r = np.exp(m_new - m) if rescale == "inverse" else np.exp(m - m_new)
    r_l = r if rescale in ("both", "l", "inverse") else np.ones_like(r)
    r_acc = r if rescale in ("both", "acc", "inverse") else np.ones_like(r)
    return m_new, r_l * total + p.sum(axis=-1), r_acc[:, None] * acc + p @ value


def online_mistake(state, query, key, value, got) -> str | None:
    """Name the usual online-softmax mistake that explains ``got`` (the student's new state), if one does."""
    try:
        with np.errstate(all="ignore"):
            m, total, acc = (np.asarray(t, dtype=float) for t in got)
            q, k, v = (np.asarray(t, dtype=float) for t in (query, key, value))
            if state is None:
                return None
            mistakes = [
                ({"rescale": "none"}, "when the max grows, multiply the old row_sum and acc by exp(m_old − m_new)"),
                ({"rescale": "acc"}, "you rescaled acc but not row_sum: multiply both by exp(m_old − m_new)"),
                ({"rescale": "l"}, "you rescaled row_sum but not acc: multiply both by exp(m_old − m_new)"),
                (
                    {"rescale": "inverse"},
                    "the old sums shrink when the max grows: their factor is exp(m_old − m_new) ≤ 1, not its inverse",
                ),
                (
                    {"running_max": False},
                    "row_max is the running max: np.maximum(old row_max, this chunk's max), not the chunk's max",
                ),
            ]
            for kwargs, hint in mistakes:
                wrong = _online_reference(state, q, k, v, **kwargs)
                if all(a.shape == b.shape and np.allclose(a, b, atol=1e-8) for a, b in zip((m, total, acc), wrong)):
                    return hint
    except (TypeError, ValueError):
        return None
    return None


def _first_chunk_mistake(query, key, value, got) -> str | None:
    """The hint for a wrong first state, only when it matches a known mistake."""
    scores = query @ key.T
    with np.errstate(all="ignore"):
        unscaled = scores.max(axis=-1), np.exp(scores - scores.max(axis=-1, keepdims=True)).sum(axis=-1)
        raw = np.exp(scores / np.sqrt(query.shape[-1])).sum(axis=-1)
    try:
        row_max, row_sum = (np.asarray(t, dtype=float) for t in got[:2])
        if (
            row_max.shape == unscaled[0].shape
            and np.allclose(row_max, unscaled[0])
            and np.allclose(row_sum, unscaled[1])
        ):
            return "the scores are query @ keyᵀ / √d: divide by √d before the max and the exp"
        if row_sum.shape == raw.shape and np.allclose(row_sum, raw):
            return "row_sum sums exp(score − row_max), not exp(score): subtract the max before exp"
    except (TypeError, ValueError):
        return None
    return None


def check_online_update(online_update: Callable) -> None:
    """Check ``online_update(state, query, key, value) -> (row_max, row_sum, acc)``, the online softmax of one chunk."""
    c = Check("online_update")
    rng = np.random.default_rng(5)
    q, v = rng.normal(size=(2, 4)), rng.normal(size=(5, 3))
    k = rng.normal(size=(5, 4))
    k[3:] *= 6.0  # the second chunk holds the largest scores: the running max grows

    def state_of(result, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c.true(
            isinstance(result, (tuple, list)) and len(result) == 3,
            f"{what} should return three arrays: (row_max, row_sum, acc)",
            got=describe(result),
        )
        names = ("row_max", "row_sum", "acc")
        return tuple(c.array(t, f"{what}[{i}] ({name})") for i, (t, name) in enumerate(zip(result, names)))

    got = state_of(c.call(online_update, None, q, k[:3], v[:3]), "online_update(None, query, key[:3], value[:3])")
    first = _online_reference(None, q, k[:3], v[:3])
    for name, g, e, shape in zip(("row_max", "row_sum", "acc"), got, first, ((2,), (2,), (2, 3))):
        c.shape(g, shape, f"{name} after the first chunk (2 queries, values of size 3)")
        c.close(g, e, f"{name} after the first chunk", _first_chunk_mistake(q, k[:3], v[:3], got))

    state = tuple(t.copy() for t in first)
    got = state_of(c.call(online_update, state, q, k[3:], v[3:]), "online_update(state, query, key[3:], value[3:])")
    hint = online_mistake(first, q, k[3:], v[3:], got)
    second = _online_reference(first, q, k[3:], v[3:])
    for name, g, e in zip(("row_max", "row_sum", "acc"), got, second):
        c.close(g, e, f"{name} after a second chunk with larger scores", hint)
    c.true(
        all(np.array_equal(a, b) for a, b in zip(state, first)),
        "online_update changed the state it was given",
        hint="`acc *= r` modifies the caller's arrays; build new ones: `acc = r[:, None] * acc + ...`",
    )
    output = got[2] / got[1][:, None]
    c.close(output, _reference_attention(q, k, v), "acc / row_sum after both chunks (the attention output)", hint)
    c.done()
