"""Hidden tests of exercise 02, cross-attention vs self-attention.

Each test probes one property on seeded random inputs, with a source that differs from the
target in length and width unless the test is about the case where they match (where a
key projected from the target would hide). Layers are compared with
``course_lib.MultiHeadAttention(num_heads=1)`` loaded with the same state dict.
``tests/exercises/mutants_02_cross_vs_self_attention.py`` lists the mistakes these tests
must catch; ``tests/grading/test_mutants.py`` proves that they do.
"""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from course_lib import MultiHeadAttention
from course_lib.checks import describe as describe_value
from course_lib.checks import (
    entropy_mistake,
    layer_mistake,
    projection_mistake,
    shuffle_mistake,
    two_source_mistake,
    two_source_params,
    two_source_reference,
)
from course_lib.grading import StudentRaised, call_with_args

NOTEBOOK_RUNS_POINTS = 1
ATOL = 1e-5  # float32 results against float64 references (an entropy with log(w + 1e-6) passes too)



@pytest.fixture(autouse=True)
def _one_thread():
    """The grader's own torch work runs on one thread. Its tensors are tiny, and a process whose OpenMP thread
    pool has started hangs in any forked child that uses torch: the course's test suite grades solutions and
    mutants in processes forked from the pytest process that runs these tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_layer(d_model: int, d_context: int, seed: int) -> MultiHeadAttention:
    """A one-head layer whose every weight and bias is random and large enough for the scores to matter."""
    torch.manual_seed(seed)
    layer = MultiHeadAttention(d_model, num_heads=1, d_context=d_context).eval()
    g = generator(seed)
    with torch.no_grad():
        for p in layer.parameters():
            scale = 1.0 / math.sqrt(p.shape[1]) if p.dim() == 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return layer


def state(layer: MultiHeadAttention) -> dict:
    return {name: t.detach().clone() for name, t in layer.state_dict().items()}


def as_tensor(value, what: str) -> torch.Tensor:
    """The student's result as a float tensor, or a failed assertion saying what it was."""
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
        value = torch.from_numpy(value)
    assert isinstance(value, torch.Tensor) and value.is_floating_point(), (
        f"{what} should be a float tensor, got {describe_value(value)}"
    )
    return value


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return got.shape == expected.shape and bool(torch.allclose(got.double(), expected.double(), atol=ATOL))


def hint(text: str | None, default: str = "") -> str:
    return f": {text}" if text else default


# -- task 1: the projections -----------------------------------------------------------------


def projections(student, x, context, params):
    try:
        result = student.project_qkv(x, context, params)
    except StudentRaised as err:
        raise AssertionError(
            f"{err}. The queries read the target x ({x.shape[-1]} wide), the keys and values read the context "
            f"({context.shape[-1]} wide); nn.Linear stores weight as (out_features, in_features): input @ weight.T "
            "+ bias"
        ) from None
    assert isinstance(result, (tuple, list)) and len(result) == 3, (
        f"project_qkv should return three tensors, (q, k, v); got {describe_value(result)}"
    )
    return tuple(as_tensor(r, name) for r, name in zip(result, ("q", "k", "v")))


def linear(t, params, name):
    return F.linear(t, params[f"{name}.weight"], params[f"{name}.bias"])


def inputs(seed: int, batch: int, len_q: int, len_k: int, d_model: int, d_context: int):
    g = generator(seed)
    return torch.randn(batch, len_q, d_model, generator=g), torch.randn(batch, len_k, d_context, generator=g)


@pytest.mark.task("project_qkv")
class TestProjectQKV:
    @pytest.mark.points(1)
    def test_shapes_for_a_source_of_another_length_and_width(self, student):
        """q has the target's length, k and v the source's, all d_model wide (len_q ≠ len_k, d_model ≠ d_context)"""
        x, context = inputs(1, 2, 3, 5, 6, 10)
        params = state(reference_layer(6, 10, seed=1))
        q, k, v = projections(student, x, context, params)
        mistake = projection_mistake(x, context, params, q, k, v)
        assert q.shape == (2, 3, 6), (
            f"for x (2, 3, 6) q should be (batch, len_q, d_model) = (2, 3, 6), got {tuple(q.shape)}"
            + hint(mistake, ": the queries come from x, through q_proj")
        )
        assert k.shape == (2, 5, 6) and v.shape == (2, 5, 6), (
            f"for a context (2, 5, 10) k and v should be (batch, len_k, d_model) = (2, 5, 6), got {tuple(k.shape)} "
            f"and {tuple(v.shape)}" + hint(mistake, ": the keys and values come from the context")
        )

    @pytest.mark.points(1)
    def test_queries_are_the_projected_target(self, student):
        """q = x @ W_qᵀ + b_q: the target through q_proj"""
        x, context = inputs(2, 2, 4, 7, 8, 5)
        params = state(reference_layer(8, 5, seed=2))
        q, k, v = projections(student, x, context, params)
        assert close(q, linear(x, params, "q_proj")), (
            "q differs from x @ q_proj.weight.T + q_proj.bias"
            + hint(projection_mistake(x, context, params, q, k, v))
        )

    @pytest.mark.points(1)
    def test_keys_and_values_are_the_projected_source(self, student):
        """k and v = context @ Wᵀ + b: the source through k_proj and v_proj"""
        x, context = inputs(3, 3, 2, 6, 4, 7)
        params = state(reference_layer(4, 7, seed=3))
        q, k, v = projections(student, x, context, params)
        mistake = projection_mistake(x, context, params, q, k, v)
        assert close(k, linear(context, params, "k_proj")), (
            "k differs from context @ k_proj.weight.T + k_proj.bias" + hint(mistake)
        )
        assert close(v, linear(context, params, "v_proj")), (
            "v differs from context @ v_proj.weight.T + v_proj.bias" + hint(mistake)
        )

    @pytest.mark.points(1)
    def test_source_of_the_same_shape_as_the_target(self, student):
        """keys and values come from the context even when it has the target's length and width"""
        x, context = inputs(4, 2, 5, 5, 5, 5)
        params = state(reference_layer(5, 5, seed=4))
        q, k, v = projections(student, x, context, params)
        mistake = projection_mistake(x, context, params, q, k, v)
        expected = (linear(x, params, "q_proj"), linear(context, params, "k_proj"), linear(context, params, "v_proj"))
        assert all(close(got, e) for got, e in zip((q, k, v), expected)), (
            "with a context of the same shape as x (2, 5, 5), (q, k, v) are wrong: the shapes no longer tell the "
            "two sequences apart" + hint(mistake, "; queries from x, keys and values from the context")
        )

    @pytest.mark.points(1)
    def test_biases_are_added(self, student):
        """each projection adds its bias"""
        x, context = inputs(5, 1, 3, 4, 6, 2)
        params = state(reference_layer(6, 2, seed=5))
        for name in ("q_proj", "k_proj", "v_proj"):
            params[f"{name}.weight"].zero_()  # then q, k and v are their biases, repeated on every token
        q, k, v = projections(student, x, context, params)
        for got, name in ((q, "q_proj"), (k, "k_proj"), (v, "v_proj")):
            expected = params[f"{name}.bias"].expand(got.shape[0], got.shape[1], -1) if got.dim() == 3 else None
            assert expected is not None and close(got, expected), (
                f"with zero weights, {name[0]} should be {name}.bias on every token"
                + hint(projection_mistake(x, context, params, q, k, v), ": add the bias, input @ weight.T + bias")
            )


# -- task 2: the layer ---------------------------------------------------------------------------


def layer_for(student, reference: MultiHeadAttention):
    """The student's CrossAttention, with the reference's weights."""
    layer = student.CrossAttention(reference.d_model, reference.d_context)
    try:
        layer.load_state_dict(state(reference))
    except StudentRaised as err:
        raise AssertionError(
            f"CrossAttention({reference.d_model}, {reference.d_context}) cannot load the weights of "
            f"MultiHeadAttention(num_heads=1): {err.text.splitlines()[0] if err.text else err}. Keep the __init__ "
            "as given (q_proj, k_proj, v_proj, out_proj)"
        ) from None
    return layer


def run_layer(layer, x, context, what: str):
    try:
        result = layer(x, context) if context is not None else layer(x)
    except StudentRaised as err:
        raise AssertionError(
            f"{err}. {what}: the queries come from self.q_proj(x), the keys and values from self.k_proj(context) "
            "and self.v_proj(context); transpose only the last two axes of k"
        ) from None
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"forward should return two tensors, (output, weights); got {describe_value(result)}"
    )
    return as_tensor(result[0], "the output"), as_tensor(result[1], "the weights")


def reference_result(reference, x, context):
    with torch.no_grad():
        out, w = reference(x, context=context, need_weights=True)
    return out, w[:, 0]


@pytest.mark.task("cross_attention")
class TestCrossAttention:
    @pytest.mark.points(1)
    def test_shapes_for_a_source_of_another_length_and_width(self, student):
        """output (batch, len_q, d_model), weights (batch, len_q, len_k), for len_q ≠ len_k and d_model ≠ d_context"""
        reference = reference_layer(6, 10, seed=11)
        x, context = inputs(11, 2, 3, 5, 6, 10)
        out, w = run_layer(layer_for(student, reference), x, context, "for x (2, 3, 6) and a context (2, 5, 10)")
        mistake = layer_mistake(state(reference), x, context, out, w)
        assert w.shape == (2, 3, 5), (
            f"the weights should be (batch, len_q, len_k) = (2, 3, 5), got {tuple(w.shape)}"
            + hint(mistake, ": one row per target token, one column per source token")
        )
        assert out.shape == (2, 3, 6), (
            f"the output should have the target's shape (batch, len_q, d_model) = (2, 3, 6), got {tuple(out.shape)}"
            + hint(mistake)
        )

    @pytest.mark.points(1)
    def test_weights_are_distributions_over_the_source(self, student):
        """each row of the weights is non-negative and sums to 1 over the source tokens"""
        reference = reference_layer(4, 3, seed=12)
        x, context = inputs(12, 2, 6, 4, 4, 3)
        out, w = run_layer(layer_for(student, reference), x, context, "for x (2, 6, 4) and a context (2, 4, 3)")
        assert w.shape == (2, 6, 4), f"the weights should be (batch, len_q, len_k) = (2, 6, 4), got {tuple(w.shape)}"
        assert bool((w >= 0).all()) and torch.allclose(w.sum(-1), torch.ones(2, 6), atol=1e-5), (
            "each row of the weights must be non-negative and sum to 1"
            + hint(layer_mistake(state(reference), x, context, out, w), ": softmax over the keys, the last axis")
        )

    @pytest.mark.points(1)
    def test_weights_match_the_library(self, student):
        """the weights equal softmax(q kᵀ / √d_model), as MultiHeadAttention(num_heads=1) computes them"""
        reference = reference_layer(8, 5, seed=13)
        x, context = inputs(13, 3, 4, 6, 8, 5)
        out, w = run_layer(layer_for(student, reference), x, context, "for x (3, 4, 8) and a context (3, 6, 5)")
        _, expected = reference_result(reference, x, context)
        assert close(w, expected), (
            "the weights differ from MultiHeadAttention(num_heads=1)'s, softmax(q kᵀ / √d_model)"
            + hint(layer_mistake(state(reference), x, context, out, w))
        )

    @pytest.mark.points(1)
    def test_output_matches_the_library(self, student):
        """the output equals out_proj(weights @ v), as MultiHeadAttention(num_heads=1) computes it"""
        reference = reference_layer(6, 9, seed=14)
        x, context = inputs(14, 2, 5, 3, 6, 9)
        out, w = run_layer(layer_for(student, reference), x, context, "for x (2, 5, 6) and a context (2, 3, 9)")
        expected, _ = reference_result(reference, x, context)
        assert close(out, expected), (
            "the output differs from MultiHeadAttention(num_heads=1)'s, out_proj(weights @ v_proj(context))"
            + hint(layer_mistake(state(reference), x, context, out, w))
        )

    @pytest.mark.points(1)
    def test_source_of_the_same_shape_as_the_target(self, student):
        """keys and values come from the context even when it has the target's length and width"""
        reference = reference_layer(5, 5, seed=15)
        x, context = inputs(15, 2, 4, 4, 5, 5)
        out, w = run_layer(layer_for(student, reference), x, context, "for x and a context of the same shape")
        expected_out, expected_w = reference_result(reference, x, context)
        assert close(w, expected_w) and close(out, expected_out), (
            "with a context of the same shape as x (2, 4, 5) the layer gives wrong results, though the shapes are "
            "right" + hint(layer_mistake(state(reference), x, context, out, w),
                           ": queries from x, keys and values from the context")
        )

    @pytest.mark.points(1)
    def test_self_attention_when_context_is_none(self, student):
        """forward(x) with context=None is self-attention: context = x"""
        reference = reference_layer(6, 6, seed=16)
        x, _ = inputs(16, 2, 5, 1, 6, 6)
        out, w = run_layer(layer_for(student, reference), x, None, "for forward(x) without a context")
        expected_out, expected_w = reference_result(reference, x, None)
        assert w.shape == (2, 5, 5), (
            f"forward(x) on x (2, 5, 6) should give self-attention weights (2, 5, 5), got {tuple(w.shape)}: "
            "set context = x when it is None"
        )
        assert close(w, expected_w) and close(out, expected_out), (
            "forward(x) with context=None differs from self-attention, forward(x, x)"
            + hint(layer_mistake(state(reference), x, x, out, w), ": set context = x when it is None")
        )

    @pytest.mark.points(1)
    def test_one_target_token_at_a_time(self, student):
        """a single query (len_q = 1, as when decoding one token) over a batch of one"""
        reference = reference_layer(4, 6, seed=17)
        x, context = inputs(17, 1, 1, 7, 4, 6)
        out, w = run_layer(layer_for(student, reference), x, context, "for x (1, 1, 4) and a context (1, 7, 6)")
        expected_out, expected_w = reference_result(reference, x, context)
        assert w.shape == (1, 1, 7) and out.shape == (1, 1, 4), (
            f"for one target token and 7 source tokens expected output (1, 1, 4) and weights (1, 1, 7), got "
            f"{tuple(out.shape)} and {tuple(w.shape)}: keep the batch and length axes even when they are 1 (no "
            "squeeze)"
        )
        assert close(out, expected_out) and close(w, expected_w), (
            "for a single target token the results are wrong"
            + hint(layer_mistake(state(reference), x, context, out, w))
        )

    @pytest.mark.points(1)
    def test_wrong_widths_raise_value_error(self, student):
        """a target or a source of the wrong width, or context=None with d_context ≠ d_model, raises ValueError"""
        reference = reference_layer(4, 6, seed=18)
        layer = layer_for(student, reference)
        g = generator(18)
        cases = [
            ("x of width 5 for d_model = 4", (torch.randn(2, 3, 5, generator=g), torch.randn(2, 7, 6, generator=g))),
            ("a context of width 4 for d_context = 6", (torch.randn(2, 3, 4, generator=g),
                                                        torch.randn(2, 7, 4, generator=g))),
            ("context=None when d_context = 6 ≠ d_model = 4", (torch.randn(2, 3, 4, generator=g),)),
        ]
        for what, args in cases:
            try:
                layer(*args)
            except StudentRaised as err:
                assert err.is_a(ValueError), (
                    f"{what} should raise ValueError naming the shapes, not {err.type_name}: check the widths at the "
                    "start of forward"
                )
            else:
                raise AssertionError(f"{what} should raise ValueError naming the shapes; nothing was raised")


# -- task 3: shuffles ---------------------------------------------------------------------------


def shuffle_case(seed: int, perm_target: list[int] | None, perm_source: list[int] | None):
    """A layer's answer on (x, context) and on the shuffled inputs, and the permutations."""
    batch, len_q, len_k, d_model, d_context = 3, 5, 7, 6, 4
    reference = reference_layer(d_model, d_context, seed)
    x, context = inputs(seed, batch, len_q, len_k, d_model, d_context)
    pt = torch.tensor(perm_target) if perm_target else torch.arange(len_q)
    ps = torch.tensor(perm_source) if perm_source else torch.arange(len_k)
    original = reference_result(reference, x, context)
    shuffled = reference_result(reference, x[:, pt], context[:, ps])
    return original, shuffled, pt, ps


def prediction(student, original, pt, ps):
    output, weights = original
    try:
        result = student.predict_shuffled(output.clone(), weights.clone(), pt.clone(), ps.clone())
    except StudentRaised as err:
        raise AssertionError(
            f"{err}. For output (batch=3, len_q=5, d_model) and weights (3, 5, len_k=7): the batch axis (dim 0) does "
            "not move, perm_target (5 positions) indexes dim 1 of both, and perm_source (7 positions) only dim 2 "
            "of the weights"
        ) from None
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"predict_shuffled should return two tensors, (output, weights); got {describe_value(result)}"
    )
    return as_tensor(result[0], "the predicted output"), as_tensor(result[1], "the predicted weights")


# Permutations with no fixed point and unequal to their inverse: neither mistake can pass by luck.
PERM_TARGET = [2, 4, 1, 0, 3]
PERM_SOURCE = [3, 6, 0, 5, 1, 2, 4]


@pytest.mark.task("predict_shuffled")
class TestPredictShuffled:
    @pytest.mark.points(1)
    def test_target_shuffle_moves_the_output_rows(self, student):
        """shuffling the target shuffles the output rows the same way"""
        original, (out, _), pt, ps = shuffle_case(21, PERM_TARGET, None)
        got_out, got_w = prediction(student, original, pt, ps)
        assert close(got_out, out), (
            "with the target shuffled by perm_target (source unchanged) the predicted output is wrong"
            + hint(shuffle_mistake(*original, pt, ps, got_out, got_w),
                   ": row i of the new output is row perm_target[i] of the old one")
        )

    @pytest.mark.points(1)
    def test_source_shuffle_leaves_the_output_unchanged(self, student):
        """shuffling the source changes nothing in the output"""
        original, (out, _), pt, ps = shuffle_case(22, None, PERM_SOURCE)
        got_out, got_w = prediction(student, original, pt, ps)
        assert close(got_out, out), (
            "with only the source shuffled the output should not change: attention sums over the source tokens, "
            "whatever their order" + hint(shuffle_mistake(*original, pt, ps, got_out, got_w), "")
        )

    @pytest.mark.points(1)
    def test_target_shuffle_moves_the_weight_rows(self, student):
        """shuffling the target shuffles the rows of the weights"""
        original, (_, w), pt, ps = shuffle_case(23, PERM_TARGET, None)
        got_out, got_w = prediction(student, original, pt, ps)
        assert close(got_w, w), (
            "with the target shuffled by perm_target the predicted weights are wrong"
            + hint(shuffle_mistake(*original, pt, ps, got_out, got_w),
                   ": each target token keeps its row of weights, which moves with it")
        )

    @pytest.mark.points(1)
    def test_source_shuffle_moves_the_weight_columns(self, student):
        """shuffling the source shuffles the columns of the weights"""
        original, (_, w), pt, ps = shuffle_case(24, None, PERM_SOURCE)
        got_out, got_w = prediction(student, original, pt, ps)
        assert close(got_w, w), (
            "with the source shuffled by perm_source the predicted weights are wrong"
            + hint(shuffle_mistake(*original, pt, ps, got_out, got_w),
                   ": each source token keeps its weight, in a column that moves with it")
        )

    @pytest.mark.points(1)
    def test_both_shuffles_at_once(self, student):
        """both shuffles together, on a batch of 3 (the batch axis does not move)"""
        original, (out, w), pt, ps = shuffle_case(25, PERM_TARGET, PERM_SOURCE)
        got_out, got_w = prediction(student, original, pt, ps)
        assert close(got_out, out) and close(got_w, w), (
            "with both sequences shuffled the prediction is wrong"
            + hint(shuffle_mistake(*original, pt, ps, got_out, got_w),
                   ": the output follows perm_target; the weights' rows follow perm_target and their columns "
                   "perm_source; index the sequence axes, not the batch axis")
        )


# -- task 4: entropy ----------------------------------------------------------------------------


def reference_entropy(w: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(w.double(), w.double()).sum(-1)


def entropy(student, w: torch.Tensor) -> torch.Tensor:
    return as_tensor(student.attention_entropy(w.clone()), "attention_entropy(weights)")


@pytest.mark.task("attention_entropy")
class TestAttentionEntropy:
    @pytest.mark.points(1)
    def test_uniform_rows_give_log_len_k(self, student):
        """uniform weights over len_k keys have entropy log(len_k), in nats"""
        w = torch.cat([torch.full((1, 6), 1 / 6), torch.tensor([[0.5, 0.5, 0, 0, 0, 0]])]).double()
        got = entropy(student, w)
        expected = torch.tensor([math.log(6), math.log(2)], dtype=torch.float64)
        assert got.shape == (2,) and torch.allclose(got.double(), expected, atol=ATOL), (
            f"rows uniform over 6 and over 2 keys should have entropy log 6 = {math.log(6):.4f} and log 2 = "
            f"{math.log(2):.4f}, got {[round(v, 4) for v in got.double().flatten().tolist()]}"
            + hint(entropy_mistake(w, got))
        )

    @pytest.mark.points(1)
    def test_one_hot_rows_give_zero_not_nan(self, student):
        """a row with all its weight on one key has entropy 0, not nan"""
        w = torch.eye(4)[[2, 0, 3]]
        got = entropy(student, w)
        assert bool(torch.isfinite(got).all()), (
            "one-hot weights give nan: 0 · log 0 is 0 · -inf = nan in floating point; use torch.special.xlogy(w, w), "
            "which is 0 where w is 0"
        )
        assert got.shape == (3,) and torch.allclose(got.double(), torch.zeros(3, dtype=torch.float64), atol=ATOL), (
            f"one-hot rows have entropy 0, got {got.tolist()}" + hint(entropy_mistake(w, got))
        )

    @pytest.mark.points(1)
    def test_matches_the_formula_on_batched_weights(self, student):
        """one entropy per query, for weights (batch, heads, len_q, len_k)"""
        g = generator(31)
        w = torch.softmax(2.0 * torch.randn(2, 3, 4, 5, generator=g), dim=-1)
        got = entropy(student, w)
        assert got.shape == (2, 3, 4), (
            f"for weights (batch, heads, len_q, len_k) = (2, 3, 4, 5) expected one entropy per query, shape "
            f"(2, 3, 4), got {tuple(got.shape)}: sum over the keys only (dim=-1)"
        )
        assert torch.allclose(got.double(), reference_entropy(w), atol=ATOL), (
            "the entropies differ from -Σ w log w over the keys" + hint(entropy_mistake(w, got))
        )

    @pytest.mark.points(1)
    def test_fully_masked_rows_give_zero(self, student):
        """a query whose keys are all masked (a row of zeros) has entropy 0"""
        g = generator(32)
        w = torch.softmax(torch.randn(3, 4, generator=g), dim=-1)
        w[1] = 0.0
        got = entropy(student, w)
        masked_row_nan = got.shape == (3,) and bool(torch.isnan(got[1])) and bool(torch.isfinite(got[[0, 2]]).all())
        assert not masked_row_nan, (
            "a row of zeros (a fully masked query) gives nan, though the other rows are fine: no division by the "
            "row's sum (0 / 0) or its max is needed; -Σ xlogy(w, w) is 0 for a row of zeros"
        )
        assert got.shape == (3,) and bool(torch.isfinite(got).all()) and torch.allclose(
            got.double(), reference_entropy(w), atol=ATOL
        ), (
            "a row of zeros (a fully masked query) should have entropy 0 and the others their usual value, got "
            f"{[round(v, 4) for v in got.double().flatten().tolist()]}" + hint(entropy_mistake(w, got))
        )

    @pytest.mark.points(1)
    def test_does_not_modify_its_input(self, student):
        """attention_entropy leaves its input tensor unchanged"""
        w = torch.eye(3)[[1, 0, 2]] * 0.5 + 0.5 / 3
        w[0] = torch.tensor([1.0, 0.0, 0.0])
        _, args, _ = call_with_args(student.attention_entropy, w.clone())
        assert torch.equal(torch.as_tensor(args[0]), w), (
            "attention_entropy changed the tensor it was given: an in-place operation (w[w == 0] = ..., clamp_, "
            "+=) modifies the caller's weights; work on a new tensor"
        )


# -- task 5: two sources ------------------------------------------------------------------------


def two_sources(student, x, image, text, params):
    result = student.two_source_attention(x, image, text, params)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"two_source_attention should return two tensors, (output, weights); got {describe_value(result)}"
    )
    return as_tensor(result[0], "the output"), as_tensor(result[1], "the weights")


def two_source_case(seed: int, batch=2, len_q=4, len_image=6, len_text=3, d_model=8, d_image=10, d_text=5):
    g = generator(seed)
    x = torch.randn(batch, len_q, d_model, generator=g)
    image, text = torch.randn(batch, len_image, d_image, generator=g), torch.randn(batch, len_text, d_text, generator=g)
    return x, image, text, two_source_params(d_model, d_image, d_text, seed=seed + 1)


@pytest.mark.task("two_source_attention")
class TestTwoSourceAttention:
    @pytest.mark.points(1)
    def test_shapes(self, student):
        """the weights cover the keys of both sources, the output has the target's shape"""
        x, image, text, params = two_source_case(80)
        out, w = two_sources(student, x, image, text, params)
        assert tuple(w.shape) == (2, 4, 9) and tuple(out.shape) == (2, 4, 8), (
            f"for 4 queries over 6 image and 3 text tokens expected weights (2, 4, 9) and output (2, 4, 8), got "
            f"{tuple(w.shape)} and {tuple(out.shape)}" + hint(two_source_mistake(x, image, text, params, out, w))
        )

    @pytest.mark.points(2)
    def test_one_softmax_over_both_sources(self, student):
        """the keys of the image and of the text compete in one softmax"""
        x, image, text, params = two_source_case(81)
        out, w = two_sources(student, x, image, text, params)
        expected_out, expected_w = two_source_reference(x, image, text, params)
        assert close(w, expected_w) and close(out, expected_out), (
            "the weights over the two sources are wrong"
            + hint(two_source_mistake(x, image, text, params, out, w),
                   ": project each source with its own k_ and v_ weights, concatenate along the length axis, "
                   "one softmax over all the keys, scaled by √d_model")
        )

    @pytest.mark.points(1)
    def test_image_keys_come_first(self, student):
        """the weights list the image's keys first, then the text's"""
        x, image, text, params = two_source_case(82, len_image=2, len_text=5, d_image=3, d_text=7)
        _, w = two_sources(student, x, image, text, params)
        _, expected_w = two_source_reference(x, image, text, params)
        assert close(w, expected_w), (
            "the weights are not in the order (image keys, text keys)"
            + hint(two_source_mistake(x, image, text, params, None, w))
        )

    @pytest.mark.points(1)
    def test_a_one_token_source(self, student):
        """a text of a single token is one more key, not a broadcast"""
        x, image, text, params = two_source_case(83, len_q=3, len_image=4, len_text=1)
        out, w = two_sources(student, x, image, text, params)
        expected_out, expected_w = two_source_reference(x, image, text, params)
        assert close(w, expected_w) and close(out, expected_out), (
            "with a text of one token the result is wrong" + hint(two_source_mistake(x, image, text, params, out, w))
        )

