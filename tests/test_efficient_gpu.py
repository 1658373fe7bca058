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
