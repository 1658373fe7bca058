"""Properties that hold for every input: checked by hypothesis on random shapes."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import tol

from course_lib import MultiHeadAttention, causal_mask, padding_mask, scaled_dot_product_attention

SETTINGS = settings(max_examples=25, deadline=None)
dims = st.integers(1, 7)


@st.composite
def cross_problem(draw):
    batch, heads, lq, lk = draw(dims), draw(st.integers(1, 3)), draw(dims), draw(dims)
    head_dim = draw(st.sampled_from([1, 2, 4]))
    d_context = draw(st.integers(1, 9))
    lengths = draw(st.lists(st.integers(0, lk), min_size=batch, max_size=batch))
    seed = draw(st.integers(0, 2**16))
    return batch, heads, lq, lk, head_dim, d_context, lengths, seed


def make(problem):
    batch, heads, lq, lk, head_dim, d_context, lengths, seed = problem
    torch.manual_seed(seed)
    m = MultiHeadAttention(heads * head_dim, heads, d_context=d_context).double()
    x = torch.randn(batch, lq, heads * head_dim, dtype=torch.double)
    ctx = torch.randn(batch, lk, d_context, dtype=torch.double)
    return m, x, ctx, padding_mask(lengths, lk)


@SETTINGS
@given(cross_problem(), st.randoms())
def test_permuting_real_source_tokens_changes_nothing(problem, rnd):
    m, x, ctx, mask = make(problem)
    out = m(x, ctx, context_mask=mask)
    perm = list(range(ctx.shape[1]))
    rnd.shuffle(perm)
    torch.testing.assert_close(m(x, ctx[:, perm], context_mask=mask[:, perm]), out, **tol(torch.float64))


@SETTINGS
@given(cross_problem())
def test_padded_source_tokens_never_leak(problem):
    m, x, ctx, mask = make(problem)
    noisy = torch.where(mask[..., None], ctx, 1e3 * torch.randn_like(ctx))
    torch.testing.assert_close(m(x, noisy, context_mask=mask), m(x, ctx, context_mask=mask), **tol(torch.float64))


@SETTINGS
@given(cross_problem())
def test_weights_rows_sum_to_one_or_zero(problem):
    m, x, ctx, mask = make(problem)
    _, w = m(x, ctx, context_mask=mask, need_weights=True)
    sums = w.sum(-1)  # (batch, heads, len_q)
    expected = (mask.sum(-1) > 0).double()[:, None, None].expand_as(sums)
    torch.testing.assert_close(sums, expected, **tol(torch.float64))


@SETTINGS
@given(st.integers(2, 9), st.integers(1, 4), st.integers(0, 2**16))
def test_future_tokens_never_change_the_past(length, dim, seed):
    torch.manual_seed(seed)
    t = int(torch.randint(0, length - 1, ()).item())  # change tokens after position t
    q, k, v = (torch.randn(2, length, dim, dtype=torch.double) for _ in range(3))
    k2, v2 = k.clone(), v.clone()
    k2[:, t + 1 :] += torch.randn_like(k2[:, t + 1 :])
    v2[:, t + 1 :] += torch.randn_like(v2[:, t + 1 :])
    mask = causal_mask(length)
    a = scaled_dot_product_attention(q, k, v, mask)
    b = scaled_dot_product_attention(q, k2, v2, mask)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], **tol(torch.float64))
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])  # the test can fail: the future does matter to it
