"""The Triton kernels on what real models give them: any memory layout, grouped-query K/V,
split-KV decoding, packed variable-length batches, and the tensor-descriptor (TMA) path.

Every case compares the output and all three gradients with the float64 reference. In the
interpreter (no CUDA) the shapes are small; the blocks are 32 x 32, so lengths 17, 40 and 70
give ragged last blocks, several blocks, and both loops (unmasked and masked) of a program.
"""

import os

import pytest
import torch
from efficient_cases import (
    LAYOUTS,
    case_seed,
    check_backend,
    make_inputs,
    one_thread,  # noqa: F401  (an autouse fixture: every test runs on one thread)
    poison_outputs,
    with_layout,
)

from course_lib.device import triton_mode
from course_lib.efficient import flash_attention, flash_attention_varlen

pytestmark = pytest.mark.triton

if triton_mode() == "missing":
    if os.environ.get("REQUIRE_TRITON") == "1":
        pytest.fail("REQUIRE_TRITON=1 but the triton package is not installed", pytrace=False)
    pytest.skip("the triton package is not installed", allow_module_level=True)

from course_lib.efficient import triton_flash  # noqa: E402  (after course_lib.efficient set TRITON_INTERPRET)

DEVICE = "cuda" if triton_mode() == "native" else "cpu"

# (len_q, len_k, causal, kv_lens): causal self-attention; padded cross-attention with Lq != Lk;
# both at once with more keys than queries (bottom-right diagonal).
CONDITIONS = [(40, 40, True, None), (17, 70, False, [70, 9]), (17, 40, True, [33, 40])]


def _triton(lens, causal, **kw):
    return lambda q, k, v: triton_flash.triton_attention(q, k, v, kv_lens=lens, causal=causal, **kw)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("len_q,len_k,causal,lens", CONDITIONS)
def test_any_layout_gives_correct_outputs_and_gradients(layout, len_q, len_k, causal, lens, monkeypatch):
    poison_outputs(monkeypatch)
    q, k, v, dout = make_inputs(2, 2, len_q, len_k, 16, device=DEVICE, seed=case_seed(layout, len_q, len_k))
    q, k, v = with_layout(q, k, v, layout)
    assert layout == "contiguous" or not (q.is_contiguous() and k.is_contiguous())
    check_backend(_triton(lens, causal), q, k, v, dout, lens, causal)


def test_a_strided_output_gradient_is_read_where_it_lies(monkeypatch):
    poison_outputs(monkeypatch)
    q, k, v, dout = make_inputs(2, 2, 17, 40, 16, device=DEVICE, seed=21)
    dout_t = dout.transpose(1, 2).contiguous().transpose(1, 2)  # (batch, len, heads, d) storage
    out = triton_flash.triton_attention(q, k, v, causal=True)
    got = torch.autograd.grad(out, (q, k, v), dout_t)
    expected = torch.autograd.grad(flash_attention(q, k, v, causal=True, backend="naive"), (q, k, v), dout)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def _gqa_inputs(batch, heads, kv_heads, len_q, len_k, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, len_q, dim, generator=gen).to(DEVICE).requires_grad_()
    k, v = (torch.randn(batch, kv_heads, len_k, dim, generator=gen).to(DEVICE).requires_grad_() for _ in "kv")
    dout = torch.randn(batch, heads, len_q, dim, generator=gen).to(DEVICE)
    return q, k, v, dout


@pytest.mark.parametrize(
    "heads,kv_heads,len_q,len_k,causal,lens",
    [(4, 2, 17, 70, True, [70, 30]), (4, 1, 40, 40, True, None), (6, 3, 33, 17, False, [0, 17])],
)
def test_grouped_query_attention_matches_the_reference(heads, kv_heads, len_q, len_k, causal, lens, monkeypatch):
    poison_outputs(monkeypatch)
    q, k, v, dout = _gqa_inputs(2, heads, kv_heads, len_q, len_k, 16, case_seed("gqa", heads, kv_heads, len_q))
    check_backend(_triton(lens, causal), q, k, v, dout, lens, causal)  # dK, dV summed over each group


def test_grouped_query_attention_equals_sdpa_with_enable_gqa():
    q, k, v, _ = _gqa_inputs(1, 8, 2, 9, 33, 32, 22)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(triton_flash.triton_attention(q, k, v), expected)


def test_heads_that_do_not_divide_are_refused_naming_both_counts():
    q, k, v, _ = _gqa_inputs(1, 6, 4, 9, 33, 16, 23)
    with pytest.raises(ValueError, match=r"query heads \(6\).*key/value heads \(4\)"):
        triton_flash.triton_attention(q, k, v)


@pytest.mark.parametrize(
    "len_q,len_k,causal,lens,splits",
    [(1, 130, False, [130, 75], 4), (17, 130, True, [130, 40], 3), (1, 70, True, None, 5), (2, 40, False, [0, 40], 2)],
)
def test_split_kv_decoding_matches_the_reference(len_q, len_k, causal, lens, splits, monkeypatch):
    poison_outputs(monkeypatch)
    q, k, v, dout = _gqa_inputs(2, 4, 2, len_q, len_k, 16, case_seed("splits", len_q, len_k, splits))
    check_backend(_triton(lens, causal, num_splits=splits), q, k, v, dout, lens, causal)


def test_split_kv_log_sum_exp_equals_one_split():
    q, k, v, _ = _gqa_inputs(2, 2, 2, 3, 150, 16, 24)
    one = triton_flash.triton_attention(q, k, v, kv_lens=[150, 61], return_lse=True, num_splits=1)
    four = triton_flash.triton_attention(q, k, v, kv_lens=[150, 61], return_lse=True, num_splits=4)
    for a, b in zip(one, four):
        torch.testing.assert_close(a, b)


def test_num_splits_none_is_one_without_cuda_and_bad_values_are_refused():
    q, k, v, _ = _gqa_inputs(1, 2, 2, 1, 40, 16, 25)
    if DEVICE == "cpu":
        assert triton_flash._num_splits(None, q, 40) == 1
    with pytest.raises(ValueError, match="num_splits"):
        triton_flash.triton_attention(q, k, v, num_splits=0)


def _packed(lens_q, lens_k, heads, kv_heads, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    cu = lambda lens: torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)  # noqa: E731
    q = torch.randn(sum(lens_q), heads, dim, generator=gen).to(DEVICE).requires_grad_()
    k, v = (torch.randn(sum(lens_k), kv_heads, dim, generator=gen).to(DEVICE).requires_grad_() for _ in "kv")
    dout = torch.randn(sum(lens_q), heads, dim, generator=gen).to(DEVICE)
    return q, k, v, dout, cu(lens_q).to(DEVICE), cu(lens_k).to(DEVICE)


@pytest.mark.parametrize(
    "lens_q,lens_k,kv_heads,causal",
    [([5, 40, 0, 17], [40, 7, 9, 0], 2, False), ([33, 1, 17], [33, 70, 5], 1, True), ([40], [40], 2, True)],
)
def test_varlen_matches_attention_sequence_by_sequence(lens_q, lens_k, kv_heads, causal, monkeypatch):
    poison_outputs(monkeypatch)
    q, k, v, dout, cu_q, cu_k = _packed(lens_q, lens_k, 2, kv_heads, 16, case_seed("varlen", lens_q, causal))
    args = (q, k, v, cu_q, cu_k, max(lens_q), max(lens_k))
    out = flash_attention_varlen(*args, causal=causal, backend="triton")
    grads = torch.autograd.grad(out, (q, k, v), dout)
    as64 = [t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in args]
    ref = flash_attention_varlen(*as64, causal=causal, backend="naive")
    ref_grads = torch.autograd.grad(ref, (q, k, v), dout.double())
    torch.testing.assert_close(out, ref.float())
    for name, g, r in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(g, r.float(), msg=lambda m, name=name: f"d{name}: {m}")


def test_varlen_log_sum_exp_is_heads_by_total_q():
    q, k, v, _, cu_q, cu_k = _packed([3, 9], [20, 5], 2, 2, 16, 26)
    out, lse = triton_flash.triton_attention_varlen(q, k, v, cu_q, cu_k, 9, 20, return_lse=True)
    assert out.shape == q.shape and lse.shape == (2, 12)
    _, lse0 = triton_flash.triton_attention(q[:3].transpose(0, 1)[None], k[:20].transpose(0, 1)[None],
                                            v[:20].transpose(0, 1)[None], return_lse=True)
    torch.testing.assert_close(lse[:, :3], lse0[0])


@pytest.mark.skipif(not triton_flash.HAS_TENSOR_DESCRIPTORS, reason="this Triton has no tensor descriptors")
@pytest.mark.parametrize("causal,lens", [(True, [70, 20]), (False, None)])
def test_tensor_descriptor_path_matches_the_pointer_path(causal, lens, monkeypatch):
    # On a CPU the interpreter runs the Hopper (TMA) branch of the forward when it is forced on; on a Hopper
    # GPU it is compiled. Forced off, the pointer path gives the expected output. NaN in the
    # padding: descriptors fetch whole tiles, so the kernel must zero what lies past each kv_len.
    monkeypatch.setattr(triton_flash, "FORCE_TMA", True)
    q, k, v, dout = make_inputs(2, 2, 17, 70, 16, device=DEVICE, seed=27)
    if DEVICE == "cpu":
        assert triton_flash._use_tma(k, v)
    else:  # on a GPU: Hopper or later only, and never for a layout the copy engine cannot take
        assert triton_flash._use_tma(k, v) == (torch.cuda.get_device_capability()[0] >= 9)
        assert not triton_flash._use_tma(k[:, :1].expand(-1, 2, -1, -1), v)
    k_nan, v_nan = (t.detach().clone() for t in (k, v))
    for b, n in enumerate(lens or []):
        k_nan[b, :, n:], v_nan[b, :, n:] = float("nan"), float("nan")
    got = triton_flash.triton_attention(q, k_nan, v_nan, kv_lens=lens, causal=causal)
    monkeypatch.setattr(triton_flash, "FORCE_TMA", False)
    expected = triton_flash.triton_attention(q, k, v, kv_lens=lens, causal=causal)
    torch.testing.assert_close(got, expected)


def test_autotune_key_is_a_power_of_two_bucket():
    assert [triton_flash._bucket(n) for n in (1, 16, 17, 1000, 1024, 1025)] == [16, 16, 32, 1024, 1024, 2048]
    assert "Lq" not in triton_flash._TUNE_KEY and "Lk" not in triton_flash._TUNE_KEY


def test_the_config_space_covers_the_hopper_grid():
    fwd = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages, c.num_warps) for c in triton_flash._FWD_CONFIGS}
    grid = {(m, n, s, w) for m in (64, 128) for n in (32, 64, 128) for s in (2, 3, 4) for w in (4, 8)}
    assert grid <= fwd
    assert len(fwd) == len(triton_flash._FWD_CONFIGS)  # no duplicates


@pytest.mark.parametrize("varlen", [False, True])
def test_atomic_dq_backward_matches_the_reference(varlen, monkeypatch):
    # FlashAttention-2's backward: one kernel over key blocks adds dQ with atomics (the default is two kernels)
    poison_outputs(monkeypatch)
    monkeypatch.setattr(triton_flash, "BACKWARD", "atomic")
    if not varlen:
        q, k, v, dout = _gqa_inputs(2, 4, 2, 40, 70, 16, 28)
        check_backend(_triton([70, 20], True), q, k, v, dout, [70, 20], True)
        return
    q, k, v, dout, cu_q, cu_k = _packed([5, 40], [40, 7], 2, 1, 16, 29)
    out = flash_attention_varlen(q, k, v, cu_q, cu_k, 40, 40, causal=True, backend="triton")
    ref = flash_attention_varlen(q, k, v, cu_q, cu_k, 40, 40, causal=True, backend="naive")
    for g, r in zip(torch.autograd.grad(out, (q, k, v), dout), torch.autograd.grad(ref, (q, k, v), dout)):
        torch.testing.assert_close(g, r)
