"""Self-checks of exercise 03, multi-head attention.

from course_lib.checks import (check_split_heads, check_merge_heads, check_multi_head_attention,
                               check_from_torch_state_dict)

The ``*_mistake`` functions name the usual mistake behind a wrong answer, by comparing it
with what each mistake would have given; the hidden tests reuse them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..multihead import MultiHeadAttention, merge_heads, split_heads
from ._common import Check, describe
from .ex01 import attention_error_hint

__all__ = [
    "check_from_torch_state_dict",
    "check_grouped_query_attention",
    "gqa_mistake",
    "gqa_reference",
    "check_merge_heads",
    "check_multi_head_attention",
    "check_split_heads",
    "heads_error_hint",
    "conversion_mistake",
    "merge_heads_mistake",
    "multi_head_mistake",
    "split_mistake",
]

RESHAPE_ONLY = (
    "a reshape alone has the right shape but cuts the tokens, not the features, into groups: view the last axis "
    "as (num_heads, head_dim), then transpose(1, 2)"
)


def _same(got, expected) -> bool:
    """Whether ``got`` is a tensor or array equal to ``expected``."""
    if expected is None or not isinstance(got, (torch.Tensor, np.ndarray)):
        return False
    got = torch.as_tensor(got).detach().double()
    return got.shape == expected.shape and bool(torch.allclose(got, expected.double(), atol=1e-5))


def _numbered(batch: int, length: int, d_model: int) -> torch.Tensor:
    """``x[b, i, f] = 100·b + 10·i + f`` as floats (``len, d_model <= 10``): every entry says where it came from."""
    b = torch.arange(batch)[:, None, None] * 100.0
    return b + 10.0 * torch.arange(length)[None, :, None] + torch.arange(d_model)[None, None, :] * 1.0


# -- task 1: split_heads ---------------------------------------------------------------------


def split_mistake(x: torch.Tensor, num_heads: int, got) -> str | None:
    """Name the usual mistake behind ``split_heads(x, num_heads)`` returning ``got``, if one does."""
    try:
        return _split_mistake(x, num_heads, got)
    except (TypeError, ValueError, RuntimeError):
        return None


def _split_mistake(x, num_heads, got) -> str | None:
    b, length, d = x.shape
    head_dim = d // num_heads
    if _same(got, x.reshape(b, num_heads, length, head_dim)):
        return RESHAPE_ONLY
    if _same(got, x.view(b, length, head_dim, num_heads).permute(0, 3, 1, 2)):
        return (
            "head h should own the consecutive features h·head_dim … (h+1)·head_dim − 1; yours takes every "
            "num_heads-th feature: view the last axis as (num_heads, head_dim), in that order"
        )
    if _same(got, x.view(b, length, num_heads, head_dim).permute(0, 2, 3, 1)):
        return "the result should be (batch, num_heads, len, head_dim): you swapped len and head_dim; transpose(1, 2)"
    if _same(got, x.view(b, length, head_dim, num_heads).transpose(1, 2)):
        return "num_heads and head_dim are swapped: head_dim = d_model // num_heads"
    if _same(got, x.view(b, length, num_heads, head_dim)):
        return "move the heads before the tokens: transpose(1, 2) after the view"
    return None


def check_split_heads(split_heads: Callable) -> None:
    """Check ``split_heads(x, num_heads) -> (batch, num_heads, len, head_dim)``."""
    c = Check("split_heads")
    x = _numbered(2, 3, 8)  # len 3, 2 heads of width 4
    got = c.array(c.call(split_heads, x.clone(), 2), "split_heads(x, 2)")
    mistake = split_mistake(x, 2, torch.as_tensor(got))
    c.shape(got, (2, 2, 3, 4), "split_heads of x (batch=2, len=3, d_model=8) into 2 heads",
            mistake or "(batch, num_heads, len, head_dim), with head_dim = d_model // num_heads")
    c.close(got, split_heads_reference(x, 2), "the heads of x", mistake or RESHAPE_ONLY)

    x = _numbered(1, 4, 8)  # len == head_dim == 4: a wrong transpose keeps the shape
    got = c.array(c.call(split_heads, x.clone(), 2), "split_heads(x, 2) with len == head_dim")
    c.close(got, split_heads_reference(x, 2), "the heads of x (len=4, d_model=8, 2 heads: len == head_dim)",
            split_mistake(x, 2, torch.as_tensor(got)) or "transpose the heads and the tokens: transpose(1, 2)")

    c.count += 1
    try:
        split_heads(torch.zeros(1, 3, 10), 4)
    except ValueError:
        pass
    except NotImplementedError:
        raise
    except Exception as err:  # noqa: BLE001 (any other exception is not the ValueError asked for)
        c.fail("d_model = 10 with 4 heads should raise ValueError", got=f"{type(err).__name__}: {err}"[:200],
               hint="check d_model % num_heads first, and raise ValueError naming the shape")
    else:
        c.fail("d_model = 10 with 4 heads should raise ValueError", got="no error",
               hint="check d_model % num_heads first, and raise ValueError naming the shape")
    c.done()


def split_heads_reference(x: torch.Tensor, num_heads: int) -> np.ndarray:
    return split_heads(x, num_heads).numpy()


# -- task 2: merge_heads ---------------------------------------------------------------------


def merge_heads_mistake(x: torch.Tensor, got) -> str | None:
    """Name the usual mistake behind ``merge_heads(x)`` returning ``got``, if one does."""
    try:
        return _merge_heads_mistake(x, got)
    except (TypeError, ValueError, RuntimeError):
        return None


def _merge_heads_mistake(x, got) -> str | None:
    b, h, length, head_dim = x.shape
    if _same(got, x.reshape(b, length, h * head_dim)):
        return (
            "reshape without transpose mixes the tokens: row 0 gets head 0's first tokens instead of token 0 of "
            "every head; transpose(1, 2) first, then reshape"
        )
    if _same(got, x.permute(0, 2, 3, 1).reshape(b, length, h * head_dim)):
        return "the features come out interleaved: transpose(1, 2) gives (batch, len, heads, head_dim), then reshape"
    if _same(got, x.transpose(2, 3).reshape(b, length, h * head_dim)):
        return "transpose the heads and the tokens, axes 1 and 2 (not 2 and 3), then reshape"
    if isinstance(got, (torch.Tensor, np.ndarray)) and tuple(got.shape) == (b, h * length, head_dim):
        return "merge the heads into the features: (batch, len, num_heads · head_dim)"
    return None


def check_merge_heads(merge_heads: Callable) -> None:
    """Check ``merge_heads(x) -> (batch, len, num_heads * head_dim)``."""
    c = Check("merge_heads")
    hint = "transpose(1, 2) first, then reshape (view fails on the transposed tensor: it is not contiguous)"
    x = torch.randn(2, 2, 3, 4, generator=torch.Generator().manual_seed(20))  # (batch, heads, len, head_dim)
    got = c.array(c.call(merge_heads, x.clone(), hint=hint), "merge_heads(x)")
    mistake = merge_heads_mistake(x, torch.as_tensor(got))
    c.shape(got, (2, 3, 8), "merge_heads of (batch=2, heads=2, len=3, head_dim=4)",
            mistake or "(batch, len, num_heads * head_dim)")
    c.close(got, merge_heads_reference(x), "the merged heads", mistake or hint)

    x = split_heads(_numbered(1, 4, 8), 2).contiguous()  # len == head_dim == 4
    got = c.array(c.call(merge_heads, x.clone(), hint=hint), "merge_heads(x) with len == head_dim")
    c.close(got, _numbered(1, 4, 8).numpy(), "merge_heads(split_heads(x)) should give x back (len == head_dim == 4)",
            merge_heads_mistake(x, torch.as_tensor(got)) or hint)
    c.done()


def merge_heads_reference(x: torch.Tensor) -> np.ndarray:
    return merge_heads(x).numpy()


# -- task 3: multi-head attention ------------------------------------------------------------


def _heads_attention(query, key, value, num_heads, *, scale=None, axis=-1):
    q, k, v = (split_heads(t.double(), num_heads) for t in (query, key, value))
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale is None else scale)
    weights = torch.softmax(scores, dim=axis)
    return weights @ v, weights  # output not merged: (batch, heads, len_q, head_dim_v)


def multi_head_reference(query, key, value, num_heads) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output, weights)`` in float64, as ``multi_head_attention`` should return them."""
    out, weights = _heads_attention(query, key, value, num_heads)
    return merge_heads(out), weights


def multi_head_mistake(query, key, value, num_heads, output, weights) -> str | None:
    """Name the usual mistake behind ``multi_head_attention``'s ``(output, weights)``, if one does."""
    try:
        return _multi_head_mistake(query, key, value, num_heads, output, weights)
    except (TypeError, ValueError, RuntimeError):
        return None


def _multi_head_mistake(query, key, value, num_heads, output, weights) -> str | None:
    d_model = query.shape[-1]
    head_dim = d_model // num_heads
    b, len_q = query.shape[:2]
    right_out, right_w = _heads_attention(query, key, value, num_heads)
    shape = tuple(weights.shape) if isinstance(weights, (torch.Tensor, np.ndarray)) else None
    if shape == (b, len_q, key.shape[1]) and _same(weights, right_w.mean(1)):
        return "return the weights of every head, (batch, num_heads, len_q, len_k), not their mean"
    if shape == (b, head_dim, len_q, key.shape[1]) and head_dim != num_heads:
        return "num_heads and head_dim are swapped: split into num_heads heads of head_dim = d_model // num_heads"
    if num_heads > 1 and _same(weights, _heads_attention(query, key, value, num_heads, scale=math.sqrt(d_model))[1]):
        return "scale by √head_dim, the width of each head's dot products, not √d_model"
    if _same(weights, _heads_attention(query, key, value, num_heads, scale=1.0)[1]):
        return "the scores are not scaled: divide each head's q kᵀ by √head_dim"
    if _same(weights, _heads_attention(query, key, value, num_heads, axis=-2)[1]):
        return "the softmax runs over the queries; it must run over the keys (dim=-1), so that each row sums to 1"
    if _same(weights, right_w):
        if isinstance(output, (torch.Tensor, np.ndarray)) and tuple(output.shape) == tuple(right_out.shape):
            return "merge the heads: the output is (batch, len_q, d_v), as merge_heads(weights @ v) gives"
        b_, h, lq, dv = right_out.shape
        if _same(output, right_out.reshape(b_, lq, h * dv)):
            return "the heads are merged by a reshape without transpose, which mixes the tokens: use merge_heads"
        if value.shape[-1] != d_model and output is not None and tuple(output.shape)[-1:] == (d_model,):
            return "the output is d_v wide, the width of the values, which may differ from d_model"
    return None


def heads_error_hint(err: Exception, query, key, num_heads: int) -> str | None:
    """The usual cause of an exception raised by ``multi_head_attention``, only when the exception shows it.

    ``query`` ``(batch, len_q, d_model)`` and ``key`` ``(batch, len_k, d_model)`` are what the function was
    given; the student's code meets them split, ``(batch, heads, len, head_dim)``.
    """
    return attention_error_hint(
        type(err).__name__, str(err), split_heads(query, num_heads), split_heads(key, num_heads)
    )


def check_multi_head_attention(multi_head_attention: Callable) -> None:
    """Check ``multi_head_attention(query, key, value, num_heads) -> (output, weights)``."""
    c = Check("multi_head_attention")
    g = torch.Generator().manual_seed(21)
    query, key, value = (torch.randn(2, n, 8, generator=g) * s for n, s in ((3, 2.0), (5, 2.0), (5, 1.0)))
    result = c.call(multi_head_attention, query, key, value, 2, hint=lambda err: heads_error_hint(err, query, key, 2))
    c.true(isinstance(result, (tuple, list)) and len(result) == 2, "return two tensors: (output, weights)",
           got=describe(result))
    out, w = c.array(result[0], "the output"), c.array(result[1], "the weights")
    mistake = multi_head_mistake(query, key, value, 2, torch.as_tensor(out), torch.as_tensor(w))
    expected_out, expected_w = multi_head_reference(query, key, value, 2)
    c.shape(w, (2, 2, 3, 5), "weights for (batch=2, heads=2, len_q=3, len_k=5)",
            mistake or "one (len_q, len_k) map per head: (batch, num_heads, len_q, len_k)")
    c.shape(out, (2, 3, 8), "output for (batch=2, len_q=3) and values of width 8", mistake or "merge the heads")
    c.close(w.sum(axis=-1), np.ones((2, 2, 3)), "the row sums of the weights", mistake or "softmax over the keys")
    c.close(w, expected_w.numpy(), "the weights", mistake, atol=1e-5)
    c.close(out, expected_out.numpy(), "the output", mistake, atol=1e-5)

    value = torch.randn(2, 5, 6, generator=g)  # d_v = 6 ≠ d_model = 8
    result = c.call(multi_head_attention, query, key, value, 2,
                    hint="the values may be d_v wide, d_v ≠ d_model: merge_heads handles any width")
    out = c.array(result[0], "the output")
    expected_out, _ = multi_head_reference(query, key, value, 2)
    c.close(out, expected_out.numpy(), "the output for values of width d_v = 6 (d_model = 8)",
            multi_head_mistake(query, key, value, 2, torch.as_tensor(out), torch.as_tensor(result[1]))
            or "the output is (batch, len_q, d_v)", atol=1e-5)
    c.done()


# -- task 4: from_torch_state_dict -------------------------------------------------------------

EXPECTED_KEYS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight")
BIAS_KEYS = ("q_proj.bias", "k_proj.bias", "v_proj.bias", "out_proj.bias")


def random_torch_mha(embed_dim: int, num_heads: int, *, kdim: int | None = None, bias: bool = True,
                     seed: int = 0) -> nn.MultiheadAttention:
    """An ``nn.MultiheadAttention`` whose every number is random (PyTorch starts its biases at 0)."""
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, kdim=kdim, vdim=kdim, batch_first=True).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / 2)
    return mha


def expected_conversion(mha: nn.MultiheadAttention) -> dict[str, torch.Tensor]:
    return {k: t.detach().clone() for k, t in MultiHeadAttention.from_torch(mha).state_dict().items()}


def conversion_mistake(state: dict, got) -> str | None:
    """Name the usual mistake behind ``from_torch_state_dict(state)`` returning ``got``, if one does."""
    try:
        return _conversion_mistake(state, got)
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError):
        return None


def _conversion_mistake(state, got) -> str | None:
    if not isinstance(got, dict):
        return None
    bias = "in_proj_bias" in state
    wanted = set(EXPECTED_KEYS + (BIAS_KEYS if bias else ()))
    if set(got) != wanted:
        missing, extra = sorted(wanted - set(got)), sorted(set(got) - wanted)
        if bias and missing and all(k.endswith(".bias") for k in missing):
            return f"the biases are missing ({', '.join(missing)}): in_proj_bias holds b_q, b_k, b_v, in that order"
        if not bias and extra:
            return f"this layer has no biases (bias=False): do not return {', '.join(extra)}"
        return f"the keys should be {sorted(wanted)}; missing {missing}, unexpected {extra}"
    if "in_proj_weight" in state:
        parts = dict(zip("qkv", state["in_proj_weight"].chunk(3)))
        if _same(got["q_proj.weight"], parts["k"]) or _same(got["k_proj.weight"], parts["q"]):
            return "in_proj_weight stacks W_q, W_k, W_v in that order, along dim 0: chunk(3) gives q, k, v"
        if _same(got["q_proj.weight"], parts["q"].T):
            return "nothing to transpose: nn.MultiheadAttention stores its weights like nn.Linear, (out, in)"
        if tuple(torch.as_tensor(got["q_proj.weight"]).shape) != tuple(parts["q"].shape):
            return (
                f"q_proj.weight should be (d_model, d_model) = {tuple(parts['q'].shape)}: cut in_proj_weight "
                "(3·d_model, d_model) into three along dim 0"
            )
    if bias:
        b = dict(zip("qkv", state["in_proj_bias"].chunk(3)))
        if not all(_same(got[f"{n}_proj.bias"], b[n]) for n in "qkv"):
            return "in_proj_bias stacks b_q, b_k, b_v in that order: chunk(3) gives q, k, v"
        if not _same(got["out_proj.bias"], state["out_proj.bias"]):
            return "copy out_proj.bias as it is"
    if not _same(got["out_proj.weight"], state["out_proj.weight"]):
        return "copy out_proj.weight as it is: out_proj is an ordinary nn.Linear"
    return None


def check_from_torch_state_dict(from_torch_state_dict: Callable) -> None:
    """Check ``from_torch_state_dict(mha.state_dict())`` on the packed and the separate layouts."""
    c = Check("from_torch_state_dict")
    for kdim, what in ((None, "packed: kdim = embed_dim"), (5, "separate: kdim = 5 ≠ embed_dim")):
        mha = random_torch_mha(6, 2, kdim=kdim, seed=22)
        state = mha.state_dict()
        got = c.call(from_torch_state_dict, {k: t.clone() for k, t in state.items()},
                     hint="in_proj_weight when kdim = embed_dim, q_proj_weight, k_proj_weight, v_proj_weight otherwise")
        c.true(isinstance(got, dict), "return a dict of tensors", got=describe(got))
        mistake = conversion_mistake(state, got)
        c.true(set(got) == set(EXPECTED_KEYS + BIAS_KEYS), f"{what}: wrong keys", got=sorted(got),
               hint=mistake or f"the keys are {sorted(EXPECTED_KEYS + BIAS_KEYS)}")
        ours = MultiHeadAttention(6, 2, d_context=kdim)
        try:
            ours.load_state_dict(got)
        except RuntimeError as err:
            c.fail(f"{what}: MultiHeadAttention cannot load the converted weights", got=str(err).splitlines()[-1][:200],
                   hint=mistake)
        g = torch.Generator().manual_seed(23)
        y, src = torch.randn(2, 3, 6, generator=g), torch.randn(2, 4, kdim or 6, generator=g)
        with torch.no_grad():
            expected = mha(y, src, src, need_weights=False)[0]
            c.close(ours(y, context=src), expected.numpy(), f"{what}: the output of the converted layer", mistake,
                    atol=1e-5)

    mha = random_torch_mha(6, 3, bias=False, seed=24)
    got = c.call(from_torch_state_dict, mha.state_dict(), hint="a layer built with bias=False has no in_proj_bias")
    c.true(isinstance(got, dict) and set(got) == set(EXPECTED_KEYS), "bias=False: wrong keys",
           got=sorted(got) if isinstance(got, dict) else describe(got),
           hint=conversion_mistake(mha.state_dict(), got) or f"without biases the keys are {sorted(EXPECTED_KEYS)}")
    c.done()


# -- task 5: grouped-query attention -------------------------------------------------------------


def gqa_reference(query, key, value, num_heads: int, num_kv_heads: int, *, order: str = "interleave"):
    """``(output, weights)`` of grouped-query attention in float64, or of a usual mistake (``order``:
    "interleave" (right), "tile" (``repeat``: query head h uses key head h % num_kv_heads), "first" (every
    query head uses key head 0)), ``None`` if the shapes do not fit."""
    if num_kv_heads <= 0 or num_heads % num_kv_heads or key.shape[-1] % num_kv_heads or query.shape[-1] % num_heads:
        return None
    group = num_heads // num_kv_heads
    q = split_heads(query.double(), num_heads)
    k, v = split_heads(key.double(), num_kv_heads), split_heads(value.double(), num_kv_heads)
    if q.shape[-1] != k.shape[-1]:
        return None
    if order == "interleave":
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    elif order == "tile":
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    else:
        k, v = k[:, :1].expand(-1, num_heads, -1, -1), v[:, :1].expand(-1, num_heads, -1, -1)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return merge_heads(weights @ v), weights


def gqa_mistake(query, key, value, num_heads, num_kv_heads, output, weights) -> str | None:
    """Name the usual grouped-query mistake behind ``(output, weights)``, if one does."""
    try:
        right = gqa_reference(query, key, value, num_heads, num_kv_heads)
        if right is None or _same(weights, right[1]):
            return None
        if _same(weights, gqa_reference(query, key, value, num_heads, num_kv_heads, order="tile")[1]):
            return (
                "the key/value heads are tiled (repeat: kv heads 0, 1, 0, 1, ...), so query head 1 reads key head 1; "
                "each key/value head must serve a group of consecutive query heads: repeat_interleave (0, 0, 1, 1)"
            )
        if _same(weights, gqa_reference(query, key, value, num_heads, num_kv_heads, order="first")[1]):
            return "every query head reads key/value head 0: query head h uses key/value head h // group"
        head_dim = query.shape[-1] // num_heads
        scaled = gqa_reference(query * math.sqrt(head_dim) / math.sqrt(query.shape[-1]), key, value, num_heads,
                               num_kv_heads)
        if scaled is not None and _same(weights, scaled[1]):
            return "scale by √head_dim, the width of each head's dot products, not √d_model"
    except (TypeError, ValueError, RuntimeError, IndexError):
        return None
    return None


def check_grouped_query_attention(grouped_query_attention: Callable) -> None:
    """Check ``grouped_query_attention(query, key, value, num_heads, num_kv_heads) -> (output, weights)``."""
    c = Check("grouped_query_attention")
    g = torch.Generator().manual_seed(31)
    query = torch.randn(2, 3, 4 * 2, generator=g) * 2  # 4 query heads of width 2
    key = torch.randn(2, 5, 2 * 2, generator=g) * 2  # 2 key/value heads
    value = torch.randn(2, 5, 2 * 3, generator=g)  # value heads of width 3
    result = c.call(grouped_query_attention, query, key, value, 4, 2,
                    hint=lambda err: attention_error_hint(type(err).__name__, str(err), split_heads(query, 4),
                                                          split_heads(key, 2)))
    c.true(isinstance(result, (tuple, list)) and len(result) == 2, "return two tensors: (output, weights)",
           got=describe(result))
    out, w = c.array(result[0], "the output"), c.array(result[1], "the weights")
    mistake = gqa_mistake(query, key, value, 4, 2, torch.as_tensor(out), torch.as_tensor(w))
    expected_out, expected_w = gqa_reference(query, key, value, 4, 2)
    c.shape(w, (2, 4, 3, 5), "weights for 4 query heads, 2 key/value heads, len_q=3, len_k=5",
            mistake or "one map per query head: (batch, num_heads, len_q, len_k)")
    c.shape(out, (2, 3, 12), "output for 4 query heads and value heads of width 3",
            mistake or "(batch, len_q, num_heads · head_dim_v): every query head contributes its output")
    c.close(w, expected_w.numpy(), "the weights of the 4 query heads", mistake, atol=1e-5)
    c.close(out, expected_out.numpy(), "the output", mistake, atol=1e-5)

    c.count += 1
    key, value = torch.randn(2, 5, 3 * 2, generator=g), torch.randn(2, 5, 3 * 3, generator=g)  # 3 kv heads
    try:
        grouped_query_attention(query, key, value, 4, 3)
    except ValueError:
        pass
    except NotImplementedError:
        raise
    except Exception as err:  # noqa: BLE001 (whatever it is, it is not the ValueError asked for)
        c.fail("num_kv_heads=3 does not divide num_heads=4: expected a ValueError",
               got=f"{type(err).__name__}: {err}"[:200],
               hint="check num_heads % num_kv_heads first, and raise ValueError naming both")
    else:
        c.fail("num_kv_heads=3 does not divide num_heads=4: expected a ValueError", got="no error",
               hint="check num_heads % num_kv_heads first, and raise ValueError naming both")
    c.done()
