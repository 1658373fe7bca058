"""course_lib.sparse: band, block-sparse, latent and linear attention, and the sparse bench suite."""

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_attention, tol
from torch.utils._python_dispatch import TorchDispatchMode

from course_lib import merge_heads, padding_mask, scaled_dot_product_attention, split_heads
from course_lib.bench import sparse as bench
from course_lib.complexity import attention_flops, attention_memory_bytes, count_flops, measure
from course_lib.sparse import (
    LatentCrossAttention,
    band_attention,
    band_attention_flops,
    band_indices,
    band_mask,
    block_layout,
    block_sparse_mask,
    elu_feature_map,
    latent_attention_flops,
    linear_attention,
    linear_attention_flops,
    linear_attention_from_summary,
    linear_attention_summary,
)

F64 = torch.float64


def qkv(b, h, lq, lk, d, dv=None, dtype=F64):
    dv = d if dv is None else dv
    return (
        torch.randn(b, h, lq, d, dtype=dtype),
        torch.randn(b, h, lk, d, dtype=dtype),
        torch.randn(b, h, lk, dv, dtype=dtype),
    )


# --- band_mask: the definition ---------------------------------------------------------------
def band_by_loops(lq, lk, w, slope=None, g=0):
    """The documented definition, written out with exact fractions and Python loops."""
    s = Fraction(lk, max(lq, 1)) if slope is None else Fraction(slope).limit_denominator(1 << 20)
    rows = []
    for i in range(lq):
        start = math.ceil((i + Fraction(1, 2)) * s - Fraction(w, 2))
        rows.append([start <= j < start + w or j < g for j in range(lk)])
    return torch.tensor(rows, dtype=torch.bool).reshape(lq, lk)


@pytest.mark.parametrize(
    "lq,lk,w,slope,g",
    [
        (6, 6, 3, None, 0),
        (4, 16, 4, None, 0),
        (7, 19, 5, None, 0),
        (9, 4, 2, None, 0),
        (5, 12, 1, None, 2),
        (8, 8, 4, 0.5, 0),
        (3, 10, 3, 10 / 3, 0),
        (1, 5, 2, None, 1),
        (5, 3, 8, None, 0),
        (0, 4, 2, None, 0),
    ],
)
def test_band_mask_matches_its_definition(lq, lk, w, slope, g):
    m = band_mask(lq, lk, w, slope=slope, global_tokens=g)
    assert m.dtype == torch.bool and m.shape == (lq, lk)
    assert torch.equal(m, band_by_loops(lq, lk, w, slope, g))


def test_band_mask_square_odd_width_is_symmetric_band():
    i, j = torch.arange(7)[:, None], torch.arange(7)[None, :]
    assert torch.equal(band_mask(7, 7, 5), (i - j).abs() <= 2)


def test_band_mask_width_equal_to_integer_slope_gives_each_query_its_own_slice():
    # 4 tokens, 16 frames: token i owns frames 4i..4i+3, exactly.
    assert torch.equal(band_mask(4, 16, 4), torch.eye(4, dtype=torch.bool).repeat_interleave(4, dim=1))


def test_float_slope_equals_default_slope_exactly():
    # 10/3 is not a float; without exact arithmetic ties at integers would round the wrong way.
    for lq, lk in [(3, 10), (6, 20), (7, 3), (12, 30)]:
        for w in (1, 2, 3, 4):
            assert torch.equal(band_mask(lq, lk, w, slope=lk / lq), band_mask(lq, lk, w))


def test_band_follows_the_diagonal_monotonically():
    m = band_mask(10, 37, 3)
    first = m.float().argmax(dim=1)  # first key of each row
    assert (first[1:] >= first[:-1]).all() and m.sum(1).min() >= 1


def test_band_indices_scatter_to_band_mask_without_duplicates():
    for lq, lk, w, g in [(5, 12, 3, 0), (5, 12, 4, 2), (9, 4, 3, 1), (3, 3, 10, 3)]:
        index, valid = band_indices(lq, lk, w, global_tokens=g)
        assert index.shape == valid.shape == (lq, g + w)
        dense = torch.zeros(lq, lk, dtype=torch.long)
        dense.scatter_add_(1, index, valid.long())
        assert dense.max() <= 1  # no key counted twice
        assert torch.equal(dense.bool(), band_mask(lq, lk, w, global_tokens=g))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"width": 0}, "width"),
        ({"width": 2.5}, "width"),
        ({"global_tokens": 9}, "global_tokens"),
        ({"slope": -1.0}, "slope"),
        ({"slope": float("nan")}, "slope"),
    ],
)
def test_band_mask_errors(kwargs, match):
    args = {"len_q": 4, "len_k": 8, "width": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        band_mask(args.pop("len_q"), args.pop("len_k"), args.pop("width"), **args)


# --- band_attention equals masked dense attention -----------------------------------------------
@pytest.mark.parametrize(
    "b,h,lq,lk,d,dv,w,g,slope",
    [
        (2, 3, 7, 19, 5, 5, 3, 0, None),
        (1, 2, 16, 4, 4, 3, 2, 0, None),
        (2, 1, 6, 6, 8, 8, 4, 1, None),
        (1, 1, 5, 9, 3, 2, 20, 0, None),
        (2, 2, 12, 40, 4, 6, 5, 3, None),
        (1, 2, 8, 8, 4, 4, 3, 0, 2.0),
        (1, 1, 1, 13, 4, 4, 1, 0, None),
        (3, 2, 10, 31, 6, 6, 7, 2, 1.5),
    ],
)
def test_band_attention_equals_dense_attention_with_band_mask(b, h, lq, lk, d, dv, w, g, slope):
    q, k, v = qkv(b, h, lq, lk, d, dv)
    lengths = torch.randint(0, lk + 1, (b,))
    key_mask = padding_mask(lengths, lk)
    mask = band_mask(lq, lk, w, slope=slope, global_tokens=g) & key_mask[:, None, None, :]
    ref_out, ref_w = reference_attention(q, k, v, mask)
    out, weights = band_attention(q, k, v, w, slope=slope, global_tokens=g, key_mask=key_mask, return_weights=True)
    torch.testing.assert_close(out, ref_out, **tol(F64))
    # Scatter the band-layout weights back to (len_q, len_k): they are the dense weights.
    index, _ = band_indices(lq, lk, w, slope=slope, global_tokens=g)
    dense_w = torch.zeros(b, h, lq, lk, dtype=F64).scatter_add_(-1, index.expand(b, h, -1, -1), weights)
    torch.testing.assert_close(dense_w, ref_w, **tol(F64))
    # And the library's own dense attention agrees.
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, mask), **tol(F64))


@pytest.mark.parametrize("queries_per_block", [1, 3, 4])
def test_band_attention_in_blocks_of_queries_equals_one_block(monkeypatch, queries_per_block):
    # One query's windows hold batch·heads·W·max(d, dv) = 2·3·5·5 numbers; 10 queries in blocks of 1, 3 or 4.
    import course_lib.sparse as sparse_module

    q, k, v = qkv(2, 3, 10, 31, 4, 5)
    key_mask = padding_mask(torch.tensor([31, 17]), 31)
    whole = band_attention(q, k, v, 3, global_tokens=2, key_mask=key_mask, return_weights=True)
    monkeypatch.setattr(sparse_module, "_BAND_BLOCK", queries_per_block * 2 * 3 * 5 * 5)
    blocks = band_attention(q, k, v, 3, global_tokens=2, key_mask=key_mask, return_weights=True)
    for a, b in zip(blocks, whole):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(1, 12),
    st.integers(1, 30),
    st.integers(1, 9),
    st.integers(0, 3),
    st.integers(0, 2**16),
)
def test_band_attention_property(b, h, lq, lk, w, g, seed):
    torch.manual_seed(seed)
    g = min(g, lk)
    q, k, v = qkv(b, h, lq, lk, 3)
    key_mask = padding_mask(torch.randint(0, lk + 1, (b,)), lk)
    mask = band_mask(lq, lk, w, global_tokens=g) & key_mask[:, None, None, :]
    torch.testing.assert_close(
        band_attention(q, k, v, w, global_tokens=g, key_mask=key_mask),
        reference_attention(q, k, v, mask)[0],
        **tol(F64),
    )


def test_band_attention_scale_and_float32():
    q, k, v = qkv(2, 2, 6, 15, 4, dtype=torch.float32)
    mask = band_mask(6, 15, 4)
    ref = reference_attention(q, k, v, mask, scale=0.3)[0].float()
    torch.testing.assert_close(band_attention(q, k, v, 4, scale=0.3), ref, **tol(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_band_attention_half_precision(dtype):
    q, k, v = qkv(1, 2, 8, 24, 8, dtype=dtype)
    out = band_attention(q, k, v, 5)
    assert out.dtype == dtype
    ref = reference_attention(q, k, v, band_mask(8, 24, 5))[0].to(dtype)
    torch.testing.assert_close(out, ref, **tol(dtype))


def test_band_attention_fully_masked_rows_give_zeros():
    q, k, v = qkv(2, 2, 8, 16, 4)
    key_mask = padding_mask([16, 5], 16)  # batch 1: queries whose window lies in padding see nothing
    out, w = band_attention(q, k, v, 2, key_mask=key_mask, return_weights=True)
    empty = ~(band_mask(8, 16, 2)[None] & key_mask[:, None, :]).any(-1)  # (batch, len_q)
    assert empty[1].any() and not empty[0].any()
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert (out[1][:, empty[1]] == 0).all() and (w[1][:, empty[1]] == 0).all()
    # A slope that runs past the end of the source leaves the last queries without keys.
    out = band_attention(q, k, v, 2, slope=4.0)
    assert torch.isfinite(out).all() and (out[:, :, 5:] == 0).all() and (out[:, :, :4] != 0).any()
    # An empty source.
    assert torch.equal(band_attention(q, k[:, :, :0], v[:, :, :0], 3), torch.zeros(2, 2, 8, 4, dtype=F64))


def test_band_attention_padding_content_cannot_leak():
    q, k, v = qkv(2, 2, 6, 12, 4)
    key_mask = padding_mask([12, 7], 12)
    noisy_k = torch.where(key_mask[:, None, :, None], k, 1e6 * torch.randn_like(k))
    noisy_v = torch.where(key_mask[:, None, :, None], v, 1e6 * torch.randn_like(v))
    torch.testing.assert_close(
        band_attention(q, noisy_k, noisy_v, 5, key_mask=key_mask), band_attention(q, k, v, 5, key_mask=key_mask)
    )


@pytest.mark.parametrize(
    "shapes,kwargs,match",
    [
        (((1, 2, 4, 3), (1, 2, 5, 3), (1, 2, 5, 3)), {"key_mask": torch.ones(1, 4, dtype=torch.bool)}, r"\(1, 5\)"),
        (((1, 2, 4, 3), (1, 2, 5, 3), (1, 2, 5, 3)), {"key_mask": torch.ones(1, 5)}, "bool"),
        (((2, 4, 3), (2, 5, 3), (2, 5, 3)), {}, r"4-D.*\(2, 4, 3\)"),
        (((1, 2, 4, 3), (1, 3, 5, 3), (1, 3, 5, 3)), {}, r"\(batch, heads\).*\(1, 3, 5, 3\)"),
        (((1, 2, 4, 3), (1, 2, 5, 4), (1, 2, 5, 3)), {}, "head_dim"),
        (((1, 2, 4, 3), (1, 2, 5, 3), (1, 2, 6, 3)), {}, "len_k"),
        (((1, 2, 4, 3), (1, 2, 5, 3), (1, 2, 5, 3)), {"global_tokens": 6}, "global_tokens"),
    ],
)
def test_band_attention_errors(shapes, kwargs, match):
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        band_attention(q, k, v, 2, **kwargs)


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every new tensor an operator returns (views of its inputs are not new)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.shapes.append(tuple(t.shape))
        return out


def test_band_attention_never_builds_anything_the_size_of_len_q_times_len_k():
    b, h, lq, w, d = 1, 2, 8, 4, 4
    largest = {}
    for lk in (50, 4096):
        q, k, v = qkv(b, h, lq, lk, d)
        key_mask = torch.ones(b, lk, dtype=torch.bool)
        with ShapeRecorder() as rec:
            band_attention(q, k, v, w, key_mask=key_mask)
        largest[lk] = max(math.prod(s) for s in rec.shapes)
        assert all(lk not in s for s in rec.shapes if len(s) > 1), "a (…, len_k) tensor was built"
    # The largest intermediate is the gathered window (batch, heads, len_q, width, head_dim): O(Lq·w·d).
    assert largest[50] == largest[4096] == b * h * lq * w * d
    # Dense attention, for contrast, builds (batch, heads, len_q, len_k) scores.
    with ShapeRecorder() as rec:
        scaled_dot_product_attention(q, k, v)
    assert (b, h, lq, 4096) in rec.shapes


# --- cost models: PyTorch's FLOP counter, and lesson 05's attention_flops for dense attention -------
def test_dense_and_band_flops_match_the_flop_counter():
    b, h, lq, lk, d, dv, w, g = 2, 3, 10, 50, 8, 6, 5, 2
    q, k, v = qkv(b, h, lq, lk, d, dv)
    assert count_flops(scaled_dot_product_attention, q, k, v) == attention_flops(b, h, lq, lk, d, dim_v=dv)
    assert count_flops(band_attention, q, k, v, w, global_tokens=g) == band_attention_flops(
        b, h, lq, w, d, dim_v=dv, global_tokens=g
    )
    # the band is dense attention over its W = g + w slots per query
    assert band_attention_flops(b, h, lq, w, d, dim_v=dv, global_tokens=g) == attention_flops(
        b, h, lq, g + w, d, dim_v=dv
    )
    assert attention_flops(b, h, lq, lk, d) == 4 * b * h * lq * lk * d  # lesson 05's formula


def test_band_flops_do_not_grow_with_the_source_and_save_w_over_lk():
    measured = [count_flops(band_attention, *qkv(1, 2, 16, lk, 8), 6) for lk in (64, 256, 1024)]
    assert measured[0] == measured[1] == measured[2] == band_attention_flops(1, 2, 16, 6, 8)
    assert band_attention_flops(1, 2, 16, 6, 8) / attention_flops(1, 2, 16, 1024, 8) == 6 / 1024


def test_a_mask_alone_saves_no_flops():
    q, k, v = qkv(1, 2, 16, 64, 8)
    assert count_flops(scaled_dot_product_attention, q, k, v, band_mask(16, 64, 4)) == attention_flops(1, 2, 16, 64, 8)


def test_linear_flops_match_the_flop_counter_and_grow_linearly():
    b, h, d, dv = 2, 2, 8, 5
    counts = []
    for n in (64, 128, 256):
        q, k, v = qkv(b, h, n // 4, n, d, dv)
        counts.append(count_flops(linear_attention, q, k, v))
        assert counts[-1] == linear_attention_flops(b, h, n // 4, n, d, dim_v=dv)
    assert counts[2] == 2 * counts[1] == 4 * counts[0]  # linear in N when Lq grows with N


def test_latent_flops_match_the_flop_counter():
    b, n, d_model, heads, m, d_ctx = 2, 40, 16, 4, 6, 10
    module = LatentCrossAttention(d_model, heads, m, d_context=d_ctx)
    context = torch.randn(b, n, d_ctx)
    projections = 2 * b * (2 * m * d_model * d_model + 2 * n * d_ctx * d_model)  # q, out; k, v
    core = latent_attention_flops(b, heads, m, n, d_model // heads)
    assert count_flops(module, context) == projections + core
    assert core == 4 * b * m * n * d_model  # O(M·N), independent of any target length


def test_latent_flops_with_a_read_out_are_two_dense_attentions():
    b, h, m, lq, lk, d = 2, 3, 5, 7, 30, 8
    q, k, v = qkv(b, h, lq, lk, d)
    latents = torch.randn(b, h, m, d, dtype=F64)
    counted = count_flops(bench.latent_core, q, k, v, latents)
    assert counted == latent_attention_flops(b, h, m, lk, d, len_q=lq)
    assert counted == attention_flops(b, h, m, lk, d) + attention_flops(b, h, lq, m, d)


@pytest.mark.parametrize("bad", [0, -1, 2.5, None])
def test_cost_models_reject_nonsense_sizes(bad):
    with pytest.raises(ValueError, match="width"):
        band_attention_flops(1, 1, 4, bad, 8)
    with pytest.raises(ValueError, match="num_latents"):
        latent_attention_flops(1, 1, bad, 16, 8)
    with pytest.raises(ValueError, match="len_k"):
        linear_attention_flops(1, 1, 4, bad, 8)
    with pytest.raises(ValueError, match="len_q"):
        band_attention_flops(1, 1, bad, 4, 8)


# --- block-sparse layouts and global tokens --------------------------------------------------------
def test_block_layout_ingredients():
    assert torch.equal(block_layout(4, 4, local=1), torch.eye(4, dtype=torch.bool))
    assert torch.equal(block_layout(3, 6, local=2), band_mask(3, 6, 2))
    fixed = block_layout(3, 8, local=0, fixed=3)  # Child et al.'s fixed pattern: the same columns for every query
    assert fixed.all(0).tolist() == [False, False, True, False, False, True, False, False]
    assert torch.equal(block_layout(3, 8, local=0, stride=3), fixed)  # the former name still works
    gen = torch.Generator().manual_seed(0)
    rnd = block_layout(5, 9, local=0, random=2, generator=gen)
    assert rnd.sum(1).tolist() == [2] * 5
    assert torch.equal(rnd, block_layout(5, 9, local=0, random=2, generator=torch.Generator().manual_seed(0)))
    combined = block_layout(4, 8, local=1, fixed=4, random=1, generator=torch.Generator().manual_seed(1))
    assert (combined >= block_layout(4, 8, local=1, fixed=4)).all()


def test_block_sparse_mask_expands_blocks_and_adds_global_tokens():
    layout = torch.tensor([[True, False, False], [False, True, True]])
    m = block_sparse_mask(5, 7, (3, 3), layout, global_tokens=1)
    expected = torch.tensor(
        [[j < 1 or (i // 3, j // 3) in {(0, 0), (1, 1), (1, 2)} for j in range(7)] for i in range(5)]
    )
    assert torch.equal(m, expected)
    assert torch.equal(
        block_sparse_mask(4, 4, 2, torch.eye(2, dtype=torch.bool)),
        torch.eye(2, dtype=torch.bool).repeat_interleave(2, 0).repeat_interleave(2, 1),
    )


def test_block_sparse_mask_works_as_an_attention_mask():
    q, k, v = qkv(1, 2, 8, 12, 4)
    layout = block_layout(2, 3, local=1, fixed=3)
    mask = block_sparse_mask(8, 12, 4, layout, global_tokens=2)
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert (w[..., ~mask] == 0).all() and (w[..., :2] > 0).all()
    torch.testing.assert_close(out, reference_attention(q, k, v, mask)[0], **tol(F64))


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((5, 7, 3, torch.ones(2, 2, dtype=torch.bool)), {}, r"\(2, 3\).*\(2, 2\)"),
        ((5, 7, 3, torch.ones(2, 3)), {}, "bool"),
        ((5, 7, 0, torch.ones(2, 3, dtype=torch.bool)), {}, "block_size"),
        ((5, 7, 3, torch.ones(2, 3, dtype=torch.bool)), {"global_tokens": 8}, "global_tokens"),
    ],
)
def test_block_sparse_mask_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        block_sparse_mask(*args, **kwargs)


def test_block_layout_errors():
    with pytest.raises(ValueError, match="positive"):
        block_layout(0, 3)
    with pytest.raises(ValueError, match=">= 0"):
        block_layout(2, 3, fixed=-1)
    with pytest.raises(ValueError, match="not both"):
        block_layout(2, 3, fixed=2, stride=2)


# --- latent (Perceiver) cross-attention -------------------------------------------------------------
def test_latent_cross_attention_is_multi_head_attention_from_learned_queries():
    torch.manual_seed(1)
    module = LatentCrossAttention(16, 4, 5, d_context=6).double()
    context = torch.randn(3, 11, 6, dtype=F64)
    mask = padding_mask([11, 4, 7], 11)
    out, w = module(context, context_mask=mask, need_weights=True)
    assert out.shape == (3, 5, 16) and w.shape == (3, 4, 5, 11)
    a = module.attn
    q = split_heads(a.q_proj(module.latents.expand(3, -1, -1)), 4)
    k, v = split_heads(a.k_proj(context), 4), split_heads(a.v_proj(context), 4)
    ref_out, ref_w = reference_attention(q, k, v, mask[:, None, None, :])
    torch.testing.assert_close(out, a.out_proj(merge_heads(ref_out)), **tol(F64))
    torch.testing.assert_close(w, ref_w, **tol(F64))


def test_latent_output_size_does_not_depend_on_the_source_length():
    module = LatentCrossAttention(8, 2, 3)
    assert module(torch.randn(2, 5, 8)).shape == module(torch.randn(2, 500, 8)).shape == (2, 3, 8)
    assert module.latents.shape == (3, 8) and module.latents.requires_grad


def test_latent_padding_cannot_leak_and_empty_sources_give_no_nan():
    module = LatentCrossAttention(8, 2, 4).double()
    context = torch.randn(2, 9, 8, dtype=F64)
    mask = padding_mask([9, 0], 9)
    noisy = torch.where(mask[..., None], context, 1e6 * torch.randn_like(context))
    out = module(context, context_mask=mask)
    torch.testing.assert_close(module(noisy, context_mask=mask), out, **tol(F64))
    # The empty source's latents read nothing: the attention gives zeros, so only out_proj's bias remains.
    torch.testing.assert_close(out[1], module.attn.out_proj.bias.expand(4, -1), **tol(F64))


def test_latent_errors():
    with pytest.raises(ValueError, match="num_latents"):
        LatentCrossAttention(8, 2, 0)
    module = LatentCrossAttention(8, 2, 3, d_context=5)
    with pytest.raises(ValueError, match=r"\(batch, len_k, d_context\).*\(7, 5\)"):
        module(torch.randn(7, 5))
    with pytest.raises(ValueError, match=r"\(batch, len, 5\).*\(2, 7, 8\)"):
        module(torch.randn(2, 7, 8))
    with pytest.raises(ValueError, match="context_mask"):
        module(torch.randn(2, 7, 5), context_mask=torch.ones(2, 6, dtype=torch.bool))


# --- linear attention ------------------------------------------------------------------------------
def explicit_linear_attention(q, k, v, key_mask=None, eps=1e-6):
    """Row i: Σ_j φ(q_i)·φ(k_j) v_j / (Σ_j φ(q_i)·φ(k_j) + eps), with the Lq × Lk matrix built."""
    a = elu_feature_map(q) @ elu_feature_map(k).transpose(-2, -1)  # (B, H, Lq, Lk), all > 0
    if key_mask is not None:
        a = a * key_mask[:, None, None, :]
    den = a.sum(-1, keepdim=True) + eps
    return torch.where(den == 0, 0.0, (a @ v) / den)


def test_elu_feature_map_is_positive():
    x = torch.linspace(-30, 50, 81, dtype=F64)
    assert (elu_feature_map(x) > 0).all()
    torch.testing.assert_close(elu_feature_map(torch.tensor([0.0, 2.0])), torch.tensor([1.0, 3.0]))


@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_linear_attention_equals_the_explicit_form(eps):
    q, k, v = qkv(2, 3, 7, 13, 5, 4)
    key_mask = padding_mask([13, 6], 13)
    expected = explicit_linear_attention(q, k, v, key_mask, eps)
    torch.testing.assert_close(linear_attention(q, k, v, key_mask=key_mask, eps=eps), expected, **tol(F64))
    torch.testing.assert_close(
        linear_attention(q, k, v, eps=eps), explicit_linear_attention(q, k, v, None, eps), **tol(F64)
    )


def test_linear_attention_summary_is_computed_once_and_reused_while_decoding():
    q, k, v = qkv(2, 2, 9, 20, 4)
    key_mask = padding_mask([20, 11], 20)
    summary = linear_attention_summary(k, v, key_mask)
    assert summary.kv.shape == (2, 2, 4, 4) and summary.normaliser.shape == (2, 2, 4)  # no len_k left
    steps = [linear_attention_from_summary(q[:, :, t : t + 1], summary) for t in range(9)]
    torch.testing.assert_close(torch.cat(steps, dim=2), linear_attention(q, k, v, key_mask=key_mask), **tol(F64))


def test_linear_attention_padding_cannot_leak_even_if_it_is_inf():
    q, k, v = qkv(2, 2, 5, 10, 4)
    key_mask = padding_mask([10, 3], 10)
    bad_k = torch.where(key_mask[:, None, :, None], k, math.inf)
    bad_v = torch.where(key_mask[:, None, :, None], v, math.nan)
    torch.testing.assert_close(
        linear_attention(q, bad_k, bad_v, key_mask=key_mask), linear_attention(q, k, v, key_mask=key_mask)
    )


@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_linear_attention_fully_masked_rows_give_zeros(eps):
    q, k, v = qkv(2, 1, 4, 6, 3)
    out = linear_attention(q, k, v, key_mask=padding_mask([6, 0], 6), eps=eps)
    assert torch.isfinite(out).all() and (out[1] == 0).all() and (out[0] != 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_linear_attention_low_precision(dtype):
    q, k, v = qkv(1, 2, 6, 16, 8, dtype=dtype)
    out = linear_attention(q, k, v)
    assert out.dtype == dtype
    torch.testing.assert_close(
        out, explicit_linear_attention(q.double(), k.double(), v.double()).to(dtype), **tol(dtype)
    )


def test_linear_attention_errors():
    q, k, v = qkv(1, 2, 4, 6, 3)
    with pytest.raises(ValueError, match=r"key_mask.*\(1, 6\).*\(1, 5\)"):
        linear_attention(q, k, v, key_mask=torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"4-D"):
        linear_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match=r"\(1, 2, 6, 3\).*\(1, 2, 5, 3\)"):
        linear_attention_summary(k, v[:, :, :5])
    summary = linear_attention_summary(k, v)
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 5\)"):
        linear_attention_from_summary(torch.randn(1, 2, 4, 5, dtype=F64), summary)


def test_linear_attention_is_not_softmax_attention():
    # Same inputs, different model: the explicit kernel differs from exp(q·k / √d).
    q, k, v = qkv(1, 1, 6, 30, 4)
    assert (linear_attention(q, k, v) - scaled_dot_product_attention(q, k, v)).abs().max() > 1e-2


# --- the bench suite's helpers ------------------------------------------------------------------------
def test_band_memory_is_smaller_than_dense_for_a_long_source():
    q, k, v = qkv(1, 2, 256, 4096, 16, dtype=torch.float32)
    dense = measure(scaled_dot_product_attention, q, k, v, repeat=1, warmup=0).peak_bytes
    band = measure(band_attention, q, k, v, 16, repeat=1, warmup=0).peak_bytes
    assert dense >= 2 * 256 * 4096 * 4 * 2  # at least scores and weights, (2, 256, 4096) fp32
    assert band < dense / 10


def test_band_memory_is_bounded_by_the_output_plus_one_block_of_windows():
    # 4096 queries x 16 keys x 64 dims would be 16 MiB per gathered K or V; the blocks keep it to ~1 MiB.
    q, k, v = qkv(1, 1, 4096, 4096, 64, dtype=torch.float32)
    band = measure(band_attention, q, k, v, 16, repeat=1, warmup=0).peak_bytes
    output = 4096 * 64 * 4
    assert band < output + 4 * 2**20


def test_alignment_inputs_put_the_mass_in_the_band():
    gen = torch.Generator().manual_seed(0)
    q, k, v = bench.alignment_qkv(1, 2, 32, 128, 64, generator=gen)
    assert q.shape == (1, 2, 32, 64) and k.shape == v.shape == (1, 2, 128, 64)
    _, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    kept = (w * band_mask(32, 128, 8)).sum(-1).mean()
    assert kept > 0.95  # two slices' width keeps nearly all the mass
    rnd = torch.randn(1, 2, 32, 64)
    _, w_rnd = scaled_dot_product_attention(rnd, k, v, return_weights=True)
    assert (w_rnd * band_mask(32, 128, 8)).sum(-1).mean() < 0.3  # unaligned queries spread out


def test_sweep_rows():
    rows = bench.sweep([64], repeats=1, heads=2, head_dim=16, width=8, num_latents=4)
    by_name = {r["method"]: r for r in rows}
    assert set(by_name) == {"dense", "dense+mask", "sdpa", "band", "latent", "linear"}
    assert by_name["dense"]["speedup"] == 1 and by_name["dense"]["rel_err"] == 0
    assert by_name["sdpa"]["rel_err"] < 1e-5
    # band attention and dense attention with the band mask compute the same thing
    assert by_name["band"]["rel_err"] == pytest.approx(by_name["dense+mask"]["rel_err"], rel=1e-3, abs=1e-6)
    assert "rel_err" not in by_name["latent"]  # a different model: no error against dense
    assert by_name["band"]["GFLOP"] * 1e9 == band_attention_flops(1, 2, 16, 8, 16)
    assert by_name["dense"]["GFLOP"] * 1e9 == attention_flops(1, 2, 16, 64, 16)
    assert all(r["ms"] > 0 and r["MiB"] > 0 for r in rows)
    # complexity.measure's peak: the naive core holds at least its scores and weights
    assert by_name["dense"]["MiB"] * 2**20 >= attention_memory_bytes(1, 2, 16, 64, 16)
    assert all(r["mem_ratio"] == r["MiB"] / by_name["dense"]["MiB"] for r in rows)


def test_sweep_times_with_the_clock_it_is_given():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(ValueError, match="set_num_threads"):  # CPU time sees one thread only
            bench.sweep([32], repeats=1, heads=1, head_dim=8, width=4, num_latents=2, clock="cpu")
        torch.set_num_threads(1)
        rows = bench.sweep([32], repeats=1, heads=1, head_dim=8, width=4, num_latents=2, names=["band"], clock="cpu")
        assert [r["method"] for r in rows] == ["band"] and rows[0]["ms"] > 0
    finally:
        torch.set_num_threads(threads)
