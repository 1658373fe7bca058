"""Tiled attention with the online softmax, in plain PyTorch: FlashAttention's algorithm.

Naive attention builds the whole ``(len_q, len_k)`` score matrix, softmaxes it and
multiplies it by V. Here the keys are visited one block at a time. For every query
row we keep three running statistics:

* ``m_i``: the largest score seen so far (to keep ``exp`` from overflowing);
* ``l_i``: the sum of ``exp(score - m_i)`` seen so far (the softmax denominator);
* ``acc``: the sum of ``exp(score - m_i) · v`` seen so far (the unnormalised output).

When a new block raises the maximum from ``m_i`` to ``m_new``, everything summed so
far was computed relative to the old maximum, so it is rescaled by
``exp(m_i - m_new)``. After the last block ``output = acc / l_i`` and
``lse = m_i + log(l_i)``, the log of the softmax denominator. The backward pass keeps
only ``lse`` and recomputes each block of probabilities as ``exp(score - lse)``: no
``(len_q, len_k)`` matrix is ever stored.

Like the Triton kernel, the scores are kept in base 2: ``exp(x) = exp2(x · log2 e)``
with ``log2 e`` folded into the scale. On a CPU ``exp2`` is also cheaper than ``exp``,
and the exponentials are a third of this function's time.

Extra memory is ``O(Lq·d)`` per head, independent of ``Lk``; ``O((Lq + Lk)·d)`` counting
the inputs. The forward allocates the output and ``lse``, the running statistics of one
block of queries, and one ``(block_q, block_k)`` tile of scores, reused for every block
(a fixed size, at most ``TILE_ELEMENTS``). Half-precision inputs add fp32 copies of K
and V, ``O(Lk·d)``: they are computed in fp32. The backward allocates the gradients,
as large as the inputs, and two tiles.
"""

from __future__ import annotations

import math

import torch

from .common import Lengths, check_inputs, default_scale

# A 512 x 256 fp32 tile is 512 KiB: with its blocks of Q, K and V it fits a core's L2 cache
# (1 MiB on the course's machine), so the unfused passes that update it (matmul, max, exp2, sum,
# matmul) read it from cache rather than from memory. Small inputs batch several heads per step.
BLOCK_Q = 512  # queries per tile
BLOCK_K = 256  # keys per tile
TILE_ELEMENTS = 1 << 17  # elements of all the tiles in flight at once (one head's, at the default sizes)
LOG2E = 1.0 / math.log(2.0)

# Outputs are allocated through this name so that tests can fill them with NaN first and
# catch any element the loops forget to write.
_empty = torch.empty
# While ``count_io`` runs, the forward adds here the bytes of every block it reads and writes.
_io: dict[str, int] | None = None


def _count(name: str, elements: int, like: torch.Tensor) -> None:
    if _io is not None:
        _io[name] += elements * like.element_size()


def _head_chunk(block_q: int, block_k: int) -> int:
    return max(1, TILE_ELEMENTS // (block_q * block_k))


def _key_mask(lens: torch.Tensor | None, k0: int, k1: int) -> torch.Tensor | None:
    """``(heads, 1, k1 - k0)`` True where key ``k0 + j`` is real; ``None`` if all are."""
    if lens is None:
        return None
    return (torch.arange(k0, k1, device=lens.device) < lens[:, None])[:, None, :]


def _causal_mask(q0: int, q1: int, k0: int, k1: int, shift: int, device: torch.device) -> torch.Tensor:
    """``(q1 - q0, k1 - k0)`` True where query ``i`` may see key ``j``: ``j <= i + shift``."""
    i = torch.arange(q0, q1, device=device)[:, None]
    j = torch.arange(k0, k1, device=device)[None, :]
    return j <= i + shift


def _apply_masks(s, lens, lens_min, q0, q1, k0, k1, causal, shift) -> bool:
    """Set the scores of forbidden (query, key) pairs of one tile to ``-inf``; return whether any was."""
    masked = False
    if lens is not None and lens_min < k1:  # some sequence in this chunk ends inside the block
        s.masked_fill_(~_key_mask(lens, k0, k1), -math.inf)
        masked = True
    if causal and k1 - 1 > q0 + shift:  # the block reaches past the first query's diagonal
        s.masked_fill_(~_causal_mask(q0, q1, k0, k1, shift, s.device), -math.inf)
        masked = True
    return masked


def _kv_rows(t: torch.Tensor, group: int, h0: int, h1: int) -> torch.Tensor:
    """The K (or V) rows that query heads ``h0 ... h1 - 1`` read: head ``h // group`` (GQA)."""
    if group == 1:
        return t[h0:h1]
    return t.index_select(0, torch.arange(h0, h1, device=t.device) // group)  # these few heads only


def _forward(q, k, v, kv_lens, causal, scale, block_q, block_k, group=1):
    """Online-softmax forward. ``q`` ``(BH, Lq, D)``, ``k, v`` ``(BH / group, Lk, D)``;
    returns ``out (BH, Lq, D)`` and ``lse (BH, Lq)``, in fp32."""
    bh, len_q, dim = q.shape
    len_k = k.shape[1]
    shift = len_k - len_q  # causal: query i sees keys j <= i + shift (bottom-right alignment)
    k32, v32 = k.float(), v.float()  # no copy for fp32 input; half inputs are computed in fp32
    out = _empty((bh, len_q, dim), dtype=torch.float32, device=q.device)
    lse = _empty((bh, len_q), dtype=torch.float32, device=q.device)
    n = min(_head_chunk(min(block_q, max(len_q, 1)), block_k), max(bh, 1))
    tile = torch.empty(n * min(block_q, len_q) * block_k, dtype=torch.float32, device=q.device)  # reused scores
    for h0 in range(0, bh, n):
        h1 = min(h0 + n, bh)
        lens = None if kv_lens is None else kv_lens[h0:h1]
        lens_min, lens_max = (len_k, len_k) if lens is None else (int(lens.min()), int(lens.max()))
        for q0 in range(0, len_q, block_q):
            q1 = min(q0 + block_q, len_q)
            qb = q[h0:h1, q0:q1].float() * (scale * LOG2E)  # scale and log2(e) folded into q: no pass over the tile
            _count("Q", qb.numel(), q)
            m_i = torch.full((h1 - h0, q1 - q0, 1), -math.inf, device=q.device)
            l_i = torch.zeros((h1 - h0, q1 - q0, 1), device=q.device)
            acc = torch.zeros((h1 - h0, q1 - q0, dim), device=q.device)
            kc, vc = _kv_rows(k32, group, h0, h1), _kv_rows(v32, group, h0, h1)
            # Keys past every sequence's end, or past the last query's diagonal, are never visited.
            hi = min(lens_max, q1 + shift) if causal else lens_max
            for k0 in range(0, max(hi, 0), block_k):
                k1 = min(k0 + block_k, hi)
                s = tile[: (h1 - h0) * (q1 - q0) * (k1 - k0)].view(h1 - h0, q1 - q0, k1 - k0)
                _count("K", (h1 - h0) * (k1 - k0) * dim, k)  # K_j and V_j, read again for every query block
                _count("V", (h1 - h0) * (k1 - k0) * dim, v)
                torch.bmm(qb, kc[:, k0:k1].transpose(1, 2), out=s)
                masked = _apply_masks(s, lens, lens_min, q0, q1, k0, k1, causal, shift)
                m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
                # A row with no visible key yet has m_new = -inf; subtract 0 there so exp gives 0, not NaN.
                m_use = m_new.masked_fill(m_new == -math.inf, 0.0) if masked else m_new
                p = s.sub_(m_use).exp2_()  # in place: the tile now holds exp2(score - m_new)
                alpha = (m_i - m_use).exp2_()  # how much the old statistics shrink
                l_i.mul_(alpha).add_(p.sum(dim=-1, keepdim=True))
                acc.mul_(alpha).baddbmm_(p, vc[:, k0:k1])
                m_i = m_new
            # A row that saw no key has l_i = 0: its output is 0 and its lse is -inf (log of an empty sum).
            out[h0:h1, q0:q1] = acc.div_(l_i.masked_fill(l_i == 0, 1.0))
            _count("O", acc.numel(), q)
            lse[h0:h1, q0:q1] = ((m_i + l_i.log2()) / LOG2E).squeeze(-1)  # back to natural log
    return out, lse


def _backward(dout, q, k, v, out, lse, kv_lens, causal, scale, block_q, block_k, group=1):
    """Tiled backward by recomputation: each probability tile is rebuilt as ``exp(score - lse)``.

    With GQA (``group > 1``) dK and dV are first computed per query head, then summed over each group.
    """
    bh, len_q, dim = q.shape
    len_k = k.shape[1]
    shift = len_k - len_q
    k32, v32, do32 = k.float(), v.float(), dout.float()
    # delta_i = sum_j P_ij dP_ij = dO_i · O_i: the softmax backward's row term, O(len_q) per head.
    delta = (do32 * out).sum(dim=-1, keepdim=True)
    # Rows that saw no key have lse = -inf; +inf makes their recomputed probabilities exactly 0.
    lse2 = lse.masked_fill(lse == -math.inf, math.inf).unsqueeze(-1) * LOG2E  # base 2, like the scores
    dq = torch.zeros((bh, len_q, dim), dtype=torch.float32, device=q.device)
    grad_dtype = k.dtype if group == 1 else torch.float32  # summed over the group before rounding
    dk = _empty((bh, len_k, dim), dtype=grad_dtype, device=k.device)
    dv = _empty((bh, len_k, dim), dtype=grad_dtype, device=v.device)
    n = min(_head_chunk(min(block_q, max(len_q, 1)), block_k), max(bh, 1))
    tiles = torch.empty(2, n * min(block_q, len_q) * block_k, dtype=torch.float32, device=q.device)
    for h0 in range(0, bh, n):
        h1 = min(h0 + n, bh)
        lens = None if kv_lens is None else kv_lens[h0:h1]
        lens_min, lens_max = (len_k, len_k) if lens is None else (int(lens.min()), int(lens.max()))
        q32 = q[h0:h1].float()
        qs = q32 * (scale * LOG2E)  # scores in base 2, as in the forward
        for k0 in range(0, len_k, block_k):
            k1 = min(k0 + block_k, len_k)
            dk_acc = torch.zeros((h1 - h0, k1 - k0, dim), device=q.device)
            dv_acc = torch.zeros((h1 - h0, k1 - k0, dim), device=q.device)
            kb, vb = _kv_rows(k32, group, h0, h1)[:, k0:k1], _kv_rows(v32, group, h0, h1)[:, k0:k1]
            # Padding keys get zero gradients; causal: query i sees key k0 only if i >= k0 - shift.
            first_q = max(0, k0 - shift) if causal else 0
            for q0 in range(first_q, len_q if k0 < lens_max else first_q, block_q):
                q1 = min(q0 + block_q, len_q)
                size = (h1 - h0) * (q1 - q0) * (k1 - k0)
                s = tiles[0, :size].view(h1 - h0, q1 - q0, k1 - k0)
                dp = tiles[1, :size].view(h1 - h0, q1 - q0, k1 - k0)
                torch.bmm(qs[:, q0:q1], kb.transpose(1, 2), out=s)
                _apply_masks(s, lens, lens_min, q0, q1, k0, k1, causal, shift)
                p = s.sub_(lse2[h0:h1, q0:q1]).exp2_()  # the forward's probabilities, recomputed
                do_b = do32[h0:h1, q0:q1]
                dv_acc.baddbmm_(p.transpose(1, 2), do_b)  # dV = Pᵀ dO
                torch.bmm(do_b, vb.transpose(1, 2), out=dp)  # dP = dO Vᵀ
                ds = dp.sub_(delta[h0:h1, q0:q1]).mul_(p)  # dS = P ∘ (dP - delta)
                dq[h0:h1, q0:q1].baddbmm_(ds, kb)  # dQ = dS K · scale (scaled at the end)
                dk_acc.baddbmm_(ds.transpose(1, 2), q32[:, q0:q1])  # dK = dSᵀ Q · scale (scaled at the end)
            dk[h0:h1, k0:k1] = dk_acc.mul_(scale)
            dv[h0:h1, k0:k1] = dv_acc
    if group > 1:
        dk = dk.view(bh // group, group, len_k, dim).sum(1).to(k.dtype)
        dv = dv.view(bh // group, group, len_k, dim).sum(1).to(v.dtype)
    return dq.mul_(scale).to(q.dtype), dk, dv


class _TiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kv_lens, causal, scale, block_q, block_k):
        b, h, len_q, dim = q.shape
        h_kv, len_k = k.shape[1], k.shape[2]
        lens = None if kv_lens is None else kv_lens.long().repeat_interleave(h)  # one length per (batch, head)
        q3, k3, v3 = q.reshape(b * h, len_q, dim), k.reshape(b * h_kv, len_k, dim), v.reshape(b * h_kv, len_k, dim)
        out32, lse = _forward(q3, k3, v3, lens, causal, scale, block_q, block_k, h // h_kv)
        # The backward's delta = rowsum(dO * O) needs O before it is rounded to fp16/bf16: a rounded O
        # would put its rounding error (~0.4% in bf16) into every gradient. fp32 O costs O(len_q) per head.
        ctx.save_for_backward(q3, k3, v3, out32, lse)
        ctx.lens, ctx.causal, ctx.scale, ctx.blocks, ctx.shape = lens, causal, scale, (block_q, block_k), q.shape
        ctx.group, ctx.kv_shape = h // h_kv, k.shape
        out, lse = out32.to(q.dtype).view(b, h, len_q, dim), lse.view(b, h, len_q)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q3, k3, v3, out, lse = ctx.saved_tensors
        b, h, len_q, dim = ctx.shape
        do3 = dout.reshape(b * h, len_q, dim)
        dq, dk, dv = _backward(do3, q3, k3, v3, out, lse, ctx.lens, ctx.causal, ctx.scale, *ctx.blocks, ctx.group)
        return dq.view(ctx.shape), dk.view(ctx.kv_shape), dv.view(ctx.kv_shape), None, None, None, None, None


def tiled_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    kv_lens: Lengths | None = None,
    causal: bool = False,
    scale: float | None = None,
    block_q: int = BLOCK_Q,
    block_k: int = BLOCK_K,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention computed tile by tile with the online softmax; differentiable.

    Args:
        query: ``(batch, heads, len_q, head_dim)``.
        key, value: ``(batch, kv_heads, len_k, head_dim)``; ``heads % kv_heads == 0``
            (grouped-query attention: query head ``h`` reads K/V head ``h // (heads // kv_heads)``).
        kv_lens: ``(batch,)`` number of real keys per sequence (the rest is padding).
        causal: bottom-right aligned causal mask, as ``course_lib.causal_mask``.
        scale: factor on the scores, ``1 / sqrt(head_dim)`` by default.
        block_q, block_k: tile size. Any input length works; the last tile is smaller.
        return_lse: also return the log-sum-exp of each row's scores.

    Returns:
        ``output`` ``(batch, heads, len_q, head_dim)`` in the input dtype (computed in
        fp32), and with ``return_lse`` also ``lse`` ``(batch, heads, len_q)`` fp32,
        ``-inf`` for a row that sees no key (whose output is 0).
    """
    lens = check_inputs(query, key, value, kv_lens)
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block sizes must be positive, got block_q={block_q}, block_k={block_k}")
    scale = default_scale(query.shape[-1], scale)
    out, lse = _TiledAttention.apply(query, key, value, lens, bool(causal), scale, int(block_q), int(block_k))
    return (out, lse) if return_lse else out


def count_io(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    kv_lens: Lengths | None = None,
    causal: bool = False,
    block_q: int = BLOCK_Q,
    block_k: int = BLOCK_K,
) -> dict[str, int]:
    """Bytes the tiled forward moves, counted block by block while it runs.

    A fused kernel with the same tiles would read exactly these blocks from memory: each
    query block ``Q_i`` once, and every key block ``K_j``, ``V_j`` it visits once *per query
    block*; it writes each output block once. So K and V cost about
    ``ceil(len_q / block_q) · len_k · d`` elements each per head (fewer with padding or causal
    skipping): ``Θ(len_q · len_k · d / block_q)``, not ``O(len_k · d)``.

    Returns:
        ``{"Q": ..., "K": ..., "V": ..., "O": ...}`` in bytes of the input dtype, and
        ``"total"``. (The heads of a chunk are counted together; the counts do not depend on it.)
    """
    global _io
    _io = {"Q": 0, "K": 0, "V": 0, "O": 0}
    try:
        with torch.no_grad():
            tiled_attention(query, key, value, kv_lens=kv_lens, causal=causal, block_q=block_q, block_k=block_k)
        counts = dict(_io)
    finally:
        _io = None
    counts["total"] = sum(counts.values())
    return counts
