import pytest
import torch
from reference import reference_attention, tol
from torch import nn

from course_lib import (
    MultiHeadAttention,
    causal_mask,
    merge_heads,
    padding_mask,
    split_heads,
    to_torch_key_padding_mask,
)


def test_split_merge_round_trip_and_layout():
    x = torch.randn(2, 5, 12)
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    torch.testing.assert_close(h[:, 1], x[:, :, 4:8])  # head 1 owns features 4..7
    torch.testing.assert_close(merge_heads(h), x)


def test_merge_without_transpose_would_scramble():
    h = split_heads(torch.randn(1, 4, 8), 2)
    assert not torch.equal(h.reshape(1, 4, 8), merge_heads(h))


def test_split_heads_error():
    with pytest.raises(ValueError, match=r"\(2, 5, 10\).*num_heads=3"):
        split_heads(torch.randn(2, 5, 10), 3)


def manual_mha(m: MultiHeadAttention, x, ctx, mask):
    """The module written out with the float64 reference attention."""
    q = split_heads(m.q_proj(x), m.num_heads)
    k = split_heads(m.k_proj(ctx), m.num_heads)
    v = split_heads(m.v_proj(ctx), m.num_heads)
    out, w = reference_attention(q, k, v, None if mask is None else mask[:, None, None, :])
    return m.out_proj(merge_heads(out.float())), w.float()


def test_cross_attention_matches_manual_computation():
    m = MultiHeadAttention(16, 4, d_context=10)
    x, ctx = torch.randn(3, 5, 16), torch.randn(3, 8, 10)
    mask = padding_mask([8, 3, 6])
    out, w = m(x, ctx, context_mask=mask, need_weights=True)
    ref_out, ref_w = manual_mha(m, x, ctx, mask)
    assert out.shape == (3, 5, 16) and w.shape == (3, 4, 5, 8)
    torch.testing.assert_close(out, ref_out, **tol(torch.float32))
    torch.testing.assert_close(w, ref_w, **tol(torch.float32))
    assert (w[1, :, :, 3:] == 0).all()


@pytest.mark.parametrize("d_context,bias", [(None, True), (10, True), (10, False), (None, False)])
def test_from_torch_matches_nn_multihead_attention(d_context, bias):
    kdim = d_context or 16
    ref = nn.MultiheadAttention(16, 4, bias=bias, kdim=kdim, vdim=kdim, batch_first=True).eval()
    ours = MultiHeadAttention.from_torch(ref).eval()
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 7, kdim)
    mask = padding_mask([7, 4])
    out, w = ours(x, ctx, context_mask=mask, need_weights=True)
    ref_out, ref_w = ref(
        x, ctx, ctx, key_padding_mask=to_torch_key_padding_mask(mask), need_weights=True, average_attn_weights=False
    )
    torch.testing.assert_close(out, ref_out, **tol(torch.float32))
    torch.testing.assert_close(w, ref_w, **tol(torch.float32))


@pytest.mark.parametrize("d_context,bias", [(None, True), (6, True), (6, False)])
def test_to_torch_matches(d_context, bias):
    ours = MultiHeadAttention(8, 2, d_context=d_context, bias=bias).eval()
    ref = ours.to_torch().eval()
    kdim = d_context or 8
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 9, kdim)
    mask = padding_mask([9, 2])
    ref_out, _ = ref(x, ctx, ctx, key_padding_mask=to_torch_key_padding_mask(mask))
    torch.testing.assert_close(ours(x, ctx, context_mask=mask), ref_out, **tol(torch.float32))
    back = MultiHeadAttention.from_torch(ref)
    for a, b in zip(ours.parameters(), back.parameters()):
        assert torch.equal(a, b)


def test_self_attention_is_cross_attention_with_context_x():
    m = MultiHeadAttention(8, 2)
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(m(x), m(x, x))


def test_causal_self_attention_matches_torch():
    m = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, 6, 8)
    ref_out, _ = m.to_torch()(x, x, x, attn_mask=~causal_mask(6))  # nn.MHA: True = blocked
    torch.testing.assert_close(m(x, attn_mask=causal_mask(6)), ref_out, **tol(torch.float32))


def test_unbatched_input():
    m = MultiHeadAttention(8, 2, d_context=4)
    x, ctx = torch.randn(3, 8), torch.randn(5, 4)
    out, w = m(x, ctx, need_weights=True)
    assert out.shape == (3, 8) and w.shape == (2, 3, 5)
    torch.testing.assert_close(out, m(x[None], ctx[None])[0])


def test_fully_masked_source_gives_finite_output():
    m = MultiHeadAttention(8, 2)
    out, w = m(torch.randn(2, 3, 8), torch.randn(2, 4, 8), context_mask=padding_mask([0, 4]), need_weights=True)
    assert torch.isfinite(out).all() and (w[0] == 0).all()
    torch.testing.assert_close(out[0], m.out_proj.bias.expand(3, 8))  # zero attention output, then out_proj


def test_dropout_only_in_training():
    m = MultiHeadAttention(8, 2, dropout=0.5)
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    m.eval()
    torch.testing.assert_close(m(x, ctx), m(x, ctx))
    m.train()
    assert not torch.allclose(m(x, ctx), m(x, ctx))


# --- KV caches ----------------------------------------------------------------------
def test_cross_attention_cache_equals_full_computation():
    m = MultiHeadAttention(16, 4, d_context=12)
    x, ctx, mask = torch.randn(2, 6, 16), torch.randn(2, 9, 12), padding_mask([9, 5])
    full, w_full = m(x, ctx, context_mask=mask, need_weights=True)
    cache = m.precompute_context(ctx, mask)
    steps = [m.step(x[:, t : t + 1], cache, need_weights=True) for t in range(6)]
    torch.testing.assert_close(torch.cat([s[0] for s in steps], 1), full, **tol(torch.float32))
    torch.testing.assert_close(torch.cat([s[1] for s in steps], 2), w_full, **tol(torch.float32))
    assert len(cache) == 9  # the source cache never grows


def test_self_attention_cache_equals_causal_forward():
    m = MultiHeadAttention(8, 2)
    x = torch.randn(3, 5, 8)
    full = m(x, attn_mask=causal_mask(5))
    cache = m.new_cache()
    outs = [m.step(x[:, t : t + 1], cache) for t in range(5)]
    torch.testing.assert_close(torch.cat(outs, 1), full, **tol(torch.float32))
    assert len(cache) == 5  # one key per generated token
    with pytest.raises(ValueError, match="one token"):
        m.step(x[:, :2], cache)
    with pytest.raises(ValueError, match="cannot grow"):
        m.precompute_context(x).append(x, x)


# --- errors name the shapes ---------------------------------------------------------
def test_module_errors():
    with pytest.raises(ValueError, match="d_model=10.*num_heads=3"):
        MultiHeadAttention(10, 3)
    m = MultiHeadAttention(8, 2, d_context=6)
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match=r"context must be \(batch, len, 6\), got \(2, 4, 8\)"):
        m(x, torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match=r"x must be \(batch, len, 8\), got \(2, 3, 6\)"):
        m(torch.randn(2, 3, 6), torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="d_context == d_model"):
        m(x)
    with pytest.raises(ValueError, match=r"context_mask must be \(batch, len_k\) = \(2, 4\), got \(2, 5\)"):
        m(x, torch.randn(2, 4, 6), context_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        m(x, torch.randn(2, 4, 6), context_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="broadcast"):
        m(x, torch.randn(2, 4, 6), attn_mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch sizes"):
        m(x, torch.randn(3, 4, 6))
    with pytest.raises(ValueError, match="kdim"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, kdim=4, vdim=6))


# --- grouped-query attention ----------------------------------------------------------
def test_grouped_query_attention_module_matches_sdpa_with_enable_gqa():
    m = MultiHeadAttention(16, 4, d_context=12, num_kv_heads=2)
    assert m.k_proj.out_features == m.v_proj.out_features == 2 * 4  # num_kv_heads * head_dim
    x, ctx, mask = torch.randn(2, 6, 16), torch.randn(2, 9, 12), padding_mask([9, 5])
    q = split_heads(m.q_proj(x), 4)
    k, v = split_heads(m.k_proj(ctx), 2), split_heads(m.v_proj(ctx), 2)
    attn = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], enable_gqa=True)
    expected = m.out_proj(merge_heads(attn))
    torch.testing.assert_close(m(x, ctx, context_mask=mask), expected, **tol(torch.float32))


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_grouped_query_caches_hold_the_smaller_keys_and_equal_forward(num_kv_heads):
    m = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads)
    x = torch.randn(2, 5, 16)
    full = m(x, attn_mask=causal_mask(5))
    cache = m.new_cache()
    outs = [m.step(x[:, t : t + 1], cache) for t in range(5)]
    torch.testing.assert_close(torch.cat(outs, 1), full, **tol(torch.float32))
    assert cache.key.shape == cache.value.shape == (2, num_kv_heads, 5, 4)
    source = m.precompute_context(torch.randn(2, 7, 16))
    assert source.key.shape == (2, num_kv_heads, 7, 4)


def test_grouped_query_errors_name_both_counts():
    with pytest.raises(ValueError, match="num_heads=4 must be a multiple of num_kv_heads=3"):
        MultiHeadAttention(16, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="num_kv_heads=2 != num_heads=4"):
        MultiHeadAttention(16, 4, num_kv_heads=2).to_torch()


@pytest.mark.parametrize("backend", ["sdpa", "tiled"])
@pytest.mark.parametrize("num_kv_heads", [4, 1])
def test_step_with_an_efficient_backend_equals_the_textbook_step(backend, num_kv_heads):
    m = MultiHeadAttention(16, 4, d_context=12, num_kv_heads=num_kv_heads).eval()
    cache = m.precompute_context(torch.randn(2, 9, 12), padding_mask([9, 5]))
    x_t = torch.randn(2, 3, 16)
    torch.testing.assert_close(m.step(x_t, cache, backend=backend), m.step(x_t, cache), **tol(torch.float32))
    with pytest.raises(ValueError, match="need_weights"):
        m.step(x_t, cache, backend=backend, need_weights=True)
    growing = m if m.d_context == 16 else MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads).eval()
    c1, c2 = growing.new_cache(), growing.new_cache()
    for _ in range(3):
        tok = torch.randn(2, 1, 16)
        torch.testing.assert_close(growing.step(tok, c1, backend=backend), growing.step(tok, c2), **tol(torch.float32))
