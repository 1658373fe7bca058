"""Hidden tests of exercise 05, complexity.

Each test probes one property, so that each typical mistake loses its own points, and its
message names the concept (students see the message, never this code). Nothing here
times anything: counts are compared with the library's formulas (which ``tests/test_complexity.py``
proves equal to PyTorch's ``FlopCounterMode``), fits with synthetic data of known exponent, and the
cached cross- and self-attention with ``course_lib.MultiHeadAttention`` holding the same weights.
``tests/exercises/mutants_05_complexity.py`` lists the mistakes these tests must catch;
``tests/grading/test_mutants.py`` proves that they do.
"""

import math

import numpy as np
import pytest
import torch

from course_lib import MultiHeadAttention, split_heads
from course_lib.checks import (
    bytes_mistake,
    difference,
    fit_mistake,
    flops_mistake,
    layer_flops_mistake,
    reference_fit,
    reference_layer_flops,
    reference_self_steps,
    self_step_mistake,
    step_mistake,
)
from course_lib.checks import describe as describe_value
from course_lib.complexity import attention_flops as reference_attention_flops
from course_lib.grading import StudentRaised, substitute

NOTEBOOK_RUNS_POINTS = 1


def as_number(value, what: str) -> float:
    """The student's result as a float, or a failed assertion saying what it was."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    assert isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool), (
        f"{what} should return a number, got {describe_value(value)}"
    )
    return float(value)


def because(hint: str | None, default: str = "") -> str:
    return f": {hint}" if hint else default


def times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def torch_dtype(student, name: str):
    """``torch.<name>`` as an object of the student's process, to pass to their functions."""
    with substitute(student, "_grader_dtype", f"torch.{name}"):
        return student._grader_dtype


# -- task 1: bytes of the score matrix -------------------------------------------------------


@pytest.mark.task("score_matrix_bytes")
class TestScoreMatrixBytes:
    @pytest.mark.points(1)
    def test_counts_every_score_of_every_head(self, student):
        """float32 scores take batch · heads · len_q · len_k · 4 bytes, with len_q ≠ len_k"""
        for batch, heads, len_q, len_k in [(3, 5, 7, 11), (1, 16, 1, 4097), (8, 2, 300, 20)]:
            got = as_number(student.score_matrix_bytes(batch, heads, len_q, len_k), "score_matrix_bytes")
            expected = batch * heads * len_q * len_k * 4
            assert got == expected, (
                f"score_matrix_bytes({batch}, {heads}, {len_q}, {len_k}) should be {expected} bytes in float32 (4 "
                f"bytes per score), got {got:g}"
                + because(bytes_mistake(got, batch, heads, len_q, len_k, 4), ": one score per (query, key) pair")
            )

    @pytest.mark.points(1)
    def test_bytes_per_element_follow_the_dtype(self, student):
        """float16 and bfloat16 scores take 2 bytes each, float64 scores 8"""
        for name, itemsize in [("float16", 2), ("bfloat16", 2), ("float64", 8)]:
            batch, heads, len_q, len_k = 2, 3, 9, 13
            got = as_number(
                student.score_matrix_bytes(batch, heads, len_q, len_k, torch_dtype(student, name)), "score_matrix_bytes"
            )
            expected = batch * heads * len_q * len_k * itemsize
            assert got == expected, (
                f"score_matrix_bytes({batch}, {heads}, {len_q}, {len_k}, torch.{name}) should be {expected} bytes "
                f"({itemsize} bytes per score), got {got:g}"
                + because(bytes_mistake(got, batch, heads, len_q, len_k, itemsize), ": use dtype.itemsize")
            )


# -- task 2: FLOPs of the attention core ---------------------------------------------------


def student_attention_flops(student, *args, **kwargs) -> float:
    return as_number(student.attention_flops(*args, **kwargs), "attention_flops")


def flops_call(batch, heads, len_q, len_k, d, dim_v=None, backward=False) -> str:
    extra = (f", dim_v={dim_v}" if dim_v is not None else "") + (", backward=True" if backward else "")
    return f"attention_flops({batch}, {heads}, {len_q}, {len_k}, {d}{extra})"


@pytest.mark.task("attention_flops")
class TestAttentionFlops:
    @pytest.mark.points(1)
    def test_forward_counts_both_products(self, student):
        """the forward pass is 4 · batch · heads · len_q · len_k · d FLOPs when d_v = d"""
        for shape in [(2, 3, 5, 11, 16), (1, 8, 1, 4096, 64), (4, 1, 33, 7, 9)]:
            got = student_attention_flops(student, *shape)
            expected = reference_attention_flops(*shape)
            assert got == expected, (
                f"{flops_call(*shape)} should be {expected} FLOPs (Q Kᵀ and P V, 2 FLOPs per multiply-add), "
                f"got {got:g}" + because(flops_mistake(got, *shape, shape[-1], False))
            )

    @pytest.mark.points(1)
    def test_values_of_another_size(self, student):
        """P V costs 2 · len_q · len_k · d_v per head, when the values' size d_v differs from d"""
        for d, dim_v in [(16, 40), (40, 16)]:
            shape = (2, 3, 6, 10, d)
            got = student_attention_flops(student, *shape, dim_v=dim_v)
            expected = reference_attention_flops(*shape, dim_v=dim_v)
            assert got == expected, (
                f"{flops_call(*shape, dim_v)} should be {expected} FLOPs: Q Kᵀ costs 2·Lq·Lk·d and P V 2·Lq·Lk·d_v "
                f"per head; got {got:g}" + because(flops_mistake(got, *shape, dim_v, False))
            )

    @pytest.mark.points(1)
    def test_backward_is_five_products(self, student):
        """the backward pass is five products, 2.5 × the forward when d_v = d"""
        for shape in [(2, 3, 5, 11, 16), (1, 4, 128, 64, 32)]:
            got = student_attention_flops(student, *shape, backward=True)
            expected = reference_attention_flops(*shape, backward=True)
            assert got == expected, (
                f"{flops_call(*shape, backward=True)} should be {expected} FLOPs (Q Kᵀ recomputed, then dV, dP, dQ, "
                f"dK: five products), got {got:g}" + because(flops_mistake(got, *shape, shape[-1], True))
            )

    @pytest.mark.points(1)
    def test_backward_with_values_of_another_size(self, student):
        """the backward pass is 2 · len_q · len_k · (3·d + 2·d_v) per head when d_v ≠ d"""
        for d, dim_v in [(16, 40), (48, 8)]:
            shape = (3, 2, 7, 5, d)
            got = student_attention_flops(student, *shape, dim_v=dim_v, backward=True)
            expected = reference_attention_flops(*shape, dim_v=dim_v, backward=True)
            assert got == expected, (
                f"{flops_call(*shape, dim_v, True)} should be {expected} FLOPs: Q Kᵀ, dQ and dK have size d, dV and "
                f"dP size d_v; got {got:g}" + because(flops_mistake(got, *shape, dim_v, True))
            )


# -- task 3: FLOPs of a cross-attention layer ---------------------------------------------


def student_layer_flops(student, *args, **kwargs) -> float:
    """The student's ``layer_flops``, with the library's ``attention_flops`` (task 2 is graded on its own)."""
    with substitute(student, "attention_flops", "course_lib.complexity.attention_flops"):
        return as_number(student.layer_flops(*args, **kwargs), "layer_flops")


def layer_call(batch, len_q, len_k, d_model, num_heads, d_context=None, cached_kv=False) -> str:
    extra = (f", d_context={d_context}" if d_context is not None else "") + (", cached_kv=True" if cached_kv else "")
    return f"layer_flops({batch}, {len_q}, {len_k}, {d_model}, {num_heads}{extra})"


@pytest.mark.task("layer_flops")
class TestLayerFlops:
    @pytest.mark.points(1)
    def test_counts_the_projections_and_the_attention(self, student):
        """counts W_q, W_k, W_v, W_o and the attention (d_context ≠ d_model, len_q ≠ len_k)"""
        batch, len_q, len_k, d_model, heads, d_context = 2, 6, 15, 24, 3, 20
        got = student_layer_flops(student, batch, len_q, len_k, d_model, heads, d_context=d_context)
        expected = reference_layer_flops(batch, len_q, len_k, d_model, heads, d_context=d_context)
        assert got == expected, (
            f"{layer_call(batch, len_q, len_k, d_model, heads, d_context)}: the layer does {expected} FLOPs (what "
            f"PyTorch's FlopCounterMode counts in MultiHeadAttention), got {got:g}"
            + because(
                layer_flops_mistake(got, batch, len_q, len_k, d_model, heads, d_context, False),
                ": W_q and W_o on the len_q queries, W_k and W_v on the len_k context tokens, plus the attention",
            )
        )

    @pytest.mark.points(1)
    def test_context_width_sets_the_key_value_cost(self, student):
        """W_k and W_v cost 2 · len_k · d_context · d_model each: the context's length and width"""
        batch, len_q, len_k, d_model, heads = 3, 5, 17, 32, 4
        narrow = student_layer_flops(student, batch, len_q, len_k, d_model, heads, d_context=16)
        wide = student_layer_flops(student, batch, len_q, len_k, d_model, heads, d_context=48)
        expected = 4 * batch * len_k * (48 - 16) * d_model
        assert wide - narrow == expected, (
            f"going from d_context=16 to d_context=48 (batch {batch}, len_q {len_q}, len_k {len_k}, d_model "
            f"{d_model}) should add {expected} FLOPs to the key and value projections, got {wide - narrow:g}: W_k and "
            "W_v each multiply the len_k context tokens (len_k, d_context) by (d_context, d_model)"
            + because(layer_flops_mistake(wide, batch, len_q, len_k, d_model, heads, 48, False), "")
        )

    @pytest.mark.points(1)
    def test_heads_do_not_change_the_flops(self, student):
        """splitting d_model into more heads does not change the FLOPs"""
        batch, len_q, len_k, d_model = 2, 9, 13, 64
        got = {heads: student_layer_flops(student, batch, len_q, len_k, d_model, heads) for heads in (1, 4, 16)}
        assert len(set(got.values())) == 1, (
            f"layer_flops({batch}, {len_q}, {len_k}, {d_model}, num_heads) should not depend on num_heads, got "
            f"{({h: f'{v:g}' for h, v in got.items()})} for 1, 4 and 16 heads: each head has head_dim = d_model // "
            "num_heads, so the heads together cost what one head of width d_model would; pass head_dim = "
            "d_model // num_heads to attention_flops"
        )

    @pytest.mark.points(1)
    def test_one_cached_decoding_step(self, student):
        """with cached_kv=True, one decoding step skips W_k and W_v, and keeps W_q, the attention and W_o"""
        batch, len_k, d_model, heads, d_context = 3, 21, 16, 2, 12
        got = student_layer_flops(student, batch, 1, len_k, d_model, heads, d_context=d_context, cached_kv=True)
        expected = reference_layer_flops(batch, 1, len_k, d_model, heads, d_context=d_context, cached_kv=True)
        assert got == expected, (
            f"{layer_call(batch, 1, len_k, d_model, heads, d_context, True)}: one cached step does {expected} FLOPs "
            f"(what PyTorch counts in MultiHeadAttention.step), got {got:g}"
            + because(
                layer_flops_mistake(got, batch, 1, len_k, d_model, heads, d_context, True),
                ": with the keys and values cached, W_k and W_v do not run; W_q, the attention and W_o do",
            )
        )


# -- task 4: fitting an exponent -------------------------------------------------------------


def fitted(student, xs, ys) -> tuple[float, float]:
    result = student.fit_exponent(xs, ys)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"fit_exponent should return two numbers, (exponent, prefactor); got {describe_value(result)}"
    )
    return as_number(result[0], "the exponent of fit_exponent"), as_number(result[1], "the prefactor of fit_exponent")


@pytest.mark.task("fit_exponent")
class TestFitExponent:
    @pytest.mark.points(1)
    def test_recovers_the_exponent_of_an_exact_power_law(self, student):
        """on exact data y = a·x^b the fitted exponent is b (b = 0.5, 1, 2, -1, 1.37)"""
        xs = np.geomspace(16, 4096, 7)
        for b, a in [(0.5, 2.0), (1.0, 3e-6), (2.0, 1e-8), (-1.0, 50.0), (1.37, 0.2)]:
            ys = a * xs**b
            got, prefactor = fitted(student, xs, ys)
            assert abs(got - b) < 1e-6, (
                f"for y = {a:g}·x^{b:g} at x = 16 … 4096 the exponent is {b:g}, got {got:.4g}"
                + because(fit_mistake(xs, ys, got, prefactor), ": the slope of the line through (log x, log y)")
            )

    @pytest.mark.points(1)
    def test_prefactor_undoes_the_logarithm(self, student):
        """the prefactor is e^intercept: the value of y at x = 1"""
        xs = np.array([8.0, 32.0, 128.0, 512.0])
        ys = np.full(4, 7.5)  # a flat measurement: exponent 0, prefactor 7.5
        _, got = fitted(student, xs, ys)
        assert math.isclose(got, 7.5, rel_tol=1e-6), (
            f"for a flat measurement y = 7.5 (y = 7.5·x⁰) the prefactor is 7.5, got {got:.4g}"
            + because(fit_mistake(xs, ys, 0.0, got), ": a = e^intercept, the fitted line's value at log x = 0")
        )
        ys = 3.0 * xs**1.5
        b, got = fitted(student, xs, ys)
        log_x, log_y = np.log(xs), np.log(ys)
        expected = math.exp(log_y.mean() - b * log_x.mean())  # the least-squares intercept for this slope
        assert math.isclose(got, expected, rel_tol=1e-6), (
            f"for y = 3·x^1.5 the prefactor should be {expected:.4g} (3 with the exponent 1.5), got {got:.4g}"
            + because(fit_mistake(xs, ys, b, got), ": a = e^intercept of the line through (log x, log y)")
        )

    @pytest.mark.points(1)
    def test_least_squares_on_noisy_data(self, student):
        """on noisy measurements the exponent is the least-squares slope over all the points"""
        g = np.random.default_rng(50)
        for b in (1.0, 2.0, 1.3):
            xs = np.geomspace(64, 8192, 8)
            ys = 2e-6 * xs**b * np.exp(g.normal(0, 0.08, xs.size))  # 8% multiplicative noise, as timings have
            got, prefactor = fitted(student, xs, ys)
            expected, _ = reference_fit(xs, ys)
            assert abs(got - expected) < 1e-6, (
                f"on 8 noisy points around x^{b:g} the least-squares exponent is {expected:.4f}, got {got:.4f}"
                + because(
                    fit_mistake(xs, ys, got, prefactor),
                    ": fit one line through all the points (log x, log y) by least squares",
                )
            )

    @pytest.mark.points(1)
    def test_accepts_plain_lists(self, student):
        """accepts lists of ints and floats, as measurements often come, with the same result as arrays"""
        xs = [100, 200, 400, 800, 1600]
        ys = [0.012, 0.021, 0.047, 0.09, 0.19]
        try:
            got = fitted(student, xs, ys)
        except StudentRaised as err:
            raise AssertionError(
                f"fit_exponent(xs, ys) raised {err.type_name} when xs and ys were lists: convert them first, "
                "np.asarray(xs, dtype=float)"
            ) from None
        as_arrays = fitted(student, np.array(xs, dtype=float), np.array(ys))
        assert np.allclose(got, as_arrays, rtol=1e-9), (
            f"with xs = {xs} and ys = {ys} as lists fit_exponent returned ({got[0]:.4g}, {got[1]:.4g}), but "
            f"({as_arrays[0]:.4g}, {as_arrays[1]:.4g}) for the same numbers as arrays: convert lists with "
            "np.asarray(xs, dtype=float) first"
        )

    @pytest.mark.points(1)
    def test_rejects_values_without_a_logarithm(self, student):
        """raises ValueError for a zero or negative x or y"""
        for xs, ys, what in [
            ([1, 2, 4, 8], [1.0, 2.0, 0.0, 8.0], "a y of 0"),
            ([1, 2, 4, 8], [1.0, -2.0, 4.0, 8.0], "a negative y"),
            ([0, 2, 4, 8], [1.0, 2.0, 4.0, 8.0], "an x of 0"),
        ]:
            try:
                result = student.fit_exponent(np.array(xs, dtype=float), np.array(ys))
            except StudentRaised as err:
                assert err.is_a(ValueError), (
                    f"with {what} fit_exponent should raise ValueError (no logarithm exists), not {err.type_name}"
                )
                continue
            raise AssertionError(
                f"with {what} fit_exponent returned {describe_value(result)} instead of raising ValueError: the log "
                "of 0 is -inf and of a negative number NaN, so no line fits; check that every x and y is > 0"
            )


# -- task 5: cached cross-attention --------------------------------------------------------


def decoding_setup(student, seed: int, d_model: int, heads: int, d_context: int):
    """A layer in the student's process (projections only) and the reference with the same weights."""
    torch.manual_seed(seed)
    reference = MultiHeadAttention(d_model, heads, d_context=d_context).eval()
    with substitute(student, "_grader_layer", "course_lib.checks.ex05.ProjectionsOnly"):
        layer = student._grader_layer(d_model, heads, d_context=d_context)
    layer.load_state_dict(dict(reference.state_dict()))
    return layer, reference


def as_tensor(value, what: str) -> torch.Tensor:
    assert isinstance(value, torch.Tensor) and value.is_floating_point(), (
        f"{what} should be a float tensor, got {describe_value(value)}"
    )
    return value


def cache_tensor(cache, name: str) -> torch.Tensor:
    try:
        value = getattr(cache, name)
    except StudentRaised as err:
        raise AssertionError(
            f"the cache has no attribute `{name}` ({err.type_name}): keep the projected source in self.{name}, "
            "(batch, heads, len_k, head_dim)"
        ) from None
    return as_tensor(value, f"self.{name}")


def check_step(reference, x, context, mask, got, what: str) -> None:
    got = as_tensor(got, f"step(x_t) for {what}")
    with torch.no_grad():
        expected = reference(x, context, context_mask=mask)
    assert got.shape == expected.shape, (
        f"step(x_t) for x_t of shape {tuple(x.shape)} should return {tuple(expected.shape)} (batch, t, d_model), got "
        f"{tuple(got.shape)}" + because(step_mistake(reference, x, context, mask, got))
    )
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (
        f"step(x_t) for {what} differs from the full computation layer(x_t, context, context_mask)"
        + because(
            step_mistake(reference, x, context, mask, got),
            ": split_heads(q_proj(x_t)), attention over the cached keys and values with 1/√head_dim and the mask, "
            "merge_heads, out_proj",
        )
    )


@pytest.mark.task("cached_cross_attention")
class TestCachedCrossAttention:
    @pytest.mark.points(1)
    def test_cache_holds_the_projected_source_per_head(self, student):
        """self.key and self.value are the projected source, split into heads: (batch, heads, len_k, head_dim)"""
        layer, reference = decoding_setup(student, 60, d_model=12, heads=3, d_context=10)
        context = torch.randn(2, 7, 10)
        cache = student.CachedCrossAttention(layer, context)
        with torch.no_grad():
            expected = {
                "key": split_heads(reference.k_proj(context), 3),
                "value": split_heads(reference.v_proj(context), 3),
            }
        for name, want in expected.items():
            got = cache_tensor(cache, name)
            assert got.shape == want.shape, (
                f"self.{name} for a source (2, 7, 10) and 3 heads of 4 should be (batch, heads, len_k, head_dim) = "
                f"{tuple(want.shape)}, got {tuple(got.shape)}: split the projected source into heads once, in "
                "__init__ (split_heads)"
            )
            assert torch.allclose(got, want, atol=1e-5), (
                f"self.{name} has the right shape but wrong values: it should be "
                f"split_heads(layer.{name[0]}_proj(context), num_heads); a bare view or reshape to (batch, heads, "
                "len_k, head_dim) mixes tokens and heads"
            )

    @pytest.mark.points(1)
    def test_one_step_equals_the_full_computation(self, student):
        """one decoding step equals layer(x_t, context) on random weights (len_k ≠ d_model, d_context ≠ d_model)"""
        layer, reference = decoding_setup(student, 61, d_model=16, heads=4, d_context=6)
        context, x_t = torch.randn(3, 11, 6), torch.randn(3, 1, 16)
        cache = student.CachedCrossAttention(layer, context)
        check_step(reference, x_t, context, None, cache.step(x_t), "one new query per sequence")

    @pytest.mark.points(1)
    def test_several_queries_at_once(self, student):
        """step also takes several new queries (batch, t, d_model): the heads are merged token by token"""
        layer, reference = decoding_setup(student, 62, d_model=12, heads=4, d_context=12)
        context, x = torch.randn(2, 5, 12), torch.randn(2, 6, 12)
        cache = student.CachedCrossAttention(layer, context)
        check_step(reference, x, context, None, cache.step(x), "6 queries at once")

    @pytest.mark.points(1)
    def test_padded_source_tokens_get_no_weight(self, student):
        """with a source padding mask the result equals the full computation, whatever the padding holds"""
        layer, reference = decoding_setup(student, 63, d_model=16, heads=2, d_context=8)
        lengths = [9, 4, 1]
        mask = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]
        context = torch.randn(3, 9, 8)
        context[~mask] = 80.0  # padding: garbage that must not matter
        x_t = torch.randn(3, 1, 16)
        cache = student.CachedCrossAttention(layer, context, mask)
        check_step(reference, x_t, context, mask, cache.step(x_t), f"a padded batch of source lengths {lengths}")

    @pytest.mark.points(2)
    def test_steps_reuse_the_cached_keys_and_values(self, student):
        """steps attend to the keys and values projected once, when the cache was built"""
        layer, reference = decoding_setup(student, 64, d_model=16, heads=4, d_context=8)
        context, x_t = torch.randn(2, 6, 8), torch.randn(2, 1, 16)
        cache = student.CachedCrossAttention(layer, context)
        before = as_tensor(cache.step(x_t), "step(x_t)")
        calls = layer.calls
        # Change the key and value projections after the cache is built. A cache is a snapshot: steps that
        # attend to it give the same result as before; a step that projects the source again does not.
        torch.manual_seed(65)
        changed = dict(reference.state_dict())
        for name in ("k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias"):
            changed[name] = torch.randn_like(changed[name])
        layer.load_state_dict(changed)
        for t in range(3):
            after = as_tensor(cache.step(x_t), "step(x_t)")
            runs = {name: layer.calls[name] - calls[name] for name in ("k_proj", "v_proj")}
            assert after.shape == before.shape and torch.allclose(after, before, atol=1e-6), (
                "step() does not use the cached keys and values: after the cache was built, the layer's key and "
                "value projections changed, and the same step's result changed with them (during "
                f"{t + 1} step{'s' if t else ''}, k_proj ran {times(runs['k_proj'])} and v_proj "
                f"{times(runs['v_proj'])}). Project the source once, in __init__, keep self.key and self.value, "
                "and make step() attend to them: re-projecting the whole source for every generated token is the "
                "cost a cache avoids"
            )


def feed(student, seed: int, steps: list[int], *, d_model: int = 16, heads: int = 4, batch: int = 2):
    """Feed a random sequence to the student's ``CachedSelfAttention`` in steps of the given sizes.

    Returns ``(reference, x, cache, outputs)``: the reference layer, the whole sequence
    ``(batch, sum(steps), d_model)``, the student's cache and its output of each step.
    """
    layer, reference = decoding_setup(student, seed, d_model=d_model, heads=heads, d_context=d_model)
    x = torch.randn(batch, sum(steps), d_model)
    cache = student.CachedSelfAttention(layer)
    outputs, past = [], 0
    for t in steps:
        outputs.append(cache.step(x[:, past : past + t]))
        past += t
    return reference, x, cache, outputs


def check_self_steps(reference, x, steps: list[int], outputs, what: str) -> None:
    expected, past = reference_self_steps(reference, x), 0
    for t, got in zip(steps, outputs):
        got = as_tensor(got, f"step(x_t) for {t} new token(s)")
        want = expected[:, past : past + t]
        assert got.shape == want.shape, (
            f"step(x_t) for x_t of shape {(x.shape[0], t, x.shape[2])} should return {tuple(want.shape)} "
            f"(batch, t, d_model), got {tuple(got.shape)}"
        )
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (
            f"{what}: the step of {t} new token(s) after {past} differs from causal self-attention over the whole "
            f"sequence at those positions ({difference(got, want, atol=1e-5, rtol=1e-4)})"
            + because(
                self_step_mistake(reference, x[:, : past + t], past, got),
                ": project the new tokens, append their keys and values to the cache, then attend under "
                "causal_mask(t, n), aligned bottom-right",
            )
        )
        past += t


@pytest.mark.task("cached_self_attention")
class TestCachedSelfAttention:
    @pytest.mark.points(1)
    def test_cache_grows_by_the_new_keys_and_values(self, student):
        """self.key and self.value hold the projected keys and values of every token fed so far"""
        steps = [2, 1, 3]
        reference, x, cache, _ = feed(student, 70, steps, d_model=12, heads=3)
        with torch.no_grad():
            expected = {
                "key": split_heads(reference.k_proj(x), 3),
                "value": split_heads(reference.v_proj(x), 3),
            }
        for name, want in expected.items():
            got = cache_tensor(cache, name)
            assert got.shape == want.shape, (
                f"after steps of {steps} tokens (batch 2, 3 heads of 4), self.{name} should be (batch, heads, n, "
                f"head_dim) = {tuple(want.shape)}, got {tuple(got.shape)}: append each step's new {name}s to those "
                "of the earlier steps along the length axis (torch.cat(..., dim=2))"
            )
            assert torch.allclose(got, want, atol=1e-5), (
                f"self.{name} has the right shape but wrong values ({difference(got, want, atol=1e-5)}): it should "
                f"be split_heads(layer.{name[0]}_proj(every token fed), num_heads), the steps' {name}s in order"
            )

    @pytest.mark.points(2)
    def test_token_by_token_equals_causal_self_attention(self, student):
        """fed one token per step, the outputs equal causal self-attention over the whole sequence"""
        steps = [1] * 6
        reference, x, _, outputs = feed(student, 71, steps)
        check_self_steps(reference, x, steps, outputs, "one token per step")

    @pytest.mark.points(1)
    def test_a_prompt_in_one_step_is_causal(self, student):
        """a prompt of 5 tokens fed in one step: each token sees itself and the tokens before it, not after"""
        steps = [5]
        reference, x, _, outputs = feed(student, 72, steps, d_model=12, heads=2)
        check_self_steps(reference, x, steps, outputs, "a prompt of 5 tokens in one step")

    @pytest.mark.points(2)
    def test_several_new_tokens_after_the_past_are_aligned_bottom_right(self, student):
        """a prompt, one token, then 3 tokens at once: new query i sees keys j <= i + (n - t), bottom-right"""
        steps = [3, 1, 3]
        reference, x, _, outputs = feed(student, 73, steps, batch=3)
        check_self_steps(reference, x, steps, outputs, "steps of 3, 1 and 3 tokens")
