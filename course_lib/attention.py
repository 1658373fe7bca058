"""Softmax and scaled dot-product attention, for numpy arrays and torch tensors.

    Attention(Q, K, V) = softmax(Q Kᵀ / √d) V

Queries come from the sequence that is being produced (a decoder), keys and values
from the sequence that is being read (an encoder), so ``len_q`` and ``len_k`` may
differ. Both functions accept numpy arrays and torch tensors and return the same
kind of object, in the same dtype, as they were given.

Conventions (docs/design.md § 3):

* a boolean mask means True = may attend, as in
  ``torch.nn.functional.scaled_dot_product_attention``;
* a query row whose keys are all masked gets zero weights and a zero output, never
  NaN;
* masking uses ``-inf`` inside a float32 (or wider) computation, so no finite
  constant can overflow fp16.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

Array = Any  # a numpy.ndarray or a torch.Tensor

_HALF_NUMPY = (np.float16,)
_HALF_TORCH = (torch.float16, torch.bfloat16)


def _is_torch(x: Array) -> bool:
    return isinstance(x, torch.Tensor)


def _as_float(x: Array) -> Array:
    """Promote integer and bool inputs to the default float type; keep floats."""
    if _is_torch(x):
        return x if x.is_floating_point() else x.to(torch.get_default_dtype())
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _upcast(x: Array) -> Array:
    """Half precision is computed in float32: exp and sums lose too much in fp16."""
    if _is_torch(x):
        return x.float() if x.dtype in _HALF_TORCH else x
    return x.astype(np.float32) if x.dtype in _HALF_NUMPY else x


def _safe_softmax(x: Array, axis: int) -> Array:
    """Stable softmax in the dtype of ``x``; rows that are all ``-inf`` give zeros."""
    if _is_torch(x):
        # Subtracting the row max changes nothing mathematically but keeps exp() <= 1.
        # It is a constant shift, so no gradient needs to flow through it.
        m = x.amax(dim=axis, keepdim=True).detach()
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        e = torch.exp(x - m)
        s = e.sum(dim=axis, keepdim=True)
        return e / torch.where(s == 0, torch.ones_like(s), s)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    return e / np.where(s == 0, 1.0, s)


def softmax(x: Array, axis: int = -1) -> Array:
    """Numerically stable softmax along ``axis``.

    Args:
        x: numpy array or torch tensor of any shape. Integer input is promoted to
            the default float type.
        axis: the axis that sums to one.

    Returns:
        An array of the same type, shape and (floating) dtype as ``x``. A slice
        whose entries are all ``-inf`` (every key masked) gives zeros, not NaN.
    """
    x = _as_float(x)
    ndim = x.dim() if _is_torch(x) else x.ndim
    if not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"softmax: axis {axis} is out of range for an input of shape {tuple(x.shape)}")
    dtype = x.dtype
    out = _safe_softmax(_upcast(x), axis)
    return out.to(dtype) if _is_torch(out) else out.astype(dtype, copy=False)


def _shape(x: Array) -> tuple[int, ...]:
    return tuple(x.shape)


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        return None


def _check_attention_inputs(query: Array, key: Array, value: Array, attn_mask: Array | None) -> tuple[int, ...]:
    """Raise a ``ValueError`` naming the shapes when the inputs cannot go together.

    Returns the broadcast batch shape ``(...)`` of the three inputs.
    """
    kinds = {_is_torch(t) for t in (query, key, value)}
    if len(kinds) != 1:
        raise ValueError("query, key and value must all be numpy arrays or all be torch tensors, not a mix")
    shapes = f"query {_shape(query)}, key {_shape(key)}, value {_shape(value)}"
    if min(len(_shape(t)) for t in (query, key, value)) < 2:
        raise ValueError(f"attention needs at least 2-D inputs (..., len, dim); got {shapes}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query and key must have the same last dimension (head_dim), got {shapes}: "
            f"{query.shape[-1]} != {key.shape[-1]}"
        )
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"key and value must have the same length len_k (dimension -2), got {shapes}: "
            f"{key.shape[-2]} != {value.shape[-2]}"
        )
    batch = _broadcast(_shape(query)[:-2], _shape(key)[:-2], _shape(value)[:-2])
    if batch is None:
        raise ValueError(f"the batch dimensions of query, key and value do not broadcast: {shapes}")
    dtypes = {t.dtype for t in (query, key, value)}
    if len(dtypes) != 1:
        raise ValueError(f"query, key and value must share one dtype, got {sorted(map(str, dtypes))}")
    dtype = query.dtype
    floating = dtype.is_floating_point if _is_torch(query) else np.issubdtype(dtype, np.floating)
    if not floating:
        raise ValueError(f"attention needs floating-point inputs, got dtype {dtype}")
    if attn_mask is not None:
        if _is_torch(attn_mask) != _is_torch(query):
            raise ValueError("attn_mask must be the same kind of array (numpy or torch) as the query")
        scores = (*batch, query.shape[-2], key.shape[-2])
        if _broadcast(_shape(attn_mask), scores) != scores:
            raise ValueError(
                f"attn_mask of shape {_shape(attn_mask)} does not broadcast to the scores' shape "
                f"(..., len_q, len_k) = {scores}"
            )
    return batch


def _is_bool(mask: Array) -> bool:
    return mask.dtype == torch.bool if _is_torch(mask) else mask.dtype == np.bool_


def scaled_dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    attn_mask: Array | None = None,
    *,
    scale: float | None = None,
    return_weights: bool = False,
) -> Array | tuple[Array, Array]:
    """Scaled dot-product attention, ``softmax(query keyᵀ · scale) value``.

    Args:
        query: ``(..., len_q, head_dim)``, e.g. from the decoder.
        key: ``(..., len_k, head_dim)``, e.g. from the encoder.
        value: ``(..., len_k, dim_v)``, from the same source as ``key``.
        attn_mask: optional, broadcastable to ``(..., len_q, len_k)``. A bool mask
            means True = may attend. A float mask is added to the scores.
        scale: the factor on the scores; ``1 / sqrt(head_dim)`` by default.
        return_weights: also return the attention weights.

    Returns:
        ``output`` of shape ``(..., len_q, dim_v)``, or ``(output, weights)`` with
        ``weights`` of shape ``(..., len_q, len_k)``. Both have the input's array
        type and dtype. Half-precision inputs are computed in float32. A query row
        with every key masked gets zero weights and a zero output.

    Raises:
        ValueError: when shapes, dtypes or the mask do not fit; the message names
            the shapes.
    """
    _check_attention_inputs(query, key, value, attn_mask)
    dtype = query.dtype
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    q, k, v = (_upcast(t) for t in (query, key, value))
    if _is_torch(q):
        scores = (q @ k.transpose(-2, -1)) * scale
    else:
        scores = (q @ np.swapaxes(k, -1, -2)) * scale
    if attn_mask is not None:
        if _is_bool(attn_mask):
            neg_inf = torch.tensor(-math.inf, dtype=scores.dtype, device=scores.device) if _is_torch(q) else -np.inf
            scores = torch.where(attn_mask, scores, neg_inf) if _is_torch(q) else np.where(attn_mask, scores, neg_inf)
        else:
            scores = scores + _upcast(attn_mask)
    weights = _safe_softmax(scores, axis=-1)
    out = weights @ v
    if _is_torch(out):
        out, weights = out.to(dtype), weights.to(dtype)
    else:
        out, weights = out.astype(dtype, copy=False), weights.astype(dtype, copy=False)
    return (out, weights) if return_weights else out
