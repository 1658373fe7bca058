"""The Triton FlashAttention kernels (forward and backward) against the float64 reference.

Without CUDA they run in Triton's interpreter, which is slow, so the cases are a
covering subset of the full product rather than all of it: every (len_q, len_k)
pair of 1, 17, 64, 129 (with the interpreter's 32-wide blocks: one ragged block,
two full ones, four full ones and a ragged one), causal on and off in a checkerboard
over those pairs, the three padding modes in turn, and each head dim at least once.
On a GPU the same tests run natively, in fp32.

CI sets ``REQUIRE_TRITON=1``: there a missing Triton fails these tests instead of
skipping them.
"""

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from efficient_cases import (
    LENGTHS,
    LENS_MODES,
    case_seed,
    check_backend,
    make_inputs,
    make_lens,
    one_thread,  # noqa: F401  (an autouse fixture: every test runs on one thread)
    poison_outputs,
)

from course_lib.device import triton_mode
from course_lib.efficient import flash_attention, tiled_attention

pytestmark = pytest.mark.triton

if triton_mode() == "missing":
    if os.environ.get("REQUIRE_TRITON") == "1":
        pytest.fail("REQUIRE_TRITON=1 but the triton package is not installed", pytrace=False)
    pytest.skip("the triton package is not installed", allow_module_level=True)

from course_lib.efficient import triton_flash  # noqa: E402  (after course_lib.efficient set TRITON_INTERPRET)

DEVICE = "cuda" if triton_mode() == "native" else "cpu"
HEADS = 1


CASES = [
    (lq, lk, (i // len(LENGTHS) + i) % 2 == 1, LENS_MODES[i % len(LENS_MODES)], 16)
    for i, (lq, lk) in enumerate(itertools.product(LENGTHS, LENGTHS))
] + [(17, 64, True, "mixed", 32), (64, 17, False, "partial", 64), (17, 129, True, "mixed", 128)]


def _triton(lens, causal):
    return lambda q, k, v: triton_flash.triton_attention(q, k, v, kv_lens=lens, causal=causal)


def test_the_subset_covers_every_value():
    assert {c[0] for c in CASES} == set(LENGTHS) and {c[1] for c in CASES} == set(LENGTHS)
    assert {(c[0], c[1]) for c in CASES} == set(itertools.product(LENGTHS, LENGTHS))
    assert {c[2] for c in CASES} == {False, True} and {c[3] for c in CASES} == set(LENS_MODES)
    assert {c[4] for c in CASES} == set(triton_flash.HEAD_DIMS)
    for length in LENGTHS:  # each length meets both causal settings, as len_q and as len_k
        assert {c[2] for c in CASES if c[0] == length} == {False, True}
        assert {c[2] for c in CASES if c[1] == length} == {False, True}


@pytest.mark.parametrize("len_q,len_k,causal,mode,dim", CASES)
def test_triton_matches_reference(len_q, len_k, causal, mode, dim, monkeypatch):
    poison_outputs(monkeypatch)
    seed = case_seed("triton", len_q, len_k, causal, mode, dim)
    batch = 3 if mode == "mixed" else 2  # mixed: an empty, a full and a partial source
    q, k, v, dout = make_inputs(batch, HEADS, len_q, len_k, dim, device=DEVICE, seed=seed)
    lens = make_lens(mode, batch, len_k, seed)
    check_backend(_triton(lens, causal), q, k, v, dout, lens, causal)


def test_triton_log_sum_exp_matches_tiled(monkeypatch):
    poison_outputs(monkeypatch)
    q, k, v, _ = make_inputs(2, 2, 20, 33, 16, device=DEVICE, seed=12)
    lens = [0, 21]
    out, lse = triton_flash.triton_attention(q, k, v, kv_lens=lens, causal=True, return_lse=True)
    ref_out, ref_lse = tiled_attention(q, k, v, kv_lens=lens, causal=True, return_lse=True)
    assert torch.isneginf(lse[0]).all()
    torch.testing.assert_close(lse, ref_lse)
    torch.testing.assert_close(out, ref_out)


def test_padding_keys_are_never_read():
    # NaN in the padding: a kernel that loaded it (forward or backward) would spread NaN.
    q, k, v, dout = make_inputs(2, 1, 18, 40, 16, device=DEVICE, seed=13)
    lens = [7, 33]
    k_nan, v_nan = (t.detach().clone() for t in (k, v))
    for b, n in enumerate(lens):
        k_nan[b, :, n:], v_nan[b, :, n:] = math.nan, math.nan
    k_nan.requires_grad_()
    v_nan.requires_grad_()
    out = triton_flash.triton_attention(q, k_nan, v_nan, kv_lens=lens)
    expected = tiled_attention(q, k, v, kv_lens=lens)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out, (q, k_nan, v_nan), dout)
    expected_grads = torch.autograd.grad(expected, (q, k, v), dout)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)


def test_empty_sources_give_zeros_not_nan(monkeypatch):
    poison_outputs(monkeypatch)
    q, k, v, dout = make_inputs(2, 2, 5, 20, 16, device=DEVICE, seed=14)
    out = flash_attention(q, k, v, kv_lens=[0, 0], backend="triton")
    assert (out == 0).all()
    assert all((g == 0).all() for g in torch.autograd.grad(out, (q, k, v), dout))


def test_dispatch_and_errors():
    q, k, v, _ = make_inputs(1, 2, 4, 9, 16, device=DEVICE, seed=15)
    torch.testing.assert_close(
        flash_attention(q, k, v, kv_lens=[5], backend="triton"), triton_flash.triton_attention(q, k, v, kv_lens=[5])
    )
    with pytest.raises(ValueError, match=r"head_dim in \(16, 32, 64, 128\).*\(1, 2, 4, 24\)"):
        triton_flash.triton_attention(*(torch.randn(1, 2, n, 24, device=DEVICE) for n in (4, 9, 9)))
    with pytest.raises(ValueError, match=r"kv_lens must lie in \[0, len_k=9\]"):
        triton_flash.triton_attention(q, k, v, kv_lens=[10])
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match="float32 only"):
            triton_flash.triton_attention(q.half(), k.half(), v.half())


def _run_without_interpreter_variable(code: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


RUN_KERNEL = (
    "from course_lib.efficient import flash_attention\n"
    "q = torch.randn(1, 1, 8, 16)\n"
    "print(flash_attention(q, q, q, backend='triton').shape)\n"
)


@pytest.mark.skipif(DEVICE == "cuda", reason="the interpreter runs only where CUDA is missing")
@pytest.mark.parametrize(
    "first",
    [
        "import course_lib.complexity, course_lib.bench.efficient, torch",
        # torch.utils.flop_counter imports triton: after course_lib, that is fine
        "import course_lib, torch, torch.utils.flop_counter",
    ],
)
def test_the_interpreter_works_whatever_is_imported_after_course_lib(first):
    # Triton fixes its mode when it is first imported; importing course_lib chooses the interpreter.
    done = _run_without_interpreter_variable(first + "\n" + RUN_KERNEL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "torch.Size([1, 1, 8, 16])"


@pytest.mark.skipif(DEVICE == "cuda", reason="the interpreter runs only where CUDA is missing")
def test_triton_imported_before_course_lib_gives_a_clear_error():
    done = _run_without_interpreter_variable("import torch, torch.utils.flop_counter\n" + RUN_KERNEL)
    assert done.returncode != 0
    assert "Triton was imported before its interpreter was switched on" in done.stderr, done.stderr[-2000:]
