"""course_lib.efficient on the CPU: the naive, SDPA and tiled backends against the float64 reference."""

import functools
import importlib.util
import itertools
import math

import pytest
import torch
from efficient_cases import (
    LAYOUTS,
    LENGTHS,
    LENS_MODES,
    case_seed,
    check_backend,
    make_inputs,
    make_lens,
    one_thread,  # noqa: F401  (an autouse fixture: every test runs on one thread)
    poison_outputs,
    with_layout,
)
from reference import tol

from course_lib.complexity import peak_memory
from course_lib.efficient import (
    attention_mask,
    flash_attention,
    flash_attention_varlen,
    kv_lens_from_padding_mask,
    tiled,
    tiled_attention,
)

HEAD_DIMS = (16, 32, 64, 128)
BATCH, HEADS = 3, 2


def _attend(backend):
    if backend == "tiled-small-blocks":  # many tiles, ragged last ones: exercises the block bookkeeping
        return lambda lens, causal: lambda q, k, v: tiled_attention(
            q, k, v, kv_lens=lens, causal=causal, block_q=32, block_k=16
        )
    return lambda lens, causal: lambda q, k, v: flash_attention(q, k, v, kv_lens=lens, causal=causal, backend=backend)


# Every (len_q, len_k) pair with and without causal masking; the padding mode and head dim cycle,
# so that every mode and dim meets every length and both causal settings.
CASES = [
    (lq, lk, causal, LENS_MODES[i % len(LENS_MODES)], HEAD_DIMS[(i // 2) % len(HEAD_DIMS)])
    for i, (lq, lk, causal) in enumerate(itertools.product(LENGTHS, LENGTHS, (False, True)))
]


@pytest.mark.parametrize("backend", ["naive", "sdpa", "tiled", "tiled-small-blocks"])
@pytest.mark.parametrize("len_q,len_k,causal,mode,dim", CASES)
def test_backend_matches_reference_fp32(backend, len_q, len_k, causal, mode, dim, monkeypatch):
    poison_outputs(monkeypatch)
    seed = case_seed(backend, len_q, len_k, causal, mode, dim)
    q, k, v, dout = make_inputs(BATCH, HEADS, len_q, len_k, dim, seed=seed)
    lens = make_lens(mode, BATCH, len_k, seed)
    check_backend(_attend(backend)(lens, causal), q, k, v, dout, lens, causal)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["naive", "sdpa", "tiled", "tiled-small-blocks"])
@pytest.mark.parametrize("len_q,len_k,causal,mode", [(17, 129, False, "mixed"), (64, 17, True, "partial")])
def test_backend_matches_reference_half(backend, dtype, len_q, len_k, causal, mode, monkeypatch):
    poison_outputs(monkeypatch)
    seed = case_seed(backend, dtype, len_q, len_k, causal, mode)
    q, k, v, dout = make_inputs(BATCH, HEADS, len_q, len_k, 32, dtype=dtype, seed=seed)
    lens = make_lens(mode, BATCH, len_k, seed)
    # SDPA's CPU kernel rounds the probabilities to the input dtype: PyTorch's fused-kernel tolerance.
    check_backend(_attend(backend)(lens, causal), q, k, v, dout, lens, causal, rounds_p=backend == "sdpa")


TRITON_PARAM = pytest.param(
    "triton",
    marks=[
        pytest.mark.triton,
        pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="the triton package is not installed"),
    ],
)


@pytest.mark.parametrize("backend", ["naive", "sdpa", "tiled", TRITON_PARAM])
def test_custom_scale_and_non_contiguous_inputs(backend):
    q, k, v, dout = make_inputs(2, 4, 9, 21, 16, seed=5)
    # (batch, len, heads, dim) storage seen as (batch, heads, len, dim): strided, not contiguous.
    q2, k2, v2 = (t.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for t in (q, k, v))
    assert not q2.is_contiguous()
    lens = [21, 4]
    attend = lambda q, k, v: flash_attention(q, k, v, kv_lens=lens, scale=0.3, backend=backend)  # noqa: E731
    check_backend(attend, q2, k2, v2, dout, lens, causal=False, scale=0.3)


def test_tiled_returns_log_sum_exp():
    q, k, v, _ = make_inputs(2, 2, 13, 30, 16, seed=1)
    lens = [0, 17]
    out, lse = tiled_attention(q, k, v, kv_lens=lens, causal=True, block_q=4, block_k=8, return_lse=True)
    scores = (q.double() @ k.double().transpose(-2, -1)) / 4.0
    scores = scores.masked_fill(~attention_mask(torch.tensor(lens), 13, 30, True), -math.inf)
    expected = torch.logsumexp(scores, dim=-1)
    assert lse.shape == (2, 2, 13) and lse.dtype == torch.float32
    assert torch.isneginf(lse[0]).all()  # an empty source: the log of an empty sum
    torch.testing.assert_close(lse[1], expected[1].float(), **tol(torch.float32))


def test_poisoned_allocation_is_really_nan(monkeypatch):
    poison_outputs(monkeypatch)
    assert torch.isnan(tiled._empty((3, 4))).all()


def test_auto_is_sdpa_on_cpu():
    q, k, v, _ = make_inputs(2, 2, 5, 7, 16, seed=2)
    expected = flash_attention(q, k, v, kv_lens=[3, 7], backend="sdpa")
    assert torch.equal(flash_attention(q, k, v, kv_lens=[3, 7]), expected)


@pytest.mark.parametrize("backend", ["naive", "sdpa", "tiled"])
def test_all_sources_empty_gives_zeros_and_zero_grads(backend):
    q, k, v, dout = make_inputs(2, 2, 6, 5, 16, seed=3)
    out = flash_attention(q, k, v, kv_lens=[0, 0], backend=backend)
    assert (out == 0).all()
    grads = torch.autograd.grad(out, (q, k, v), dout)
    assert all((g == 0).all() for g in grads)


def test_causal_with_more_queries_than_keys_zeroes_the_first_rows():
    q, k, v, _ = make_inputs(1, 1, 6, 4, 16, seed=4)
    for backend in ("naive", "sdpa", "tiled"):
        out = flash_attention(q, k, v, causal=True, backend=backend)
        assert (out[..., :2, :] == 0).all() and (out[..., 2:, :] != 0).all(), backend


def test_triton_backend_without_triton_says_what_is_missing(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    no_triton = lambda name, *args: None if name == "triton" else real_find_spec(name, *args)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", no_triton)
    q, k, v, _ = make_inputs(1, 1, 4, 5, 16, seed=16)
    with pytest.raises(ImportError, match="needs the triton package"):
        flash_attention(q, k, v, backend="triton")
    torch.testing.assert_close(flash_attention(q, k, v), flash_attention(q, k, v, backend="sdpa"))  # auto still works


# --- key padding masks --------------------------------------------------------------
def test_prefix_key_padding_mask_equals_kv_lens():
    q, k, v, _ = make_inputs(3, 2, 4, 6, 16, seed=6)
    mask = torch.arange(6) < torch.tensor([6, 2, 0])[:, None]
    torch.testing.assert_close(kv_lens_from_padding_mask(mask), torch.tensor([6, 2, 0], dtype=torch.int32))
    for backend in ("naive", "sdpa", "tiled"):
        torch.testing.assert_close(
            flash_attention(q, k, v, key_padding_mask=mask, backend=backend),
            flash_attention(q, k, v, kv_lens=[6, 2, 0], backend=backend),
        )


def test_non_prefix_key_padding_mask_is_refused():
    q, k, v, _ = make_inputs(2, 1, 4, 5, 16, seed=7)
    mask = torch.tensor([[True, True, True, True, True], [False, True, True, False, False]])  # padding in front
    with pytest.raises(ValueError, match=r"not a prefix mask.*rows \[1\]"):
        flash_attention(q, k, v, key_padding_mask=mask)


def test_key_padding_mask_errors():
    q, k, v, _ = make_inputs(2, 1, 4, 5, 16, seed=8)
    with pytest.raises(ValueError, match="not both"):
        flash_attention(q, k, v, kv_lens=[5, 5], key_padding_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 4\).*len_k=5"):
        flash_attention(q, k, v, key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        flash_attention(q, k, v, key_padding_mask=torch.ones(2, 5))


# --- bad input ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "q_shape,k_shape,v_shape,match",
    [
        ((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 6, 8), r"key and value must have the same shape"),
        ((2, 3, 4, 8), (2, 3, 5, 16), (2, 3, 5, 16), r"query \(2, 3, 4, 8\), key \(2, 3, 5, 16\)"),
        ((2, 3, 4, 8), (1, 3, 5, 8), (1, 3, 5, 8), r"batch, heads and head_dim"),
        ((3, 4, 8), (3, 5, 8), (3, 5, 8), r"4-D tensors.*\(3, 4, 8\)"),
    ],
)
def test_shape_errors_name_the_shapes(q_shape, k_shape, v_shape, match):
    q, k, v = torch.randn(q_shape), torch.randn(k_shape), torch.randn(v_shape)
    for backend in ("naive", "sdpa", "tiled"):
        with pytest.raises(ValueError, match=match):
            flash_attention(q, k, v, backend=backend)


@pytest.mark.parametrize(
    "kv_lens,match",
    [([3, 9], r"\[0, len_k=5\]"), ([-1, 2], r"\[0, len_k=5\]"), ([1, 2, 3], r"shape \(2,\)"), ([1.0, 2.0], "dtype")],
)
def test_kv_lens_errors(kv_lens, match):
    q, k, v, _ = make_inputs(2, 1, 4, 5, 16, seed=9)
    with pytest.raises(ValueError, match=match):
        flash_attention(q, k, v, kv_lens=kv_lens, backend="tiled")


def test_other_errors():
    q, k, v, _ = make_inputs(1, 1, 4, 5, 16, seed=10)
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        flash_attention(q, k, v, backend="fast")
    with pytest.raises(ValueError, match="dtype"):
        flash_attention(q, k.double(), v, backend="tiled")
    with pytest.raises(ValueError, match="block sizes"):
        tiled_attention(q, k, v, block_k=0)


# --- memory ---------------------------------------------------------------------------
def test_tiled_never_builds_the_score_matrix():
    len_q, len_k = 1024, 2048
    q, k, v, dout = make_inputs(1, 1, len_q, len_k, 32, seed=11)
    scores_bytes = len_q * len_k * 4  # 8 MiB; the gradients themselves (dq, dk, dv) take 0.75 MiB
    # complexity.peak_memory sees a transient (len_q, len_k) matrix (tests/test_complexity.py)
    _, naive = peak_memory(functools.partial(flash_attention, backend="naive"), q, k, v)
    out, fwd = peak_memory(functools.partial(tiled_attention, block_q=128, block_k=128), q, k, v)
    _, bwd = peak_memory(functools.partial(out.backward, retain_graph=True), dout)
    assert naive >= scores_bytes  # the naive version holds at least one (len_q, len_k) matrix
    assert fwd < scores_bytes / 8 and bwd < scores_bytes / 4, (fwd, bwd, scores_bytes)


# --- layouts, grouped-query attention, packed sequences ---------------------------------
@pytest.mark.parametrize("backend", ["naive", "sdpa", "tiled", "tiled-small-blocks"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("len_q,len_k,causal,lens", [(33, 33, True, None), (17, 40, True, [40, 9])])
def test_any_layout_every_backend(backend, layout, len_q, len_k, causal, lens, monkeypatch):
    poison_outputs(monkeypatch)
    q, k, v, dout = make_inputs(2, 2, len_q, len_k, 16, seed=case_seed(backend, layout, len_q))
    q, k, v = with_layout(q, k, v, layout)
    check_backend(_attend(backend)(lens, causal), q, k, v, dout, lens, causal)


def _gqa(batch, heads, kv_heads, len_q, len_k, dim, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, len_q, dim, generator=gen).to(dtype).requires_grad_()
    k, v = (torch.randn(batch, kv_heads, len_k, dim, generator=gen).to(dtype).requires_grad_() for _ in "kv")
    return q, k, v, torch.randn(batch, heads, len_q, dim, generator=gen).to(dtype)


@pytest.mark.parametrize("backend", ["naive", "sdpa", "tiled", "tiled-small-blocks"])
@pytest.mark.parametrize("heads,kv_heads,causal,lens", [(4, 2, True, [40, 7]), (3, 1, False, None), (8, 2, True, None)])
def test_grouped_query_attention_every_backend(backend, heads, kv_heads, causal, lens, monkeypatch):
    poison_outputs(monkeypatch)
    q, k, v, dout = _gqa(2, heads, kv_heads, 17, 40, 16, case_seed("gqa", backend, heads, kv_heads))
    check_backend(_attend(backend)(lens, causal), q, k, v, dout, lens, causal)


def test_grouped_query_attention_equals_torch_enable_gqa():
    q, k, v, _ = _gqa(2, 8, 2, 9, 21, 16, 30)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    for backend in ("naive", "sdpa", "tiled"):
        torch.testing.assert_close(flash_attention(q, k, v, backend=backend), expected, msg=backend)


def test_heads_that_do_not_divide_name_both_counts():
    q, k, v, _ = _gqa(1, 6, 4, 3, 5, 16, 31)
    for backend in ("naive", "sdpa", "tiled"):
        with pytest.raises(ValueError, match=r"query heads \(6\) must be a multiple of key/value heads \(4\)"):
            flash_attention(q, k, v, backend=backend)


def _cu(lens):
    return torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32)


@pytest.mark.parametrize("backend", ["naive", "sdpa", "tiled"])
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_reference_path_equals_padded_attention(backend, causal):
    lens_q, lens_k = [5, 0, 9], [7, 4, 9]
    gen = torch.Generator().manual_seed(32)
    q = torch.randn(sum(lens_q), 4, 16, generator=gen)
    k, v = (torch.randn(sum(lens_k), 2, 16, generator=gen) for _ in "kv")
    out = flash_attention_varlen(q, k, v, _cu(lens_q), _cu(lens_k), 9, 9, causal=causal, backend=backend)
    assert out.shape == q.shape
    cq, ck = _cu(lens_q).tolist(), _cu(lens_k).tolist()
    for b in range(3):  # each sequence alone, as a batch of one
        qb, kb, vb = (t[s[b]:s[b + 1]].transpose(0, 1)[None] for t, s in ((q, cq), (k, ck), (v, ck)))
        if qb.shape[2]:
            expected = flash_attention(qb, kb, vb, causal=causal, backend="naive")[0].transpose(0, 1)
            torch.testing.assert_close(out[cq[b]:cq[b + 1]], expected)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"cu_seqlens_q": torch.tensor([0, 3, 9])}, "int32"),
        ({"cu_seqlens_q": torch.tensor([0, 3, 8], dtype=torch.int32)}, r"rise from 0 to 9"),
        ({"cu_seqlens_k": torch.tensor([0, 12], dtype=torch.int32)}, "same number of sequences"),
        ({"max_seqlen_q": 4}, r"max_seqlen_q=4 is shorter"),
        ({"key": torch.randn(12, 3, 16)}, r"query heads \(4\).*key/value heads \(3\)"),
        ({"query": torch.randn(9, 4, 8)}, r"same head_dim.*\(9, 4, 8\)"),
    ],
)
def test_varlen_errors_name_what_is_wrong(change, match):
    args = {
        "query": torch.randn(9, 4, 16),
        "key": torch.randn(12, 2, 16),
        "value": torch.randn(12, 2, 16),
        "cu_seqlens_q": _cu([3, 6]),
        "cu_seqlens_k": _cu([5, 7]),
        "max_seqlen_q": 6,
        "max_seqlen_k": 7,
    }
    args.update(change)
    if "key" in change:
        args["value"] = change["key"]
    with pytest.raises(ValueError, match=match):
        flash_attention_varlen(**args)


# --- memory traffic -----------------------------------------------------------------------
@pytest.mark.parametrize("block_q", [16, 32, 64])
def test_tiled_reads_keys_and_values_once_per_query_block(block_q):
    b, h, len_q, len_k, dim = 2, 3, 64, 48, 16
    q, k, v, _ = make_inputs(b, h, len_q, len_k, dim, seed=33)
    io = tiled.count_io(q, k, v, block_q=block_q, block_k=16)
    blocks = math.ceil(len_q / block_q)
    assert io["K"] == io["V"] == b * h * blocks * len_k * dim * 4  # Θ(Lq·Lk·d / BLOCK_M): once per query block
    assert io["Q"] == io["O"] == b * h * len_q * dim * 4  # the queries and outputs: once
    assert io["total"] == sum(io[n] for n in "QKVO")
    assert tiled._io is None  # counting is off again


def test_tiled_io_skips_padding_and_causal_blocks():
    q, k, v, _ = make_inputs(2, 1, 64, 64, 16, seed=34)
    full = tiled.count_io(q, k, v, block_q=16, block_k=16)["K"]
    padded = tiled.count_io(q, k, v, kv_lens=[32, 32], block_q=16, block_k=16)["K"]
    causal = tiled.count_io(q, k, v, causal=True, block_q=16, block_k=16)["K"]
    assert padded == full // 2  # the blocks past each kv_len are never read
    assert causal == full * (1 + 2 + 3 + 4) // 16  # query block i reads key blocks 0..i
