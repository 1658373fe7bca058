"""Memory-efficient attention: the online softmax, tiled in PyTorch and fused in Triton.

    flash_attention(query, key, value, *, kv_lens=None, key_padding_mask=None,
                    causal=False, scale=None, backend="auto")

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
    check_inputs,
    default_scale,
    kv_lens_from_padding_mask,
)
from .tiled import tiled_attention

BACKENDS = ("auto", "triton", "tiled", "sdpa", "naive")

__all__ = ["BACKENDS", "attention_mask", "flash_attention", "kv_lens_from_padding_mask", "tiled_attention"]


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
    if naive:
        return _naive_attention(query, key, value, mask, scale=scale)  # fully masked rows -> zeros already
    if mask is None:
        return F.scaled_dot_product_attention(query, key, value, scale=scale)
    # A row with no visible key would be 0/0 = NaN in some SDPA kernels (forward or backward). Let such
    # rows see every key, then zero their output: the result and every gradient stay finite.
    has_key = mask.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask | ~has_key, scale=scale)
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
) -> torch.Tensor:
    """Scaled dot-product attention with per-sequence key lengths, by any backend.

    Args:
        query: ``(batch, heads, len_q, head_dim)``, e.g. from the decoder.
        key, value: ``(batch, heads, len_k, head_dim)``, e.g. from the encoder.
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

        return triton_flash.triton_attention(query, key, value, kv_lens=lens, causal=causal, scale=scale)
    if backend == "tiled":
        return tiled_attention(query, key, value, kv_lens=lens, causal=causal, scale=scale)
    return _masked_sdpa(query, key, value, lens, causal, scale, naive=backend == "naive")
