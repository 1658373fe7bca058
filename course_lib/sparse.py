"""Sparse and latent cross-attention: compute less than the full ``len_q × len_k`` score matrix.

Dense attention scores every query against every key: ``O(Lq·Lk)`` time and memory.
Four ways to do less, each with its own bargain:

* **band** (local) attention: query ``i`` reads only the ``width`` keys around where it
  is aligned with the source. Speech and translation alignments are nearly monotonic,
  so most of the attention mass lies in such a band. ``band_attention`` computes the
  band alone, in ``O(Lq·w·d)``; ``band_mask`` is the same pattern as a dense mask.
* **block-sparse** patterns: whole tiles of the score matrix are kept or skipped
  (local, fixed columns, random), plus **global tokens** every query may read
  (``block_layout``, ``block_sparse_mask``).
* **latent** (Perceiver) attention: ``M`` learned latent queries read the ``N`` source
  tokens in ``O(M·N)``; the target then reads the ``M`` latents instead of the source
  (``LatentCrossAttention``).
* **linear** attention: replace ``exp(q·k)`` by ``φ(q)·φ(k)`` with ``φ = elu + 1``; then
  ``Σ_j φ(k_j) v_jᵀ`` is a ``d × d_v`` summary of the whole source, computed once
  (``linear_attention_summary``), and each query costs ``O(d·d_v)`` whatever ``Lk`` is.

Band and block-sparse attention compute *exactly* dense attention under a mask. Latent
and linear attention are *different models*: they are not approximations of a given
dense layer, and are trained as they are.

Shapes follow docs/design.md § 3: attention cores take ``(batch, heads, len, head_dim)``;
a key mask ``key_mask`` is ``(batch, len_k)`` bool, True = real key (what
``padding_mask(lengths)`` returns). Fully masked query rows give zeros, never NaN.

The cost functions (``*_flops``) follow ``course_lib.complexity``: forward FLOPs of the
attention core, 2 per multiply-add, as ``torch.utils.flop_counter.FlopCounterMode`` counts
them; softmax and projections are left out (the projections cost the same
``O((Lq + Lk)·d²)`` in every variant). Dense attention's cost is
``complexity.attention_flops``, ``4·B·H·Lq·Lk·d``; band and latent attention are dense
attention over fewer keys, and are counted with it.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import softmax
from .complexity import _check_sizes, attention_flops
from .multihead import MultiHeadAttention

__all__ = [
    "LatentCrossAttention",
    "LinearAttentionSummary",
    "band_attention",
    "band_attention_flops",
    "band_indices",
    "band_mask",
    "block_layout",
    "block_sparse_mask",
    "elu_feature_map",
    "latent_attention_flops",
    "linear_attention",
    "linear_attention_flops",
    "linear_attention_from_summary",
    "linear_attention_summary",
]

_HALF = (torch.float16, torch.bfloat16)
# band_attention gathers the windows of this many numbers' worth of queries at a time (1 MiB in float32).
_BAND_BLOCK = 1 << 18


# --- the band: one definition, used by the mask and by the gather ------------------------
def _as_slope(len_q: int, len_k: int, slope: float | Fraction | None) -> Fraction:
    """The band's slope as an exact fraction, so that ``slope=Lk/Lq`` and the default agree."""
    if slope is None:
        return Fraction(len_k, max(len_q, 1))
    if not isinstance(slope, (int, float, Fraction)) or slope < 0 or not math.isfinite(slope):
        raise ValueError(f"slope must be a finite number >= 0, got {slope!r}")
    # A float like 10/3 is not exactly 10/3; the nearest small fraction is what was meant.
    return Fraction(slope).limit_denominator(1 << 20)


def _band_start(
    len_q: int, len_k: int, width: int, slope: float | Fraction | None, device: torch.device | str | None
) -> torch.Tensor:
    """``(len_q,)`` first key of each query's window: ``ceil((i + 1/2)·slope − width/2)``."""
    s = _as_slope(len_q, len_k, slope)
    p, q = s.numerator, s.denominator
    i = torch.arange(len_q, device=device, dtype=torch.int64)
    # Integer arithmetic: ceil(a / b) = -((-a) // b) for b > 0. No float rounding at ties.
    numer = (2 * i + 1) * p - width * q
    return -((-numer) // (2 * q))


def _check_band_args(len_q: int, len_k: int, width: int, global_tokens: int) -> None:
    if len_q < 0 or len_k < 0:
        raise ValueError(f"lengths must be non-negative, got len_q={len_q}, len_k={len_k}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int (keys per query), got {width!r}")
    if not isinstance(global_tokens, int) or not 0 <= global_tokens <= len_k:
        raise ValueError(f"global_tokens must be an int in [0, len_k={len_k}], got {global_tokens!r}")


def band_mask(
    len_q: int,
    len_k: int,
    width: int,
    *,
    slope: float | Fraction | None = None,
    global_tokens: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A diagonal band of ``width`` keys per query that follows the slope ``len_k / len_q``.

    Query ``i`` stands for the slice ``[i·s, (i+1)·s)`` of the source, where
    ``s = slope`` (``len_k / len_q`` by default), as a text token stands for the speech
    frames it was spoken in. Its window is the ``width`` consecutive keys centred on
    that slice's centre ``(i + ½)·s − ½``::

        start_i = ceil((i + ½)·s − width/2)
        mask[i, j] = start_i <= j < start_i + width      (or j < global_tokens)

    With ``s = 1`` and an odd ``width`` this is ``|i − j| <= (width − 1) / 2``; with
    ``width = s`` (an integer) query ``i`` sees exactly its own slice. Windows are clipped
    at the ends of the source, so edge queries see fewer keys. ``slope`` is used as the
    nearest fraction with denominator ≤ 2²⁰ and the rest is integer arithmetic, so
    ``slope=len_k/len_q`` gives the default band exactly. The first ``global_tokens``
    keys (a BOS or summary token) are visible to every query.

    Returns:
        ``(len_q, len_k)`` bool, True = may attend.
    """
    _check_band_args(len_q, len_k, width, global_tokens)
    start = _band_start(len_q, len_k, width, slope, device)[:, None]
    j = torch.arange(len_k, device=device)[None, :]
    return ((j >= start) & (j < start + width)) | (j < global_tokens)


def band_indices(
    len_q: int,
    len_k: int,
    width: int,
    *,
    slope: float | Fraction | None = None,
    global_tokens: int = 0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys each query reads in ``band_attention``, as indices rather than a mask.

    Returns:
        ``(index, valid)``, both ``(len_q, global_tokens + width)``. Row ``i`` lists the
        global keys ``0..global_tokens-1`` and then query ``i``'s window (see
        ``band_mask``). ``valid`` is False for window slots outside ``[0, len_k)`` and
        for window keys that are already global (so none is counted twice); their
        ``index`` is clamped into range and must be ignored. Scattering ``valid`` at
        ``index`` gives ``band_mask`` (tested).
    """
    _check_band_args(len_q, len_k, width, global_tokens)
    start = _band_start(len_q, len_k, width, slope, device)
    index = start[:, None] + torch.arange(width, device=device)
    valid = (index >= global_tokens) & (index < len_k)
    if global_tokens:
        glob = torch.arange(global_tokens, device=device).expand(len_q, global_tokens)
        index = torch.cat([glob, index], dim=1)
        valid = torch.cat([torch.ones_like(glob, dtype=torch.bool), valid], dim=1)
    return index.clamp(0, max(len_k - 1, 0)), valid


# --- input checks shared by the attention cores ------------------------------------------
def _check_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, name: str) -> None:
    shapes = f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
    if not all(isinstance(t, torch.Tensor) for t in (query, key, value)):
        raise ValueError(f"{name} takes torch tensors")
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(f"{name} takes 4-D (batch, heads, len, head_dim) tensors, got {shapes}")
    if query.shape[:2] != key.shape[:2] or key.shape[:2] != value.shape[:2]:
        raise ValueError(f"query, key and value must share (batch, heads), got {shapes}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key must share head_dim, got {shapes}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"key and value must share len_k, got {shapes}")
    if len({query.dtype, key.dtype, value.dtype}) != 1 or not query.is_floating_point():
        raise ValueError(
            f"query, key and value must share one floating dtype, got {query.dtype}, {key.dtype}, {value.dtype}"
        )


def _check_key_mask(key_mask: torch.Tensor | None, batch: int, len_k: int) -> None:
    if key_mask is None:
        return
    if not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool:
        raise ValueError(
            f"key_mask must be a bool tensor (True = real key), got {getattr(key_mask, 'dtype', key_mask)}"
        )
    if tuple(key_mask.shape) != (batch, len_k):
        raise ValueError(f"key_mask must be (batch, len_k) = {(batch, len_k)}, got {tuple(key_mask.shape)}")


def _upcast(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Half precision is computed in float32, as in ``scaled_dot_product_attention``."""
    return tuple(t.float() if t.dtype in _HALF else t for t in ts)


# --- band attention: gather the window, never build len_q × len_k --------------------------
def band_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    width: int,
    *,
    slope: float | Fraction | None = None,
    global_tokens: int = 0,
    key_mask: torch.Tensor | None = None,
    scale: float | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention restricted to a band of keys, computed without a dense score matrix.

    Equals ``scaled_dot_product_attention(query, key, value, band_mask(...))`` (tested in
    float64), but each query gathers its own ``W = global_tokens + width`` keys and values
    into ``(batch, heads, len_q, W, head_dim)`` and scores only those: ``O(Lq·W·d)`` time,
    whatever ``len_k`` is. Queries are processed in blocks, so the gathered windows of one
    block (about a MiB) are the only scratch memory: ``O(Lq·d)`` extra memory for the output,
    independent of ``len_k`` and ``width``.

    Args:
        query: ``(batch, heads, len_q, head_dim)``.
        key: ``(batch, heads, len_k, head_dim)``.
        value: ``(batch, heads, len_k, dim_v)``.
        width: keys per query window; see ``band_mask`` for the exact band.
        slope: keys per query along the band; ``len_k / len_q`` by default.
        global_tokens: the first keys, visible to every query.
        key_mask: ``(batch, len_k)`` bool, True = real key (source padding).
        scale: factor on the scores; ``1 / sqrt(head_dim)`` by default.
        return_weights: also return the weights in band layout ``(batch, heads, len_q, W)``,
            aligned with ``band_indices``.

    Returns:
        ``(batch, heads, len_q, dim_v)``, or ``(output, weights)``. A query whose window
        holds no real key gets zeros.
    """
    _check_qkv(query, key, value, "band_attention")
    batch, heads, len_q, head_dim = query.shape
    len_k = key.shape[-2]
    _check_band_args(len_q, len_k, width, global_tokens)
    _check_key_mask(key_mask, batch, len_k)
    dtype = query.dtype
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    q, k, v = _upcast(query, key, value)
    n = global_tokens + width
    if len_k == 0:  # nothing to read: every row is fully masked
        out = q.new_zeros(batch, heads, len_q, v.shape[-1])
        w = q.new_zeros(batch, heads, len_q, n)
        return (out.to(dtype), w.to(dtype)) if return_weights else out.to(dtype)

    index, allowed = band_indices(len_q, len_k, width, slope=slope, global_tokens=global_tokens, device=q.device)
    out = q.new_empty(batch, heads, len_q, v.shape[-1])
    weights = q.new_empty(batch, heads, len_q, n) if return_weights else None
    # Queries go in blocks whose gathered windows hold about _BAND_BLOCK numbers. Gathering all
    # of them at once would copy 2·Lq·W·d numbers into fresh memory on every call: the operating
    # system then zeroes new pages (page faults), which cost more than the arithmetic and vary from
    # call to call with the allocator's state. A fixed-size block is reused instead, stays in cache,
    # and bounds the extra memory to the output plus one block.
    block = max(1, _BAND_BLOCK // (batch * heads * n * max(head_dim, v.shape[-1])))
    # (B·H, Lk, d): index_select on a 3-D tensor copies whole rows, several times faster than on 4-D.
    k3, v3 = k.reshape(batch * heads, len_k, head_dim), v.reshape(batch * heads, len_k, v.shape[-1])
    for lo in range(0, len_q, block):
        hi = min(lo + block, len_q)
        flat = index[lo:hi].reshape(-1)
        # The gather is the whole trick: (B, H, block·W, d) rows of K and V, no Lq × Lk anywhere.
        k_win = k3.index_select(1, flat).view(batch, heads, hi - lo, n, head_dim)
        v_win = v3.index_select(1, flat).view(batch, heads, hi - lo, n, v.shape[-1])
        # One (1, d) @ (d, W) product per query: (B, H, block, 1, W) -> (B, H, block, W).
        scores = (q[:, :, lo:hi].unsqueeze(-2) @ k_win.transpose(-2, -1)).squeeze(-2) * scale
        ok = allowed[lo:hi]
        if key_mask is not None:
            ok = ok & key_mask[:, flat].view(batch, 1, hi - lo, n)
        w = softmax(scores.masked_fill(~ok, -math.inf), axis=-1)  # all -inf rows -> zeros, not NaN
        out[:, :, lo:hi] = (w.unsqueeze(-2) @ v_win).squeeze(-2)
        if weights is not None:
            weights[:, :, lo:hi] = w
    if return_weights:
        return out.to(dtype), weights.to(dtype)
    return out.to(dtype)


# --- block-sparse layouts -----------------------------------------------------------------
def block_layout(
    num_q_blocks: int,
    num_k_blocks: int,
    *,
    local: int = 1,
    fixed: int = 0,
    random: int = 0,
    generator: torch.Generator | None = None,
    stride: int | None = None,
) -> torch.Tensor:
    """Which ``(query block, key block)`` tiles a block-sparse kernel computes.

    Three classic ingredients, combined with OR:

    * ``local``: each query block reads the ``local`` key blocks along the diagonal
      (``band_mask`` at block level, so it follows the slope when the counts differ);
    * ``fixed``: every ``fixed``-th key block (blocks ``fixed-1, 2·fixed-1, ...``), the same
      columns for every query: the "summary" columns of the Sparse Transformer's *fixed*
      pattern (Child et al., 2019; its *strided* pattern is relative to each query instead);
      0 = none;
    * ``random``: ``random`` extra key blocks per query block, drawn from ``generator``,
      as in BigBird; 0 = none.

    ``stride`` is the former name of ``fixed``, kept so that older code runs.

    Returns:
        ``(num_q_blocks, num_k_blocks)`` bool, True = the tile is computed.
    """
    if stride is not None:
        if fixed:
            raise ValueError(f"give fixed (got {fixed}) or its former name stride (got {stride}), not both")
        fixed = stride
    if num_q_blocks < 1 or num_k_blocks < 1:
        raise ValueError(f"block counts must be positive, got {num_q_blocks} x {num_k_blocks}")
    if local < 0 or fixed < 0 or random < 0:
        raise ValueError(f"local, fixed and random must be >= 0, got {local}, {fixed}, {random}")
    layout = torch.zeros(num_q_blocks, num_k_blocks, dtype=torch.bool)
    if local:
        layout |= band_mask(num_q_blocks, num_k_blocks, local)
    if fixed:
        layout[:, fixed - 1 :: fixed] = True
    if random:
        picks = torch.rand(num_q_blocks, num_k_blocks, generator=generator).argsort(dim=1)[
            :, : min(random, num_k_blocks)
        ]
        layout.scatter_(1, picks, True)
    return layout


def block_sparse_mask(
    len_q: int,
    len_k: int,
    block_size: int | tuple[int, int],
    layout: torch.Tensor,
    *,
    global_tokens: int = 0,
) -> torch.Tensor:
    """Expand a block layout to a token-level mask, plus global tokens.

    Args:
        len_q, len_k: sequence lengths.
        block_size: ``b`` or ``(block_q, block_k)``; the last blocks may be partial.
        layout: ``(ceil(len_q / block_q), ceil(len_k / block_k))`` bool, True = tile kept
            (e.g. from ``block_layout``).
        global_tokens: the first keys, visible to every query (a BOS or summary token).

    Returns:
        ``(len_q, len_k)`` bool, True = may attend.
    """
    bq, bk = (block_size, block_size) if isinstance(block_size, int) else tuple(block_size)
    if bq < 1 or bk < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    shape = (-(-len_q // bq), -(-len_k // bk))
    if not isinstance(layout, torch.Tensor) or layout.dtype != torch.bool or tuple(layout.shape) != shape:
        raise ValueError(
            f"layout must be bool of shape (ceil(len_q/block_q), ceil(len_k/block_k)) = {shape} "
            f"for len_q={len_q}, len_k={len_k}, block_size={block_size}; got {tuple(getattr(layout, 'shape', ()))}"
        )
    if not 0 <= global_tokens <= len_k:
        raise ValueError(f"global_tokens must lie in [0, len_k={len_k}], got {global_tokens}")
    mask = layout.repeat_interleave(bq, dim=0).repeat_interleave(bk, dim=1)[:len_q, :len_k]
    mask[:, :global_tokens] = True
    return mask


# --- latent (Perceiver) cross-attention ---------------------------------------------------
class LatentCrossAttention(nn.Module):
    """``num_latents`` learned queries read a source of any length, Perceiver-style.

    The latents are parameters ``(num_latents, d_model)``, the same for every input.
    They cross-attend to the ``N`` source tokens with an ordinary ``MultiHeadAttention``:
    ``O(M·N)`` instead of ``O(Lq·N)``, and the output has a fixed size ``M`` whatever
    ``N`` is. A decoder then cross-attends to the ``M`` latents (``O(Lq·M)``) with another
    ``MultiHeadAttention``; the latents are computed once per source, like a KV cache.

    Args:
        d_model: width of the latents and of the output.
        num_heads: heads of the cross-attention.
        num_latents: ``M``.
        d_context: width of the source tokens; ``d_model`` by default.
    """

    def __init__(
        self, d_model: int, num_heads: int, num_latents: int, *, d_context: int | None = None, bias: bool = True
    ) -> None:
        super().__init__()
        if num_latents < 1:
            raise ValueError(f"num_latents must be positive, got {num_latents}")
        # Small init as for embeddings; the latents are learned like any other weight.
        self.latents = nn.Parameter(torch.randn(num_latents, d_model) * d_model**-0.5)
        self.attn = MultiHeadAttention(d_model, num_heads, d_context=d_context, bias=bias)

    def forward(
        self, context: torch.Tensor, *, context_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Summarise ``context`` into the latents.

        Args:
            context: ``(batch, len_k, d_context)``.
            context_mask: ``(batch, len_k)`` bool, True = real token.
            need_weights: also return ``(batch, heads, num_latents, len_k)`` weights.

        Returns:
            ``(batch, num_latents, d_model)``, and the weights with ``need_weights``.
        """
        if context.dim() != 3:
            raise ValueError(f"context must be (batch, len_k, d_context), got {tuple(context.shape)}")
        latents = self.latents.expand(context.shape[0], -1, -1)
        return self.attn(latents, context, context_mask=context_mask, need_weights=need_weights)


# --- linear attention ---------------------------------------------------------------------
def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """``φ(x) = elu(x) + 1``: positive, so ``φ(q)·φ(k) > 0`` acts as a similarity.

    (In floating point it underflows to 0 far below zero: below about −37 in float64.)
    """
    return F.elu(x) + 1


class LinearAttentionSummary(NamedTuple):
    """What linear attention keeps of a source: its size does not depend on ``len_k``.

    Attributes:
        kv: ``(batch, heads, head_dim, dim_v)``, ``Σ_j φ(k_j) v_jᵀ``.
        normaliser: ``(batch, heads, head_dim)``, ``Σ_j φ(k_j)``.
    """

    kv: torch.Tensor
    normaliser: torch.Tensor


def linear_attention_summary(
    key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor | None = None
) -> LinearAttentionSummary:
    """Summarise a source once: ``φ(K)ᵀ V`` and ``φ(K)ᵀ 1``, in ``O(Lk·d·d_v)``.

    Args:
        key: ``(batch, heads, len_k, head_dim)``.
        value: ``(batch, heads, len_k, dim_v)``.
        key_mask: ``(batch, len_k)`` bool, True = real key; padded keys add nothing.
    """
    if key.dim() != 4 or value.dim() != 4 or key.shape[:3] != value.shape[:3]:
        raise ValueError(
            f"key and value must be (batch, heads, len_k, dim) with the same first three sizes, "
            f"got key {tuple(key.shape)}, value {tuple(value.shape)}"
        )
    _check_key_mask(key_mask, key.shape[0], key.shape[2])
    k, v = _upcast(key, value)
    phi_k = elu_feature_map(k)
    if key_mask is not None:
        # where(), not a product: 0 · inf in padded garbage would still give NaN.
        real = key_mask[:, None, :, None]
        phi_k = torch.where(real, phi_k, 0.0)
        v = torch.where(real, v, 0.0)
    phi_kt = phi_k.transpose(-2, -1)
    # The normaliser is φ(K)ᵀ·1: one more "value" column of ones, written as a product.
    ones = torch.ones(*k.shape[:3], 1, dtype=k.dtype, device=k.device)
    return LinearAttentionSummary(phi_kt @ v, (phi_kt @ ones).squeeze(-1))


def linear_attention_from_summary(
    query: torch.Tensor, summary: LinearAttentionSummary, *, eps: float = 1e-6
) -> torch.Tensor:
    """Apply a source's summary to queries: ``φ(q)ᵀ kv / (φ(q)ᵀ normaliser + eps)``.

    ``O(Lq·d·d_v)``: the source's length no longer appears. In decoding, call this once
    per new token with the summary made once per source.

    Args:
        query: ``(batch, heads, len_q, head_dim)``.
        summary: from ``linear_attention_summary``.
        eps: added to the denominator, as in Katharopoulos et al. (2020). A query with no
            real key gets zeros (numerator 0), even with ``eps=0``.

    Returns:
        ``(batch, heads, len_q, dim_v)`` in the query's dtype.
    """
    kv, z = summary
    if query.dim() != 4 or query.shape[:2] != kv.shape[:2] or query.shape[-1] != kv.shape[-2]:
        raise ValueError(
            f"query must be (batch, heads, len_q, head_dim) matching the summary's kv {tuple(kv.shape)} "
            f"(batch, heads, head_dim, dim_v), got {tuple(query.shape)}"
        )
    (q,) = _upcast(query)
    phi_q = elu_feature_map(q.to(kv.dtype))
    num = phi_q @ kv  # (B, H, Lq, dv)
    den = phi_q @ z.unsqueeze(-1) + eps  # (B, H, Lq, 1)
    return (num / torch.where(den == 0, 1.0, den)).to(query.dtype)


def linear_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    key_mask: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Linear attention with ``φ = elu + 1``: ``(φ(Q) φ(K)ᵀ) V`` computed as ``φ(Q) (φ(K)ᵀ V)``.

    Row ``i`` is ``Σ_j φ(q_i)·φ(k_j) v_j / (Σ_j φ(q_i)·φ(k_j) + eps)`` (tested against that
    explicit form). Regrouping the product makes the cost ``O((Lq + Lk)·d·d_v)`` instead of
    ``O(Lq·Lk·d)``. It is not softmax attention: ``φ(q)·φ(k)`` is a different, flatter
    similarity, so models are trained with it rather than converted to it.

    Args:
        query: ``(batch, heads, len_q, head_dim)``.
        key: ``(batch, heads, len_k, head_dim)``.
        value: ``(batch, heads, len_k, dim_v)``.
        key_mask: ``(batch, len_k)`` bool, True = real key.
        eps: see ``linear_attention_from_summary``.

    Returns:
        ``(batch, heads, len_q, dim_v)``.
    """
    _check_qkv(query, key, value, "linear_attention")
    return linear_attention_from_summary(query, linear_attention_summary(key, value, key_mask), eps=eps)


# --- cost models (forward FLOPs of the attention core) --------------------------------------
def band_attention_flops(
    batch: int, heads: int, len_q: int, width: int, head_dim: int, *, dim_v: int | None = None, global_tokens: int = 0
) -> int:
    """``band_attention``: every query scores its ``W = global_tokens + width`` slots.

    Dense attention over ``W`` keys, ``attention_flops(B, H, Lq, W, d)``, i.e.
    ``2·B·H·Lq·W·(d + d_v)``: independent of ``len_k``. Slots clipped at the source's ends
    are computed and masked, so they are counted.
    """
    _check_sizes(allow_zero=("global_tokens",), width=width, global_tokens=global_tokens)
    return attention_flops(batch, heads, len_q, global_tokens + width, head_dim, dim_v=dim_v)


def latent_attention_flops(
    batch: int, heads: int, num_latents: int, len_k: int, head_dim: int, *, len_q: int = 0, dim_v: int | None = None
) -> int:
    """``M`` latents read ``Lk`` keys, then ``Lq`` queries read the ``M`` latents.

    Two dense attentions, ``attention_flops(B, H, M, Lk, d) + attention_flops(B, H, Lq, M, d)``,
    i.e. ``2·B·H·M·(Lk + Lq)·(d + d_v)``: linear in the source length. ``len_q=0`` counts
    the latent step alone (``LatentCrossAttention``'s core).
    """
    _check_sizes(allow_zero=("len_q",), num_latents=num_latents, len_q=len_q)
    read_source = attention_flops(batch, heads, num_latents, len_k, head_dim, dim_v=dim_v)
    read_latents = attention_flops(batch, heads, len_q, num_latents, head_dim, dim_v=dim_v) if len_q else 0
    return read_source + read_latents


def linear_attention_flops(
    batch: int, heads: int, len_q: int, len_k: int, head_dim: int, *, dim_v: int | None = None
) -> int:
    """``φ(K)ᵀ [V, 1]`` once, then ``φ(Q) [kv, normaliser]``: ``2·B·H·(Lk + Lq)·d·(d_v + 1)``.

    The feature map and the division are ``O((Lq + Lk)·d)`` and not counted, as softmax
    is not counted in ``complexity.attention_flops``.
    """
    dim_v = head_dim if dim_v is None else dim_v
    _check_sizes(batch=batch, heads=heads, len_q=len_q, len_k=len_k, head_dim=head_dim, dim_v=dim_v)
    return 2 * batch * heads * (len_k + len_q) * head_dim * (dim_v + 1)
