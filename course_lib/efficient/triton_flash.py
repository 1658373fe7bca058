"""FlashAttention in Triton: fused forward and backward kernels for cross-attention.

The forward kernel is the tiled online softmax of ``tiled.py`` with the loops moved
onto the GPU. One program owns ``BLOCK_M`` queries ``Q_i`` of one (batch, head): it
loads them once, walks over the keys and values ``K_j, V_j`` ``BLOCK_N`` at a time,
and keeps the running max ``m_i``, running sum ``l_i`` and accumulator ``O_i`` in
registers. Scores never leave the chip: the ``(len_q, len_k)`` matrix is never written.

Memory traffic is not ``O(len_q + len_k)``, though. Every query block re-reads all of
K and V, so one head reads ``Θ(len_q·len_k·d / BLOCK_M)`` bytes of K and V (plus
``Θ(len_q·d)`` for Q and O): FlashAttention's ``Θ(N²d²/M)`` with an on-chip tile of
``M ≈ BLOCK_M·d`` numbers. A larger ``BLOCK_M`` divides that traffic; the L2 cache
serves the query blocks of one head that run at the same time.

* **Cross-attention**: ``len_q`` and ``len_k`` are independent.
* **Any layout**: every tensor the kernels read or write (Q, K, V, O, dO, dQ, dK, dV)
  comes with its own four strides, so transposed views, slices of a fused QKV
  projection and ``expand()``-ed K/V (stride 0) are read where they lie.
* **Grouped-query attention (GQA/MQA)**: K and V may have fewer heads than Q
  (``heads % kv_heads == 0``). Query head ``h`` reads K/V head ``h // group``; the
  expanded K/V are never built. The dK/dV kernel owns one K/V head and sums over its
  ``group`` query heads in registers.
* **Padded sources**: ``kv_lens[b]`` bounds the key loop, so the blocks past a
  sequence's end are never loaded nor computed.
* **Packed variable length** (``flash_attention_varlen``): sequences lie one after the
  other in ``(total, heads, head_dim)`` tensors; ``cu_seqlens`` gives where each starts.
* **Causal** (optional): bottom-right aligned, ``key j <= query i + len_k - len_q``,
  per sequence. Blocks wholly above the diagonal are skipped too.
* **Two loops per program**: blocks where every (query, key) pair is allowed run
  without any mask (unmasked loads too); only the blocks on a boundary pay for masking.
* **Split-KV decoding** ("flash-decoding"): with few queries (one new token) there are
  too few query blocks to fill the GPU. ``num_splits`` programs then share one query
  block's keys; each writes a partial output and its log-sum-exp, and a small kernel
  combines them: ``O = Σ_s exp(lse_s - lse) O_s`` with ``lse = log Σ_s exp(lse_s)``.
* **Backward by recomputation**: the forward saves only ``lse = m + log(l)`` per
  row. The backward rebuilds each probability tile as ``exp(score - lse)`` and gets
  ``dV = Pᵀ dO``, ``dS = P ∘ (dO Vᵀ - delta)`` with ``delta = rowsum(dO ∘ O)``
  (a small preprocessing kernel), ``dQ = dS K · scale`` and ``dK = dSᵀ Q · scale``.
  One kernel owns a block of keys (dK, dV; it loops over queries), another a block of
  queries (dQ; it loops over keys), so no atomic adds are needed, at the price of
  computing ``Q Kᵀ`` and ``dO Vᵀ`` twice. (FlashAttention-2 instead runs one kernel over
  key blocks and accumulates dQ with atomic adds; Triton's fused-attention tutorial
  splits the work as here.)

Scores are kept in base 2: ``exp(x) = exp2(x · log2 e)``, and ``exp2`` is the GPU's
native instruction. ``log2 e`` is folded into the scale. fp16/bf16 tiles are multiplied
on tensor cores (``tl.dot``); fp32 inputs use exact fp32 products (``"ieee"``), which
run on the ordinary FMA units, not on tensor cores.

On a GPU the block sizes are autotuned, keyed on power-of-two buckets of the lengths
(a new length in a known bucket reuses the tuned config). On Hopper (compute capability
≥ 9) the forward reads K and V through tensor descriptors (TMA) when the installed Triton
has them and the layout allows it; the plain pointer path is the fallback everywhere.
Without CUDA the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set by
``course_lib.device`` when ``course_lib`` is imported) with small fixed blocks: slow, but
it runs the same code.
"""

from __future__ import annotations

import os
import warnings

import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

from .common import TRITON_DTYPES, TRITON_HEAD_DIMS, Lengths, check_inputs, default_scale

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if INTERPRET and isinstance(tl.zeros, JITFunction):
    # Triton was imported before TRITON_INTERPRET=1 was set, so its own library functions
    # (tl.zeros, tl.max...) are compiled-only and every kernel would fail inside the interpreter.
    raise ImportError(
        "Triton was imported before its interpreter was switched on (TRITON_INTERPRET=1), so its "
        "kernels cannot run on this CPU. Import course_lib before anything that imports triton "
        "(torch.utils.flop_counter does), or restart the kernel and run `import course_lib` first."
    )
HEAD_DIMS = TRITON_HEAD_DIMS
INTERPRETER_BLOCKS = {"BLOCK_M": 32, "BLOCK_N": 32}  # fixed; the interpreter pays per operation, not per element
MAX_SPLITS = 64  # split-KV: at most this many programs share one query block's keys
MIN_KEYS_PER_SPLIT = 256  # and each gets at least this many keys
HAS_TENSOR_DESCRIPTORS = hasattr(tl, "make_tensor_descriptor")
# COURSE_TRITON_TMA=0 turns the tensor-descriptor path off (the pointer path is then used everywhere).
TMA_ALLOWED = os.environ.get("COURSE_TRITON_TMA", "1") != "0"

# The backward: "split" runs a dK/dV kernel and a dQ kernel (no atomics; Q Kᵀ and dO Vᵀ computed twice);
# "atomic" runs the dK/dV kernel only and it adds dQ with fp32 atomic adds (FlashAttention-2's way).
# COURSE_TRITON_BACKWARD chooses; the benchmark times both on the GPU at hand.
BACKWARD = os.environ.get("COURSE_TRITON_BACKWARD", "split")

# Outputs are allocated through this name so that tests can fill them with NaN first.
_empty = torch.empty


# --- block sizes ---------------------------------------------------------------------
def _configs(blocks_m, blocks_n, stages, warps) -> list:
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
        for m in blocks_m for n in blocks_n for s in stages for w in warps
    ]


# Forward: BLOCK_M {64, 128} x BLOCK_N {32, 64, 128} x stages {2, 3, 4} x warps {4, 8}, and small query
# blocks {16, 32} for decoding (a handful of queries over a long cache). The first entry is small enough
# for every head dim and dtype (fp32 d=128 included): it is the fixed choice when autotuning is off.
_FWD_CONFIGS = _configs((64,), (32,), (2,), (4,)) + [
    c for c in _configs((64, 128), (32, 64, 128), (2, 3, 4), (4, 8)) if c.kwargs["BLOCK_N"] != 32 or c.num_stages != 2
    or c.num_warps != 4 or c.kwargs["BLOCK_M"] != 64
] + _configs((16, 32), (64, 128), (2, 3, 4), (4,))
_DKDV_CONFIGS = _configs((32,), (64,), (2,), (4,)) + _configs((32, 64), (64, 128), (2, 3), (4, 8))[1:]
_DQ_CONFIGS = _configs((64,), (32,), (2,), (4,)) + _configs((64, 128), (32, 64), (2, 3), (4, 8))[1:]
# COURSE_TRITON_TUNE_SPACE=small keeps a few configs per kernel that suit an H100/H200: every new
# (dtype, head dim, causal) then compiles a handful of variants instead of dozens, which is what a
# time-limited benchmark run can afford. The default is the full space above.
_SMALL_SPACE = {
    "fwd": {(64, 32, 2, 4), (128, 64, 3, 8), (128, 128, 3, 8), (128, 64, 4, 4), (16, 128, 3, 4), (32, 64, 3, 4)},
    "dkdv": {(32, 64, 2, 4), (64, 128, 3, 8), (64, 64, 3, 4), (32, 128, 3, 4)},
    "dq": {(64, 32, 2, 4), (128, 64, 3, 8), (64, 64, 3, 4), (128, 32, 3, 4)},
}
TUNE_SPACE = os.environ.get("COURSE_TRITON_TUNE_SPACE", "full")
if TUNE_SPACE == "small":
    _FWD_CONFIGS, _DKDV_CONFIGS, _DQ_CONFIGS = (
        [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages, c.num_warps) in _SMALL_SPACE[k]]
        for k, configs in (("fwd", _FWD_CONFIGS), ("dkdv", _DKDV_CONFIGS), ("dq", _DQ_CONFIGS))
    )
# The autotuner keys on power-of-two buckets of the lengths (LQ_BUCKET, LK_BUCKET), never on the exact
# lengths: a new length in a bucket it has seen reuses the tuned config. It adds the tensors' dtypes itself.
_TUNE_KEY = ["LQ_BUCKET", "LK_BUCKET", "HEAD_DIM", "CAUSAL", "VARLEN", "TMA"]
# Autotuning compiles and times every config for each new (bucket, dtype): worth it for a benchmark,
# slow for a test suite of many small shapes. COURSE_TRITON_AUTOTUNE=0 uses each list's first config.
AUTOTUNE = os.environ.get("COURSE_TRITON_AUTOTUNE", "1") != "0"
# Triton compiles a variant of a kernel for integer arguments equal to 1 or divisible by 16. For the
# lengths and head counts that buys nothing (they only bound loops and masks) and costs compilations.
_NO_SPECIALIZE = ["B", "H", "GROUP", "Lq", "Lk", "NUM_SPLITS", "LQ_BUCKET", "LK_BUCKET"]


def _bucket(n: int) -> int:
    """The power of two at or above ``n`` (at least 16): the autotuner's key for a length."""
    return max(16, 1 << max(0, int(n) - 1).bit_length())


def _shared_memory_limit() -> int:
    if not torch.cuda.is_available():
        return 1 << 30
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(props, "shared_memory_per_block_optin", 0) or 48 * 1024)


def _prune(configs, named_args, **kwargs):
    """Keep the configs that fit this GPU's shared memory (a rough count; the autotuner drops the rest).

    The streamed tiles are buffered ``num_stages - 1`` times, the resident tile once, and a
    ``(BLOCK_M, BLOCK_N)`` fp32 tile of scores may spill to shared memory.
    """
    args = {**named_args, **kwargs}
    dim, size = args["HEAD_DIM"], args["Q"].element_size()
    limit = _shared_memory_limit()
    kept = []
    for c in configs:
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        smem = (max(bm, bn) * dim + 2 * min(bm, bn) * dim * max(c.num_stages - 1, 1)) * size + bm * bn * 4
        if smem <= limit:
            kept.append(c)
    return kept or configs[:1]


def _prune_fwd(configs, named_args, **kwargs):
    """``_prune``, and query blocks that suit the queries: 16 or 32 rows only for short queries
    (≤ 32: decoding), 64 or 128 rows only for longer ones."""
    short = {**named_args, **kwargs}["LQ_BUCKET"] <= 32
    suited = [c for c in configs if (c.kwargs["BLOCK_M"] <= 32) == short] or configs
    return _prune(suited, named_args, **kwargs)


# --- forward ---------------------------------------------------------------------------
@triton.jit
def _sequence(off_b, KV_LENS, CU_Q, CU_K, Lq, Lk, VARLEN: tl.constexpr):
    """Where sequence ``off_b`` starts among the rows of Q and of K/V, its lengths and its real keys."""
    if VARLEN:  # packed: sequence b is rows cu_q[b] ... cu_q[b + 1] - 1
        q_start = tl.load(CU_Q + off_b)
        len_q = tl.load(CU_Q + off_b + 1) - q_start
        k_start = tl.load(CU_K + off_b)
        len_k = tl.load(CU_K + off_b + 1) - k_start
        kv_len = len_k
        q_start = q_start.to(tl.int64)
        k_start = k_start.to(tl.int64)
    else:  # padded: every sequence starts at row 0 of its own batch entry; kv_lens[b] keys are real
        q_start = off_b * 0  # an int64 zero, like the packed starts
        k_start = off_b * 0
        len_q = Lq
        len_k = Lk
        kv_len = tl.load(KV_LENS + off_b)
    return q_start, k_start, len_q, len_k, kv_len


@triton.jit
def _load_kv(kt_ptrs, v_ptrs, k_desc, v_desc, off_b, off_hk, start_n, cols, kv_len,
             MASKED: tl.constexpr, TMA: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Load ``K_jᵀ`` ``(HEAD_DIM, BLOCK_N)`` and ``V_j`` ``(BLOCK_N, HEAD_DIM)``; padding keys read as 0."""
    if TMA:  # tensor descriptors: the copy engine fetches the tile; rows past len_k come back as zeros
        at = [off_b.to(tl.int32), off_hk.to(tl.int32), start_n, 0]  # descriptor offsets are 32-bit
        k = k_desc.load(at).reshape(BLOCK_N, HEAD_DIM)
        v = v_desc.load(at).reshape(BLOCK_N, HEAD_DIM)
        if MASKED:  # rows between kv_len and len_k were fetched too: whatever they hold must not count
            k = tl.where(cols[:, None] < kv_len, k, 0.0)
            v = tl.where(cols[:, None] < kv_len, v, 0.0)
        kt = tl.trans(k)
    elif MASKED:
        kt = tl.load(kt_ptrs, mask=cols[None, :] < kv_len, other=0.0)
        v = tl.load(v_ptrs, mask=cols[:, None] < kv_len, other=0.0)
    else:  # a full tile inside the sequence: no mask at all
        kt = tl.load(kt_ptrs)
        v = tl.load(v_ptrs)
    return kt, v


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
               offs_m, offs_n, lo, hi, kv_len, shift, qk_scale,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, DOT: tl.constexpr,
               k_desc=None, v_desc=None, off_b=0, off_hk=0,
               TMA: tl.constexpr = False, HEAD_DIM: tl.constexpr = 16):
    """Visit key blocks ``[lo, hi)`` and update the running max ``m_i``, sum ``l_i`` and output ``acc``."""
    kt_ptrs += lo * stride_kn
    v_ptrs += lo * stride_vn
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        kt, v = _load_kv(kt_ptrs, v_ptrs, k_desc, v_desc, off_b, off_hk, start_n, cols, kv_len,
                         MASKED, TMA, BLOCK_N, HEAD_DIM)
        s = tl.dot(q, kt, input_precision=DOT) * qk_scale  # (BLOCK_M, BLOCK_N) scores, in base-2 units
        if MASKED:
            allowed = cols[None, :] < kv_len
            if CAUSAL:
                allowed = allowed & (cols[None, :] <= offs_m[:, None] + shift)
            s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if MASKED:  # a row with no allowed key so far: subtract 0, so that exp2(-inf) = 0 and not NaN
            m_new_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_new_safe = m_new
        p = tl.math.exp2(s - m_new_safe[:, None])
        alpha = tl.math.exp2(m_i - m_new_safe)  # rescales what was summed against the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT)
        m_i = m_new
        kt_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn
    return acc, l_i, m_i


@triton.jit
def _key_bounds(start_m, kv_len, Lq, shift, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key range of a query block: ``[0, full)`` needs no mask, ``[full, hi)`` does, the rest is skipped."""
    if CAUSAL:
        # The block's last query sees keys < last + 1 + shift; its first sees keys < start_m + 1 + shift.
        hi = tl.minimum(kv_len, tl.minimum(start_m + BLOCK_M, Lq) + shift)
        full = tl.minimum(kv_len, start_m + 1 + shift)
    else:
        hi = kv_len
        full = kv_len
    hi = tl.maximum(hi, 0)
    full = tl.maximum(full, 0) // BLOCK_N * BLOCK_N
    return full, hi


@triton.jit
def _split_bounds(full, hi, split, Lk, NUM_SPLITS, BLOCK_N: tl.constexpr):
    """Split-KV: split ``s`` of ``NUM_SPLITS`` visits ``[lo, full_s)`` unmasked and ``[full_s, hi_s)`` masked."""
    keys_per_split = tl.cdiv(tl.cdiv(Lk, NUM_SPLITS), BLOCK_N) * BLOCK_N  # whole blocks per split
    lo = split * keys_per_split
    hi_s = tl.minimum(hi, lo + keys_per_split)
    full_s = tl.maximum(tl.minimum(full, hi_s), lo)
    return lo, full_s, hi_s


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _attn_fwd(Q, K, V, Out, LSE, KV_LENS, CU_Q, CU_K, sm_scale,
              stride_qb, stride_qh, stride_qm, stride_qd,
              stride_kb, stride_kh, stride_kn, stride_kd,
              stride_vb, stride_vh, stride_vn, stride_vd,
              stride_os, stride_ob, stride_oh, stride_om, stride_od,
              stride_ls, stride_lb, stride_lh,
              B, H, GROUP, Lq, Lk, NUM_SPLITS, LQ_BUCKET, LK_BUCKET,
              HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, VARLEN: tl.constexpr, DOT: tl.constexpr,
              TMA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M  # this program's queries: start_m ... start_m + BLOCK_M - 1
    off_bh = tl.program_id(1)  # its (batch, head)
    split = tl.program_id(2)  # and its share of the keys (split-KV; 0 of 1 otherwise)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    off_hk = off_h // GROUP  # GQA: the K/V head this query head reads
    q_start, k_start, len_q, len_k, kv_len = _sequence(off_b, KV_LENS, CU_Q, CU_K, Lq, Lk, VARLEN)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < len_q
    q_ptrs = (Q + off_b * stride_qb + off_h * stride_qh + (q_start + offs_m[:, None]) * stride_qm
              + offs_d[None, :] * stride_qd)
    k_base = K + off_b * stride_kb + off_hk * stride_kh + k_start * stride_kn
    v_base = V + off_b * stride_vb + off_hk * stride_vh + k_start * stride_vn
    kt_ptrs = k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)  # Q_i: loaded once, reused for every key block
    if TMA:
        k_desc = tl.make_tensor_descriptor(K, shape=[B, H // GROUP, Lk, HEAD_DIM],
                                           strides=[stride_kb, stride_kh, stride_kn, 1],
                                           block_shape=[1, 1, BLOCK_N, HEAD_DIM])
        v_desc = tl.make_tensor_descriptor(V, shape=[B, H // GROUP, Lk, HEAD_DIM],
                                           strides=[stride_vb, stride_vh, stride_vn, 1],
                                           block_shape=[1, 1, BLOCK_N, HEAD_DIM])
    else:
        k_desc = K
        v_desc = V

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (base 2)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(s - m_i)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)  # O_i: running sum of exp2(s - m_i) * v
    qk_scale = sm_scale * 1.4426950408889634  # scale and log2(e) in one multiply
    shift = len_k - len_q
    full, hi = _key_bounds(start_m, kv_len, len_q, shift, CAUSAL, BLOCK_M, BLOCK_N)
    hi = tl.where(start_m < len_q, hi, 0)  # packed sequences: a block past this sequence's queries does nothing
    lo, full, hi = _split_bounds(full, hi, split, len_k, NUM_SPLITS, BLOCK_N)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
                               offs_m, offs_n, lo, full, kv_len, shift, qk_scale, False, CAUSAL, BLOCK_N, DOT,
                               k_desc, v_desc, off_b, off_hk, TMA, HEAD_DIM)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
                               offs_m, offs_n, full, hi, kv_len, shift, qk_scale, True, CAUSAL, BLOCK_N, DOT,
                               k_desc, v_desc, off_b, off_hk, TMA, HEAD_DIM)

    # A row that saw no key (kv_len = 0, or causal rows before the first key): l = 0, output 0, lse -inf.
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)  # natural log
    o_ptrs = (Out + split * stride_os + off_b * stride_ob + off_h * stride_oh + (q_start + offs_m[:, None]) * stride_om
              + offs_d[None, :] * stride_od)
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    lse_ptrs = LSE + split * stride_ls + off_b * stride_lb + off_h * stride_lh + q_start + offs_m
    tl.store(lse_ptrs, lse, mask=row_ok)


@triton.jit(do_not_specialize=["H", "Lq", "NUM_SPLITS"])
def _attn_combine(O_PART, LSE_PART, Out, LSE,
                  stride_ps, stride_pb, stride_ph, stride_pm, stride_ls,
                  stride_ob, stride_oh, stride_om, stride_od,
                  H, Lq, NUM_SPLITS, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """Split-KV: merge the splits' outputs ``O_s`` by their log-sum-exps, ``O = Σ_s exp(lse_s - lse) O_s``."""
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < Lq
    lse_ptrs = LSE_PART + off_bh.to(tl.int64) * Lq + offs_m  # partial lse: (splits, batch * heads, Lq)
    o_ptrs = O_PART + off_b * stride_pb + off_h * stride_ph + offs_m[:, None] * stride_pm + offs_d[None, :]
    m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    for s in range(0, NUM_SPLITS):
        m = tl.maximum(m, tl.load(lse_ptrs + s * stride_ls, mask=row_ok, other=float("-inf")))
    m_safe = tl.where(m == float("-inf"), 0.0, m)  # every split empty: weights exp(-inf) = 0
    weight_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for s in range(0, NUM_SPLITS):
        lse_s = tl.load(lse_ptrs + s * stride_ls, mask=row_ok, other=float("-inf"))
        w = tl.exp(lse_s - m_safe)
        o_s = tl.load(o_ptrs + s * stride_ps, mask=row_ok[:, None], other=0.0)
        weight_sum += w
        acc += w[:, None] * o_s
    empty = weight_sum == 0.0
    out = acc / tl.where(empty, 1.0, weight_sum)[:, None]
    lse = tl.where(empty, float("-inf"), m_safe + tl.log(tl.where(empty, 1.0, weight_sum)))
    out_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(out_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + off_bh.to(tl.int64) * Lq + offs_m, lse, mask=row_ok)


# --- backward --------------------------------------------------------------------------
@triton.jit(do_not_specialize=["H", "Lq"])
def _attn_bwd_delta(Out, DO, DELTA,
                    stride_ob, stride_oh, stride_om, stride_od,
                    stride_dob, stride_doh, stride_dom, stride_dod,
                    stride_lb, stride_lh,
                    H, Lq, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_i = sum_d dO_id · O_id, the row term of the softmax backward."""
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m[:, None] < Lq
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    do_ptrs = DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod
    o = tl.load(o_ptrs, mask=row_ok, other=0.0).to(tl.float32)
    do = tl.load(do_ptrs, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(DELTA + off_b * stride_lb + off_h * stride_lh + offs_m, tl.sum(o * do, 1), mask=offs_m < Lq)


@triton.jit
def _dkdv_inner(dk, dv, k, v, qt_ptrs, do_ptrs, LSE, DELTA, stride_qm, stride_dom,
                offs_n, lo, hi, Lq, shift, qk_scale,
                MASKED: tl.constexpr, BLOCK_M: tl.constexpr, DOT: tl.constexpr,
                dq_ptrs=None, stride_dqm=0, sm_scale=1.0, ATOMIC_DQ: tl.constexpr = False):
    """Visit query blocks ``[lo, hi)``; accumulate dK and dV of one key block (in transposed tiles).

    ``ATOMIC_DQ``: also add this key block's share of dQ, ``dS K · scale``, into an fp32 dQ with
    atomic adds (FlashAttention-2's backward), instead of leaving dQ to a kernel of its own.
    """
    qt_ptrs += lo * stride_qm
    do_ptrs += lo * stride_dom
    if ATOMIC_DQ:
        dq_ptrs += lo * stride_dqm
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        row_ok = rows < Lq
        qt = tl.load(qt_ptrs, mask=row_ok[None, :], other=0.0)
        do = tl.load(do_ptrs, mask=row_ok[:, None], other=0.0)
        # The saved lse, in base 2. Rows that saw no key (lse = -inf) or lie past Lq get +inf: P = 0 there.
        lse = tl.load(LSE + rows, mask=row_ok, other=float("inf"))
        lse2 = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634
        delta = tl.load(DELTA + rows, mask=row_ok, other=0.0)
        st = tl.dot(k, qt, input_precision=DOT) * qk_scale  # (BLOCK_N, BLOCK_M): scores, transposed, base 2
        pt = tl.math.exp2(st - lse2[None, :])  # the forward's probabilities, recomputed
        if MASKED:  # causal: key j is seen by query i only if j <= i + shift
            pt = tl.where(offs_n[:, None] <= rows[None, :] + shift, pt, 0.0)
        dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=DOT)  # dV += Pᵀ dO
        dpt = tl.dot(v, tl.trans(do), input_precision=DOT)  # dPᵀ = V dOᵀ
        dst = pt * (dpt - delta[None, :])  # dSᵀ = Pᵀ ∘ (dPᵀ - delta)
        dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=DOT)  # dK += dSᵀ Q (scaled at the end)
        if ATOMIC_DQ:  # dQ_i += dS_ij K_j · scale, summed over key blocks by atomic adds
            dq = tl.dot(tl.trans(dst.to(k.dtype)), k, input_precision=DOT) * sm_scale
            tl.atomic_add(dq_ptrs, dq, mask=row_ok[:, None])
            dq_ptrs += BLOCK_M * stride_dqm
        qt_ptrs += BLOCK_M * stride_qm
        do_ptrs += BLOCK_M * stride_dom
    return dk, dv


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV, DQ_ACC, LSE, DELTA, KV_LENS, CU_Q, CU_K, sm_scale,
                   stride_qb, stride_qh, stride_qm, stride_qd,
                   stride_kb, stride_kh, stride_kn, stride_kd,
                   stride_vb, stride_vh, stride_vn, stride_vd,
                   stride_dob, stride_doh, stride_dom, stride_dod,
                   stride_dkb, stride_dkh, stride_dkn, stride_dkd,
                   stride_dvb, stride_dvh, stride_dvn, stride_dvd,
                   stride_aqb, stride_aqh, stride_aqm, stride_aqd,
                   stride_lb, stride_lh,
                   B, H, GROUP, Lq, Lk, LQ_BUCKET, LK_BUCKET,
                   HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, VARLEN: tl.constexpr, DOT: tl.constexpr,
                   TMA: tl.constexpr, ATOMIC_DQ: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N  # this program's keys K_j, V_j
    off_bhk = tl.program_id(1)  # and its (batch, K/V head): it serves the GROUP query heads that read it
    H_KV = H // GROUP
    off_b = (off_bhk // H_KV).to(tl.int64)
    off_hk = (off_bhk % H_KV).to(tl.int64)
    q_start, k_start, len_q, len_k, kv_len = _sequence(off_b, KV_LENS, CU_Q, CU_K, Lq, Lk, VARLEN)

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = offs_n[:, None] < kv_len
    rows_k = k_start + offs_n[:, None]
    k_ptrs = K + off_b * stride_kb + off_hk * stride_kh + rows_k * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_hk * stride_vh + rows_k * stride_vn + offs_d[None, :] * stride_vd
    k = tl.load(k_ptrs, mask=key_ok, other=0.0)  # this block of keys and values stays on chip
    v = tl.load(v_ptrs, mask=key_ok, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    shift = len_k - len_q
    hi = tl.where(start_n < kv_len, len_q, 0)  # a block made only of padding keys is skipped: gradients stay 0
    for g in range(0, GROUP):  # GQA: dK and dV sum over the query heads that share this K/V head
        off_h = off_hk * GROUP + g
        q_base = Q + off_b * stride_qb + off_h * stride_qh + q_start * stride_qm
        do_base = DO + off_b * stride_dob + off_h * stride_doh + q_start * stride_dom
        qt_ptrs = q_base + offs_m[None, :] * stride_qm + offs_d[:, None] * stride_qd
        do_ptrs = do_base + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod
        lse_h = LSE + off_b * stride_lb + off_h * stride_lh + q_start
        delta_h = DELTA + off_b * stride_lb + off_h * stride_lh + q_start
        dq_ptrs = (DQ_ACC + off_b * stride_aqb + off_h * stride_aqh + (q_start + offs_m[:, None]) * stride_aqm
                   + offs_d[None, :] * stride_aqd)
        if CAUSAL:
            # Queries before start_n - shift see none of these keys; from start_n + BLOCK_N - 1 - shift on all.
            lo = tl.maximum(start_n - shift, 0) // BLOCK_M * BLOCK_M
            mid = lo + (tl.maximum(start_n + BLOCK_N - 1 - shift - lo, 0) + BLOCK_M - 1) // BLOCK_M * BLOCK_M
            dk, dv = _dkdv_inner(dk, dv, k, v, qt_ptrs, do_ptrs, lse_h, delta_h, stride_qm, stride_dom,
                                 offs_n, lo, tl.minimum(mid, hi), len_q, shift, qk_scale, True, BLOCK_M, DOT,
                                 dq_ptrs, stride_aqm, sm_scale, ATOMIC_DQ)
            dk, dv = _dkdv_inner(dk, dv, k, v, qt_ptrs, do_ptrs, lse_h, delta_h, stride_qm, stride_dom,
                                 offs_n, mid, hi, len_q, shift, qk_scale, False, BLOCK_M, DOT,
                                 dq_ptrs, stride_aqm, sm_scale, ATOMIC_DQ)
        else:
            dk, dv = _dkdv_inner(dk, dv, k, v, qt_ptrs, do_ptrs, lse_h, delta_h, stride_qm, stride_dom,
                                 offs_n, 0, hi, len_q, shift, qk_scale, False, BLOCK_M, DOT,
                                 dq_ptrs, stride_aqm, sm_scale, ATOMIC_DQ)
    # Padding keys were loaded as zeros and may have picked up values: their gradients are exactly 0.
    dk = tl.where(key_ok, dk * sm_scale, 0.0)
    dv = tl.where(key_ok, dv, 0.0)
    store_ok = offs_n[:, None] < len_k
    dk_ptrs = DK + off_b * stride_dkb + off_hk * stride_dkh + rows_k * stride_dkn + offs_d[None, :] * stride_dkd
    dv_ptrs = DV + off_b * stride_dvb + off_hk * stride_dvh + rows_k * stride_dvn + offs_d[None, :] * stride_dvd
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=store_ok)
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=store_ok)


@triton.jit
def _dq_inner(dq, q, do, lse2, delta, kt_ptrs, vt_ptrs, stride_kn, stride_vn,
              offs_m, offs_n, lo, hi, kv_len, shift, qk_scale,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, DOT: tl.constexpr):
    """Visit key blocks ``[lo, hi)``; accumulate dQ of one query block."""
    kt_ptrs += lo * stride_kn
    vt_ptrs += lo * stride_vn
    for start_n in range(lo, hi, BLOCK_N):
        if MASKED:
            cols = start_n + offs_n
            kt = tl.load(kt_ptrs, mask=cols[None, :] < kv_len, other=0.0)
            vt = tl.load(vt_ptrs, mask=cols[None, :] < kv_len, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
            vt = tl.load(vt_ptrs)
        s = tl.dot(q, kt, input_precision=DOT) * qk_scale
        p = tl.math.exp2(s - lse2[:, None])  # the forward's probabilities, recomputed
        if MASKED:
            allowed = cols[None, :] < kv_len
            if CAUSAL:
                allowed = allowed & (cols[None, :] <= offs_m[:, None] + shift)
            p = tl.where(allowed, p, 0.0)
        dp = tl.dot(do, vt, input_precision=DOT)  # dP = dO Vᵀ
        ds = p * (dp - delta[:, None])  # dS = P ∘ (dP - delta)
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=DOT)  # dQ += dS K (scaled at the end)
        kt_ptrs += BLOCK_N * stride_kn
        vt_ptrs += BLOCK_N * stride_vn
    return dq


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, KV_LENS, CU_Q, CU_K, sm_scale,
                 stride_qb, stride_qh, stride_qm, stride_qd,
                 stride_kb, stride_kh, stride_kn, stride_kd,
                 stride_vb, stride_vh, stride_vn, stride_vd,
                 stride_dob, stride_doh, stride_dom, stride_dod,
                 stride_dqb, stride_dqh, stride_dqm, stride_dqd,
                 stride_lb, stride_lh,
                 B, H, GROUP, Lq, Lk, LQ_BUCKET, LK_BUCKET,
                 HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, VARLEN: tl.constexpr, DOT: tl.constexpr,
                 TMA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M  # this program's queries Q_i
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    off_hk = off_h // GROUP
    q_start, k_start, len_q, len_k, kv_len = _sequence(off_b, KV_LENS, CU_Q, CU_K, Lq, Lk, VARLEN)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < len_q
    rows_q = q_start + offs_m[:, None]
    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + rows_q * stride_qm + offs_d[None, :] * stride_qd
    do_ptrs = DO + off_b * stride_dob + off_h * stride_doh + rows_q * stride_dom + offs_d[None, :] * stride_dod
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    do = tl.load(do_ptrs, mask=row_ok[:, None], other=0.0)
    lse_ptrs = LSE + off_b * stride_lb + off_h * stride_lh + q_start + offs_m
    lse = tl.load(lse_ptrs, mask=row_ok, other=float("inf"))
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634  # base 2; no key: P = 0
    delta = tl.load(DELTA + off_b * stride_lb + off_h * stride_lh + q_start + offs_m, mask=row_ok, other=0.0)
    k_base = K + off_b * stride_kb + off_hk * stride_kh + k_start * stride_kn
    v_base = V + off_b * stride_vb + off_hk * stride_vh + k_start * stride_vn
    kt_ptrs = k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    vt_ptrs = v_base + offs_n[None, :] * stride_vn + offs_d[:, None] * stride_vd
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    shift = len_k - len_q
    full, hi = _key_bounds(start_m, kv_len, len_q, shift, CAUSAL, BLOCK_M, BLOCK_N)
    hi = tl.where(start_m < len_q, hi, 0)
    full = tl.minimum(full, hi)
    dq = _dq_inner(dq, q, do, lse2, delta, kt_ptrs, vt_ptrs, stride_kn, stride_vn,
                   offs_m, offs_n, 0, full, kv_len, shift, qk_scale, False, CAUSAL, BLOCK_N, DOT)
    dq = _dq_inner(dq, q, do, lse2, delta, kt_ptrs, vt_ptrs, stride_kn, stride_vn,
                   offs_m, offs_n, full, hi, kv_len, shift, qk_scale, True, CAUSAL, BLOCK_N, DOT)
    dq_ptrs = DQ + off_b * stride_dqb + off_h * stride_dqh + rows_q * stride_dqm + offs_d[None, :] * stride_dqd
    tl.store(dq_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


# --- launching -------------------------------------------------------------------------
def _precision(q: torch.Tensor) -> str:
    # fp32 inputs get exact fp32 products ("ieee"); a GPU would otherwise round them to tf32.
    # For fp16 and bf16 inputs the setting changes nothing.
    return "ieee" if q.dtype == torch.float32 else "tf32"


# kernel -> (its autotuned wrapper, its fixed config). The interpreter uses neither.
_TUNED = {}
if not INTERPRET:
    for _kernel, _list, _pruner, _extra in (
        (_attn_fwd, _FWD_CONFIGS, _prune_fwd, {}),
        # atomic dQ accumulates: the autotuner zeroes it before every timed run and before the real one
        (_attn_bwd_dkdv, _DKDV_CONFIGS, _prune, {"reset_to_zero": ["DQ_ACC"]}),
        (_attn_bwd_dq, _DQ_CONFIGS, _prune, {}),
    ):
        _key = _TUNE_KEY + (["ATOMIC_DQ"] if _kernel is _attn_bwd_dkdv else [])
        _tuned = triton.autotune(configs=_list, key=_key, prune_configs_by={"early_config_prune": _pruner}, **_extra)
        _TUNED[_kernel] = (_tuned(_kernel), _list[0])


def _launch(kernel, grid, *args, **kwargs) -> None:
    """Run a kernel with block sizes from the autotuner (GPU), a fixed config, or the interpreter's."""
    if INTERPRET:
        kernel[grid](*args, **kwargs, **INTERPRETER_BLOCKS)
        return
    tuned, fixed = _TUNED[kernel]
    if AUTOTUNE:
        tuned[grid](*args, **kwargs)
    else:
        kernel[grid](*args, **kwargs, **fixed.kwargs, num_warps=fixed.num_warps, num_stages=fixed.num_stages)


# None: tensor descriptors wherever they work (never in the interpreter). True or False: tests force the
# choice; True still needs a Triton that has them, and on a GPU a Hopper GPU and a layout they take.
FORCE_TMA: bool | None = None
_ALLOCATOR_SET = False


def _use_tma(k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the forward may read K and V through tensor descriptors (TMA).

    Needs a Triton with ``tl.make_tensor_descriptor``, a GPU of compute capability 9 or more
    (Hopper), and a layout the copy engine takes: the head dim contiguous, the other strides
    non-zero multiples of 16 bytes, 16-byte aligned data. Anything else uses the pointer path.
    """
    global _ALLOCATOR_SET
    if not (HAS_TENSOR_DESCRIPTORS and TMA_ALLOWED) or FORCE_TMA is False:
        return False
    if INTERPRET:
        return bool(FORCE_TMA)
    if not k.is_cuda or torch.cuda.get_device_capability(k.device)[0] < 9:
        return False
    for t in (k, v):
        if t.stride(-1) != 1 or t.data_ptr() % 16 or any(s == 0 or s * t.element_size() % 16 for s in t.stride()[:-1]):
            return False
    if not _ALLOCATOR_SET:  # descriptors made inside a kernel need a little global scratch memory
        triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
        _ALLOCATOR_SET = True
    return True


def _num_splits(num_splits: int | None, q: torch.Tensor, len_k: int) -> int:
    """Split-KV: how many programs share one query block's keys.

    ``None`` picks: 1 without CUDA, and 1 when the query blocks alone already give every
    streaming multiprocessor (SM) a program. Otherwise enough splits for about four programs
    per SM (so that each SM has loads in flight while others wait), each with at least
    ``MIN_KEYS_PER_SPLIT`` keys, at most ``MAX_SPLITS``. Decoding one token for one sequence
    with 32 query heads over 64k keys on a 132-SM H100/H200: 32 programs alone would leave
    100 SMs idle; 17 splits give 544.
    """
    if num_splits is not None:
        if isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1:
            raise ValueError(f"num_splits must be a positive int or None, got {num_splits!r}")
        return num_splits
    if INTERPRET or not q.is_cuda:
        return 1
    b, h, len_q, _ = q.shape
    programs = triton.cdiv(len_q, 16 if len_q <= 32 else 64) * b * h
    sms = torch.cuda.get_device_properties(q.device).multi_processor_count
    if programs >= sms or len_k < 2 * MIN_KEYS_PER_SPLIT:
        return 1
    return max(1, min(MAX_SPLITS, triton.cdiv(4 * sms, programs), len_k // MIN_KEYS_PER_SPLIT))


def _rows_strides(t: torch.Tensor, varlen: bool) -> tuple[int, int, int, int]:
    """The four strides (batch, head, row, dim) the kernels index with; packed tensors have no batch stride."""
    return (0, t.stride(1), t.stride(0), t.stride(2)) if varlen else tuple(t.stride())


class _Problem:
    """Everything a launch needs to know about one call, for padded ``(batch, heads, len, d)`` or packed inputs."""

    def __init__(self, q, k, v, kv_lens, cu_q, cu_k, len_q, len_k, causal, scale):
        self.varlen = cu_q is not None
        self.batch = cu_q.numel() - 1 if self.varlen else q.shape[0]
        self.heads = q.shape[-2] if self.varlen else q.shape[1]
        kv_heads = k.shape[-2] if self.varlen else k.shape[1]
        self.group = self.heads // kv_heads
        self.kv_heads = kv_heads
        self.len_q, self.len_k, self.dim = len_q, len_k, q.shape[-1]
        self.rows_q = q.shape[0] if self.varlen else len_q  # rows of lse / delta per head
        self.causal, self.scale, self.dot = causal, scale, _precision(q)
        dummy = kv_lens if kv_lens is not None else cu_q
        self.kv_lens = dummy if kv_lens is None else kv_lens
        self.cu_q = dummy if cu_q is None else cu_q
        self.cu_k = dummy if cu_k is None else cu_k
        # lse and delta: (batch, heads, len_q) padded, (1, heads, total_q) packed
        self.lse_shape = (1, self.heads, self.rows_q) if self.varlen else (self.batch, self.heads, len_q)
        self.lse_strides = (0 if self.varlen else self.heads * len_q, self.rows_q)

    def common(self):
        return dict(HEAD_DIM=self.dim, CAUSAL=self.causal, VARLEN=self.varlen, DOT=self.dot)

    def sizes(self):
        return (self.batch, self.heads, self.group, self.len_q, self.len_k)

    def buckets(self):
        return (_bucket(self.len_q), _bucket(self.len_k))


def _forward(p: _Problem, q, k, v, num_splits: int):
    out = _empty(q.shape, dtype=q.dtype, device=q.device)
    lse = _empty(p.lse_shape, dtype=torch.float32, device=q.device)
    tma = not p.varlen and _use_tma(k, v)
    if num_splits == 1:
        o_dst, l_dst, o_split, l_split = out, lse, 0, 0
    else:  # each split writes its own normalised output and lse, in fp32; _attn_combine merges them
        o_dst = _empty((num_splits, *q.shape), dtype=torch.float32, device=q.device)
        l_dst = _empty((num_splits, *p.lse_shape), dtype=torch.float32, device=q.device)
        o_split, l_split = o_dst.stride(0), l_dst.stride(0)
    o_strides = _rows_strides(o_dst[0] if num_splits > 1 else out, p.varlen)
    grid = lambda meta: (triton.cdiv(p.len_q, meta["BLOCK_M"]), p.batch * p.heads, num_splits)  # noqa: E731
    args = (q, k, v, o_dst, l_dst, p.kv_lens, p.cu_q, p.cu_k, p.scale,
            *_rows_strides(q, p.varlen), *_rows_strides(k, p.varlen), *_rows_strides(v, p.varlen),
            o_split, *o_strides, l_split, *p.lse_strides, *p.sizes(), num_splits, *p.buckets())
    try:
        _launch(_attn_fwd, grid, *args, **p.common(), TMA=tma)
    except Exception as exc:  # the descriptor path failed to build on this GPU/Triton: the pointer path, for good
        if not tma or INTERPRET:
            raise
        global TMA_ALLOWED
        TMA_ALLOWED = False
        warnings.warn(f"tensor descriptors (TMA) failed, using the pointer path from now on: {exc}", stacklevel=3)
        _launch(_attn_fwd, grid, *args, **p.common(), TMA=False)
    if num_splits > 1:
        block = 16
        _attn_combine[(triton.cdiv(p.len_q, block), p.batch * p.heads)](
            o_dst, l_dst, out, lse, *o_dst.stride()[:4], l_dst.stride(0), *out.stride(),
            p.heads, p.len_q, num_splits, HEAD_DIM=p.dim, BLOCK_M=block)
    return out, lse


def _backward(p: _Problem, dout, q, k, v, out, lse):
    delta = _empty(p.lse_shape, dtype=torch.float32, device=q.device)
    block = INTERPRETER_BLOCKS["BLOCK_M"] if INTERPRET else 64
    # delta is per row: packed inputs are one "batch" of total_q rows
    delta_batch, delta_rows = (1, p.rows_q) if p.varlen else (p.batch, p.len_q)
    _attn_bwd_delta[(triton.cdiv(delta_rows, block), delta_batch * p.heads)](
        out, dout, delta, *_rows_strides(out, p.varlen), *_rows_strides(dout, p.varlen), *p.lse_strides,
        p.heads, delta_rows, HEAD_DIM=p.dim, BLOCK_M=block)
    dq = _empty(q.shape, dtype=q.dtype, device=q.device)  # contiguous, whatever the layout of q, k, v
    dk = _empty(k.shape, dtype=k.dtype, device=k.device)
    dv = _empty(v.shape, dtype=v.dtype, device=v.device)
    atomic = BACKWARD == "atomic"
    # atomic: dQ summed in fp32 by the dK/dV kernel; otherwise a one-element stand-in that is never written
    dq_acc = torch.zeros(q.shape if atomic else (1,) * q.dim(), dtype=torch.float32, device=q.device)
    inputs = (*_rows_strides(q, p.varlen), *_rows_strides(k, p.varlen), *_rows_strides(v, p.varlen),
              *_rows_strides(dout, p.varlen))
    grid_kv = lambda meta: (triton.cdiv(p.len_k, meta["BLOCK_N"]), p.batch * p.kv_heads)  # noqa: E731
    _launch(_attn_bwd_dkdv, grid_kv, q, k, v, dout, dk, dv, dq_acc, lse, delta, p.kv_lens, p.cu_q, p.cu_k, p.scale,
            *inputs, *_rows_strides(dk, p.varlen), *_rows_strides(dv, p.varlen), *_rows_strides(dq_acc, p.varlen),
            *p.lse_strides, *p.sizes(), *p.buckets(), **p.common(), TMA=False, ATOMIC_DQ=atomic)
    if atomic:
        return dq_acc.to(q.dtype), dk, dv
    grid_q = lambda meta: (triton.cdiv(p.len_q, meta["BLOCK_M"]), p.batch * p.heads)  # noqa: E731
    _launch(_attn_bwd_dq, grid_q, q, k, v, dout, dq, lse, delta, p.kv_lens, p.cu_q, p.cu_k, p.scale,
            *inputs, *_rows_strides(dq, p.varlen), *p.lse_strides,
            *p.sizes(), *p.buckets(), **p.common(), TMA=False)
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kv_lens, cu_q, cu_k, len_q, len_k, causal, scale, num_splits):
        p = _Problem(q, k, v, kv_lens, cu_q, cu_k, len_q, len_k, causal, scale)
        out, lse = _forward(p, q, k, v, num_splits)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.problem = p
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(ctx.problem, dout, q, k, v, out, lse)
        return dq, dk, dv, *([None] * 8)


def _check_supported(query: torch.Tensor) -> None:
    dim, dtype = query.shape[-1], query.dtype
    if dim not in HEAD_DIMS:
        raise ValueError(
            f"the Triton kernel supports head_dim in {HEAD_DIMS}, got query of shape {tuple(query.shape)} "
            f"(head_dim={dim}); use backend='tiled' or 'sdpa' for other sizes"
        )
    if INTERPRET:
        if dtype != torch.float32:
            raise ValueError(f"the Triton interpreter (CPU) runs float32 only, got {dtype}; use .float()")
    elif not query.is_cuda:
        raise ValueError(f"Triton kernels need CUDA tensors, got a query on {query.device}")
    elif dtype not in TRITON_DTYPES:
        raise ValueError(f"the Triton kernel supports float16, bfloat16 and float32, got {dtype}")


def triton_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    kv_lens: Lengths | None = None,
    causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
    num_splits: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """FlashAttention forward (and, through autograd, backward) in Triton.

    Args:
        query: ``(batch, heads, len_q, head_dim)``, ``head_dim`` in 16, 32, 64, 128; any strides.
        key, value: ``(batch, kv_heads, len_k, head_dim)``, any strides (stride 0 too);
            ``heads % kv_heads == 0`` (grouped-query attention when ``kv_heads < heads``).
        kv_lens: ``(batch,)`` real keys per sequence; key blocks past it are skipped.
        causal: bottom-right aligned causal mask.
        scale: factor on the scores, ``1 / sqrt(head_dim)`` by default.
        return_lse: also return the ``(batch, heads, len_q)`` fp32 log-sum-exp.
        num_splits: split-KV decoding: this many programs share each query block's keys
            and their partial outputs are combined by log-sum-exp. ``1``: no split.
            ``None``: chosen by ``_num_splits`` (1 without CUDA; on a GPU, splits only
            when the query blocks are too few to fill its SMs, as when decoding).

    Returns:
        ``(batch, heads, len_q, head_dim)`` in the input dtype (fp16, bf16 or fp32 on
        a GPU; fp32 in the interpreter), contiguous. A row with no key to attend is 0.
    """
    lens = check_inputs(query, key, value, kv_lens)
    _check_supported(query)
    b, h, len_q, _ = query.shape
    len_k = key.shape[2]
    if lens is None:
        lens = torch.full((b,), len_k, dtype=torch.int32, device=query.device)
    scale = default_scale(query.shape[-1], scale)
    splits = _num_splits(num_splits, query, len_k)
    if query.numel() == 0 or len_k == 0:  # nothing to launch: empty output, or no keys at all (zeros)
        out = query * 0.0
        lse = torch.full((b, h, len_q), float("-inf"), device=query.device)
        return (out, lse) if return_lse else out
    splits = max(1, min(splits, triton.cdiv(len_k, 16)))  # never more splits than 16-key blocks
    out, lse = _FlashAttention.apply(query, key, value, lens.contiguous(), None, None, len_q, len_k, bool(causal),
                                     scale, splits)
    return (out, lse) if return_lse else out


def triton_attention_varlen(
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
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Packed variable-length attention in Triton (inputs checked by ``flash_attention_varlen``).

    ``query`` ``(total_q, heads, head_dim)``, ``key``/``value`` ``(total_k, kv_heads, head_dim)``,
    ``cu_seqlens_*`` int32 ``(batch + 1,)``. Returns ``(total_q, heads, head_dim)`` and, with
    ``return_lse``, the ``(heads, total_q)`` fp32 log-sum-exp.
    """
    _check_supported(query)
    scale = default_scale(query.shape[-1], scale)
    if query.shape[0] == 0 or key.shape[0] == 0 or max_seqlen_q == 0 or max_seqlen_k == 0:
        out = query * 0.0
        lse = torch.full((query.shape[1], query.shape[0]), float("-inf"), device=query.device)
        return (out, lse) if return_lse else out
    out, lse = _FlashAttention.apply(query, key, value, None, cu_seqlens_q.contiguous(), cu_seqlens_k.contiguous(),
                                     int(max_seqlen_q), int(max_seqlen_k), bool(causal), scale, 1)
    lse = lse[0]
    return (out, lse) if return_lse else out
