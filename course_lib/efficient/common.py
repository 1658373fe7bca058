"""Input checks and masks shared by every attention backend of ``course_lib.efficient``.

Every backend takes the same arguments and means the same thing by them:

* ``query`` ``(batch, heads, len_q, head_dim)``, ``key`` and ``value``
  ``(batch, kv_heads, len_k, head_dim)``, any strides; ``kv_heads`` divides ``heads``
  (grouped-query attention: query head ``h`` reads K/V head ``h // (heads // kv_heads)``,
  multi-query attention when ``kv_heads = 1``);
* ``kv_lens`` ``(batch,)``: sequence ``b`` has ``kv_lens[b]`` real keys, at the
  start; the keys after them are padding and never attended;
* ``causal``: query ``i`` may attend to key ``j`` only when
  ``j <= i + (len_k - len_q)``, the bottom-right alignment of
  ``course_lib.causal_mask``. With ``kv_lens`` the two masks are combined
  (AND), exactly as ``combine_masks(causal_mask(...), padding_mask(...))``.

A query row with no key left to attend gets a zero output (and zero gradients),
never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Lengths = Sequence[int] | torch.Tensor
TRITON_HEAD_DIMS = (16, 32, 64, 128)  # head dims the Triton kernel is compiled for
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # on a GPU; the interpreter runs float32 only


def check_inputs(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_lens: Lengths | None = None
) -> torch.Tensor | None:
    """Raise a ``ValueError`` naming the shapes when the inputs cannot go together.

    Returns ``kv_lens`` as an int32 tensor of shape ``(batch,)`` on the query's
    device, or ``None`` when it was not given.
    """
    tensors = {"query": query, "key": key, "value": value}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    shapes = f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
    if any(t.dim() != 4 for t in tensors.values()):
        raise ValueError(f"expected 4-D tensors (batch, heads, len, head_dim), got {shapes}")
    if key.shape != value.shape:
        raise ValueError(f"key and value must have the same shape (batch, heads, len_k, head_dim), got {shapes}")
    if query.shape[0] != key.shape[0] or query.shape[3] != key.shape[3]:
        raise ValueError(
            f"query must be (batch, heads, len_q, head_dim) with the batch, heads and head_dim of key "
            f"(batch, kv_heads, len_k, head_dim), got {shapes}"
        )
    check_heads(query.shape[1], key.shape[1], shapes)
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1 or not query.is_floating_point():
        raise ValueError(f"query, key and value must share one floating-point dtype, got {sorted(map(str, dtypes))}")
    devices = {t.device for t in tensors.values()}
    if len(devices) != 1:
        raise ValueError(f"query, key and value must be on one device, got {sorted(map(str, devices))}")
    if kv_lens is None:
        return None
    lens = torch.as_tensor(kv_lens)
    batch, len_k = query.shape[0], key.shape[2]
    if lens.dtype.is_floating_point or lens.dtype == torch.bool or lens.shape != (batch,):
        raise ValueError(
            f"kv_lens must hold one integer per batch element, shape ({batch},), "
            f"got shape {tuple(lens.shape)} and dtype {lens.dtype}"
        )
    if lens.device.type == "cpu":
        if batch and (int(lens.min()) < 0 or int(lens.max()) > len_k):
            raise ValueError(
                f"kv_lens must lie in [0, len_k={len_k}] for key of shape {tuple(key.shape)}, got {lens.tolist()}"
            )
    else:  # on a GPU a check by value would wait for the GPU (a host synchronisation): assert there instead
        torch._assert_async(((lens >= 0) & (lens <= len_k)).all(), f"kv_lens must lie in [0, len_k={len_k}]")
    return lens.to(device=query.device, dtype=torch.int32)


def check_heads(heads: int, kv_heads: int, shapes: str = "") -> int:
    """The group size ``heads // kv_heads``; a ``ValueError`` naming both counts if it is not whole."""
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(
            f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads}) for grouped-query "
            f"attention{', got ' + shapes if shapes else ''}"
        )
    return heads // kv_heads


def repeat_kv(t: torch.Tensor, heads: int, dim: int = 1) -> torch.Tensor:
    """``(batch, kv_heads, len, d)`` → ``(batch, heads, len, d)``: each K/V head repeated for its group.

    The reference paths use it (it copies); the Triton kernel indexes K/V head ``h // group`` instead.
    """
    group = check_heads(heads, t.shape[dim])
    return t if group == 1 else t.repeat_interleave(group, dim=dim)


def kv_lens_from_padding_mask(key_padding_mask: torch.Tensor, len_k: int | None = None) -> torch.Tensor:
    """Turn a ``(batch, len_k)`` key padding mask (True = real token) into ``kv_lens``.

    Only a *prefix* mask can be turned into lengths: each row must be True for its
    first ``n`` keys and False after them, i.e. padding at the end. Anything else
    (padding at the start or holes in the middle) raises a ``ValueError``: give such
    a mask to ``scaled_dot_product_attention`` as ``attn_mask`` instead.
    """
    mask = key_padding_mask
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        shape = tuple(getattr(mask, "shape", ()))
        raise ValueError(f"key_padding_mask must be a (batch, len_k) bool tensor (True = real), got shape {shape}")
    if len_k is not None and mask.shape[1] != len_k:
        raise ValueError(f"key_padding_mask has shape {tuple(mask.shape)} but the keys have len_k={len_k}")
    lens = mask.sum(dim=1)
    prefix = torch.arange(mask.shape[1], device=mask.device) < lens[:, None]
    if not torch.equal(prefix, mask):
        bad = (prefix != mask).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(
            f"key_padding_mask of shape {tuple(mask.shape)} is not a prefix mask (real keys first, padding at "
            f"the end) in batch rows {bad}; it cannot become kv_lens. Pass it as attn_mask to "
            "course_lib.scaled_dot_product_attention or torch's scaled_dot_product_attention instead."
        )
    return lens.to(torch.int32)


def attention_mask(
    kv_lens: torch.Tensor | None, len_q: int, len_k: int, causal: bool, device: torch.device | str | None = None
) -> torch.Tensor | None:
    """The boolean mask (True = may attend) that ``kv_lens`` and ``causal`` stand for.

    Returns ``None`` (nothing masked), or a bool tensor that broadcasts against the
    scores ``(batch, heads, len_q, len_k)``: ``(batch, 1, 1, len_k)`` for padding
    only, ``(len_q, len_k)`` for causal only, ``(batch, 1, len_q, len_k)`` for both.
    This is the ``O(len_q · len_k)`` object that the tiled and Triton versions never
    build.
    """
    mask = None
    if kv_lens is not None:
        device = kv_lens.device
        mask = (torch.arange(len_k, device=device) < kv_lens[:, None].long())[:, None, None, :]
    if causal:
        i = torch.arange(len_q, device=device)[:, None]
        j = torch.arange(len_k, device=device)[None, :]
        tri = j <= i + (len_k - len_q)  # bottom-right aligned, as course_lib.causal_mask
        mask = tri if mask is None else mask & tri
    return mask


def default_scale(head_dim: int, scale: float | None) -> float:
    """``1 / sqrt(head_dim)`` unless a scale is given."""
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
