"""Boolean attention masks and conversions between mask conventions.

Every mask here means **True = may attend / real token**, the convention of
``torch.nn.functional.scaled_dot_product_attention``. ``nn.MultiheadAttention``'s
``key_padding_mask`` means the opposite (True = ignore); ``to_torch_key_padding_mask``
and ``from_torch_key_padding_mask`` convert between the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Array = Any  # a numpy.ndarray or a torch.Tensor


def padding_mask(lengths: Sequence[int] | Array, max_len: int | None = None) -> Array:
    """Key padding mask for a batch of sequences padded at the end.

    Args:
        lengths: ``(batch,)`` true lengths; a list, numpy array or torch tensor.
        max_len: the padded length; ``max(lengths)`` by default.

    Returns:
        ``(batch, max_len)`` bool, True at real tokens. A numpy array for numpy
        input, otherwise a torch tensor (on the device of ``lengths``).
    """
    as_numpy = isinstance(lengths, np.ndarray)
    lens = torch.as_tensor(np.asarray(lengths) if as_numpy else lengths)
    if lens.dim() != 1:
        raise ValueError(f"lengths must be 1-D (batch,), got shape {tuple(lens.shape)}")
    if lens.dtype.is_floating_point or lens.dtype == torch.bool:
        raise ValueError(f"lengths must be integers, got dtype {lens.dtype}")
    if max_len is None:
        max_len = int(lens.max()) if lens.numel() else 0
    if lens.numel() and (int(lens.min()) < 0 or int(lens.max()) > max_len):
        raise ValueError(f"lengths must lie in [0, max_len={max_len}], got {lens.tolist()}")
    mask = torch.arange(max_len, device=lens.device) < lens[:, None]
    return mask.numpy() if as_numpy else mask


def causal_mask(len_q: int, len_k: int | None = None, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Causal mask: query ``i`` may attend to key ``j`` when ``j`` is not in its future.

    When ``len_q != len_k`` the mask is aligned **bottom-right**: the last query sees
    every key and query ``i`` sees keys ``j <= i + (len_k - len_q)``. This is what a
    decoder needs when ``len_q`` new tokens follow ``len_k - len_q`` cached ones, and it
    matches FlashAttention-2 and ``torch.nn.attention.bias.causal_lower_right``. When
    ``len_q > len_k`` the first ``len_q - len_k`` rows are fully masked.

    Returns:
        ``(len_q, len_k)`` bool tensor, True = may attend.
    """
    len_k = len_q if len_k is None else len_k
    if len_q < 0 or len_k < 0:
        raise ValueError(f"lengths must be non-negative, got len_q={len_q}, len_k={len_k}")
    i = torch.arange(len_q, device=device)[:, None]
    j = torch.arange(len_k, device=device)[None, :]
    return j <= i + (len_k - len_q)


def _check_bool(mask: Array, name: str) -> None:
    dtype = mask.dtype
    if dtype not in (torch.bool, np.bool_):
        raise ValueError(f"{name} must be a boolean mask (True = may attend), got dtype {dtype}")


def combine_masks(*masks: Array | None) -> Array | None:
    """Combine boolean masks: a position may be attended only if every mask allows it.

    ``None`` entries are skipped; the result is ``None`` when all are ``None``. The
    masks broadcast against each other, e.g. a ``(batch, 1, 1, len_k)`` padding mask
    with a ``(len_q, len_k)`` causal mask gives ``(batch, 1, len_q, len_k)``.
    """
    present = [m for m in masks if m is not None]
    for idx, m in enumerate(present):
        _check_bool(m, f"mask {idx}")
    if not present:
        return None
    if len({isinstance(m, torch.Tensor) for m in present}) != 1:
        raise ValueError("masks must all be numpy arrays or all be torch tensors, not a mix")
    try:
        np.broadcast_shapes(*(tuple(m.shape) for m in present))
    except ValueError:
        shapes = ", ".join(str(tuple(m.shape)) for m in present)
        raise ValueError(f"masks of shapes {shapes} do not broadcast together") from None
    out = present[0]
    for m in present[1:]:
        out = out & m
    return out


def to_additive_mask(mask: Array, dtype: torch.dtype | np.dtype = torch.float32) -> Array:
    """A boolean mask as an additive one: 0 where True, ``-inf`` where False.

    ``-inf`` rather than ``-1e9``: ``-1e9`` overflows to ``-inf`` in fp16 anyway, and
    adding two large finite constants can overflow even in fp32. ``-inf`` is exact
    and our attention turns fully masked rows into zeros, not NaN.
    """
    _check_bool(mask, "mask")
    if isinstance(mask, np.ndarray):
        return np.where(mask, 0.0, -np.inf).astype(dtype)
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.tensor(-math.inf, dtype=dtype, device=mask.device))


def _check_key_padding(mask: Array) -> None:
    _check_bool(mask, "key padding mask")
    if mask.ndim != 2:
        raise ValueError(f"a key padding mask has shape (batch, len_k), got {tuple(mask.shape)}")


def to_torch_key_padding_mask(mask: Array) -> Array:
    """Our ``(batch, len_k)`` mask (True = real token) → ``nn.MultiheadAttention``'s (True = ignore)."""
    _check_key_padding(mask)
    return ~mask


def from_torch_key_padding_mask(mask: Array) -> Array:
    """``nn.MultiheadAttention``'s ``key_padding_mask`` (True = ignore) → ours (True = real token)."""
    _check_key_padding(mask)
    return ~mask


def key_padding_to_attn_mask(mask: Array) -> Array:
    """A ``(batch, len_k)`` key padding mask as ``(batch, 1, 1, len_k)``.

    That shape broadcasts over heads and queries against scores of shape
    ``(batch, heads, len_q, len_k)``.
    """
    _check_key_padding(mask)
    return mask[:, None, None, :]
