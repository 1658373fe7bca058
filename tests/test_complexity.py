"""course_lib.complexity: counts checked against PyTorch's FLOP counter, measurements
that see what they claim to see, and a power-law fit whose interval has its coverage."""

import gc
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from course_lib import MultiHeadAttention, scaled_dot_product_attention
from course_lib.complexity import (
    Measurement,
    arithmetic_intensity,
    attainable_flops,
    attention_bytes_moved,
    attention_flops,
    attention_memory_bytes,
    copy_bandwidth,
    count_flops,
    fit_power_law,
    matmul_flops_per_second,
    measure,
    measure_in_turns,
    peak_memory,
    projection_flops,
    scaling_study,
    t_quantile,
)


# --- FLOPs ------------------------------------------------------------------------
@pytest.mark.parametrize("b, h, lq, lk, d", [(2, 3, 5, 7, 8), (1, 1, 1, 13, 4), (3, 2, 17, 1, 6)])
def test_attention_flops_equal_pytorch_counter(b, h, lq, lk, d):
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    assert count_flops(scaled_dot_product_attention, q, k, v) == attention_flops(b, h, lq, lk, d)


def test_count_flops_is_the_pytorch_counter_around_one_call():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert count_flops(torch.matmul, a, b) == 2 * 3 * 5 * 7  # 2 per multiply-add
    assert count_flops(torch.addmm, torch.zeros(3, 7), a, b, beta=0.5) == 2 * 3 * 5 * 7  # kwargs reach fn
    assert count_flops(torch.softmax, a, -1) == 0  # elementwise work is not counted


@pytest.mark.parametrize("b, h, lq, lk, d, dv", [(2, 3, 5, 7, 8, 6), (1, 2, 4, 9, 4, 12)])
def test_attention_flops_with_a_value_width_of_its_own(b, h, lq, lk, d, dv):
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, dv)
    assert count_flops(scaled_dot_product_attention, q, k, v) == attention_flops(b, h, lq, lk, d, dim_v=dv)
    assert attention_flops(b, h, lq, lk, d, dim_v=dv) == 2 * b * h * lq * lk * (d + dv)
    assert attention_flops(b, h, lq, lk, d, dim_v=d) == attention_flops(b, h, lq, lk, d)


def test_attention_flops_by_hand():
    # QKᵀ: Lq·Lk dot products of length d; PV: Lq·d dot products of length Lk; 2 FLOPs per multiply-add
    b, h, lq, lk, d = 2, 4, 3, 11, 16
    assert attention_flops(b, h, lq, lk, d) == b * h * (lq * lk * d + lq * d * lk) * 2


def test_backward_flops_conventions():
    q, k, v = (torch.randn(2, 2, n, 8, requires_grad=True) for n in (5, 9, 9))
    with FlopCounterMode(display=False) as counter:
        out = scaled_dot_product_attention(q, k, v)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    # plain autograd keeps P and runs 4 matmuls (2x); FlashAttention recomputes QKᵀ (5 matmuls, 2.5x)
    assert counter.get_total_flops() == 2 * forward
    assert attention_flops(2, 2, 5, 9, 8, backward=True) == 5 * forward // 2


def test_flash_backward_is_autograd_backward_plus_the_recomputed_scores():
    # with d_v != d the 2.5x rule does not hold; the five matmuls do: autograd's four, plus Q Kᵀ again
    q, k, v = (torch.randn(2, 3, n, dim, requires_grad=True) for n, dim in [(5, 8), (9, 8), (9, 4)])
    out = scaled_dot_product_attention(q, k, v)
    autograd = count_flops(out.sum().backward)
    recompute = count_flops(torch.matmul, q.detach(), k.detach().transpose(-2, -1))
    assert attention_flops(2, 3, 5, 9, 8, dim_v=4, backward=True) == autograd + recompute


def test_projection_flops_equal_pytorch_counter_for_a_cross_attention_layer():
    m = MultiHeadAttention(24, 3, d_context=10)
    x, ctx = torch.randn(2, 5, 24), torch.randn(2, 7, 10)
    expected = projection_flops(2, 5, 7, 24, 10) + attention_flops(2, 3, 5, 7, 8)
    assert count_flops(m, x, ctx) == expected
    assert projection_flops(2, 5, 7, 24, 10) == 4 * 2 * 5 * 24 * 24 + 4 * 2 * 7 * 10 * 24


def test_cached_decoding_step_skips_the_key_value_projections():
    m = MultiHeadAttention(16, 2, d_context=12)
    ctx = torch.randn(3, 9, 12)
    cache = m.precompute_context(ctx)
    x_t = torch.randn(3, 1, 16)
    expected = projection_flops(3, 1, 9, 16, 12, cached_kv=True) + attention_flops(3, 2, 1, 9, 8)
    assert count_flops(m.step, x_t, cache) == expected
    assert projection_flops(3, 1, 9, 16, 12, cached_kv=True) < projection_flops(3, 1, 9, 16, 12)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, None, "4"])
def test_counts_reject_nonsense_sizes(bad):
    with pytest.raises(ValueError, match="len_k"):
        attention_flops(1, 1, 4, bad, 8)
    with pytest.raises(ValueError, match="d_model"):
        projection_flops(1, 4, 4, bad)
    with pytest.raises(ValueError, match="head_dim"):
        attention_memory_bytes(1, 1, 4, 4, bad)
    if bad is not None:  # None is dim_v's default, head_dim
        with pytest.raises(ValueError, match="dim_v"):
            attention_flops(1, 1, 4, 4, 8, dim_v=bad)


# --- memory and traffic models ------------------------------------------------
def test_naive_memory_is_two_score_matrices():
    assert attention_memory_bytes(2, 3, 5, 7, 8) == 2 * 2 * 3 * 5 * 7 * 4
    assert attention_memory_bytes(2, 3, 5, 7, 8, torch.float16) == 2 * 2 * 3 * 5 * 7 * 2


def test_tiled_memory_is_linear_in_len_q_and_independent_of_len_k():
    tiled = lambda lq, lk: attention_memory_bytes(1, 1, lq, lk, 64, implementation="tiled")
    assert tiled(1024, 1024) == tiled(1024, 8192)
    assert tiled(2048, 4096) - tiled(1024, 4096) == tiled(4096, 4096) - tiled(3072, 4096)
    # the design target: tiled extra memory at most 1/20 of naive at Lq=4096, Lk=8192
    naive = attention_memory_bytes(2, 8, 4096, 8192, 64)
    tiled_all_queries = attention_memory_bytes(2, 8, 4096, 8192, 64, implementation="tiled", block_q=4096, block_k=128)
    assert tiled_all_queries * 20 <= naive


def test_memory_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="implementation"):
        attention_memory_bytes(1, 1, 4, 4, 8, implementation="flash")
    with pytest.raises(ValueError, match="dtype"):
        attention_memory_bytes(1, 1, 4, 4, 8, "float32")
    with pytest.raises(ValueError, match="block_k"):
        attention_memory_bytes(1, 1, 4, 4, 8, implementation="tiled", block_k=0)


def test_bytes_moved_and_intensity_of_prefill_and_decoding():
    # fused prefill: 4·L²·d FLOPs over 4·L·d floats of 4 bytes -> L/4 FLOP/byte
    prefill = arithmetic_intensity(attention_flops(1, 1, 1024, 1024, 64), attention_bytes_moved(1, 1, 1024, 1024, 64))
    assert prefill == pytest.approx(1024 / 4)
    # one decoding step reads every cached key and value for 4 FLOPs per element: < 1 FLOP/byte
    decode = arithmetic_intensity(attention_flops(1, 1, 1, 1024, 64), attention_bytes_moved(1, 1, 1, 1024, 64))
    assert decode < 1
    naive = attention_bytes_moved(1, 1, 1024, 1024, 64, implementation="naive")
    assert naive == attention_bytes_moved(1, 1, 1024, 1024, 64) + 4 * 1024 * 1024 * 4
    with pytest.raises(ValueError, match="bytes_moved"):
        arithmetic_intensity(10, 0)


def test_attainable_flops_is_the_roofline():
    peak, bw = 100.0, 10.0  # ridge point at 10 FLOP/byte
    assert attainable_flops(1.0, peak, bw) == 10.0
    assert attainable_flops(1000.0, peak, bw) == 100.0
    np.testing.assert_allclose(attainable_flops(np.array([0.5, 10, 20]), peak, bw), [5, 100, 100])
    with pytest.raises(ValueError):
        attainable_flops(1.0, 0.0, bw)


def test_machine_ceilings_are_positive_and_finite():
    flops = matmul_flops_per_second(256, repeat=2)
    bandwidth = copy_bandwidth(8 * 2**20, repeat=2)
    assert math.isfinite(flops) and flops > 0
    assert math.isfinite(bandwidth) and bandwidth > 0


# --- measure ------------------------------------------------------------------
def test_measure_sees_a_transient_score_matrix_freed_before_return():
    q, k = torch.randn(1, 4, 256, 32), torch.randn(1, 4, 512, 32)
    scores = 4 * 256 * 512 * 4  # bytes of the (1, 4, 256, 512) float32 scores
    m = measure(lambda q, k: (q @ k.transpose(-2, -1)).sum(), q, k, repeat=2)
    assert scores <= m.peak_bytes < 1.05 * scores  # the result is one float; the scores were the peak
    longer = measure(lambda q, k: (q @ k.transpose(-2, -1)).sum(), q, torch.cat([k, k], dim=2), repeat=2)
    assert longer.peak_bytes == pytest.approx(2 * m.peak_bytes, rel=0.01)


def test_measure_peak_is_the_live_high_water_mark_not_the_sum_of_allocations():
    x = torch.randn(1024)  # exists before the call: not counted

    def f():
        a = torch.empty(2**18)  # 1 MiB
        del a
        b = torch.empty(2**18)  # 1 MiB again, after a was freed
        c = x[:10] * 2  # a small new tensor; x[:10] itself is a view, not an allocation
        return b, c

    assert 2**20 <= measure(f, repeat=1).peak_bytes < 2**20 + 4096


def test_measure_counts_nothing_for_a_view_and_matches_the_naive_memory_model():
    x = torch.randn(1000, 1000)
    assert measure(lambda x: x.transpose(0, 1), x, repeat=1).peak_bytes < 1024
    q, k, v = torch.randn(2, 2, 128, 16), torch.randn(2, 2, 384, 16), torch.randn(2, 2, 384, 16)
    naive = lambda q, k, v: torch.softmax((q * 0.25) @ k.transpose(-2, -1), dim=-1) @ v
    model = attention_memory_bytes(2, 2, 128, 384, 16)
    assert model <= measure(naive, q, k, v, repeat=1).peak_bytes < 1.1 * model


def test_measure_calls_and_result_fields():
    calls = []
    m = measure(lambda: calls.append(1), repeat=3, warmup=2)
    assert isinstance(m, Measurement)
    assert len(calls) == 2 + 3 + 1  # warmup, timed, one for memory
    assert len(m.times) == 3 and m.seconds == sorted(m.times)[1] and m.seconds >= 0
    assert m.ms == m.seconds * 1e3
    calls.clear()
    m = measure(lambda: calls.append(gc.isenabled()), repeat=1, warmup=0, memory=False)
    assert calls == [False] and gc.isenabled()  # paused while timing, as timeit does, and restored
    assert m.peak_bytes is None and m.peak_mib is None


def test_measure_rejects_nonsense():
    with pytest.raises(ValueError, match="callable"):
        measure(42)
    with pytest.raises(ValueError, match="repeat"):
        measure(lambda: None, repeat=0)
    with pytest.raises(ValueError, match="warmup"):
        measure(lambda: None, warmup=-1)


def test_measure_cpu_clock_needs_one_thread():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        m = measure(torch.matmul, torch.randn(64, 64), torch.randn(64, 64), repeat=2, clock="cpu")
        assert m.clock == "cpu" and m.seconds > 0
        torch.set_num_threads(2)
        with pytest.raises(ValueError, match="set_num_threads"):
            measure(torch.matmul, torch.randn(4, 4), torch.randn(4, 4), clock="cpu")
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="clock"):
        measure(lambda: None, clock="gpu")


def test_peak_memory_returns_the_result_and_sees_a_transient_score_matrix():
    def transient(n):
        scores = torch.ones(512, n)  # 2 MiB at n = 1024, freed before the function returns
        return scores.sum()

    result, peak = peak_memory(transient, 1024, device="cpu")
    assert result.item() == 512 * 1024
    assert 512 * 1024 * 4 <= peak < 512 * 1024 * 4 + 4096
    assert peak_memory(lambda: "done", device="meta") == ("done", None)  # no counter there: no number
    with pytest.raises(ValueError, match="callable"):
        peak_memory(None)


def test_peak_memory_on_the_cpu_does_not_subtract_what_existed_before_the_call():
    kept = []
    peak_memory(lambda: kept.append(torch.empty(2**12)), device="cpu")  # 16 KiB, seen by a first measurement
    box = [torch.empty(2**20)]  # 4 MiB, allocated before the call

    def f():
        box.pop()  # both die during the call; neither was allocated by it
        kept.pop()
        return torch.empty(2**18)  # 1 MiB

    assert peak_memory(f, device="cpu")[1] == 2**20  # overestimated (the true net change is -3 MiB), never under


def test_measure_in_turns_times_one_call_of_each_per_round_in_a_new_order():
    log = []
    fns = {
        "a": lambda: log.append("a") or torch.empty(2**18),  # 1 MiB
        "b": lambda: log.append("b") or torch.empty(2**19),  # 2 MiB
    }
    found = measure_in_turns(fns, repeat=20, warmup=1, device="cpu")
    assert list(found) == ["a", "b"] and all(isinstance(m, Measurement) for m in found.values())
    assert log[:2] == ["a", "b"] and log[42:] == ["a", "b"]  # warm-up round; one call each for memory
    rounds = [log[i : i + 2] for i in range(2, 42, 2)]
    assert all(sorted(r) == ["a", "b"] for r in rounds)  # one timed call of each per round
    assert ["a", "b"] in rounds and ["b", "a"] in rounds  # in a new (seeded) order each round
    for m in found.values():  # the median of 20 times lies between the 10th and the 11th
        assert len(m.times) == 20 and 0 < sorted(m.times)[9] <= m.seconds <= sorted(m.times)[10]
    assert (found["a"].peak_bytes, found["b"].peak_bytes) == (2**20, 2**21)


def test_measure_in_turns_rejects_nonsense():
    with pytest.raises(ValueError, match="empty"):
        measure_in_turns({})
    with pytest.raises(ValueError, match=r"fns\['b'\] must be callable"):
        measure_in_turns({"a": lambda: None, "b": 3})
    with pytest.raises(ValueError, match="repeat"):
        measure_in_turns({"a": lambda: None}, repeat=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measure_on_cuda_sees_the_transient_score_matrix():
    q, k = torch.randn(1, 4, 256, 32, device="cuda"), torch.randn(1, 4, 512, 32, device="cuda")
    m = measure(lambda q, k: (q @ k.transpose(-2, -1)).sum(), q, k, repeat=2)
    assert m.peak_bytes >= 4 * 256 * 512 * 4
    total, peak = peak_memory(lambda q, k: (q @ k.transpose(-2, -1)).sum(), q, k)
    assert total.device.type == "cuda" and peak >= 4 * 256 * 512 * 4


# --- scaling_study --------------------------------------------------------------
def test_scaling_study_is_tidy_and_its_memory_grows_with_the_product_of_lengths():
    lengths = (64, 128, 256)
    rows = scaling_study(lengths=lengths, fixed_len=128, heads=2, head_dim=16, repeat=1, warmup=0)
    assert len(rows) == 3 * len(lengths)
    assert [(r["sweep"], r["len_q"], r["len_k"]) for r in rows[:4]] == [
        ("len_q", 64, 128),
        ("len_q", 128, 128),
        ("len_q", 256, 128),
        ("len_k", 128, 64),
    ]
    for r in rows:
        assert r["flops"] == attention_flops(1, 2, r["len_q"], r["len_k"], 16)
        assert r["seconds"] > 0 and math.isfinite(r["gflops_per_s"]) and r["dtype"] == "float32"
    theory = {"len_q": 1, "len_k": 1, "both": 2}
    for sweep, slope in theory.items():
        sub = [r for r in rows if r["sweep"] == sweep]
        xs = [r["len_k" if sweep == "len_k" else "len_q"] for r in sub]
        assert fit_power_law(xs, [r["peak_bytes"] for r in sub]).exponent == pytest.approx(slope, abs=0.1)


def test_scaling_study_takes_any_attention_and_rejects_bad_sweeps():
    seen = []
    rows = scaling_study(
        lambda q, k, v: seen.append((q.shape, k.shape)),
        lengths=(8, 16),
        fixed_len=4,
        sweeps=("len_k",),
        repeat=1,
        warmup=0,
        memory=False,
        heads=1,
        head_dim=2,
    )
    assert {s for s in seen} == {((1, 1, 4, 2), (1, 1, 8, 2)), ((1, 1, 4, 2), (1, 1, 16, 2))}
    assert [r["peak_bytes"] for r in rows] == [None, None]
    with pytest.raises(ValueError, match="sweeps"):
        scaling_study(sweeps=("len_v",))
    with pytest.raises(ValueError, match="lengths"):
        scaling_study(lengths=())
    with pytest.raises(ValueError, match="callable"):
        scaling_study("sdpa")


# --- fit_power_law and the t quantile -------------------------------------------
def test_t_quantile_matches_tables():
    table_975 = {1: 12.706, 2: 4.303, 3: 3.182, 5: 2.571, 10: 2.228, 30: 2.042}
    for dof, value in table_975.items():
        assert t_quantile(0.975, dof) == pytest.approx(value, abs=5e-4)
    assert t_quantile(0.95, 7) == pytest.approx(1.895, abs=5e-4)
    assert t_quantile(0.975, 2000) == pytest.approx(1.960, abs=2e-3)  # tends to the normal quantile
    assert t_quantile(0.025, 4) == -t_quantile(0.975, 4)
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="p must"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="dof"):
        t_quantile(0.9, 0)


@pytest.mark.parametrize("prefactor, exponent", [(3.0, 1.5), (3.0, 2.0), (5.0, 0.5)])
def test_fit_recovers_an_exact_power_law(prefactor, exponent):
    xs = np.array([64, 128, 256, 512])
    fit = fit_power_law(xs, prefactor * xs**exponent)
    assert fit.exponent == pytest.approx(exponent) and fit.prefactor == pytest.approx(prefactor)
    assert fit.high - fit.low == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(fit(xs), prefactor * xs**exponent)


def test_fit_interval_has_its_coverage():
    # lognormal noise around y = x**2: the 90% interval must contain 2 about 90% of the time
    rng = np.random.default_rng(0)
    xs = np.array([100, 200, 400, 800, 1600])
    hits = 0
    for _ in range(400):
        fit = fit_power_law(xs, xs**2.0 * np.exp(rng.normal(0, 0.3, xs.size)), confidence=0.9)
        hits += fit.low <= 2.0 <= fit.high
    assert 0.85 <= hits / 400 <= 0.95


def test_fit_rejects_nonsense():
    with pytest.raises(ValueError, match="at least 3"):
        fit_power_law([1, 2], [1, 2])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2, 3], [1, 0, 2])
    with pytest.raises(ValueError, match="same length"):
        fit_power_law([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="equal"):
        fit_power_law([2, 2, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="confidence"):
        fit_power_law([1, 2, 3], [1, 2, 3], confidence=95)
