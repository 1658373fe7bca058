"""Hidden tests of exercise 01, attention from the formula.

Each test probes one property on seeded random inputs, so that each typical mistake
loses its own points, and its message names the concept (students see the message,
never this code). Tests of a later task replace the student's earlier functions by the
library's (``substitute``), so that a broken softmax does not also fail the attention.
``tests/exercises/mutants_01_attention_from_the_formula.py`` lists the mistakes these
tests must catch; ``tests/grading/test_mutants.py`` proves that they do.
"""

import numpy as np
import pytest

from course_lib import scaled_dot_product_attention as reference_attention
from course_lib import softmax as reference_softmax
from course_lib.checks import attention_error_hint, attention_mistake, difference, online_mistake, softmax_mistake
from course_lib.checks import describe as describe_value
from course_lib.grading import StudentRaised, call_with_args, substitute

NOTEBOOK_RUNS_POINTS = 1


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def as_array(value, what: str) -> np.ndarray:
    """The student's result as a numpy array of numbers, or a failed assertion saying what it was."""
    if hasattr(value, "detach"):
        value = value.detach().numpy()
    assert isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number), (
        f"{what} should be a numpy array of numbers, got {describe_value(value)}"
    )
    return value


def attention_result(student, query, key, value):
    """``(output, weights)`` from the student's attention, run with the library's softmax."""
    with substitute(student, "softmax", "course_lib.softmax"):
        result = student.scaled_dot_product_attention(query, key, value)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"scaled_dot_product_attention should return two arrays, (output, weights); got {describe_value(result)}"
    )
    return as_array(result[0], "the output"), as_array(result[1], "the weights")


# -- task 1: softmax --------------------------------------------------------------------


@pytest.mark.task("softmax")
class TestSoftmax:
    @pytest.mark.points(1)
    def test_matches_the_formula(self, student):
        """softmax matches exp(x) / sum of exp(x) on random scores"""
        x = rng(10).normal(scale=3.0, size=(4, 7))
        got = as_array(student.softmax(x.copy()), "softmax(x)")
        assert got.shape == x.shape, (
            f"softmax of a {x.shape} array should keep that shape, got {got.shape}: reduce with keepdims=True"
        )
        assert np.allclose(got, reference_softmax(x), atol=1e-6), (
            "softmax(x) differs from exp(x) / sum(exp(x)) along the last axis"
            + (f": {softmax_mistake(x, got, -1)}" if softmax_mistake(x, got, -1) else "")
        )

    @pytest.mark.points(1)
    def test_sums_to_one_along_the_given_axis(self, student):
        """softmax(x, axis) sums to 1 along that axis, for every axis of a 3-d array"""
        x = rng(11).normal(size=(2, 3, 5))
        for axis in (-1, 1, 0):
            got = as_array(student.softmax(x.copy(), axis=axis), f"softmax(x, axis={axis})")
            assert got.shape == x.shape and np.allclose(got.sum(axis=axis), 1.0, atol=1e-6), (
                f"softmax(x, axis={axis}) on a (2, 3, 5) array should sum to 1 along axis {axis}: "
                "use the `axis` argument in both the max and the sum, with keepdims=True"
            )
            assert np.allclose(got, reference_softmax(x, axis=axis), atol=1e-6), (
                f"softmax(x, axis={axis}) has wrong values"
                + (f": {softmax_mistake(x, got, axis)}" if softmax_mistake(x, got, axis) else "")
            )

    @pytest.mark.points(1)
    def test_large_scores_do_not_overflow(self, student):
        """softmax stays finite and exact for scores in the thousands"""
        x = np.array([[1000.0, 1001.0, 1002.0], [-500.0, 700.0, 699.0]]) + rng(12).normal(size=(2, 3))
        got = as_array(student.softmax(x.copy()), "softmax of large scores")
        assert np.all(np.isfinite(got)), (
            "softmax of scores around 1000 contains NaN or inf: exp(1000) overflows. Subtract each row's "
            "max before exp (it does not change the result)"
        )
        assert np.allclose(got, reference_softmax(x), atol=1e-6), "softmax of large scores has wrong values"

    @pytest.mark.points(1)
    def test_each_row_uses_its_own_max(self, student):
        """softmax subtracts each row's own max, not the max of the whole array"""
        x = np.array([[0.0, 1.0, 2.0], [-3000.0, -3001.0, -3002.0], [50.0, 49.0, 48.0]])
        got = as_array(student.softmax(x.copy()), "softmax of rows on different scales")
        assert np.all(np.isfinite(got)) and np.allclose(got, reference_softmax(x), atol=1e-6), (
            "softmax of rows on very different scales is wrong"
            + (f": {softmax_mistake(x, got, -1)}" if softmax_mistake(x, got, -1) else "")
            + " (each row must be shifted by its own max: np.max(x, axis=axis, keepdims=True))"
        )

    @pytest.mark.points(1)
    def test_rows_with_a_large_spread(self, student):
        """softmax stays finite and exact on rows whose scores span a thousand"""
        x = np.array([[0.0, 0.0, 0.0, 1000.0], [-900.0, 3.0, 0.0, 1.0], [5.0, -1200.0, 400.0, 2.0]])
        got = as_array(student.softmax(x.copy()), "softmax of rows with a large spread")
        assert (
            got.shape == x.shape and np.all(np.isfinite(got)) and np.allclose(got, reference_softmax(x), atol=1e-6)
        ), (
            "softmax of rows whose scores span a thousand is wrong or not finite"
            + (f": {softmax_mistake(x, got, -1)}" if softmax_mistake(x, got, -1) else "")
            + ". Only the row's max keeps every exponent <= 0 (a shift by the mean, the min or the first "
            "element leaves exp(750) in a row like [0, 0, 0, 1000])"
        )

    @pytest.mark.points(1)
    def test_does_not_modify_its_input(self, student):
        """softmax leaves its input array unchanged"""
        x = rng(13).normal(size=(3, 4))
        _, args, _ = call_with_args(student.softmax, x.copy())
        assert np.array_equal(args[0], x), (
            "softmax changed the array it was given: `x -= x.max(...)` modifies the caller's array; "
            "write `shifted = x - x.max(...)` instead"
        )


# -- task 2: why √d ----------------------------------------------------------------------


def score_spreads(student, d: int, seed: int, num_pairs: int = 4000) -> tuple[float, float]:
    try:
        result = student.score_std(d, num_pairs=num_pairs, seed=seed)
    except StudentRaised as err:
        if err.is_a(MemoryError):
            raise AssertionError(
                f"score_std({d}, num_pairs={num_pairs}) ran out of memory: compute one dot product per pair, "
                "np.sum(q * k, axis=-1), not q @ k.T, which computes every query with every key (num_pairs² "
                "numbers)"
            ) from None
        raise
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"score_std should return two numbers, (raw std, scaled std); got {describe_value(result)}"
    )
    try:
        return float(np.asarray(result[0])), float(np.asarray(result[1]))
    except (TypeError, ValueError):
        raise AssertionError(f"score_std should return two numbers; got {describe_value(result)}") from None


# With 4000 pairs the estimated std varies by about 1.2% (d = 16) or less: a 6% tolerance is five standard
# errors, so a correct solution that draws its numbers in another order cannot fail by chance.


@pytest.mark.task("score_std")
class TestScoreStd:
    @pytest.mark.points(1)
    def test_raw_scores_spread_like_sqrt_d(self, student):
        """the std of q·k grows like √d"""
        for d in (16, 64, 256):
            raw, _ = score_spreads(student, d, seed=d)
            hint = ""
            if abs(raw - d) < 0.1 * d:
                hint = ": that is the variance (≈ d); return the standard deviation (≈ √d)"
            assert abs(raw - np.sqrt(d)) < 0.06 * np.sqrt(d), (
                f"for d = {d} the std of the dot products should be close to √d = {np.sqrt(d):g}, got {raw:.3g}" + hint
            )

    @pytest.mark.points(1)
    def test_scaled_scores_have_unit_spread(self, student):
        """the std of q·k / √d stays close to 1 for every d"""
        for d in (16, 64, 256):
            _, scaled = score_spreads(student, d, seed=d + 1)
            hint = ": divide by √d, not by d" if abs(scaled - 1 / np.sqrt(d)) < 0.1 / np.sqrt(d) else ""
            assert abs(scaled - 1.0) < 0.06, (
                f"for d = {d} the std of q·k / √d should be close to 1, got {scaled:.3g}{hint}"
            )

    @pytest.mark.points(1)
    def test_one_dot_product_per_pair(self, student):
        """score_std computes one score per pair, so it handles 100 000 pairs"""
        raw, scaled = score_spreads(student, 2, seed=3, num_pairs=100_000)
        assert abs(raw - np.sqrt(2)) < 0.05 * np.sqrt(2) and abs(scaled - 1.0) < 0.05, (
            f"for d = 2 and 100 000 pairs expected about (√2, 1), got ({raw:.3g}, {scaled:.3g})"
        )

    @pytest.mark.points(1)
    def test_same_seed_same_result(self, student):
        """score_std is reproducible: the same seed gives the same numbers"""
        first = score_spreads(student, 16, seed=7, num_pairs=2000)
        again = score_spreads(student, 16, seed=7, num_pairs=2000)
        other = score_spreads(student, 16, seed=8, num_pairs=2000)
        assert first == again and first != other, (
            "score_std should draw from np.random.default_rng(seed): the same seed must give the same "
            "result, and another seed another one"
        )


# -- task 3: scaled dot-product attention --------------------------------------------------


def random_qkv(seed: int, batch: tuple, len_q: int, len_k: int, d: int, d_v: int, scale: float = 1.0):
    g = rng(seed)
    q = g.normal(scale=scale, size=(*batch, len_q, d))
    k = g.normal(scale=scale, size=(*batch, len_k, d))
    v = g.normal(size=(*batch, len_k, d_v))
    return q, k, v


@pytest.mark.task("attention")
class TestAttention:
    @pytest.mark.points(1)
    def test_shapes_when_len_q_differs_from_len_k(self, student):
        """output is (len_q, d_v) and weights (len_q, len_k) when len_q ≠ len_k and d ≠ d_v"""
        q, k, v = random_qkv(20, (), len_q=3, len_k=7, d=4, d_v=5)
        out, w = attention_result(student, q, k, v)
        hint = attention_mistake(q, k, v, out, w)
        assert w.shape == (3, 7), (
            f"for 3 queries and 7 keys the weights should be (len_q, len_k) = (3, 7), got {w.shape}: "
            + (hint or "one row per query, one column per key; do not assume len_q == len_k")
        )
        assert out.shape == (3, 5), (
            f"for 3 queries and values of size 5 the output should be (len_q, d_v) = (3, 5), got {out.shape}: "
            + (hint or "output = weights @ value")
        )

    @pytest.mark.points(1)
    def test_weights_are_distributions_over_the_keys(self, student):
        """each row of the weights is non-negative and sums to 1"""
        q, k, v = random_qkv(21, (), len_q=6, len_k=4, d=8, d_v=3)
        _, w = attention_result(student, q, k, v)
        assert w.shape == (6, 4), f"the weights should be (len_q, len_k) = (6, 4), got {w.shape}"
        assert np.all(w >= 0) and np.allclose(w.sum(axis=-1), 1.0, atol=1e-6), (
            "each row of the weights must be non-negative and sum to 1: apply softmax to the scores over the "
            "keys (the last axis)"
        )

    @pytest.mark.points(1)
    def test_matches_the_formula(self, student):
        """output and weights equal softmax(Q Kᵀ / √d) V on random inputs"""
        q, k, v = random_qkv(22, (), len_q=5, len_k=9, d=6, d_v=3, scale=2.0)
        out, w = attention_result(student, q, k, v)
        expected_out, expected_w = reference_attention(q, k, v, return_weights=True)
        hint = attention_mistake(q, k, v, out, w)
        assert w.shape == expected_w.shape and np.allclose(w, expected_w, atol=1e-6), (
            "the weights differ from softmax(Q Kᵀ / √d)" + (f": {hint}" if hint else "")
        )
        assert out.shape == expected_out.shape and np.allclose(out, expected_out, atol=1e-6), (
            "the output differs from weights @ V" + (f": {hint}" if hint else "")
        )

    @pytest.mark.points(1)
    def test_keys_are_transposed_even_when_square(self, student):
        """the scores are Q Kᵀ also when len_k == d, where Q K has the right shape too"""
        q, k, v = random_qkv(23, (), len_q=3, len_k=5, d=5, d_v=2)
        out, w = attention_result(student, q, k, v)
        expected_out, expected_w = reference_attention(q, k, v, return_weights=True)
        hint = attention_mistake(q, k, v, out, w)
        assert w.shape == expected_w.shape and np.allclose(w, expected_w, atol=1e-6), (
            "with as many keys as dimensions (len_k == d) the weights are wrong"
            + (f": {hint}" if hint else ": the scores are Q Kᵀ, each query against each key")
        )

    @pytest.mark.points(1)
    def test_large_scores_stay_finite(self, student):
        """attention is exact for large scores (a stable softmax)"""
        q, k, v = random_qkv(24, (), len_q=4, len_k=6, d=16, d_v=3, scale=40.0)
        out, w = attention_result(student, q, k, v)
        expected_out, _ = reference_attention(q, k, v, return_weights=True)
        assert np.all(np.isfinite(w)) and np.all(np.isfinite(out)), (
            "with large scores the weights contain NaN or inf: compute the softmax stably (use your softmax, "
            "which subtracts each row's max)"
        )
        hint = attention_mistake(q, k, v, out, w)
        assert out.shape == expected_out.shape and np.allclose(out, expected_out, atol=1e-6), (
            "with large scores the output is wrong" + (f": {hint}" if hint else "")
        )

    @pytest.mark.points(1)
    def test_batched_inputs(self, student):
        """attention works with leading batch axes (..., len, d)"""
        q, k, v = random_qkv(25, (2, 3), len_q=4, len_k=6, d=8, d_v=5)
        try:
            out, w = attention_result(student, q, k, v)
        except StudentRaised as err:
            hint = attention_error_hint(err.type_name, err.text, q, k)
            raise AssertionError(
                f"on a batch of shape (2, 3) it raised {err.type_name}: {err.text[:200]}"
                + (f". {hint}" if hint else ". Only the last two axes are (len, d); every leading axis is a batch axis")
            ) from None
        expected_out, expected_w = reference_attention(q, k, v, return_weights=True)
        hint = attention_mistake(q, k, v, out, w)
        assert w.shape == (2, 3, 4, 6) and out.shape == (2, 3, 4, 5), (
            f"for query (2, 3, 4, 8), key (2, 3, 6, 8) and value (2, 3, 6, 5) expected output (2, 3, 4, 5) and "
            f"weights (2, 3, 4, 6), got {out.shape} and {w.shape}" + (f": {hint}" if hint else "")
        )
        assert np.allclose(out, expected_out, atol=1e-6) and np.allclose(w, expected_w, atol=1e-6), (
            f"batched attention has wrong values ({difference(out, expected_out)})" + (f": {hint}" if hint else "")
        )


# -- task 4: alignment ---------------------------------------------------------------------


def alignment(student, target, source):
    with (
        substitute(student, "softmax", "course_lib.softmax"),
        substitute(
            student,
            "scaled_dot_product_attention",
            "course_lib.scaled_dot_product_attention",
            return_weights=True,
        ),
    ):
        return as_array(student.align(target, source), "align(target, source)")


def toy_pair(seed: int, len_target: int, len_source: int, d: int):
    """Source vectors, and target vectors that each resemble one source vector."""
    g = rng(seed)
    source = g.normal(scale=2.0, size=(len_source, d))
    picks = g.permutation(len_source)[:len_target]  # distinct source words (len_target <= len_source)
    target = source[picks] + g.normal(scale=0.3, size=(len_target, d))
    return target, source


@pytest.mark.task("align")
class TestAlign:
    @pytest.mark.points(1)
    def test_one_index_per_target_word(self, student):
        """align returns one integer index per target word"""
        target, source = toy_pair(30, len_target=3, len_source=6, d=5)
        best = alignment(student, target, source)
        assert best.shape == (3,), (
            f"for 3 target words and 6 source words align should return 3 indices, got shape {best.shape}: the "
            "queries are the target vectors, the keys the source vectors; take the argmax over the keys "
            "(the last axis)"
        )
        assert np.issubdtype(best.dtype, np.integer), f"the indices should be integers, got dtype {best.dtype}"

    @pytest.mark.points(1)
    @pytest.mark.parametrize("len_target, len_source", [(4, 7), (5, 5)], ids=["len_q<len_k", "square"])
    def test_finds_the_most_attended_source_word(self, student, len_target, len_source):
        """align picks, for each target word, the source word with the largest weight"""
        target, source = toy_pair(31 + len_source, len_target, len_source, d=6)
        best = alignment(student, target, source)
        _, weights = reference_attention(target, source, source, return_weights=True)
        expected = weights.argmax(axis=-1)
        assert best.shape == expected.shape and np.array_equal(best, expected), (
            f"align gave {best.tolist()}, but the weights' largest entries are at {expected.tolist()}: queries "
            "come from the target, keys and values from the source, and the argmax runs over the source words "
            "(the last axis of the weights)"
        )


# -- task 5: an online softmax over chunks of keys --------------------------------------------


def state_of(result, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert isinstance(result, (tuple, list)) and len(result) == 3, (
        f"{what} should return three arrays, (row_max, row_sum, acc); got {describe_value(result)}"
    )
    return tuple(as_array(t, f"{what}[{i}]") for i, t in enumerate(result))


def reference_state(query, key, value):
    """``(row_max, row_sum, acc)`` over all of ``key`` and ``value`` at once, in float64."""
    scores = query @ key.T / np.sqrt(query.shape[-1])
    row_max = scores.max(axis=-1)
    p = np.exp(scores - row_max[:, None])
    return row_max, p.sum(axis=-1), p @ value


def stream(student, query, key, value, sizes):
    """The student's state after folding in the chunks of ``sizes`` keys, in order."""
    state, start = None, 0
    for size in sizes:
        k, v = key[start : start + size], value[start : start + size]
        new = state_of(student.online_update(state, query, k, v), "online_update")
        hint = online_mistake(state, query, k, v, new) if state is not None else None
        state, start = new, start + size
    return state, hint


@pytest.mark.task("online_update")
class TestOnlineUpdate:
    @pytest.mark.points(1)
    def test_first_chunk_follows_the_definitions(self, student):
        """from no state, one chunk gives the max, the sum of exp(s − max) and the weighted values"""
        g = rng(50)
        q, k, v = g.normal(size=(3, 5)), g.normal(size=(4, 5)), g.normal(size=(4, 2))
        got = state_of(student.online_update(None, q, k, v), "online_update(None, query, key, value)")
        for name, a, b in zip(("row_max", "row_sum", "acc"), got, reference_state(q, k, v)):
            assert a.shape == b.shape and np.allclose(a, b, atol=1e-8), (
                f"after the first chunk {name} is wrong ({difference(a, b, atol=1e-8)}): row_max = max of "
                "query @ keyᵀ / √d over the keys, row_sum = sum of exp(score − row_max), acc = exp(score − "
                "row_max) @ value"
            )

    @pytest.mark.points(2)
    def test_chunks_give_attention_over_all_the_keys(self, student):
        """chunks of 3, 1, 5 and 2 keys give the attention output over all 11"""
        g = rng(51)
        q, k, v = g.normal(size=(4, 6)), g.normal(size=(11, 6)), g.normal(size=(11, 3))
        (row_max, row_sum, acc), hint = stream(student, q, k, v, [3, 1, 5, 2])
        out = acc / row_sum[:, None] if row_sum.shape == (4,) and acc.shape == (4, 3) else acc
        expected = reference_attention(q, k, v)
        assert out.shape == expected.shape and np.allclose(out, expected, atol=1e-8), (
            f"acc / row_sum after four chunks differs from attention over all the keys "
            f"({difference(out, expected, atol=1e-8)})" + (f": {hint}" if hint else "")
        )

    @pytest.mark.points(1)
    def test_a_later_chunk_with_larger_scores(self, student):
        """when a chunk brings larger scores, the old sums are rescaled to the new max"""
        g = rng(52)
        q, k, v = g.normal(size=(3, 4)), g.normal(size=(6, 4)), g.normal(size=(6, 2))
        k[3:] *= 8.0
        (row_max, row_sum, acc), hint = stream(student, q, k, v, [3, 3])
        expected = reference_state(q, k, v)
        for name, a, b in zip(("row_max", "row_sum", "acc"), (row_max, row_sum, acc), expected):
            assert a.shape == b.shape and np.allclose(a, b, atol=1e-8), (
                f"after a chunk with larger scores, {name} is wrong ({difference(a, b, atol=1e-8)})"
                + (
                    f": {hint}"
                    if hint
                    else ": the old row_sum and acc were taken with the old max; multiply both "
                    "by exp(old max − new max)"
                )
            )

    @pytest.mark.points(1)
    def test_scores_in_the_thousands_stay_finite(self, student):
        """chunks whose scores are in the thousands give a finite, exact state"""
        g = rng(53)
        q, k, v = 40.0 * g.normal(size=(2, 8)), 40.0 * g.normal(size=(5, 8)), g.normal(size=(5, 3))
        (row_max, row_sum, acc), _ = stream(student, q, k, v, [2, 3])
        out = acc / row_sum[:, None] if row_sum.shape == (2,) else acc
        expected = reference_attention(q, k, v)
        with np.errstate(all="ignore"):
            assert np.all(np.isfinite(out)) and out.shape == expected.shape and np.allclose(out, expected, atol=1e-8), (
                "with scores in the thousands the state overflows or is wrong: subtract the running max before "
                f"every exp, so that each exponent is at most 0 ({difference(out, expected, atol=1e-8)})"
            )

    @pytest.mark.points(1)
    def test_does_not_modify_the_state(self, student):
        """online_update builds a new state and leaves the one it was given unchanged"""
        g = rng(54)
        q, k, v = g.normal(size=(3, 4)), 5.0 * g.normal(size=(4, 4)), g.normal(size=(4, 2))
        state = reference_state(q, k[:2], v[:2])
        _, args, _ = call_with_args(student.online_update, tuple(t.copy() for t in state), q, k[2:], v[2:])
        kept = [np.asarray(a) for a in args[0]]
        assert all(np.array_equal(a, b) for a, b in zip(kept, state)), (
            "online_update changed the arrays of the state it was given: `acc *= r` or `row_sum += ...` modify "
            "the caller's arrays; build new ones (acc = r[:, None] * acc + ...)"
        )
