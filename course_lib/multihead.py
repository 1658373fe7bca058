"""Multi-head attention as one module: cross-attention when a ``context`` is given,
self-attention when it is not.

Cross-attention is self-attention whose keys and values come from another
sequence. The only differences in code are where ``k`` and ``v`` are projected from,
and that the context may have its own width ``d_context`` and length ``len_k``.

Shapes (batch-first, docs/design.md § 3):

* ``x``: ``(batch, len_q, d_model)``, the sequence that asks (e.g. the decoder);
* ``context``: ``(batch, len_k, d_context)``, the sequence that is read (the encoder);
* inside, heads are ``(batch, heads, len, head_dim)`` with ``head_dim = d_model // heads``;
  keys and values have ``num_kv_heads`` heads (grouped-query attention when fewer than
  ``num_heads``: each K/V head serves ``num_heads // num_kv_heads`` query heads).
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import scaled_dot_product_attention
from .masks import combine_masks, key_padding_to_attn_mask


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(batch, len, num_heads * head_dim)`` → ``(batch, num_heads, len, head_dim)``.

    The view splits the feature axis into heads; the transpose moves heads before
    the sequence axis so that each head is an independent attention problem.
    """
    batch, length, width = x.shape
    if width % num_heads:
        raise ValueError(f"feature size {width} of input {tuple(x.shape)} is not divisible by num_heads={num_heads}")
    return x.view(batch, length, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(batch, num_heads, len, head_dim)`` → ``(batch, len, num_heads * head_dim)``.

    Transpose *before* reshaping. A bare ``reshape`` of the head-first tensor would
    interleave tokens and heads, a silent bug when ``len == head_dim``.
    """
    if x.dim() != 4:
        raise ValueError(f"merge_heads expects (batch, heads, len, head_dim), got {tuple(x.shape)}")
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


class KVCache:
    """Projected keys and values, kept between decoding steps.

    * A **cross-attention** cache (``growing=False``) holds the source's keys and
      values. They are projected once per source and never change while the target
      is generated.
    * A **self-attention** cache (``growing=True``) starts empty and gains one key
      and one value per generated token.

    Attributes:
        key, value: ``(batch, kv_heads, len_k, head_dim)``, or ``None`` while empty. With
            grouped-query attention the cache holds only the ``kv_heads`` heads.
        mask: ``(batch, len_k)`` bool, True = real token, or ``None`` (all real).
    """

    def __init__(
        self,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        growing: bool,
    ) -> None:
        self.key, self.value, self.mask, self.growing = key, value, mask, growing

    def __len__(self) -> int:
        return 0 if self.key is None else self.key.shape[-2]

    def append(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """Add new ``(batch, heads, t, head_dim)`` keys and values at the end."""
        if not self.growing:
            raise ValueError("a cross-attention cache is fixed by its source; it cannot grow")
        self.key = key if self.key is None else torch.cat([self.key, key], dim=-2)
        self.value = value if self.value is None else torch.cat([self.value, value], dim=-2)


class MultiHeadAttention(nn.Module):
    """Multi-head attention; cross-attention when ``forward`` gets a ``context``.

    Args:
        d_model: width of the queries' sequence ``x`` and of the output.
        num_heads: number of heads; must divide ``d_model``.
        d_context: width of the context (keys and values); ``d_model`` by default.
        bias: whether the four projections have biases.
        dropout: dropout on the attention weights during training.
        num_kv_heads: heads of the keys and values; ``num_heads`` by default. Fewer
            (it must divide ``num_heads``) is grouped-query attention, 1 is multi-query:
            the K and V projections have ``num_kv_heads * head_dim`` outputs, and a KV
            cache is ``num_heads / num_kv_heads`` times smaller.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        d_context: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        num_kv_heads: int | None = None,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(
                f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads} (grouped-query attention)"
            )
        self.d_model, self.num_heads, self.num_kv_heads = d_model, num_heads, num_kv_heads
        self.d_context = d_model if d_context is None else d_context
        self.head_dim = d_model // num_heads
        kv_width = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(self.d_context, kv_width, bias=bias)
        self.v_proj = nn.Linear(self.d_context, kv_width, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    # --- shape checks: every message names the shapes it saw -----------------
    def _check_width(self, t: torch.Tensor, width: int, name: str) -> None:
        if t.dim() != 3 or t.shape[-1] != width:
            raise ValueError(f"{name} must be (batch, len, {width}), got {tuple(t.shape)}")

    def _check_context_mask(self, mask: torch.Tensor | None, batch: int, len_k: int) -> None:
        if mask is None:
            return
        if mask.dtype != torch.bool:
            raise ValueError(f"context_mask must be bool (True = real token), got dtype {mask.dtype}")
        if tuple(mask.shape) != (batch, len_k):
            raise ValueError(f"context_mask must be (batch, len_k) = {(batch, len_k)}, got {tuple(mask.shape)}")

    # --- the three steps: project, attend per head, merge and project --------
    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, need_weights: bool
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        group = self.num_heads // self.num_kv_heads
        if group > 1:  # each K/V head serves `group` query heads (the cache keeps the small K/V)
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        out, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
        if self.training and self.dropout.p > 0:
            out = self.dropout(weights) @ v  # dropout on the weights, as in nn.MultiheadAttention
        out = self.out_proj(merge_heads(out))
        return (out, weights) if need_weights else out

    def _mask(self, context_mask: torch.Tensor | None, attn_mask: torch.Tensor | None) -> torch.Tensor | None:
        padding = None if context_mask is None else key_padding_to_attn_mask(context_mask)
        return combine_masks(padding, attn_mask)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        context_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``x`` to ``context`` (or to ``x`` itself when ``context`` is None).

        Args:
            x: ``(batch, len_q, d_model)``.
            context: ``(batch, len_k, d_context)``; ``None`` means self-attention.
            context_mask: ``(batch, len_k)`` bool, True = real token. In a decoder's
                cross-attention this is the *source* padding mask.
            attn_mask: bool, broadcastable to ``(batch, heads, len_q, len_k)``,
                True = may attend, e.g. ``causal_mask(len_q)`` for decoder
                self-attention.
            need_weights: also return the per-head weights.

        Returns:
            ``(batch, len_q, d_model)``, and with ``need_weights`` the weights
            ``(batch, heads, len_q, len_k)`` (before dropout). Unbatched inputs
            ``(len_q, d_model)`` and ``(len_k, d_context)`` give unbatched outputs.
        """
        if x.dim() == 2 and (context is None or context.dim() == 2):  # unbatched, as nn.MultiheadAttention allows
            res = self(
                x[None],
                None if context is None else context[None],
                context_mask=None if context_mask is None else context_mask[None],
                attn_mask=attn_mask,
                need_weights=need_weights,
            )
            return (res[0][0], res[1][0]) if need_weights else res[0]
        self._check_width(x, self.d_model, "x")
        if context is None:
            if self.d_context != self.d_model:
                raise ValueError(
                    f"self-attention (context=None) needs d_context == d_model, got {self.d_context} != {self.d_model}"
                )
            context = x
        self._check_width(context, self.d_context, "context")
        if context.shape[0] != x.shape[0]:
            raise ValueError(f"x {tuple(x.shape)} and context {tuple(context.shape)} have different batch sizes")
        self._check_context_mask(context_mask, context.shape[0], context.shape[1])
        q = split_heads(self.q_proj(x), self.num_heads)
        k = split_heads(self.k_proj(context), self.num_kv_heads)
        v = split_heads(self.v_proj(context), self.num_kv_heads)
        return self._attend(q, k, v, self._mask(context_mask, attn_mask), need_weights)

    # --- decoding with a KV cache --------------------------------------------
    def precompute_context(self, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> KVCache:
        """Project the source's keys and values once, for every decoding step.

        Args:
            context: ``(batch, len_k, d_context)``.
            context_mask: ``(batch, len_k)`` bool, True = real token.
        """
        self._check_width(context, self.d_context, "context")
        self._check_context_mask(context_mask, context.shape[0], context.shape[1])
        k = split_heads(self.k_proj(context), self.num_kv_heads)
        v = split_heads(self.v_proj(context), self.num_kv_heads)
        return KVCache(k, v, context_mask, growing=False)

    def new_cache(self) -> KVCache:
        """An empty self-attention cache that grows by one token per ``step``."""
        if self.d_context != self.d_model:
            raise ValueError("a self-attention cache needs d_context == d_model")
        return KVCache(growing=True)

    def step(
        self, x_t: torch.Tensor, cache: KVCache, *, need_weights: bool = False, backend: str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend new queries using cached keys and values.

        With a cross-attention cache (from ``precompute_context``), ``x_t`` may hold
        any number of queries ``(batch, t, d_model)`` and costs ``O(t·len_k·d)``: no
        projection of the source is repeated. With a self-attention cache (from
        ``new_cache``), ``x_t`` is the newest token ``(batch, 1, d_model)``; its key
        and value are appended first, so it attends to itself and the past only.

        ``backend`` (``"auto"``, ``"triton"``, ``"tiled"``, ``"sdpa"``...): attend with
        ``course_lib.efficient.flash_attention`` instead of the textbook formula. It reads the
        cache's smaller K/V directly (grouped-query attention), turns the cache's padding mask
        into lengths (padding at the end only), and on a GPU with Triton splits a long cache
        across programs (split-KV decoding). It returns no weights and applies no dropout.

        Returns:
            ``(batch, t, d_model)``, and with ``need_weights`` the weights
            ``(batch, heads, t, len_k)``. ``step`` equals ``forward`` on the full
            sequence (tested).
        """
        self._check_width(x_t, self.d_model, "x_t")
        if cache.growing:
            if x_t.shape[1] != 1:
                raise ValueError(f"a self-attention cache takes one token at a time, got x_t {tuple(x_t.shape)}")
            cache.append(
                split_heads(self.k_proj(x_t), self.num_kv_heads), split_heads(self.v_proj(x_t), self.num_kv_heads)
            )
        elif cache.key is None or cache.key.shape[0] != x_t.shape[0]:
            raise ValueError(f"x_t {tuple(x_t.shape)} does not match the cache's batch")
        q = split_heads(self.q_proj(x_t), self.num_heads)
        if backend is not None:
            if need_weights:
                raise ValueError("need_weights=True needs the textbook attention: leave backend=None")
            from .efficient import flash_attention

            out = flash_attention(q, cache.key, cache.value, key_padding_mask=cache.mask, backend=backend)
            return self.out_proj(merge_heads(out))
        return self._attend(q, cache.key, cache.value, self._mask(cache.mask, None), need_weights)

    # --- interop with torch.nn.MultiheadAttention -------------------------------
    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of an ``nn.MultiheadAttention`` (``kdim == vdim`` required).

        The copy gives the same outputs; remember that its ``key_padding_mask`` means
        True = ignore, while our ``context_mask`` means True = real token.
        """
        if mha.kdim != mha.vdim:
            raise ValueError(f"kdim ({mha.kdim}) must equal vdim ({mha.vdim}): keys and values share one context")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn have no equivalent here")
        bias = mha.in_proj_bias is not None
        out = cls(mha.embed_dim, mha.num_heads, d_context=mha.kdim, bias=bias, dropout=mha.dropout)
        e = mha.embed_dim
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                wq, wk, wv = mha.in_proj_weight.split(e)
            else:
                wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            for lin, w in zip((out.q_proj, out.k_proj, out.v_proj), (wq, wk, wv)):
                lin.weight.copy_(w)
            out.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                for lin, b in zip((out.q_proj, out.k_proj, out.v_proj), mha.in_proj_bias.split(e)):
                    lin.bias.copy_(b)
                out.out_proj.bias.copy_(mha.out_proj.bias)
        return out

    def to_torch(self) -> nn.MultiheadAttention:
        """An ``nn.MultiheadAttention`` (``batch_first=True``) with the same weights."""
        if self.num_kv_heads != self.num_heads:
            raise ValueError(
                f"nn.MultiheadAttention has no grouped-query attention: num_kv_heads={self.num_kv_heads} "
                f"!= num_heads={self.num_heads}"
            )
        bias = self.q_proj.bias is not None
        mha = nn.MultiheadAttention(
            self.d_model,
            self.num_heads,
            dropout=self.dropout.p,
            bias=bias,
            kdim=self.d_context,
            vdim=self.d_context,
            batch_first=True,
        )
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                mha.in_proj_weight.copy_(torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
            else:
                mha.q_proj_weight.copy_(self.q_proj.weight)
                mha.k_proj_weight.copy_(self.k_proj.weight)
                mha.v_proj_weight.copy_(self.v_proj.weight)
            mha.out_proj.weight.copy_(self.out_proj.weight)
            if bias:
                mha.in_proj_bias.copy_(torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
                mha.out_proj.bias.copy_(self.out_proj.bias)
        return mha
