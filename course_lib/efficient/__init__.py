"""Memory-efficient attention: the online softmax, tiled in PyTorch and fused in Triton.

    flash_attention(query, key, value, *, kv_lens=None, key_padding_mask=None,
                    causal=False, scale=None, backend="auto", num_splits=None)
    flash_attention_varlen(query, key, value, cu_seqlens_q, cu_seqlens_k,
                           max_seqlen_q, max_seqlen_k, *, causal=False, scale=None, backend="auto")

One function, four backends that give the same answer:

* ``"naive"``: the textbook formula (``course_lib.scaled_dot_product_attention``),
  which builds the ``(len_q, len_k)`` weights;
* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``;
* ``"tiled"``: ``course_lib.efficient.tiled``, the online softmax block by block in
  PyTorch, ``O(len_q·d)`` extra memory per head, independent of ``len_k``;
* ``"triton"``: ``course_lib.efficient.triton_flash``, a fused FlashAttention kernel
  (forward and backward) that skips the key blocks past each sequence's length.

``"auto"`` picks Triton for CUDA tensors it supports (head dim 16, 32, 64 or 128; fp16,
bf16 or fp32; Triton installed) and SDPA otherwise.

Every backend takes q, k, v with any strides (transposed views, slices of a fused QKV
projection, ``expand()``-ed K/V) and K/V with fewer heads than Q (grouped-query
attention, ``heads % kv_heads == 0``), gradients included, as
``F.scaled_dot_product_attention(..., enable_gqa=True)`` does.

``flash_attention_varlen`` takes packed sequences, as ``flash_attn_varlen_func`` does:
``(total, heads, head_dim)`` tensors and int32 cumulative lengths ``cu_seqlens``.

Without CUDA, Triton kernels run in Triton's interpreter (slow; for small inputs).
The interpreter must be switched on before Triton is first imported, so
``course_lib.device`` sets ``TRITON_INTERPRET=1`` when CUDA is missing and the variable
is unset, and this package imports ``triton_flash`` only when it is first used.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch
import torch.nn.functional as F

from ..attention import scaled_dot_product_attention as _naive_attention
from .common import (
    TRITON_DTYPES,
    TRITON_HEAD_DIMS,
    Lengths,
    attention_mask,
    check_heads,
    check_inputs,
    default_scale,
    kv_lens_from_padding_mask,
    repeat_kv,
)
from .tiled import tiled_attention

BACKENDS = ("auto", "triton", "tiled", "sdpa", "naive")

__all__ = [
    "BACKENDS",
    "attention_mask",
    "flash_attention",
    "flash_attention_varlen",
    "kv_lens_from_padding_mask",
    "repeat_kv",
    "tiled_attention",
]


def __getattr__(name: str):
    # ``course_lib.efficient.triton_flash`` is imported on first use: Triton is slow to import.
    if name == "triton_flash":
        return importlib.import_module(f"{__name__}.triton_flash")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _triton_fits(query: torch.Tensor) -> bool:
    return (
        query.is_cuda
        and query.shape[-1] in TRITON_HEAD_DIMS
        and query.dtype in TRITON_DTYPES
        and importlib.util.find_spec("triton") is not None
    )


def _masked_sdpa(query, key, value, kv_lens, causal, scale, naive):
    len_q, len_k = query.shape[2], key.shape[2]
    mask = attention_mask(kv_lens, len_q, len_k, causal, device=query.device)
    if naive:  # the textbook formula, on K/V repeated for each query head of their group
        key, value = repeat_kv(key, query.shape[1]), repeat_kv(value, query.shape[1])
        return _naive_attention(query, key, value, mask, scale=scale)  # fully masked rows -> zeros already
    gqa = {"enable_gqa": True} if key.shape[1] != query.shape[1] else {}
    if mask is None:
        return F.scaled_dot_product_attention(query, key, value, scale=scale, **gqa)
    # A row with no visible key would be 0/0 = NaN in some SDPA kernels (forward or backward). Let such
    # rows see every key, then zero their output: the result and every gradient stay finite.
    has_key = mask.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask | ~has_key, scale=scale, **gqa)
    return out.masked_fill(~has_key, 0.0)


def flash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    kv_lens: Lengths | None = None,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    backend: str = "auto",
    num_splits: int | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention with per-sequence key lengths, by any backend.

    Args:
        query: ``(batch, heads, len_q, head_dim)``, e.g. from the decoder; any strides.
        key, value: ``(batch, kv_heads, len_k, head_dim)``, e.g. from the encoder; any
            strides. ``kv_heads`` must divide ``heads``: query head ``h`` reads K/V head
            ``h // (heads // kv_heads)`` (grouped-query attention; multi-query for 1).
        kv_lens: ``(batch,)`` ints in ``[0, len_k]``: sequence ``b`` has ``kv_lens[b]``
            real keys at the start, the rest is padding. ``None``: all keys are real.
        key_padding_mask: instead of ``kv_lens``, a ``(batch, len_k)`` bool mask, True
            = real token. It must be a prefix mask (padding at the end); any other
            mask raises ``ValueError`` (use ``scaled_dot_product_attention`` with
            ``attn_mask`` for it).
        causal: query ``i`` sees key ``j`` only if ``j <= i + len_k - len_q``
            (bottom-right aligned, as ``course_lib.causal_mask``), combined with the
            padding by AND.
        scale: factor on the scores; ``1 / sqrt(head_dim)`` by default.
        backend: ``"auto"``, ``"triton"``, ``"tiled"``, ``"sdpa"`` or ``"naive"``. ``"auto"``
            is Triton for CUDA tensors that the kernel supports, SDPA otherwise.
        num_splits: Triton only: split-KV decoding (see ``triton_flash.triton_attention``);
            ``None`` lets the kernel choose, ``1`` never splits. Other backends ignore it.

    Returns:
        ``(batch, heads, len_q, head_dim)`` in the input dtype. A query row with no
        key to attend (``kv_lens[b] = 0``, or causal rows before the first key) is 0.

    Raises:
        ValueError: for shapes that do not fit (the message names them), lengths out
            of range, a non-prefix padding mask, an unknown backend, or a head dim
            or dtype the Triton kernel does not support.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    lens = check_inputs(query, key, value, kv_lens)
    if key_padding_mask is not None:
        if kv_lens is not None:
            raise ValueError("give kv_lens or key_padding_mask, not both")
        if key_padding_mask.shape[:1] != query.shape[:1]:
            raise ValueError(
                f"key_padding_mask of shape {tuple(key_padding_mask.shape)} does not match "
                f"query {tuple(query.shape)}: expected (batch={query.shape[0]}, len_k={key.shape[2]})"
            )
        lens = kv_lens_from_padding_mask(key_padding_mask, key.shape[2]).to(query.device)
    scale = default_scale(query.shape[-1], scale)
    if backend == "auto":
        backend = "triton" if _triton_fits(query) else "sdpa"
    if backend == "triton":
        if importlib.util.find_spec("triton") is None:
            raise ImportError("backend='triton' needs the triton package (Linux only): pip install triton")
        from . import triton_flash

        return triton_flash.triton_attention(
            query, key, value, kv_lens=lens, causal=causal, scale=scale, num_splits=num_splits
        )
    if backend == "tiled":
        return tiled_attention(query, key, value, kv_lens=lens, causal=causal, scale=scale)
    return _masked_sdpa(query, key, value, lens, causal, scale, naive=backend == "naive")


def _check_varlen(query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> None:
    shapes = f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
    tensors = {"query": query, "key": key, "value": value}
    if any(not isinstance(t, torch.Tensor) or t.dim() != 3 for t in tensors.values()):
        raise ValueError(f"expected (total, heads, head_dim) tensors, got {shapes}")
    if key.shape != value.shape or query.shape[2] != key.shape[2]:
        raise ValueError(
            f"query must be (total_q, heads, head_dim) and key, value (total_k, kv_heads, head_dim) "
            f"with the same head_dim, got {shapes}"
        )
    check_heads(query.shape[1], key.shape[1], shapes)
    if len({t.dtype for t in tensors.values()}) != 1 or not query.is_floating_point():
        raise ValueError(f"query, key and value must share one floating-point dtype, got {shapes}")
    given = (("cu_seqlens_q", cu_seqlens_q, query.shape[0]), ("cu_seqlens_k", cu_seqlens_k, key.shape[0]))
    for name, cu, total in given:
        if not isinstance(cu, torch.Tensor) or cu.dtype != torch.int32 or cu.dim() != 1 or cu.numel() < 1:
            raise ValueError(f"{name} must be a 1-D int32 tensor (batch + 1,), got {getattr(cu, 'shape', cu)!r}")
        if cu.device != query.device:
            raise ValueError(f"{name} is on {cu.device} but query is on {query.device}")
        if cu.device.type == "cpu":  # on a GPU these checks by value would wait for it: skipped there
            steps = cu[1:] - cu[:-1]
            if int(cu[0]) != 0 or int(cu[-1]) != total or bool((steps < 0).any()):
                raise ValueError(
                    f"{name} must rise from 0 to {total} (the rows of its tensor), got {cu.tolist()}"
                )
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(
            f"cu_seqlens_q {tuple(cu_seqlens_q.shape)} and cu_seqlens_k {tuple(cu_seqlens_k.shape)} "
            "must describe the same number of sequences"
        )
    longest_given = (("max_seqlen_q", cu_seqlens_q, max_seqlen_q), ("max_seqlen_k", cu_seqlens_k, max_seqlen_k))
    for name, cu, longest in longest_given:
        if cu.device.type == "cpu" and cu.numel() > 1 and int((cu[1:] - cu[:-1]).max()) > longest:
            raise ValueError(f"{name}={longest} is shorter than the longest sequence of {cu.tolist()}")


def flash_attention_varlen(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    causal: bool = False,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over packed sequences of different lengths, as ``flash_attn_varlen_func``.

    Sequence ``b`` is rows ``cu_seqlens_q[b] ... cu_seqlens_q[b + 1] - 1`` of ``query`` and
    rows ``cu_seqlens_k[b] ... cu_seqlens_k[b + 1] - 1`` of ``key`` and ``value``; it attends
    only within itself. No padding is stored, and none is computed.

    Args:
        query: ``(total_q, heads, head_dim)``.
        key, value: ``(total_k, kv_heads, head_dim)``, ``heads % kv_heads == 0``.
        cu_seqlens_q, cu_seqlens_k: int32 ``(batch + 1,)``, from 0 to ``total``.
        max_seqlen_q, max_seqlen_k: the longest sequence of each (it sizes the launch grid).
        causal: per sequence, bottom-right aligned: query ``i`` sees key ``j`` when
            ``j <= i + len_k - len_q`` (``len_*`` of that sequence).
        scale: factor on the scores; ``1 / sqrt(head_dim)`` by default.
        backend: ``"auto"`` (Triton for CUDA tensors it supports, SDPA per sequence otherwise),
            ``"triton"`` (one launch for the whole batch, forward and backward), or
            ``"tiled"``, ``"sdpa"``, ``"naive"``: a reference path that attends sequence by
            sequence with ``flash_attention``.

    Returns:
        ``(total_q, heads, head_dim)``; a query of a sequence with no key is 0.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    _check_varlen(query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    scale = default_scale(query.shape[-1], scale)
    if backend == "auto":
        backend = "triton" if _triton_fits(query) else "sdpa"
    if backend == "triton":
        if importlib.util.find_spec("triton") is None:
            raise ImportError("backend='triton' needs the triton package (Linux only): pip install triton")
        from . import triton_flash

        return triton_flash.triton_attention_varlen(
            query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=causal, scale=scale
        )
    outs = []  # the reference path: one ordinary call per sequence (it reads the lengths on the host)
    bounds_q, bounds_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for (q0, q1), (k0, k1) in zip(zip(bounds_q, bounds_q[1:]), zip(bounds_k, bounds_k[1:])):
        q_b, k_b, v_b = (t[a:z].transpose(0, 1)[None] for t, a, z in ((query, q0, q1), (key, k0, k1), (value, k0, k1)))
        if k1 == k0 or q1 == q0:  # no key (or no query): zeros, still connected to the graph
            outs.append(query[q0:q1] * 0.0)
            continue
        out = flash_attention(q_b, k_b, v_b, causal=causal, scale=scale, backend=backend)
        outs.append(out[0].transpose(0, 1))
    return torch.cat(outs) if outs else query * 0.0
