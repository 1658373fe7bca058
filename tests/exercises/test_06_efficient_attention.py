"""Hidden tests of exercise 06, efficient attention.

Each test probes one property on seeded random inputs, so that each typical mistake loses
its own points, and its message names the concept (students see the message, never this
code). States are compared with ``softmax_state``, the state of a set of keys computed from
all their scores at once. The tiled attention is graded with the library's update in place
of the student's (``substitute``); the Triton kernel runs in Triton's interpreter, at tiny
sizes. ``tests/exercises/mutants_06_efficient_attention.py`` lists the mistakes these tests
must catch; ``tests/grading/test_mutants.py`` proves that they do.
"""

import math

import pytest
import torch

from course_lib.checks import (
    combine_mistake,
    describe,
    difference,
    merge_states_mistake,
    padded_attention,
    softmax_state,
    split_results,
    tiled_mistake,
    triton_mistake,
    update_mistake,
)
from course_lib.grading import StudentCodeError, call_with_args, substitute

NOTEBOOK_RUNS_POINTS = 1
NEG_INF = -math.inf
REFERENCE_UPDATE = "course_lib.checks.ex06.reference_online_softmax_update"


def randn(seed: int, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def empty(rows: tuple, d_v: int):
    return torch.full(rows, NEG_INF, dtype=torch.float64), torch.zeros(rows, dtype=torch.float64), torch.zeros(
        *rows, d_v, dtype=torch.float64
    )


def as_state(result, what: str) -> tuple:
    """The student's ``(m, l, acc)`` as float64 tensors, or a failed assertion saying what came back."""
    assert isinstance(result, (tuple, list)) and len(result) == 3, (
        f"{what} should return three tensors, (m, l, acc); got {describe(result)}"
    )
    for t, name in zip(result, ("m", "l", "acc")):
        assert isinstance(t, torch.Tensor) and t.is_floating_point(), (
            f"{what} should return tensors; its {name} is {describe(t)}"
        )
    return tuple(t.double() for t in result)


def as_tensor(value, what: str, shape: tuple) -> torch.Tensor:
    assert isinstance(value, torch.Tensor) and value.is_floating_point(), (
        f"{what} should return a tensor of floats, got {describe(value)}"
    )
    assert tuple(value.shape) == shape, f"{what} should have shape {shape}, got {tuple(value.shape)}"
    return value.double()


def close(got: torch.Tensor, expected: torch.Tensor, atol: float = 1e-6) -> bool:
    return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=1e-5, atol=atol))


def hint(text: str | None) -> str:
    return f": {text}" if text else ""


# -- task 1: one step of the online softmax ---------------------------------------------------


def update(student, state, scores, values, what="online_softmax_update"):
    return as_state(student.online_softmax_update(*state, scores, values), what)


@pytest.mark.task("online_update")
class TestOnlineUpdate:
    @pytest.mark.points(1)
    def test_first_block_from_the_empty_state(self, student):
        """from the empty state, one block gives its max, its sum of exponentials and its weighted values"""
        s, v = randn(1, 2, 3, 5) * 2, randn(2, 2, 5, 4)  # batch 2, 3 query rows, a block of 5 keys, d_v = 4
        start = empty((2, 3), 4)
        got = update(student, start, s, v)
        expected = softmax_state(s, v)
        why = hint(update_mistake(*start, s, v, got))
        assert tuple(got[0].shape) == (2, 3) and tuple(got[2].shape) == (2, 3, 4), (
            f"for m of shape (2, 3) and acc (2, 3, 4), the update returned shapes {[tuple(t.shape) for t in got]}"
            + why
        )
        assert close(got[0], expected[0]), "after the first block, m should be each row's largest score" + why
        assert close(got[1], expected[1]), "after the first block, l should be Σ exp(score − m)" + why
        assert close(got[2], expected[2]), "after the first block, acc should be Σ exp(score − m) · value" + why

    @pytest.mark.points(1)
    def test_rescales_the_running_sum(self, student):
        """when a block raises the max, the old sum l is rescaled by exp(m − m_new)"""
        s1, s2 = randn(3, 4, 6), randn(4, 4, 3) + 3.0  # the second block's scores are larger
        v1, v2 = randn(5, 6, 2), randn(6, 3, 2)
        state = softmax_state(s1, v1)
        got = update(student, state, s2, v2)
        expected = softmax_state(torch.cat([s1, s2], -1), torch.cat([v1, v2], -2))
        assert close(got[1], expected[1]), (
            "after a block with larger scores, l is wrong"
            + hint(update_mistake(*state, s2, v2, got) or "l_new = l_i · exp(m_i − m_new) + Σ exp(s − m_new)")
        )

    @pytest.mark.points(1)
    def test_rescales_the_accumulator(self, student):
        """when a block raises the max, acc is rescaled by the same exp(m − m_new) as l"""
        s1, s2 = randn(7, 4, 6), randn(8, 4, 3) + 3.0
        v1, v2 = randn(9, 6, 2), randn(10, 3, 2)
        state = softmax_state(s1, v1)
        got = update(student, state, s2, v2)
        expected = softmax_state(torch.cat([s1, s2], -1), torch.cat([v1, v2], -2))
        assert close(got[2], expected[2]), (
            "after a block with larger scores, acc is wrong"
            + hint(
                update_mistake(*state, s2, v2, got)
                or "acc_new = acc · exp(m_i − m_new)[..., None] + exp(s − m_new) @ values"
            )
        )

    @pytest.mark.points(1)
    def test_keeps_the_largest_max(self, student):
        """a block of much smaller scores leaves the running max unchanged, and nothing overflows"""
        s1, s2 = randn(11, 3, 4) + 400.0, randn(12, 3, 5) - 400.0
        v1, v2 = randn(13, 4, 3), randn(14, 5, 3)
        state = softmax_state(s1, v1)
        got = update(student, state, s2, v2)
        expected = softmax_state(torch.cat([s1, s2], -1), torch.cat([v1, v2], -2))
        why = hint(update_mistake(*state, s2, v2, got))
        assert close(got[0], expected[0]), (
            "after a block of scores around -400, the running max should stay at its old value (about 400): "
            "m_new = max(m_i, max of the block)" + why
        )
        assert all(torch.isfinite(t).all() for t in got[1:]) and close(got[1], expected[1]), (
            "after a block of scores far below the running max, l should barely change and stay finite" + why
        )
        assert close(got[2], expected[2]), "after a block of scores far below the running max, acc is wrong" + why

    @pytest.mark.points(1)
    def test_masked_keys_and_rows_with_no_key(self, student):
        """-inf scores get no weight, and a row with no key so far stays (−inf, 0, 0) instead of NaN"""
        v = randn(15, 4, 3)
        s = randn(16, 3, 4)
        s[0] = NEG_INF  # row 0: a fully masked block on the empty state
        s[1, 1:3] = NEG_INF  # row 1: two masked keys
        s[2] = NEG_INF  # row 2: a fully masked block on a row that has seen keys
        m, l_i, acc = empty((3,), 3)
        m[2], l_i[2], acc[2] = 1.5, 2.0, torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
        got = update(student, (m, l_i, acc), s, v)
        why = hint(update_mistake(m, l_i, acc, s, v, got))
        assert not any(torch.isnan(t).any() for t in got), (
            "NaN after a block whose scores are all -inf (masked)" + why
        )
        assert got[0][0] == NEG_INF and got[1][0] == 0 and (got[2][0] == 0).all(), (
            f"a row with no key yet and a fully masked block should stay empty: m = -inf, l = 0, acc = 0; "
            f"got m = {got[0][0].item():.4g}, l = {got[1][0].item():.4g}" + why
        )
        expected_1 = softmax_state(s[1:2], v)
        assert close(got[1][1], expected_1[1][0]) and close(got[2][1], expected_1[2][0]), (
            "masked keys (score -inf) should get no weight: exp(-inf − m_new) = 0" + why
        )
        assert close(got[0][2], m[2]) and close(got[1][2], l_i[2]) and close(got[2][2], acc[2]), (
            "a fully masked block should leave a row that has seen keys unchanged" + why
        )

    @pytest.mark.points(1)
    def test_large_scores(self, student):
        """scores in the thousands give exact, finite states"""
        s1, s2 = randn(17, 2, 3) + 1000.0, randn(18, 2, 4) + 1003.0
        v1, v2 = randn(19, 3, 2), randn(20, 4, 2)
        state = update(student, empty((2,), 2), s1, v1, "online_softmax_update on scores around 1000")
        assert all(torch.isfinite(t).all() for t in state), (
            "scores around 1000 gave inf or NaN: exp(1000) overflows. Subtract the running max before exp"
            + hint(update_mistake(*empty((2,), 2), s1, v1, state))
        )
        got = update(student, softmax_state(s1, v1), s2, v2)
        expected = softmax_state(torch.cat([s1, s2], -1), torch.cat([v1, v2], -2))
        assert all(close(g, e) for g, e in zip(got, expected)), (
            "two blocks of scores around 1000 give a wrong state"
            + hint(update_mistake(*softmax_state(s1, v1), s2, v2, got))
        )

    @pytest.mark.points(1)
    def test_scales_the_rows_of_acc(self, student):
        """the rescaling multiplies each row of acc, also when len_q == d_v"""
        s1, s2 = randn(21, 3, 4, 4), randn(22, 3, 4, 4) * 3  # batch 3; len_q = block = d_v = 4
        v1, v2 = randn(23, 3, 4, 4), randn(24, 3, 4, 4)
        state = softmax_state(s1, v1)
        got = update(student, state, s2, v2)
        expected = softmax_state(torch.cat([s1, s2], -1), torch.cat([v1, v2], -2))
        assert all(close(g, e) for g, e in zip(got, expected)), (
            "with as many query rows as value dimensions (len_q == d_v == 4), the state is wrong"
            + hint(update_mistake(*state, s2, v2, got) or "reduce over the keys (the last axis of scores)")
        )

    @pytest.mark.points(1)
    def test_does_not_modify_its_inputs(self, student):
        """online_softmax_update returns new tensors and leaves its inputs unchanged"""
        s, v = randn(25, 2, 3) + 2.0, randn(26, 3, 2)
        state = softmax_state(randn(27, 2, 4), randn(28, 4, 2))
        args = (*state, s, v)
        _, after, _ = call_with_args(student.online_softmax_update, *(a.clone() for a in args))
        names = ["m_i", "l_i", "acc", "scores", "values"]
        changed = [n for n, a, b in zip(names, args, after) if not torch.equal(a, b)]
        assert not changed, (
            f"online_softmax_update changed its input {', '.join(changed)} in place (e.g. acc *= alpha or "
            "acc.mul_(alpha)): the caller's state is gone. Build new tensors: acc_new = acc * alpha[..., None] + ..."
        )


# -- task 2: merging two partial states --------------------------------------------------------


def merge(student, a, b):
    return as_state(student.merge_softmax_states(*a, *b), "merge_softmax_states")


def split_states(seed: int, rows: tuple, n1: int, n2: int, d_v: int, shift1=0.0, shift2=0.0):
    """Scores and values of n1 + n2 keys, and the states of the two parts."""
    s = randn(seed, *rows, n1 + n2) * 2
    s[..., :n1] += shift1
    s[..., n1:] += shift2
    v = randn(seed + 1, *rows[:-1], n1 + n2, d_v)
    a = softmax_state(s[..., :n1], v[..., :n1, :])
    b = softmax_state(s[..., n1:], v[..., n1:, :])
    return s, v, a, b


@pytest.mark.task("merge_states")
class TestMergeStates:
    @pytest.mark.points(1)
    def test_merged_sum_and_accumulator(self, student):
        """merging the states of two parts gives l and acc of all the keys"""
        s, v, a, b = split_states(30, (2, 3), 5, 4, 3)
        s[0, :, :5] += 4.0  # in batch 0 the first part holds the larger scores, in batch 1 the second
        s[1, :, 5:] += 4.0
        a, b = softmax_state(s[..., :5], v[..., :5, :]), softmax_state(s[..., 5:], v[..., 5:, :])
        got = merge(student, a, b)
        expected = softmax_state(s, v)
        why = hint(merge_states_mistake(a, b, got))
        assert close(got[1], expected[1]), "the merged l differs from the l of all the keys" + why
        assert close(got[2], expected[2]), "the merged acc differs from the acc of all the keys" + why

    @pytest.mark.points(1)
    def test_merged_max_is_the_joint_max(self, student):
        """the merged m is max(m1, m2), whichever state holds the larger one"""
        s, v, a, b = split_states(32, (4,), 3, 6, 2)
        s[:2, :3] += 5.0  # rows 0, 1: the first state holds the max; rows 2, 3: the second
        s[2:, 3:] += 5.0
        a, b = softmax_state(s[:, :3], v[:3]), softmax_state(s[:, 3:], v[3:])
        got = merge(student, a, b)
        assert close(got[0], torch.maximum(a[0], b[0])), (
            "the merged m should be the joint max, torch.maximum(m1, m2)" + hint(merge_states_mistake(a, b, got))
        )

    @pytest.mark.points(1)
    def test_far_apart_maxima_stay_finite(self, student):
        """two states whose maxima differ by 1200 merge without overflow"""
        s, v, a, b = split_states(34, (3,), 4, 4, 2)
        s[0, :4] += 600.0
        s[0, 4:] -= 600.0
        s[1, :4] -= 600.0
        s[1, 4:] += 600.0
        a, b = softmax_state(s[:, :4], v[:4]), softmax_state(s[:, 4:], v[4:])
        got = merge(student, a, b)
        expected = softmax_state(s, v)
        why = hint(merge_states_mistake(a, b, got))
        assert all(torch.isfinite(t).all() for t in got[1:]), (
            "states with maxima 600 and -600 merged into inf or NaN: rescale both to the joint max, "
            "so that every weight exp(m_i - m) is at most 1" + why
        )
        assert all(close(g, e) for g, e in zip(got, expected)), (
            "states with maxima far apart merge to a wrong state" + why
        )

    @pytest.mark.points(1)
    def test_empty_states(self, student):
        """merging with an empty state changes nothing, and two empty states stay empty (no NaN)"""
        _, _, a, _ = split_states(36, (2, 3), 5, 1, 4)
        none = empty((2, 3), 4)
        for first, second, order in ((a, none, "a state with an empty one"), (none, a, "an empty state with a state")):
            got = merge(student, first, second)
            assert all(close(g, e) for g, e in zip(got, a)), (
                f"merging {order} should give the non-empty state back" + hint(merge_states_mistake(first, second, got))
            )
        got = merge(student, none, none)
        assert not any(torch.isnan(t).any() for t in got), (
            "merging two empty states (m = -inf) gave NaN" + hint(merge_states_mistake(none, none, got))
        )
        assert (got[0] == NEG_INF).all() and (got[1] == 0).all() and (got[2] == 0).all(), (
            "two empty states should merge into an empty state: m = -inf, l = 0, acc = 0"
        )

    @pytest.mark.points(1)
    def test_scales_the_rows_of_acc(self, student):
        """the weights multiply each row of acc, also when len_q == d_v"""
        s, v, a, b = split_states(38, (2, 3), 3, 5, 3, shift2=2.0)  # len_q = d_v = 3
        got = merge(student, a, b)
        expected = softmax_state(s, v)
        assert close(got[2], expected[2]), (
            "with as many query rows as value dimensions (len_q == d_v == 3), the merged acc is wrong"
            + hint(merge_states_mistake(a, b, got))
        )

    @pytest.mark.points(1)
    def test_split_k_decoding(self, student):
        """one query over 6 chunks of keys (one fully masked), merged pairwise, equals attention"""
        d = 8
        query, keys, vals = randn(40, 2, 1, d), randn(41, 2, 60, d) * 2, randn(42, 2, 60, 5)
        scores = query @ keys.transpose(-1, -2) / math.sqrt(d)  # (2, 1, 60): batch 2, one query each
        scores[:, :, 20:30] = NEG_INF  # chunk 2 is padding
        states = [softmax_state(scores[..., i : i + 10], vals[:, i : i + 10]) for i in range(0, 60, 10)]
        first_pair = (states[0], states[1], merge(student, states[0], states[1]))
        while len(states) > 1:  # a tree of merges, as the programs of flash-decoding would do
            pairs = [merge(student, states[i], states[i + 1]) for i in range(0, len(states) - 1, 2)]
            states = pairs + states[len(pairs) * 2 :]  # 6 -> 3 -> 2 -> 1
        m, l_i, acc = states[0]
        expected = torch.softmax(scores, dim=-1) @ vals
        assert close(acc / l_i[..., None], expected), (
            "six partial states merged pairwise should give the attention over all 60 keys (acc / l): the merge "
            "must be exact for any grouping" + hint(merge_states_mistake(*first_pair))
        )


# -- task 3: combining split outputs by their log-sum-exps ------------------------------------


def combine(student, outputs, lses):
    """The student's ``(out, lse)`` as float64 tensors, after checking what came back."""
    result = student.combine_splits(outputs, lses)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"combine_splits should return two tensors, (out, lse); got {describe(result)}"
    )
    shapes = (tuple(outputs.shape[1:]), tuple(lses.shape[1:]))
    named = zip(result, ("out", "lse"), shapes)
    return tuple(as_tensor(t, f"combine_splits' {name}", shape) for t, name, shape in named)


def full_attention(scores, values):
    """Attention over all the keys and its log-sum-exp: 0 and -inf for a row with no key."""
    return torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0) @ values, torch.logsumexp(scores, dim=-1)


def combine_case(seed: int, rows: tuple, sizes: list[int], d_v: int, scale: float = 2.0):
    scores = randn(seed, *rows, sum(sizes)) * scale
    values = randn(seed + 1, *rows[:-1], sum(sizes), d_v)
    return scores, values


@pytest.mark.task("combine_splits")
class TestCombineSplits:
    def _check(self, student, scores, values, sizes, what: str, rows=slice(None)):
        outputs, lses = split_results(scores, values, sizes)
        out, lse = combine(student, outputs, lses)
        want_out, want_lse = full_attention(scores, values)
        result = (out, lse)
        assert close(out[rows], want_out[rows]), (
            f"{what}: out differs from attention over all the keys ({difference(out[rows], want_out[rows])})"
            + hint(combine_mistake(outputs, lses, result) or "the weights are exp(lse_s - lse), one per split and row")
        )
        return outputs, lses, out, lse, want_lse

    @pytest.mark.points(2)
    def test_uneven_splits_equal_attention_over_all_keys(self, student):
        """splits of 3, 9 and 1 keys combine into attention over all 13 keys"""
        scores, values = combine_case(90, (2, 3, 4), [3, 9, 1], 5)
        scores[0, :, :, :3] += 3.0  # the mass sits in different splits in different rows
        scores[1, :, :, 12:] += 4.0
        self._check(student, scores, values, [3, 9, 1], "splits of 3, 9 and 1 keys")

    @pytest.mark.points(1)
    def test_lse_is_the_log_sum_exp_of_all_scores(self, student):
        """the combined lse is the log-sum-exp of all the scores"""
        scores, values = combine_case(91, (3, 5), [4, 4, 6], 2)
        outputs, lses = split_results(scores, values, [4, 4, 6])
        out, lse = combine(student, outputs, lses)
        want = torch.logsumexp(scores, dim=-1)
        assert close(lse, want), (
            f"lse differs from logsumexp over all the scores ({difference(lse, want)})"
            + hint(combine_mistake(outputs, lses, (out, lse)) or "lse = m + log(Σ_s exp(lse_s - m)), m = max_s lse_s")
        )

    @pytest.mark.points(1)
    def test_rows_scaled_when_len_q_equals_d_v(self, student):
        """many splits, batch and head axes, len_q == d_v: each row gets its own weights"""
        scores, values = combine_case(92, (2, 2, 4), [2, 3, 1, 5, 2, 3], 4)
        scores[..., 1, :2] += 6.0  # query row 1 puts its mass in the first split
        self._check(student, scores, values, [2, 3, 1, 5, 2, 3], "6 splits, len_q = d_v = 4")

    @pytest.mark.points(1)
    def test_large_scores_do_not_overflow(self, student):
        """scores in the thousands: the combination stays finite and exact"""
        scores, values = combine_case(93, (3, 4), [5, 7], 3)
        scores += torch.tensor([500.0, 1000.0, -1000.0], dtype=torch.float64)[:, None, None]
        outputs, lses, out, lse, want_lse = self._check(student, scores, values, [5, 7], "scores around ±1000")
        assert close(lse, want_lse, atol=1e-6), (
            f"lse for scores around ±1000 differs from logsumexp ({difference(lse, want_lse)})"
            + hint(combine_mistake(outputs, lses, (out, lse)))
        )

    @pytest.mark.points(1)
    def test_empty_splits_weigh_nothing_and_empty_rows_give_zero(self, student):
        """an empty split weighs nothing; a row with no key in any split gives 0 and lse -inf, not NaN"""
        sizes = [4, 3, 5]
        scores, values = combine_case(94, (4, 6), sizes, 3)
        scores[0, :, 4:7] = NEG_INF  # batch 0: the middle split is empty
        scores[1, :, :7] = NEG_INF  # batch 1: only the last split has keys
        scores[2, 2] = NEG_INF  # batch 2: row 2 has no key at all
        outputs, lses = split_results(scores, values, sizes)
        out, lse = combine(student, outputs, lses)
        want_out, want_lse = full_attention(scores, values)
        told = hint(combine_mistake(outputs, lses, (out, lse)))
        assert bool(torch.isfinite(out).all()), (
            "out contains NaN or inf when some splits are empty (lse = -inf), or a row has no key at all" + told
        )
        assert close(out, want_out), (
            f"with empty splits, out differs from attention over the remaining keys ({difference(out, want_out)})"
            + told
        )
        real = torch.isfinite(want_lse)
        assert bool(lse[2, 2] == NEG_INF) and close(lse[real], want_lse[real]), (
            "a row with no key in any split has lse = -inf, and the other rows the log-sum-exp of their keys" + told
        )

    @pytest.mark.points(1)
    def test_inputs_are_not_modified(self, student):
        """combine_splits leaves its inputs as they were"""
        scores, values = combine_case(95, (2, 3), [3, 4], 2)
        outputs, lses = split_results(scores, values, [3, 4])
        _, args, _ = call_with_args(student.combine_splits, outputs, lses)
        assert torch.equal(args[0], outputs) and torch.equal(args[1], lses), (
            "combine_splits changed its inputs in place: compute new tensors (w = torch.exp(lses - m), not "
            "lses.sub_(m))"
        )


# -- task 4: tiled attention -----------------------------------------------------------------


def tiled(student, q, k, v, kv_lens=None, block_size=16):
    with substitute(student, "online_softmax_update", REFERENCE_UPDATE):
        got = student.tiled_attention(q, k, v, kv_lens=kv_lens, block_size=block_size)
    return as_tensor(got, "tiled_attention", (*q.shape[:-1], v.shape[-1]))


def tiled_hint(student, q, k, v, kv_lens, got, block, default: str) -> str:
    """The diagnosed mistake; else, if even the simplest case is wrong, say so; else ``default``."""
    known = tiled_mistake(q, k, v, kv_lens, got, block)
    if known:
        return hint(known)
    try:
        q0, k0, v0 = randn(90, 1, 2, 3, 8), randn(91, 1, 2, 16, 8), randn(92, 1, 2, 16, 4)
        basics = close(tiled(student, q0, k0, v0, block_size=8), padded_attention(q0, k0, v0))
    except (AssertionError, StudentCodeError):
        basics = False
    if not basics:
        return hint(
            "the output is already wrong for 16 keys in two blocks of 8, without padding: fix the loop first "
            "(scores = query @ key_blockᵀ / √d, online_softmax_update on each block, acc / l_i at the end)"
        )
    return hint(default)


@pytest.mark.task("tiled_forward")
class TestTiledAttention:
    @pytest.mark.points(1)
    def test_matches_attention(self, student):
        """equals softmax(Q Kᵀ / √d) V for len_q ≠ len_k and d ≠ d_v"""
        q, k, v = randn(50, 2, 3, 5, 8), randn(51, 2, 3, 32, 8), randn(52, 2, 3, 32, 6)
        got = tiled(student, q, k, v, block_size=8)
        assert close(got, padded_attention(q, k, v)), (
            "with 32 keys in blocks of 8, the output differs from attention"
            + tiled_hint(student, q, k, v, None, got, 8, "divide acc by l_i once, after the last block")
        )

    @pytest.mark.points(1)
    def test_last_partial_block(self, student):
        """37 keys in blocks of 1, 5, 16 or 64: the last, shorter block counts too"""
        q, k, v = randn(53, 1, 2, 4, 8), randn(54, 1, 2, 37, 8), randn(55, 1, 2, 37, 3)
        expected = padded_attention(q, k, v)
        for block in (5, 16, 64, 1):
            got = tiled(student, q, k, v, block_size=block)
            assert close(got, expected), f"with 37 keys in blocks of {block}, the output differs from attention" + (
                tiled_hint(student, q, k, v, None, got, block, "loop over range(0, len_k, block_size)")
            )

    @pytest.mark.points(1)
    def test_padding_keys_get_no_weight(self, student):
        """keys past kv_lens[b] are ignored, whatever their values"""
        q, k, v = randn(56, 3, 2, 4, 8), randn(57, 3, 2, 37, 8), randn(58, 3, 2, 37, 4)
        lens = [13, 37, 2]
        for b, n in enumerate(lens):  # loud padding: large keys and values, visible if they leak
            k[b, :, n:] *= 30
            v[b, :, n:] += 100
        got = tiled(student, q, k, v, kv_lens=lens, block_size=8)
        assert close(got, padded_attention(q, k, v, lens)), (
            "with kv_lens = [13, 37, 2], the output differs from attention over the real keys"
            + tiled_hint(student, q, k, v, lens, got, 8, "set the scores of keys j >= kv_lens[b] to -inf")
        )

    @pytest.mark.points(1)
    def test_padding_boundaries(self, student):
        """lengths on, just before and just after a block boundary"""
        q, k, v = randn(59, 4, 1, 3, 4), randn(60, 4, 1, 20, 4), randn(61, 4, 1, 20, 2)
        lens = [8, 9, 16, 7]
        v += torch.arange(20, dtype=torch.float64)[:, None] * 10  # each key's value tells which key it is
        got = tiled(student, q, k, v, kv_lens=lens, block_size=8)
        assert close(got, padded_attention(q, k, v, lens)), (
            "with blocks of 8 and kv_lens = [8, 9, 16, 7], the output is wrong"
            + tiled_hint(
                student, q, k, v, lens, got, 8,
                "key j of the block starting at `start` is key start + j of the sequence: compare start + j "
                "with kv_lens[b]",
            )
        )

    @pytest.mark.points(1)
    def test_empty_source_gives_zeros(self, student):
        """a batch element with kv_lens[b] = 0 gets zeros, not NaN"""
        q, k, v = randn(62, 2, 2, 3, 4), randn(63, 2, 2, 11, 4), randn(64, 2, 2, 11, 5)
        got = tiled(student, q, k, v, kv_lens=[0, 11], block_size=4)
        assert not torch.isnan(got).any() and (got[0] == 0).all(), (
            "a batch element with no real key (kv_lens[b] = 0) should give zeros: l_i = 0 there, and 0 / 0 is NaN"
            + tiled_hint(student, q, k, v, [0, 11], got, 4, "divide by torch.where(l_i == 0, 1, l_i)")
        )
        assert close(got[1], padded_attention(q, k, v)[1]), (
            "the batch element with all 11 keys is wrong" + tiled_hint(student, q, k, v, [0, 11], got, 4, "")
        )

    @pytest.mark.points(1)
    def test_large_scores(self, student):
        """scores around +1000 or -1000 give exact, finite outputs"""
        d = 4
        direction = torch.ones(d, dtype=torch.float64)
        k = randn(65, 1, 1, 10, d) * 0.5 + 25 * direction  # every key points along `direction`
        q = torch.stack([40 * direction, -40 * direction])[None, None] + randn(66, 1, 1, 2, d)
        v = randn(67, 1, 1, 10, 3)  # query 0 scores about +2000, query 1 about -2000
        got = tiled(student, q, k, v, block_size=4)
        assert close(got, padded_attention(q, k, v), atol=1e-5), (
            "with scores around +2000 (query 0) and -2000 (query 1), the output is wrong"
            + tiled_hint(
                student, q, k, v, None, got, 4,
                "start the running max at -inf (not 0): against m = 0, exp(-2000) underflows to 0 and the row "
                "ends with l_i = 0",
            )
        )


# -- task 5: the Triton kernel -------------------------------------------------------------------


def flash(student, q, k, v, kv_lens=None):
    got = student.triton_attention(q, k, v, kv_lens=kv_lens)
    return as_tensor(got, "triton_attention", tuple(q.shape))


def flash_hint(student, q, k, v, kv_lens, got, default: str) -> str:
    """The diagnosed mistake; else, if even whole blocks without padding are wrong, say so; else ``default``."""
    known = triton_mistake(q, k, v, kv_lens, got)
    if known:
        return hint(known)
    try:
        q0, k0, v0 = qkv32(99, 1, 1, 16, 32, 16)
        basics = close(flash(student, q0, k0, v0), padded_attention(q0, k0, v0), atol=1e-5)
    except (AssertionError, StudentCodeError):
        basics = False
    if not basics:
        return hint(
            "the kernel is already wrong for 16 queries and 32 keys (whole blocks, no padding): fix the update "
            "first (m_new, alpha = exp(m_i - m_new), p = exp(s - m_new[:, None]), l_i, acc, m_i = m_new)"
        )
    return hint(default)


def qkv32(seed: int, batch: int, heads: int, len_q: int, len_k: int, d: int):
    """float32 queries, keys and values: the interpreter runs float32 only."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, n, d, generator=g) for n in (len_q, len_k, len_k))


@pytest.mark.task("flash_kernel")
class TestFlashKernel:
    @pytest.mark.points(2)
    def test_matches_attention_on_whole_blocks(self, student):
        """the kernel equals attention when every block is full (32 queries, 48 keys, 2 heads)"""
        q, k, v = qkv32(70, 1, 2, 32, 48, 16)
        got = flash(student, q, k, v)
        assert close(got, padded_attention(q, k, v), atol=1e-5), (
            "with 32 queries and 48 keys (whole blocks of 16), the kernel's output differs from attention"
            + flash_hint(student, q, k, v, None, got, "")
        )

    @pytest.mark.points(2)
    def test_ragged_last_key_block(self, student):
        """37 keys: the last block of keys is partial and must be masked (head dim 32)"""
        q, k, v = qkv32(73, 1, 1, 16, 37, 32)
        got = flash(student, q, k, v)
        assert close(got, padded_attention(q, k, v), atol=1e-5), (
            "with 37 keys (blocks of 16, 16 and 5), the output is wrong"
            + flash_hint(
                student, q, k, v, None, got,
                "in the last block, load K and V with mask=key_ok[:, None] and set the scores of keys >= kv_len "
                "to -inf",
            )
        )

    @pytest.mark.points(2)
    def test_ragged_last_query_block(self, student):
        """21 queries and 4 heads: the last block of queries is partial, and no head overwrites another"""
        q, k, v = qkv32(76, 2, 2, 21, 16, 16)
        got = flash(student, q, k, v)
        expected = padded_attention(q, k, v)
        assert close(got, expected, atol=1e-5), (
            "with 21 queries per head (blocks of 16 and 5), some outputs are wrong"
            + flash_hint(
                student, q, k, v, None, got,
                "store with mask=row_ok[:, None]: rows >= len_q of the last query block belong to the next head",
            )
        )

    @pytest.mark.points(2)
    def test_padding_is_never_read(self, student):
        """keys and values past kv_len (NaN here) are never used: kv_lens = [40, 5, 17]"""
        q, k, v = qkv32(79, 3, 1, 16, 40, 16)
        lens = [40, 5, 17]
        for b, n in enumerate(lens):
            k[b, :, n:], v[b, :, n:] = float("nan"), float("nan")
        got = flash(student, q, k, v, lens)
        clean_k, clean_v = torch.nan_to_num(k, nan=0.0), torch.nan_to_num(v, nan=0.0)
        assert close(got, padded_attention(q, clean_k, clean_v, lens), atol=1e-5), (
            "with kv_lens = [40, 5, 17] and NaN in the padding, the output is wrong"
            + flash_hint(
                student, q, clean_k, clean_v, lens, got,
                "load K and V with mask=key_ok[:, None], other=0.0, and stop the loop at kv_len",
            )
        )

    @pytest.mark.points(2)
    def test_empty_source_gives_zeros(self, student):
        """a sequence with kv_len = 0 gets zeros, not NaN"""
        q, k, v = qkv32(82, 2, 1, 16, 16, 16)
        lens = [0, 9]
        got = flash(student, q, k, v, lens)
        assert not torch.isnan(got[0]).any() and (got[0] == 0).all(), (
            "a sequence with kv_len = 0 should give zeros: no block runs, l_i = 0, and its output is 0 "
            "(tl.where(l_i == 0.0, 1.0, l_i))" + flash_hint(student, q, k, v, lens, got, "")
        )
        assert close(got[1], padded_attention(q, k, v, lens)[1], atol=1e-5), (
            "the sequence with 9 keys is wrong" + flash_hint(student, q, k, v, lens, got, "")
        )

    @pytest.mark.points(2)
    def test_large_scores_and_a_rising_max(self, student):
        """scores of ±160 that grow from block to block give an exact output"""
        d = 16
        g = torch.Generator().manual_seed(85)
        k = torch.randn(1, 1, 48, d, generator=g) * 0.1 + torch.linspace(0, 20, 48)[:, None]  # later keys larger
        q = torch.randn(1, 1, 16, d, generator=g) * 0.1 + torch.linspace(-2, 2, 16)[:, None]
        v = torch.randn(1, 1, 48, d, generator=g)
        got = flash(student, q, k, v)
        assert close(got, padded_attention(q, k, v), atol=1e-4), (
            "with scores up to ±160 that grow from block to block, the output is wrong"
            + flash_hint(
                student, q, k, v, None, got,
                "subtract the running max m_new in exp, and rescale l_i and acc by alpha = exp(m_i - m_new) "
                "whenever the max grows",
            )
        )
