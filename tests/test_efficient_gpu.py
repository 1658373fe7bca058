"""The Triton kernels on a CUDA GPU: fp16 and bf16 at realistic sizes, and autotuning.

Skipped without CUDA; ``benchmarks/gpu_check.sh`` runs them on a GPU machine (with
``COURSE_TRITON_AUTOTUNE=0``, so that the many shapes here do not each trigger a
round of autotuning; ``test_autotuning_picks_a_config`` turns it back on).

Half-precision outputs are held to PyTorch's rule for fused attention kernels (see
``efficient_cases._tolerances``): the kernel rounds the probabilities to fp16/bf16
before multiplying them by V, as FlashAttention does.
"""

import pytest
import torch
from efficient_cases import case_seed, check_backend, make_inputs, make_lens, poison_outputs

from course_lib.efficient import flash_attention

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# (len_q, len_k, causal, padding mode): cross-attention shapes, not multiples of the blocks, with padding.
SHAPES = [(128, 1000, False, "mixed"), (1000, 129, True, "partial"), (1024, 4096, False, "partial")]


@pytest.fixture
def flash(monkeypatch):
    from course_lib.efficient import triton_flash

    poison_outputs(monkeypatch)
    return triton_flash


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim", [16, 32, 64, 128])
@pytest.mark.parametrize("len_q,len_k,causal,mode", SHAPES)
def test_half_precision_matches_reference(flash, dtype, dim, len_q, len_k, causal, mode):
    seed = case_seed("gpu", dtype, dim, len_q, len_k, causal, mode)
    batch = 3 if mode == "mixed" else 2
    q, k, v, dout = make_inputs(batch, 4, len_q, len_k, dim, dtype=dtype, device="cuda", seed=seed)
    lens = make_lens(mode, batch, len_k, seed)
    attend = lambda q, k, v: flash.triton_attention(q, k, v, kv_lens=lens, causal=causal)  # noqa: E731
    check_backend(attend, q, k, v, dout, lens, causal, rounds_p=True)


def test_auto_backend_is_triton_on_cuda(flash):
    q, k, v, _ = make_inputs(2, 2, 70, 300, 64, dtype=torch.float16, device="cuda", seed=1)
    assert torch.equal(flash_attention(q, k, v, kv_lens=[300, 41]), flash.triton_attention(q, k, v, kv_lens=[300, 41]))


def test_auto_backend_falls_back_to_sdpa_for_other_head_dims(flash):
    q, k, v, _ = make_inputs(2, 2, 70, 300, 80, dtype=torch.float16, device="cuda", seed=3)
    auto = flash_attention(q, k, v, kv_lens=[300, 41])
    assert torch.equal(auto, flash_attention(q, k, v, kv_lens=[300, 41], backend="sdpa"))


def test_cpu_tensors_are_refused(flash):
    with pytest.raises(ValueError, match="CUDA tensors"):
        flash.triton_attention(*(torch.randn(1, 1, 8, 16) for _ in range(3)))


def test_autotuning_picks_a_config(flash, monkeypatch):
    monkeypatch.setattr(flash, "AUTOTUNE", True)
    q, k, v, dout = make_inputs(2, 4, 256, 512, 64, dtype=torch.float16, device="cuda", seed=2)
    lens = [512, 200]
    check_backend(
        lambda q, k, v: flash.triton_attention(q, k, v, kv_lens=lens), q, k, v, dout, lens, False, rounds_p=True
    )
    for kernel, configs in ((flash._attn_fwd, flash._FWD_CONFIGS), (flash._attn_bwd_dkdv, flash._DKDV_CONFIGS)):
        best = flash._TUNED[kernel][0].best_config  # set by the autotuner once it has timed the configs
        blocks = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in configs}
        assert (best.kwargs["BLOCK_M"], best.kwargs["BLOCK_N"]) in blocks, best


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "heads,kv_heads,len_q,len_k,causal,lens,splits",
    [
        (8, 1, 1, 8192, False, [8192, 3000], None),
        (8, 2, 300, 1000, True, [1000, 517], 1),
        (4, 4, 16, 4096, True, None, 7),
    ],
)
def test_gqa_and_split_kv_in_half_precision(flash, dtype, heads, kv_heads, len_q, len_k, causal, lens, splits):
    gen = torch.Generator().manual_seed(case_seed("gqa-gpu", dtype, heads, len_q))
    q = torch.randn(2, heads, len_q, 64, generator=gen).to("cuda", dtype).requires_grad_()
    k, v = (torch.randn(2, kv_heads, len_k, 64, generator=gen).to("cuda", dtype).requires_grad_() for _ in "kv")
    dout = torch.randn(2, heads, len_q, 64, generator=gen).to("cuda", dtype)
    attend = lambda q, k, v: flash.triton_attention(q, k, v, kv_lens=lens, causal=causal, num_splits=splits)  # noqa: E731
    check_backend(attend, q, k, v, dout, lens, causal, rounds_p=True)


def test_split_kv_heuristic_splits_a_long_decode(flash):
    q = torch.randn(1, 8, 1, 128, device="cuda", dtype=torch.float16)
    assert flash._num_splits(None, q, 65536) > 1  # 8 query blocks cannot fill the GPU alone
    assert flash._num_splits(None, torch.randn(8, 16, 4096, 128, device="cuda"), 4096) == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_varlen_in_half_precision_equals_each_sequence_alone(flash, dtype):
    from course_lib.efficient import flash_attention_varlen

    lens_q, lens_k = [1, 700, 129, 64], [300, 700, 1000, 0]
    cu = lambda lens: torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")  # noqa: E731
    q = torch.randn(sum(lens_q), 8, 128, device="cuda", dtype=dtype)
    k, v = (torch.randn(sum(lens_k), 2, 128, device="cuda", dtype=dtype) for _ in "kv")
    args = (q, k, v, cu(lens_q), cu(lens_k), max(lens_q), max(lens_k))
    out = flash_attention_varlen(*args, causal=True, backend="triton")
    ref = flash_attention_varlen(*(t.float() if t.is_floating_point() else t for t in args[:5]), *args[5:],
                                 causal=True, backend="sdpa")
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
