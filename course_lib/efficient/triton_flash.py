"""FlashAttention in Triton: fused forward and backward kernels for cross-attention.

The forward kernel is the tiled online softmax of ``tiled.py`` with the loops moved
onto the GPU. One program owns ``BLOCK_M`` queries of one (batch, head): it loads
them once, walks over the keys ``BLOCK_N`` at a time, and keeps the running max
``m``, running sum ``l`` and accumulator ``acc`` in registers. Scores never leave the
chip, so memory traffic is ``O(len_q + len_k)`` per head instead of ``O(len_q·len_k)``.

* **Cross-attention**: ``len_q`` and ``len_k`` are independent.
* **Padded sources (varlen)**: ``kv_lens[b]`` bounds the key loop, so the blocks past
  a sequence's end are never loaded nor computed. That is where a padded batch gets
  its speed-up; a boolean mask would only hide their scores after computing them.
* **Causal** (optional): bottom-right aligned, ``key j <= query i + len_k - len_q``.
  Blocks wholly above the diagonal are skipped too.
* **Two loops per program**: blocks where every (query, key) pair is allowed run
  without any mask; only the few blocks on a boundary pay for masking.
* **Backward by recomputation**: the forward saves only ``lse = m + log(l)`` per
  row. The backward rebuilds each probability tile as ``exp(score - lse)`` and gets
  ``dV = Pᵀ dO``, ``dS = P ∘ (dO Vᵀ - delta)`` with ``delta = rowsum(dO ∘ O)``
  (a small preprocessing kernel), ``dQ = dS K · scale`` and ``dK = dSᵀ Q · scale``.
  One kernel owns a block of keys (dK, dV; it loops over queries), another a block
  of queries (dQ; it loops over keys), so no atomic adds are needed.

Scores are kept in base 2: ``exp(x) = exp2(x · log2 e)``, and ``exp2`` is the GPU's
native instruction. ``log2 e`` is folded into the scale.

On a GPU the block sizes are autotuned. Without CUDA the kernels run in Triton's
interpreter (``TRITON_INTERPRET=1``, set by ``course_lib.device`` when ``course_lib``
is imported) with small fixed blocks: slow, but it runs the same code.
"""

from __future__ import annotations

import os

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

# Outputs are allocated through this name so that tests can fill them with NaN first.
_empty = torch.empty


def _configs(*tuples) -> list:
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st) for m, n, w, st in tuples]


# (BLOCK_M queries, BLOCK_N keys, num_warps, num_stages): short lists around the sizes that suit an H100.
# The first entry of each list is small enough for every head dim and dtype (fp32 d=128 included): it is
# the fixed choice when autotuning is off. Configs that need more shared memory than the GPU has are
# discarded by the autotuner.
_FWD_CONFIGS = _configs((64, 32, 4, 2), (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 4))
_DKDV_CONFIGS = _configs((32, 64, 4, 2), (32, 128, 4, 3), (64, 64, 4, 3), (64, 128, 8, 3))
_DQ_CONFIGS = _configs((64, 32, 4, 2), (128, 32, 4, 3), (64, 64, 4, 3), (128, 64, 8, 3))
_TUNE_KEY = ["Lq", "Lk", "HEAD_DIM", "CAUSAL"]  # the autotuner adds the tensors' dtypes itself
# Autotuning compiles and times every config for each new (shape, dtype): worth it for a benchmark,
# slow for a test suite of many small shapes. COURSE_TRITON_AUTOTUNE=0 uses each list's first config.
AUTOTUNE = os.environ.get("COURSE_TRITON_AUTOTUNE", "1") != "0"
# Triton compiles a variant of a kernel for integer arguments equal to 1 or divisible by 16. For the
# lengths and head count that buys nothing (they only bound loops and masks) and costs compilations.
_NO_SPECIALIZE = ["H", "Lq", "Lk"]


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
               offs_m, offs_n, lo, hi, kv_len, shift, qk_scale,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, DOT: tl.constexpr):
    """Visit key blocks ``[lo, hi)`` and update the running max, sum and accumulator."""
    kt_ptrs += lo * stride_kn
    v_ptrs += lo * stride_vn
    for start_n in range(lo, hi, BLOCK_N):
        if MASKED:
            cols = start_n + offs_n
            kt = tl.load(kt_ptrs, mask=cols[None, :] < kv_len, other=0.0)
            v = tl.load(v_ptrs, mask=cols[:, None] < kv_len, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
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


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _attn_fwd(Q, K, V, Out, LSE, KV_LENS, sm_scale,
              stride_qb, stride_qh, stride_qm, stride_qd,
              stride_kb, stride_kh, stride_kn, stride_kd,
              stride_vb, stride_vh, stride_vn, stride_vd,
              stride_ob, stride_oh, stride_om, stride_od,
              H, Lq, Lk,
              HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M  # this program's queries: start_m ... start_m + BLOCK_M - 1
    off_bh = tl.program_id(1)  # and its (batch, head)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    kv_len = tl.load(KV_LENS + off_b)  # this sequence's real keys: the key loop stops there

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < Lq
    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    kt_ptrs = K + off_b * stride_kb + off_h * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)  # loaded once, reused for every key block

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (base 2)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(s - m_i)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)  # running sum of exp2(s - m_i) * v
    qk_scale = sm_scale * 1.4426950408889634  # scale and log2(e) in one multiply
    shift = Lk - Lq
    full, hi = _key_bounds(start_m, kv_len, Lq, shift, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
                               offs_m, offs_n, 0, full, kv_len, shift, qk_scale, False, CAUSAL, BLOCK_N, DOT)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
                               offs_m, offs_n, full, hi, kv_len, shift, qk_scale, True, CAUSAL, BLOCK_N, DOT)

    # A row that saw no key (kv_len = 0, or causal rows before the first key): l = 0, output 0, lse -inf.
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)  # natural log
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + off_bh.to(tl.int64) * Lq + offs_m, lse, mask=row_ok)


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _attn_bwd_delta(Out, DO, DELTA,
                    stride_ob, stride_oh, stride_om, stride_od,
                    stride_dob, stride_doh, stride_dom, stride_dod,
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
    tl.store(DELTA + off_bh.to(tl.int64) * Lq + offs_m, tl.sum(o * do, 1), mask=offs_m < Lq)


@triton.jit
def _dkdv_inner(dk, dv, k, v, qt_ptrs, do_ptrs, LSE, DELTA, stride_qm, stride_dom,
                offs_n, lo, hi, Lq, shift, qk_scale,
                MASKED: tl.constexpr, BLOCK_M: tl.constexpr, DOT: tl.constexpr):
    """Visit query blocks ``[lo, hi)``; accumulate dK and dV of one key block (in transposed tiles)."""
    qt_ptrs += lo * stride_qm
    do_ptrs += lo * stride_dom
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
        qt_ptrs += BLOCK_M * stride_qm
        do_ptrs += BLOCK_M * stride_dom
    return dk, dv


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, KV_LENS, sm_scale,
                   stride_qb, stride_qh, stride_qm, stride_qd,
                   stride_kb, stride_kh, stride_kn, stride_kd,
                   stride_vb, stride_vh, stride_vn, stride_vd,
                   stride_dob, stride_doh, stride_dom, stride_dod,
                   H, Lq, Lk,
                   HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N  # this program's keys
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    kv_len = tl.load(KV_LENS + off_b)
    LSE += off_bh.to(tl.int64) * Lq
    DELTA += off_bh.to(tl.int64) * Lq

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = offs_n[:, None] < kv_len
    k_offs = off_b * stride_kb + off_h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_offs = off_b * stride_vb + off_h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    k = tl.load(K + k_offs, mask=key_ok, other=0.0)  # this block of keys and values stays on chip
    v = tl.load(V + v_offs, mask=key_ok, other=0.0)
    qt_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[None, :] * stride_qm + offs_d[:, None] * stride_qd
    do_ptrs = DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    shift = Lk - Lq
    hi = tl.where(start_n < kv_len, Lq, 0)  # a block made only of padding keys is skipped: gradients stay 0
    if CAUSAL:
        # Queries before start_n - shift see none of these keys; from start_n + BLOCK_N - 1 - shift on they see all.
        lo = tl.maximum(start_n - shift, 0) // BLOCK_M * BLOCK_M
        mid = lo + (tl.maximum(start_n + BLOCK_N - 1 - shift - lo, 0) + BLOCK_M - 1) // BLOCK_M * BLOCK_M
        dk, dv = _dkdv_inner(dk, dv, k, v, qt_ptrs, do_ptrs, LSE, DELTA, stride_qm, stride_dom,
                             offs_n, lo, tl.minimum(mid, hi), Lq, shift, qk_scale, True, BLOCK_M, DOT)
        dk, dv = _dkdv_inner(dk, dv, k, v, qt_ptrs, do_ptrs, LSE, DELTA, stride_qm, stride_dom,
                             offs_n, mid, hi, Lq, shift, qk_scale, False, BLOCK_M, DOT)
    else:
        dk, dv = _dkdv_inner(dk, dv, k, v, qt_ptrs, do_ptrs, LSE, DELTA, stride_qm, stride_dom,
                             offs_n, 0, hi, Lq, shift, qk_scale, False, BLOCK_M, DOT)
    # Padding keys were loaded as zeros and may have picked up values: their gradients are exactly 0.
    dk = tl.where(key_ok, dk * sm_scale, 0.0)
    dv = tl.where(key_ok, dv, 0.0)
    tl.store(DK + k_offs, dk.to(DK.dtype.element_ty), mask=offs_n[:, None] < Lk)
    tl.store(DV + v_offs, dv.to(DV.dtype.element_ty), mask=offs_n[:, None] < Lk)


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
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, KV_LENS, sm_scale,
                 stride_qb, stride_qh, stride_qm, stride_qd,
                 stride_kb, stride_kh, stride_kn, stride_kd,
                 stride_vb, stride_vh, stride_vn, stride_vd,
                 stride_dob, stride_doh, stride_dom, stride_dod,
                 H, Lq, Lk,
                 HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M  # this program's queries
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    kv_len = tl.load(KV_LENS + off_b)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < Lq
    q_offs = off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    do_offs = off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod
    q = tl.load(Q + q_offs, mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + do_offs, mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + off_bh.to(tl.int64) * Lq + offs_m, mask=row_ok, other=float("inf"))
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634  # base 2; no key: P = 0
    delta = tl.load(DELTA + off_bh.to(tl.int64) * Lq + offs_m, mask=row_ok, other=0.0)
    kt_ptrs = K + off_b * stride_kb + off_h * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    vt_ptrs = V + off_b * stride_vb + off_h * stride_vh + offs_n[None, :] * stride_vn + offs_d[:, None] * stride_vd
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    shift = Lk - Lq
    full, hi = _key_bounds(start_m, kv_len, Lq, shift, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _dq_inner(dq, q, do, lse2, delta, kt_ptrs, vt_ptrs, stride_kn, stride_vn,
                   offs_m, offs_n, 0, full, kv_len, shift, qk_scale, False, CAUSAL, BLOCK_N, DOT)
    dq = _dq_inner(dq, q, do, lse2, delta, kt_ptrs, vt_ptrs, stride_kn, stride_vn,
                   offs_m, offs_n, full, hi, kv_len, shift, qk_scale, True, CAUSAL, BLOCK_N, DOT)
    tl.store(DQ + q_offs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


def _precision(q: torch.Tensor) -> str:
    # fp32 inputs get exact fp32 products ("ieee"); a GPU would otherwise round them to tf32.
    # For fp16 and bf16 inputs the setting changes nothing.
    return "ieee" if q.dtype == torch.float32 else "tf32"


# kernel -> (its autotuned wrapper, its fixed config). The interpreter uses neither.
_TUNED = {}
if not INTERPRET:
    for _kernel, _list in ((_attn_fwd, _FWD_CONFIGS), (_attn_bwd_dkdv, _DKDV_CONFIGS), (_attn_bwd_dq, _DQ_CONFIGS)):
        _TUNED[_kernel] = (triton.autotune(configs=_list, key=_TUNE_KEY)(_kernel), _list[0])


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


def _forward(q, k, v, kv_lens, causal, scale):
    b, h, len_q, dim = q.shape
    len_k = k.shape[2]
    out = _empty(q.shape, dtype=q.dtype, device=q.device)
    lse = _empty((b, h, len_q), dtype=torch.float32, device=q.device)
    grid = lambda meta: (triton.cdiv(len_q, meta["BLOCK_M"]), b * h)  # noqa: E731
    _launch(_attn_fwd, grid, q, k, v, out, lse, kv_lens, scale, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            h, len_q, len_k, HEAD_DIM=dim, CAUSAL=causal, DOT=_precision(q))
    return out, lse


def _backward(dout, q, k, v, out, lse, kv_lens, causal, scale):
    b, h, len_q, dim = q.shape
    len_k = k.shape[2]
    dot = _precision(q)
    delta = _empty((b, h, len_q), dtype=torch.float32, device=q.device)
    block = INTERPRETER_BLOCKS["BLOCK_M"] if INTERPRET else 64
    _attn_bwd_delta[(triton.cdiv(len_q, block), b * h)](out, dout, delta, *out.stride(), *dout.stride(), h, len_q,
                                                        HEAD_DIM=dim, BLOCK_M=block)
    dq = _empty(q.shape, dtype=q.dtype, device=q.device)
    dk = _empty(k.shape, dtype=k.dtype, device=k.device)
    dv = _empty(v.shape, dtype=v.dtype, device=v.device)
    grid_kv = lambda meta: (triton.cdiv(len_k, meta["BLOCK_N"]), b * h)  # noqa: E731
    strides = (*q.stride(), *k.stride(), *v.stride(), *dout.stride())
    _launch(_attn_bwd_dkdv, grid_kv, q, k, v, dout, dk, dv, lse, delta, kv_lens, scale, *strides,
            h, len_q, len_k, HEAD_DIM=dim, CAUSAL=causal, DOT=dot)
    grid_q = lambda meta: (triton.cdiv(len_q, meta["BLOCK_M"]), b * h)  # noqa: E731
    _launch(_attn_bwd_dq, grid_q, q, k, v, dout, dq, lse, delta, kv_lens, scale, *strides,
            h, len_q, len_k, HEAD_DIM=dim, CAUSAL=causal, DOT=dot)
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kv_lens, causal, scale):
        out, lse = _forward(q, k, v, kv_lens, causal, scale)
        ctx.save_for_backward(q, k, v, out, lse, kv_lens)
        ctx.causal, ctx.scale = causal, scale
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, kv_lens = ctx.saved_tensors
        dq, dk, dv = _backward(dout.contiguous(), q, k, v, out, lse, kv_lens, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None, None


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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """FlashAttention forward (and, through autograd, backward) in Triton.

    Args:
        query: ``(batch, heads, len_q, head_dim)``, ``head_dim`` in 16, 32, 64, 128.
        key, value: ``(batch, heads, len_k, head_dim)``.
        kv_lens: ``(batch,)`` real keys per sequence; key blocks past it are skipped.
        causal: bottom-right aligned causal mask.
        scale: factor on the scores, ``1 / sqrt(head_dim)`` by default.
        return_lse: also return the ``(batch, heads, len_q)`` fp32 log-sum-exp.

    Returns:
        ``(batch, heads, len_q, head_dim)`` in the input dtype (fp16, bf16 or fp32 on
        a GPU; fp32 in the interpreter). A row with no key to attend is 0.
    """
    lens = check_inputs(query, key, value, kv_lens)
    _check_supported(query)
    b, _, len_q, _ = query.shape
    len_k = key.shape[2]
    if lens is None:
        lens = torch.full((b,), len_k, dtype=torch.int32, device=query.device)
    scale = default_scale(query.shape[-1], scale)
    if query.numel() == 0 or len_k == 0:  # nothing to launch: empty output, or no keys at all (zeros)
        out = query * 0.0
        lse = torch.full((b, query.shape[1], len_q), float("-inf"), device=query.device)
        return (out, lse) if return_lse else out
    out, lse = _FlashAttention.apply(query, key, value, lens.contiguous(), bool(causal), scale)
    return (out, lse) if return_lse else out
