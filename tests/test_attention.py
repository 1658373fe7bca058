import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import reference_attention, tol

from course_lib import causal_mask, padding_mask, scaled_dot_product_attention, softmax


# --- softmax ------------------------------------------------------------------
def test_softmax_matches_torch_on_both_axes():
    x = torch.randn(3, 5, 7)
    for axis in (-1, 0, 1):
        torch.testing.assert_close(softmax(x, axis=axis), torch.softmax(x, dim=axis))


def test_softmax_numpy_keeps_type_and_dtype():
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    out = softmax(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, torch.softmax(torch.from_numpy(x), -1).numpy(), rtol=1e-6)


def test_softmax_is_stable_for_huge_logits():
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]])
    out = softmax(x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], softmax(np.array([0.0, 1.0, 2.0])))


def test_softmax_all_minus_inf_row_gives_zeros():
    x = torch.tensor([[-math.inf, -math.inf], [0.0, -math.inf]])
    torch.testing.assert_close(softmax(x), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))


def test_softmax_promotes_integers():
    out = softmax(np.array([1, 2, 3]))
    assert out.dtype == np.float64
    assert out.sum() == pytest.approx(1.0)


def test_softmax_bad_axis_names_shape():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        softmax(np.zeros((2, 3)), axis=2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_softmax_half_precision(dtype):
    x = torch.randn(4, 9) * 30
    out = softmax(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out, torch.softmax(x.to(dtype).double(), -1).to(dtype), **tol(dtype))


# --- scaled dot-product attention ------------------------------------------------
SHAPES = [  # (batch shape, Lq, Lk, d, dv)
    ((), 5, 7, 8, 8),
    ((2,), 1, 9, 4, 6),
    ((2, 3), 6, 11, 16, 16),
    ((3, 2), 13, 4, 8, 5),
]


@pytest.mark.parametrize("batch,lq,lk,d,dv", SHAPES)
def test_torch_matches_sdpa_and_float64_reference(batch, lq, lk, d, dv):
    q, k, v = torch.randn(*batch, lq, d), torch.randn(*batch, lk, d), torch.randn(*batch, lk, dv)
    out, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    assert out.shape == (*batch, lq, dv) and w.shape == (*batch, lq, lk)
    ref_out, ref_w = reference_attention(q, k, v)
    torch.testing.assert_close(out, ref_out.float(), **tol(torch.float32))
    torch.testing.assert_close(w, ref_w.float(), **tol(torch.float32))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), **tol(torch.float32))


@pytest.mark.parametrize("batch,lq,lk,d,dv", SHAPES)
def test_numpy_matches_torch(batch, lq, lk, d, dv):
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(*batch, lq, d)), rng.normal(size=(*batch, lk, d)), rng.normal(size=(*batch, lk, dv))
    out, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    ref_out, ref_w = reference_attention(*(torch.from_numpy(t) for t in (q, k, v)))
    np.testing.assert_allclose(out, ref_out.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.sum(-1), 1.0)


def test_mask_matches_sdpa_bool_mask():
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 9, 8), torch.randn(2, 4, 9, 8)
    mask = padding_mask([9, 5])[:, None, None, :] & causal_mask(6, 9)
    out = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **tol(torch.float32))


def test_float_mask_is_added_to_scores():
    q, k, v = torch.randn(3, 5, 4), torch.randn(3, 6, 4), torch.randn(3, 6, 4)
    bias = torch.randn(5, 6)
    out = scaled_dot_product_attention(q, k, v, bias)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=bias), **tol(torch.float32))


def test_custom_scale():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    out = scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, reference_attention(q, k, v, scale=0.3)[0].float(), **tol(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fully_masked_rows_give_zeros_not_nan(dtype):
    q, k, v = (torch.randn(2, 4, 5, 8, dtype=dtype) for _ in range(3))
    mask = torch.ones(2, 4, 5, 5, dtype=torch.bool)
    mask[0, :, 2] = False  # query 2 of batch 0 may attend nothing
    mask[1] = False  # nothing at all in batch 1
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert out.dtype == dtype and w.dtype == dtype
    assert not out.isnan().any() and not w.isnan().any()
    assert (out[0, :, 2] == 0).all() and (w[0, :, 2] == 0).all() and (out[1] == 0).all()
    ref, _ = reference_attention(q, k, v, mask)
    torch.testing.assert_close(out, ref.to(dtype), **tol(dtype))


def test_numpy_fully_masked_row():
    q, k, v = np.ones((2, 3)), np.ones((4, 3)), np.ones((4, 2))
    mask = np.array([[True, False, False, False], [False] * 4])
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_array_equal(w, [[1, 0, 0, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_large_logits(dtype):
    q, k, v = torch.randn(2, 7, 16) * 20, torch.randn(2, 11, 16) * 20, torch.randn(2, 11, 16)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    out = scaled_dot_product_attention(q, k, v, padding_mask([11, 3])[:, None, :])
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref, _ = reference_attention(q, k, v, padding_mask([11, 3])[:, None, :])
    torch.testing.assert_close(out, ref.to(dtype), **tol(dtype))


def test_gradients_flow_and_stay_finite_with_masked_rows():
    q, k, v = (torch.randn(1, 3, 4, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True, True, False], [False, False, False], [True, False, False]])
    scaled_dot_product_attention(q, k, v, mask).sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    reference_attention(qd, kd, vd, mask)[0].sum().backward()
    torch.testing.assert_close(q.grad, qd.grad.float(), **tol(torch.float32))
    torch.testing.assert_close(v.grad, vd.grad.float(), **tol(torch.float32))


# --- errors name the shapes ---------------------------------------------------------
@pytest.mark.parametrize(
    "q_shape,k_shape,v_shape,pattern",
    [
        ((2, 5, 8), (2, 7, 4), (2, 7, 4), r"same last dimension.*\(2, 5, 8\).*\(2, 7, 4\)"),
        ((2, 5, 8), (2, 7, 8), (2, 6, 8), r"same length.*\(2, 7, 8\).*\(2, 6, 8\)"),
        ((2, 5, 8), (3, 7, 8), (3, 7, 8), r"batch dimensions.*\(2, 5, 8\).*\(3, 7, 8\)"),
        ((8,), (7, 8), (7, 8), r"2-D"),
    ],
)
def test_shape_errors(q_shape, k_shape, v_shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        scaled_dot_product_attention(torch.randn(q_shape), torch.randn(k_shape), torch.randn(v_shape))


def test_mask_that_cannot_broadcast():
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    with pytest.raises(ValueError, match=r"\(5, 5\).*\(2, 5, 7\)"):
        scaled_dot_product_attention(q, k, v, torch.ones(5, 5, dtype=torch.bool))


def test_dtype_errors():
    q = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="one dtype"):
        scaled_dot_product_attention(q, q.double(), q)
    with pytest.raises(ValueError, match="floating-point"):
        scaled_dot_product_attention(*(torch.ones(2, 3, 4, dtype=torch.int64) for _ in range(3)))
    with pytest.raises(ValueError, match="not a mix"):
        scaled_dot_product_attention(q, q.numpy(), q)
