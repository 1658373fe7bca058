"""Self-checks of exercise 04, masking.

from course_lib.checks import (check_padding_mask, check_causal_mask, check_attn_mask_from_torch,
                               check_decoder_masks, check_masked_attention)

The ``*_mistake`` functions name the usual mistake behind a wrong mask or a wrong
attention result; the hidden tests reuse them, so that a student reads the same
diagnosis in the notebook and in the grader's feedback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..attention import scaled_dot_product_attention as _reference_attention
from ._common import Check, describe, difference

__all__ = [
    "as_bool_mask",
    "causal_mask_mistake",
    "check_attn_mask_from_torch",
    "check_causal_mask",
    "check_decoder_masks",
    "check_left_padded_self_mask",
    "left_padded_mistake",
    "left_padded_reference",
    "check_masked_attention",
    "check_padding_mask",
    "cross_mask_mistake",
    "masked_attention_mistake",
    "padding_mask_mistake",
    "self_mask_mistake",
    "torch_mask_mistake",
]


def as_bool_mask(value: Any) -> np.ndarray | str:
    """``value`` as a numpy bool array, or a sentence saying why it is not a bool tensor."""
    if not isinstance(value, torch.Tensor):
        return f"a torch bool tensor was expected, got {describe(value)}"
    if value.dtype != torch.bool:
        return (
            f"the mask should be a bool tensor (True = may attend), got dtype {value.dtype}: a comparison such as "
            "`<` gives bool directly; do not convert it with .int() or .float() (attention functions read a "
            "number mask as an additive mask)"
        )
    return value.detach().cpu().numpy()


def _same(got: np.ndarray, candidate: np.ndarray) -> bool:
    return got.shape == candidate.shape and bool(np.array_equal(got, candidate))


def _broadcast(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        return None


# -- task 1: padding_mask ---------------------------------------------------------------------


def padding_mask_mistake(lengths, max_len: int, got: np.ndarray) -> str | None:
    """Name the usual mistake that explains ``got``, the student's ``padding_mask(lengths, max_len)``."""
    lengths = np.asarray(lengths)
    positions = np.arange(max_len)
    expected = positions[None, :] < lengths[:, None]
    if got.shape == expected.shape[::-1] and got.shape != expected.shape:
        return "the mask is transposed: one row per sequence, (batch, max_len)"
    if got.shape == (len(lengths), int(lengths.max(initial=0))) and got.shape != expected.shape:
        return "use max_len columns, not the longest length: the batch may be padded further than its longest sequence"
    if got.shape != expected.shape:
        return f"the mask is (batch, max_len) = {expected.shape}: one row per sequence, one column per position"
    if _same(got, ~expected):
        return "the mask is inverted: True must mean a real token (may attend) and False padding"
    if _same(got, positions[None, :] <= lengths[:, None]):
        return "off by one: a sequence of length n has its real tokens at positions 0 … n-1, so j is real when j < n"
    if _same(got, positions[None, :] < lengths[:, None] - 1):
        return "off by one: a sequence of length n has n real tokens, at positions 0 … n-1 (j < n)"
    return None


def check_padding_mask(padding_mask: Callable) -> None:
    """Check ``padding_mask(lengths, max_len) -> (batch, max_len)`` bool, True at real tokens."""
    c = Check("padding_mask")
    lengths = torch.tensor([3, 1, 4])
    got = c.call(padding_mask, lengths.clone(), 4)
    mask = as_bool_mask(got)
    if isinstance(mask, str):
        c.fail("padding_mask(tensor([3, 1, 4]), 4) should return a bool tensor", got=mask)
    expected = np.arange(4)[None, :] < np.array([3, 1, 4])[:, None]
    hint = padding_mask_mistake(lengths, 4, mask)
    c.shape(mask, (3, 4), "padding_mask(tensor([3, 1, 4]), 4)", hint)
    c.true(
        _same(mask, expected),
        "padding_mask(tensor([3, 1, 4]), 4): wrong values",
        got=mask.astype(int).tolist(),
        hint=hint or f"expected {expected.astype(int).tolist()}: position j is real when j < length",
    )
    got = as_bool_mask(c.call(padding_mask, torch.tensor([2, 0]), 5))
    hint = padding_mask_mistake([2, 0], 5, got) if not isinstance(got, str) else got
    c.true(
        not isinstance(got, str) and _same(got, np.arange(5)[None, :] < np.array([2, 0])[:, None]),
        "padding_mask(tensor([2, 0]), 5) should have 5 columns, and an empty sequence (length 0) a row of False",
        got=got if isinstance(got, str) else got.astype(int).tolist(),
        hint=hint,
    )
    try:
        c.call(padding_mask, torch.tensor([2, 6]), 4)
        raised = False
    except ValueError:
        raised = True
    c.true(
        raised,
        "padding_mask(tensor([2, 6]), 4) should raise ValueError: a length of 6 does not fit in 4 positions",
        hint="check that every length lies in [0, max_len] first, and raise ValueError naming the lengths",
    )
    c.done()


# -- task 2: causal_mask ----------------------------------------------------------------------


def causal_mask_mistake(len_q: int, len_k: int, got: np.ndarray) -> str | None:
    """Name the usual mistake that explains ``got``, the student's ``causal_mask(len_q, len_k)``."""
    i, j = np.arange(len_q)[:, None], np.arange(len_k)[None, :]
    offset = len_k - len_q
    if got.shape != (len_q, len_k):
        if got.shape == (len_q, len_q) and len_q != len_k:
            return "the mask is (len_q, len_k): one row per query and one column per key, even when len_q ≠ len_k"
        if got.shape == (len_k, len_q):
            return "the mask is transposed: rows are queries, columns are keys, (len_q, len_k)"
        return f"the mask should be (len_q, len_k) = {(len_q, len_k)}"
    if _same(got, j < i + offset):
        return "a token may attend to itself: keep the diagonal (j <= i), not only the strict past (j < i)"
    if _same(got, j > i + offset) or _same(got, j >= i + offset):
        return (
            "the mask is inverted or upside down: True means may attend, and query i may read keys up to itself "
            "(the lower triangle), never the future"
        )
    if offset and _same(got, j <= i):
        return (
            "the mask is aligned top-left; when len_q ≠ len_k align it bottom-right: query i sees keys "
            "j <= i + (len_k - len_q), so that the last query sees every key (the queries are the last len_q "
            "tokens of the sequence)"
        )
    if offset and _same(got, j < i):
        return "top-left aligned and without the diagonal: query i sees keys j <= i + (len_k - len_q)"
    return None


def _causal_reference(len_q: int, len_k: int) -> np.ndarray:
    return np.arange(len_k)[None, :] <= np.arange(len_q)[:, None] + (len_k - len_q)


def check_causal_mask(causal_mask: Callable) -> None:
    """Check ``causal_mask(len_q, len_k=None) -> (len_q, len_k)`` bool, bottom-right aligned."""
    c = Check("causal_mask")
    for len_q, len_k in ((3, 3), (2, 4), (4, 2)):
        mask = as_bool_mask(c.call(causal_mask, len_q, len_k))
        what = f"causal_mask({len_q}, {len_k})"
        if isinstance(mask, str):
            c.fail(f"{what} should return a bool tensor", got=mask)
        expected = _causal_reference(len_q, len_k)
        hint = causal_mask_mistake(len_q, len_k, mask)
        c.shape(mask, (len_q, len_k), what, hint)
        c.true(
            _same(mask, expected),
            f"{what}: wrong values",
            got=mask.astype(int).tolist(),
            hint=hint or f"expected {expected.astype(int).tolist()}",
        )
    mask = as_bool_mask(c.call(causal_mask, 3))
    c.true(
        not isinstance(mask, str) and _same(mask, _causal_reference(3, 3)),
        "causal_mask(3) (len_k left out) should be the square mask causal_mask(3, 3)",
        got=mask if isinstance(mask, str) else describe(mask),
        hint="len_k=None means len_k = len_q",
    )
    c.done()


# -- task 3: attn_mask_from_torch --------------------------------------------------------------


def torch_mask_mistake(key_padding_mask, got: np.ndarray) -> str | None:
    """Name the usual mistake behind ``got``, the student's ``attn_mask_from_torch(key_padding_mask)``."""
    ignore = np.asarray(key_padding_mask)
    batch, len_k = ignore.shape
    if got.shape == (batch, len_k):
        return (
            "add the axes of the heads and the queries, (batch, 1, 1, len_k), so that the mask broadcasts against "
            "scores of shape (batch, heads, len_q, len_k)"
        )
    if got.shape == (batch, 1, len_k):
        return "add a heads axis too: (batch, 1, 1, len_k) broadcasts against (batch, heads, len_q, len_k)"
    if got.shape == (batch, 1, len_k, 1) or got.shape == (batch, len_k, 1, 1):
        return (
            "the padding is on the keys, the last axis: (batch, 1, 1, len_k). With len_k on another axis the mask "
            "hides queries instead of keys"
        )
    if got.shape != (batch, 1, 1, len_k):
        return f"the mask should be (batch, 1, 1, len_k) = {(batch, 1, 1, len_k)}"
    if _same(got[:, 0, 0, :], ignore):
        return (
            "the polarity is not converted: nn.MultiheadAttention's True means 'ignore this key', ours means "
            "'may attend'; invert it with ~"
        )
    return None


def check_attn_mask_from_torch(attn_mask_from_torch: Callable) -> None:
    """Check ``attn_mask_from_torch(key_padding_mask) -> (batch, 1, 1, len_k)``, True = may attend."""
    c = Check("attn_mask_from_torch")
    ignore = torch.tensor([[False, False, True], [False, True, True]])  # True = padding, ignore it
    got = c.call(attn_mask_from_torch, ignore.clone())
    mask = as_bool_mask(got)
    if isinstance(mask, str):
        c.fail("attn_mask_from_torch should return a bool tensor", got=mask)
    hint = torch_mask_mistake(ignore, mask)
    c.shape(mask, (2, 1, 1, 3), "attn_mask_from_torch of a (2, 3) key_padding_mask", hint)
    expected = ~ignore.numpy()[:, None, None, :]
    c.true(
        _same(mask, expected),
        "attn_mask_from_torch: wrong values",
        got=mask[:, 0, 0, :].astype(int).tolist(),
        hint=hint or f"expected {expected[:, 0, 0, :].astype(int).tolist()} (True = real key, may attend)",
    )
    c.done()


# -- task 4: decoder_masks ---------------------------------------------------------------------


def _padding(lengths, max_len: int) -> np.ndarray:
    return np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]


def self_mask_mistake(tgt_lengths, tgt_len: int, got: np.ndarray) -> str | None:
    """Name the usual mistake behind ``got``, the student's decoder self-attention mask."""
    batch = len(tgt_lengths)
    shape = (batch, 1, tgt_len, tgt_len)
    causal = _causal_reference(tgt_len, tgt_len)
    if got.shape in ((tgt_len, tgt_len), (1, 1, tgt_len, tgt_len)) and _same(got.reshape(causal.shape), causal):
        return (
            "that is the causal mask alone: AND it with the target's padding mask, (batch, 1, 1, tgt_len), so that "
            "no token reads a padded position (this also gives the mask its batch axis)"
        )
    if got.shape == (batch, tgt_len, tgt_len):
        return (
            "add a heads axis: (batch, 1, tgt_len, tgt_len). Without it the batch axis lines up with the heads "
            "axis of the scores (batch, heads, len_q, len_k)"
        )
    if got.shape != shape:
        return f"the decoder's self-attention mask should be (batch, 1, tgt_len, tgt_len) = {shape}"
    keys = _padding(tgt_lengths, tgt_len)[:, None, None, :]
    queries = _padding(tgt_lengths, tgt_len)[:, None, :, None]
    candidates = {
        "add the target's padding mask: AND it with the causal mask, so that no token reads a padded position": (
            np.broadcast_to(causal, shape)
        ),
        "decoder self-attention needs the causal mask too: token i must not read the tokens after it": (
            np.broadcast_to(keys, shape)
        ),
        "the padding mask hides keys, the last axis: (batch, 1, 1, tgt_len), not (batch, 1, tgt_len, 1)": (
            queries & causal
        ),
        "combine masks with AND (&): a key may be attended only if every mask allows it, not if one does": (
            keys | causal
        ),
    }
    for message, candidate in candidates.items():
        if _same(got, candidate):
            return message
    return None


def cross_mask_mistake(src_lengths, tgt_lengths, src_len: int, tgt_len: int, got: np.ndarray) -> str | None:
    """Name the usual mistake behind ``got``, the student's decoder cross-attention mask."""
    batch = len(src_lengths)
    if got.shape in ((batch, src_len), (batch, 1, src_len)):
        return "add the axes of heads and queries: (batch, 1, 1, src_len)"
    if got.shape in ((batch, 1, src_len, 1), (batch, src_len, 1, 1)):
        return "the padding mask hides keys, the last axis: (batch, 1, 1, src_len), not (batch, 1, src_len, 1)"
    if got.shape in ((batch, 1, 1, tgt_len), (batch, 1, tgt_len, tgt_len)) and src_len != tgt_len:
        return (
            "that mask has the target's length: cross-attention's keys are the source tokens, so it needs the "
            "source's padding mask, (batch, 1, 1, src_len)"
        )
    full = _broadcast(got, (batch, 1, tgt_len, src_len))
    if full is None:
        return f"the cross-attention mask should be (batch, 1, 1, src_len) = {(batch, 1, 1, src_len)}"
    source = _padding(src_lengths, src_len)[:, None, None, :]
    target = _padding(tgt_lengths, tgt_len)[:, None, None, :]
    if src_len == tgt_len and _same(full, np.broadcast_to(target, full.shape)):
        return (
            "that is the target's padding mask: cross-attention's keys are the source tokens, so it needs the "
            "source's padding mask. (The bug hides when both are padded to the same length)"
        )
    for causal in (_causal_reference(tgt_len, src_len), np.arange(src_len)[None, :] <= np.arange(tgt_len)[:, None]):
        if _same(full, np.broadcast_to(source & causal, full.shape)):
            return (
                "no causal mask in cross-attention: the whole source is known before decoding starts, and target "
                "token i may read every real source token (black must read noir, which comes later)"
            )
    return None


def check_decoder_masks(decoder_masks: Callable) -> None:
    """Check ``decoder_masks(src_lengths, tgt_lengths, src_len, tgt_len) -> (self_mask, cross_mask)``."""
    c = Check("decoder_masks")
    src_lengths, tgt_lengths, src_len, tgt_len = torch.tensor([2, 3]), torch.tensor([4, 2]), 3, 4
    result = c.call(decoder_masks, src_lengths.clone(), tgt_lengths.clone(), src_len, tgt_len)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2,
        "decoder_masks should return two masks: (self_mask, cross_mask)",
        got=describe(result),
    )
    self_mask, cross_mask = (as_bool_mask(m) for m in result)
    for what, mask in (("self_mask", self_mask), ("cross_mask", cross_mask)):
        if isinstance(mask, str):
            c.fail(f"{what} should be a bool tensor", got=mask)
    hint = self_mask_mistake(tgt_lengths, tgt_len, self_mask)
    c.shape(self_mask, (2, 1, 4, 4), "self_mask for 2 targets padded to 4 tokens", hint)
    expected = _padding(tgt_lengths, tgt_len)[:, None, None, :] & _causal_reference(tgt_len, tgt_len)
    c.true(
        _same(self_mask, expected),
        "self_mask: wrong values (target lengths 4 and 2, padded to 4)",
        got=self_mask[:, 0].astype(int).tolist(),
        hint=hint or f"expected {expected[:, 0].astype(int).tolist()}: the target's padding on the keys AND causal",
    )
    hint = cross_mask_mistake(src_lengths, tgt_lengths, src_len, tgt_len, cross_mask)
    expected = _padding(src_lengths, src_len)[:, None, None, :]
    if tuple(cross_mask.shape) == (2, 1, tgt_len, src_len):  # expanded over the queries: equally right
        expected = np.broadcast_to(expected, cross_mask.shape)
    else:
        c.shape(
            cross_mask,
            (2, 1, 1, 3),
            "cross_mask for 2 sources padded to 3 tokens",
            hint or "(batch, 1, 1, src_len), or the same expanded over the queries, (batch, 1, tgt_len, src_len)",
        )
    c.true(
        _same(cross_mask, expected),
        "cross_mask: wrong values (source lengths 2 and 3, padded to 3)",
        got=cross_mask[:, 0, -1].astype(int).tolist(),
        hint=hint or f"expected {expected[:, 0, -1].astype(int).tolist()}: the source's padding mask on the keys",
    )
    c.done()


# -- task 5: masked_attention ------------------------------------------------------------------


def masked_attention_mistake(query, key, value, attn_mask, output, weights) -> str | None:
    """Name the usual mistake that explains ``(output, weights)`` of the student's masked attention.

    ``query``, ``key``, ``value`` and ``attn_mask`` are the tensors the student's function
    was given (``attn_mask`` bool, True = may attend); ``output`` and ``weights`` are what it
    returned, whatever they are.
    """
    try:
        with torch.no_grad():
            return _masked_attention_mistake(query, key, value, attn_mask, output, weights)
    except (TypeError, ValueError, RuntimeError):  # shapes that do not fit: nothing to diagnose
        return None


def _masked_attention_mistake(query, key, value, attn_mask, output, weights) -> str | None:
    if not (isinstance(output, torch.Tensor) and isinstance(weights, torch.Tensor)):
        return None
    scores_shape = (*torch.broadcast_shapes(query.shape[:-2], key.shape[:-2]), query.shape[-2], key.shape[-2])
    if tuple(weights.shape) != scores_shape:
        return (
            f"the weights should have the scores' shape (..., len_q, len_k) = {scores_shape}, got "
            f"{tuple(weights.shape)}: use the mask as given, it broadcasts to the scores' shape by itself"
        )
    if output.dtype != query.dtype or weights.dtype != query.dtype:
        return (
            f"return the input's dtype ({query.dtype}), got {output.dtype} and {weights.dtype}: compute half "
            "precision in float32, then cast the results back with .to(query.dtype)"
        )
    q, k, v = (t.detach().double() for t in (query, key, value))
    w, out = weights.double(), output.double()
    if attn_mask is not None and not (w.isnan().any() or out.isnan().any()):
        expected_w = _reference_attention(q, k, v, attn_mask, return_weights=True)[1]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        renormalised = torch.softmax(scores, dim=-1) * attn_mask
        renormalised = renormalised / renormalised.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        if torch.allclose(w, renormalised, atol=1e-4) and not torch.allclose(w, expected_w, atol=1e-4):
            return (
                "the softmax ran over every key, padding included, and the mask was applied after it: when the "
                "padded keys hold large scores they take all the weight, the real keys' weights underflow to 0, "
                "and renormalising cannot bring them back. Fill the scores with -inf where the mask is False, "
                "before the softmax"
            )
    if w.isnan().any() or out.isnan().any():
        half = (
            " In float16 a fill value of -1e9 rounds to -inf, so it gives the same NaN: compute in float32."
            if query.dtype in (torch.float16, torch.bfloat16)
            else ""
        )
        return (
            "NaN: a query whose keys are all masked has a row of -inf scores, and the textbook softmax computes "
            "0 / 0 there. Give such rows zero weights and a zero output (the lesson's safe softmax)." + half
        )
    mask = torch.broadcast_to(attn_mask, w.shape)
    _, flipped = _reference_attention(q, k, v, ~attn_mask, return_weights=True)
    if torch.allclose(w, flipped, atol=1e-3):
        return "the mask is inverted: True means may attend; fill the scores where the mask is False (~attn_mask)"
    _, unmasked = _reference_attention(q, k, v, return_weights=True)
    if torch.allclose(w, unmasked * mask, atol=1e-3):
        return (
            "the mask was applied after the softmax, so the remaining weights no longer sum to 1: fill the scores "
            "with -inf where the mask is False, before the softmax, which then shares the weight among the "
            "visible keys"
        )
    dead = ~mask.any(dim=-1)  # (..., len_q): the fully masked rows
    if dead.any():
        rows = w[dead]
        if torch.allclose(rows, torch.full_like(rows, 1.0 / w.shape[-1]), atol=1e-3):
            return (
                "a fully masked row spread its weight evenly over every key, padding included: with a finite fill "
                "value (-1e9, finfo.min) every score of that row is equal, so the softmax is uniform. Fill with "
                "-inf and give fully masked rows zero weights"
            )
    if (w[~mask].abs() > 1e-6).any():
        return "masked keys got weight: fill the scores where the mask is False with -inf before the softmax"
    return None


def _qkv(seed: int, shape_q: tuple, shape_k: tuple, d_v: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape_q, generator=g)
    k = torch.randn(*shape_k, generator=g)
    v = torch.randn(*shape_k[:-1], d_v, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _attention_pair(c: Check, masked_attention: Callable, q, k, v, mask, what: str, hint: str | None = None):
    result = c.call(masked_attention, q.clone(), k.clone(), v.clone(), mask, hint=hint)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(t, torch.Tensor) for t in result),
        f"{what}: masked_attention should return two tensors, (output, weights)",
        got=describe(result),
    )
    return result[0], result[1]


def check_masked_attention(masked_attention: Callable) -> None:
    """Check ``masked_attention(query, key, value, attn_mask=None) -> (output, weights)``."""
    c = Check("masked_attention")
    q, k, v = _qkv(0, (2, 3, 4), (2, 5, 4), 3)
    mask = torch.tensor([[True, True, False, True, False], [True, False, False, False, False]])[:, None, :]
    out, w = _attention_pair(c, masked_attention, q, k, v, mask, "a (2, 1, 5) key padding mask")
    expected_out, expected_w = _reference_attention(q, k, v, mask, return_weights=True)
    hint = masked_attention_mistake(q, k, v, mask, out, w)
    c.shape(w.detach().numpy(), (2, 3, 5), "weights for 2 batches, 3 queries and 5 keys", hint)
    c.close(w.detach().numpy(), expected_w.numpy(), "the weights with a key padding mask", hint, atol=1e-5)
    c.close(out.detach().numpy(), expected_out.numpy(), "the output with a key padding mask", hint, atol=1e-5)

    result = c.call(masked_attention, q.clone(), k.clone(), v.clone(), hint="attn_mask=None means no mask at all")
    expected_out = _reference_attention(q, k, v)
    c.close(result[0].detach().numpy(), expected_out.numpy(), "the output without a mask (attn_mask=None)", atol=1e-5)

    q, k, v = _qkv(1, (1, 4, 4), (1, 3, 4), 2)
    causal = torch.arange(3)[None, :] <= torch.arange(4)[:, None] - 1  # (4, 3): query 0 sees no key
    out, w = _attention_pair(c, masked_attention, q, k, v, causal, "a (4, 3) mask whose first row is all False")
    hint = masked_attention_mistake(q, k, v, causal, out, w)
    c.finite(out.detach().numpy(), "the output when query 0 may attend to no key", hint)
    c.close(w.detach().numpy()[0, 0], np.zeros(3), "the weights of a fully masked row", hint)
    c.close(out.detach().numpy()[0, 0], np.zeros(2), "the output of a fully masked row", hint)

    q, k, v = _qkv(2, (2, 2, 8), (2, 3, 8), 4, dtype=torch.float16)
    mask = torch.tensor([[True, False, True], [False, False, False]])[:, None, :]
    try:
        out, w = _attention_pair(c, masked_attention, q, k, v, mask, "float16 inputs")
    except RuntimeError as err:
        hint = "compute half precision in float32 (query.float()...), then cast the results back with .to(query.dtype)"
        if "overflow" in str(err):
            hint = "-1e9 does not exist in float16, whose largest number is 65504: fill with float('-inf')"
        c.fail(f"with float16 inputs (2, 2, 8), masked_attention raised RuntimeError: {err}", hint=hint)
    hint = masked_attention_mistake(q, k, v, mask, out, w)
    c.true(
        out.dtype == torch.float16 and w.dtype == torch.float16,
        "float16 inputs should give float16 outputs",
        got=f"{out.dtype} and {w.dtype}",
        hint=hint,
    )
    c.finite(out.detach().numpy(), "the float16 output with a fully masked row", hint)
    expected_out = _reference_attention(q.double(), k.double(), v.double(), mask)
    c.close(out.double().detach().numpy(), expected_out.numpy(), "the float16 output", hint, atol=5e-3, rtol=5e-3)

    # Padded keys that hold huge content must not change anything.
    q, k, v = _qkv(4, (2, 3, 4), (2, 5, 4), 3)
    mask = torch.tensor([[True, True, True, False, False], [True, True, False, False, False]])[:, None, :]
    k[~mask[:, 0]] *= 100.0
    v[~mask[:, 0]] *= 100.0
    out, w = _attention_pair(c, masked_attention, q, k, v, mask, "padded keys with large scores")
    expected_out, expected_w = _reference_attention(q.double(), k.double(), v.double(), mask, return_weights=True)
    hint = masked_attention_mistake(q, k, v, mask, out, w)
    c.close(
        w.detach().numpy(), expected_w.numpy(), "the weights when the padded keys hold large scores", hint, atol=1e-5
    )
    c.close(
        out.detach().numpy(), expected_out.numpy(), "the output when the padded keys hold large values", hint, atol=1e-4
    )

    # Half precision in float32; float64 as it comes.
    for dtype in (torch.float16, torch.bfloat16):
        q, k, v = _qkv(5, (2, 16, 64), (2, 512, 64), 64, dtype=dtype)
        out, _ = _attention_pair(c, masked_attention, q, k, v, None, f"{dtype} inputs, 512 keys")
        exact = _reference_attention(q.double(), k.double(), v.double())
        in_float32 = _reference_attention(q.float(), k.float(), v.float()).to(dtype).double()
        error, allowed = (out.detach().double() - exact).abs().mean(), 1.5 * (in_float32 - exact).abs().mean()
        c.true(
            out.dtype == dtype and bool(error <= allowed),
            f"{dtype} inputs with 512 keys: the mean error against float64 should stay within float32's "
            f"({allowed.item():.2g}, rounding to {dtype} included)",
            got=f"{out.dtype}, mean |error| {error.item():.2g}",
            hint=(
                "compute in float32 (query.float(), key.float(), value.float()) and cast the results back with "
                ".to(query.dtype): products and sums of 512 terms in half precision lose digits"
                if out.dtype == dtype and bool(error > allowed)
                else None
            ),
        )
    q, k, v = _qkv(6, (2, 3, 8), (2, 7, 8), 4, dtype=torch.float64)
    out, w = _attention_pair(c, masked_attention, q, k, v, None, "float64 inputs")
    expected_out = _reference_attention(q, k, v)
    downcast = out.dtype == torch.float64 and bool(
        torch.allclose(out, _reference_attention(q.float(), k.float(), v.float()).double(), atol=1e-12)
    )
    c.true(
        out.dtype == torch.float64 and bool(torch.allclose(out, expected_out, atol=1e-12, rtol=0)),
        "float64 inputs should be computed in float64 (to 1e-12)",
        got=f"{out.dtype}, {difference(out, expected_out, atol=1e-12, rtol=0)}",
        hint="only half precision is converted to float32; `.float()` on a float64 tensor throws digits away"
        if downcast
        else None,
    )

    q, k, v = (t.requires_grad_() for t in _qkv(3, (2, 3, 4), (2, 4, 4), 2))
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])[:, None, :]
    out, w = _attention_pair(c, masked_attention, q, k, v, mask, "inputs that require grad")
    grads = torch.autograd.grad((out, w), (q, k, v), (torch.ones_like(out), torch.ones_like(w)), allow_unused=True)
    c.true(
        all(g is None or bool(torch.isfinite(g).all()) for g in grads),
        "the gradient contains NaN when a row is fully masked",
        got=", ".join(f"grad of {n}: {describe(g)}" for n, g in zip("qkv", grads)),
        hint=(
            "fix the fully masked rows before the NaN appears, not after: 0 * NaN is NaN in the backward pass "
            "(subtract 0 instead of a row max of -inf, and divide by 1 instead of a zero sum)"
        ),
    )
    c.done()


# -- task 6: left padding -------------------------------------------------------------------------


def left_padded_reference(lengths, max_len: int) -> np.ndarray:
    """``(batch, 1, max_len, max_len)``: key j is real (j >= max_len - length) and j <= i."""
    lengths = np.asarray(lengths)
    real = np.arange(max_len)[None, :] >= (max_len - lengths)[:, None]
    return real[:, None, None, :] & _causal_reference(max_len, max_len)


def left_padded_mistake(lengths, max_len: int, got: np.ndarray) -> str | None:
    """Name the usual mistake behind the student's left-padded mask, if one does."""
    if isinstance(got, str):
        return None
    lengths = np.asarray(lengths)
    causal = _causal_reference(max_len, max_len)
    right = _padding(lengths, max_len)
    left = np.arange(max_len)[None, :] >= (max_len - lengths)[:, None]
    full = _broadcast(got, (len(lengths), 1, max_len, max_len))
    if full is None:
        return "the mask should broadcast to (batch, 1, max_len, max_len): the padding on the keys, the last axis"
    candidates = [
        (
            right[:, None, None, :] & causal,
            "that is the mask of a right-padded batch: with padding first, the real "
            "tokens are the last `length` positions, j >= max_len - length",
        ),
        (
            np.broadcast_to(causal, full.shape),
            "the causal mask alone lets the real tokens read the padding before "
            "them: & the left padding mask on the keys",
        ),
        (left[:, None, None, :] | causal, "combine the two masks with &: a key must be real AND not in the future"),
        (left[:, None, :, None] & causal, "the padding belongs on the keys' axis (the last), not the queries'"),
        (
            (np.arange(max_len)[None, :] > (max_len - lengths)[:, None])[:, None, None, :] & causal,
            "off by one: the first real token sits at position max_len - length, and is real",
        ),
    ]
    for candidate, hint in candidates:
        if _same(full, np.broadcast_to(candidate, full.shape)):
            return hint
    return None


def check_left_padded_self_mask(left_padded_self_mask: Callable) -> None:
    """Check ``left_padded_self_mask(lengths, max_len) -> (batch, 1, max_len, max_len)``."""
    c = Check("left_padded_self_mask")
    lengths, max_len = torch.tensor([3, 1, 4]), 4
    mask = as_bool_mask(c.call(left_padded_self_mask, lengths.clone(), max_len))
    if isinstance(mask, str):
        c.fail("left_padded_self_mask should return a bool tensor", got=mask)
    hint = left_padded_mistake(lengths, max_len, mask)
    c.shape(mask, (3, 1, 4, 4), "left_padded_self_mask(tensor([3, 1, 4]), 4)", hint)
    expected = left_padded_reference(lengths, max_len)
    problem = "wrong values for lengths [3, 1, 4] padded on the left to 4"
    c.true(
        _same(mask, expected),
        f"{problem}: {hint}" if hint else problem,
        got=mask[:, 0].astype(int).tolist(),
        hint=None
        if hint
        else f"expected {expected[:, 0].astype(int).tolist()}: key j is real (j >= max_len - length), j <= i",
    )
    c.done()
