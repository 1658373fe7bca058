"""Hidden tests of exercise 03, multi-head attention.

Each test probes one property on seeded inputs. Splitting and merging are tested with
``len ≠ head_dim`` (where a wrong transpose changes the shape) and with ``len == head_dim``
(where it does not), on inputs whose every entry says which token and feature it came from.
Multi-head attention is graded with the library's ``split_heads`` and ``merge_heads`` in place
of the student's (``substitute``), so that a broken task 1 or 2 costs only its own points.
The converter is graded by loading its result into ``course_lib.MultiHeadAttention`` and
comparing with ``torch.nn.MultiheadAttention``.
``tests/exercises/mutants_03_multi_head_attention.py`` lists the mistakes these tests must
catch; ``tests/grading/test_mutants.py`` proves that they do.
"""

import numpy as np
import pytest
import torch

from course_lib import MultiHeadAttention
from course_lib import merge_heads as reference_merge
from course_lib import split_heads as reference_split
from course_lib.checks import (
    attention_error_hint,
    conversion_mistake,
    merge_heads_mistake,
    multi_head_mistake,
    split_mistake,
)
from course_lib.checks import describe as describe_value
from course_lib.checks.ex03 import (
    BIAS_KEYS,
    EXPECTED_KEYS,
    gqa_mistake,
    gqa_reference,
    multi_head_reference,
    random_torch_mha,
)
from course_lib.grading import StudentRaised, substitute

NOTEBOOK_RUNS_POINTS = 1
ATOL = 1e-5



@pytest.fixture(autouse=True)
def _one_thread():
    """The grader's own torch work runs on one thread. Its tensors are tiny, and a process whose OpenMP thread
    pool has started hangs in any forked child that uses torch: the course's test suite grades solutions and
    mutants in processes forked from the pytest process that runs these tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

def as_tensor(value, what: str) -> torch.Tensor:
    """The student's result as a tensor, or a failed assertion saying what it was."""
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number):
        value = torch.from_numpy(value)
    assert isinstance(value, torch.Tensor), f"{what} should be a tensor, got {describe_value(value)}"
    return value


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return tuple(got.shape) == tuple(expected.shape) and bool(
        torch.allclose(got.double(), expected.double(), atol=ATOL)
    )


def hint(text: str | None, default: str = "") -> str:
    return f": {text}" if text else default


def numbered(batch: int, length: int, d_model: int) -> torch.Tensor:
    """``x[b, i, f] = 1000·b + 100·i + f``: every entry says which sequence, token and feature it is."""
    return (
        1000.0 * torch.arange(batch)[:, None, None]
        + 100.0 * torch.arange(length)[None, :, None]
        + torch.arange(d_model)[None, None, :]
    )


# -- task 1: split_heads ----------------------------------------------------------------------


def split(student, x: torch.Tensor, num_heads: int) -> torch.Tensor:
    try:
        got = student.split_heads(x.clone(), num_heads)
    except StudentRaised as err:
        raise AssertionError(
            f"{err}. For x {tuple(x.shape)} and {num_heads} heads: view the last axis as (num_heads, head_dim), "
            "then transpose(1, 2)"
        ) from None
    return as_tensor(got, f"split_heads(x, {num_heads})")


@pytest.mark.task("split_heads")
class TestSplitHeads:
    @pytest.mark.points(1)
    def test_shape(self, student):
        """(batch, len, d_model) becomes (batch, num_heads, len, head_dim); len, heads and head_dim all differ"""
        x = numbered(3, 5, 12)  # 3 heads of width 4
        got = split(student, x, 3)
        assert tuple(got.shape) == (3, 3, 5, 4), (
            f"split_heads of x (batch=3, len=5, d_model=12) into 3 heads should be (batch, num_heads, len, "
            f"head_dim) = (3, 3, 5, 4), got {tuple(got.shape)}" + hint(split_mistake(x, 3, got))
        )

    @pytest.mark.points(1)
    def test_each_head_gets_its_own_features_of_every_token(self, student):
        """head h holds features h·head_dim … (h+1)·head_dim − 1 of every token"""
        x = numbered(2, 5, 12)
        got = split(student, x, 3)
        assert close(got, reference_split(x, 3)), (
            "head h should hold features h·head_dim … (h+1)·head_dim − 1 of every token, in token order"
            + hint(split_mistake(x, 3, got))
        )

    @pytest.mark.points(1)
    def test_len_equal_to_head_dim(self, student):
        """the heads are right when len == head_dim, where a wrong transpose keeps the shape"""
        x = numbered(2, 4, 8)  # 2 heads of width 4, 4 tokens
        got = split(student, x, 2)
        assert close(got, reference_split(x, 2)), (
            "for x (2, 4, 8) and 2 heads (len == head_dim == 4) the heads are wrong, though the shape may be right"
            + hint(split_mistake(x, 2, got), ": transpose the heads and the tokens, axes 1 and 2")
        )

    @pytest.mark.points(1)
    def test_many_heads_of_width_one(self, student):
        """d_model heads of width 1, and one head of width d_model"""
        x = numbered(1, 3, 6)
        for heads in (6, 1):
            got = split(student, x, heads)
            expected = reference_split(x, heads)
            assert close(got, expected), (
                f"split_heads(x, {heads}) for x (1, 3, 6) is wrong"
                + (f" (expected shape {tuple(expected.shape)}, got {tuple(got.shape)})" if got.shape != expected.shape
                   else "")
                + hint(split_mistake(x, heads, got), ": head_dim = d_model // num_heads")
            )

    @pytest.mark.points(1)
    def test_indivisible_width_raises_value_error(self, student):
        """split_heads raises ValueError when num_heads does not divide d_model"""
        with pytest.raises(StudentRaised) as err:
            student.split_heads(numbered(2, 3, 10), 4)
        assert err.value.is_a(ValueError), (
            f"d_model = 10 with 4 heads should raise ValueError naming the shape, not {err.value.type_name}: check "
            "d_model % num_heads before the view"
        )


# -- task 2: merge_heads ----------------------------------------------------------------------


def merge(student, x: torch.Tensor) -> torch.Tensor:
    try:
        got = student.merge_heads(x.clone())
    except StudentRaised as err:
        raise AssertionError(
            f"{err}. For x (batch, heads, len, head_dim) = {tuple(x.shape)}: transpose(1, 2), then reshape (view "
            "refuses the transposed tensor, which is not contiguous)"
        ) from None
    return as_tensor(got, "merge_heads(x)")


@pytest.mark.task("merge_heads")
class TestMergeHeads:
    @pytest.mark.points(1)
    def test_shape(self, student):
        """(batch, num_heads, len, head_dim) becomes (batch, len, num_heads · head_dim)"""
        x = torch.randn(3, 2, 5, 4, generator=torch.Generator().manual_seed(40))
        got = merge(student, x)
        assert tuple(got.shape) == (3, 5, 8), (
            f"merge_heads of (batch=3, heads=2, len=5, head_dim=4) should be (batch, len, num_heads · head_dim) = "
            f"(3, 5, 8), got {tuple(got.shape)}" + hint(merge_heads_mistake(x, got))
        )

    @pytest.mark.points(1)
    def test_inverts_split_heads(self, student):
        """merge_heads(split_heads(x)) == x, for 3 heads and 5 tokens"""
        x = numbered(2, 5, 12)
        heads = reference_split(x, 3).contiguous()
        got = merge(student, heads)
        assert close(got, x), (
            "merge_heads(split_heads(x)) should give x back" + hint(merge_heads_mistake(heads, got))
        )

    @pytest.mark.points(1)
    def test_each_row_is_one_token(self, student):
        """row i of the result holds token i's features only, also when len == head_dim"""
        tokens = torch.arange(4.0)[None, :, None].expand(2, 4, 8)  # every feature of token i is i
        heads = reference_split(tokens, 2).contiguous()  # len == head_dim == 4
        got = merge(student, heads)
        assert close(got, tokens), (
            "row i of the merged tensor should hold token i's features from every head; yours mixes tokens"
            + hint(merge_heads_mistake(heads, got), ": transpose(1, 2), then reshape")
        )

    @pytest.mark.points(1)
    def test_one_token_many_heads(self, student):
        """merging works for one token (decoding) and for many heads of width one"""
        for shape in [(2, 4, 1, 3), (1, 6, 3, 1)]:
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(41))
            got = merge(student, x)
            expected = reference_merge(x)
            assert close(got, expected), (
                f"merge_heads of a {shape} tensor should put each token's heads side by side, "
                + (f"shape {tuple(expected.shape)}, got {tuple(got.shape)}" if got.shape != expected.shape
                   else "but it gives wrong values")
                + hint(merge_heads_mistake(x, got))
            )


# -- task 3: multi-head attention ---------------------------------------------------------------


def qkv(seed: int, batch: int, len_q: int, len_k: int, d_model: int, d_v: int, scale: float = 1.5):
    g = torch.Generator().manual_seed(seed)
    return (
        scale * torch.randn(batch, len_q, d_model, generator=g),
        scale * torch.randn(batch, len_k, d_model, generator=g),
        torch.randn(batch, len_k, d_v, generator=g),
    )


def attention(student, query, key, value, num_heads):
    """``(output, weights)`` from the student's function, with the library's split_heads and merge_heads."""
    with (
        substitute(student, "split_heads", "course_lib.split_heads"),
        substitute(student, "merge_heads", "course_lib.merge_heads"),
    ):
        try:
            result = student.multi_head_attention(query, key, value, num_heads)
        except StudentRaised as err:
            hint = attention_error_hint(
                err.type_name, err.text, reference_split(query, num_heads), reference_split(key, num_heads)
            )
            raise AssertionError(
                f"{err}. For query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)} and "
                f"{num_heads} heads: "
                + (hint or "split each with split_heads, attend within each head, merge with merge_heads")
            ) from None
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"multi_head_attention should return two tensors, (output, weights); got {describe_value(result)}"
    )
    return as_tensor(result[0], "the output"), as_tensor(result[1], "the weights")


@pytest.mark.task("multi_head_attention")
class TestMultiHeadAttention:
    @pytest.mark.points(1)
    def test_shapes(self, student):
        """output (batch, len_q, d_v) and weights (batch, num_heads, len_q, len_k), with len_q ≠ len_k"""
        query, key, value = qkv(50, 2, 3, 7, 12, 12)
        out, w = attention(student, query, key, value, 3)
        mistake = multi_head_mistake(query, key, value, 3, out, w)
        assert tuple(w.shape) == (2, 3, 3, 7), (
            f"for 3 heads, 3 queries and 7 keys the weights should be (batch, num_heads, len_q, len_k) = "
            f"(2, 3, 3, 7), got {tuple(w.shape)}" + hint(mistake, ": one (len_q, len_k) map per head")
        )
        assert tuple(out.shape) == (2, 3, 12), (
            f"the output should be (batch, len_q, d_v) = (2, 3, 12), got {tuple(out.shape)}"
            + hint(mistake, ": merge the heads with merge_heads")
        )

    @pytest.mark.points(1)
    def test_weights_are_distributions_over_the_keys(self, student):
        """each head's weights are non-negative and sum to 1 over the keys"""
        query, key, value = qkv(51, 2, 6, 4, 8, 8)
        out, w = attention(student, query, key, value, 2)
        assert tuple(w.shape) == (2, 2, 6, 4), (
            f"the weights should be (batch, num_heads, len_q, len_k) = (2, 2, 6, 4), got {tuple(w.shape)}"
            + hint(multi_head_mistake(query, key, value, 2, out, w))
        )
        assert bool((w >= 0).all()) and torch.allclose(w.sum(-1), torch.ones(2, 2, 6), atol=1e-5), (
            "each head's weights must be non-negative and sum to 1 over the keys"
            + hint(multi_head_mistake(query, key, value, 2, out, w), ": softmax over the last axis (dim=-1)")
        )

    @pytest.mark.points(1)
    def test_each_head_is_scaled_by_sqrt_head_dim(self, student):
        """the weights are softmax(q kᵀ / √head_dim) per head"""
        query, key, value = qkv(52, 2, 5, 6, 16, 16)
        out, w = attention(student, query, key, value, 4)
        _, expected = multi_head_reference(query, key, value, 4)
        assert close(w, expected), (
            "the weights differ from each head's softmax(q kᵀ / √head_dim)"
            + hint(multi_head_mistake(query, key, value, 4, out, w))
        )

    @pytest.mark.points(1)
    def test_output_matches_the_formula(self, student):
        """the output is the heads' weights @ v, merged"""
        query, key, value = qkv(53, 3, 4, 5, 12, 12)
        out, w = attention(student, query, key, value, 2)
        expected, _ = multi_head_reference(query, key, value, 2)
        assert close(out, expected), (
            "the output differs from merge_heads(weights @ v)" + hint(multi_head_mistake(query, key, value, 2, out, w))
        )

    @pytest.mark.points(1)
    def test_values_of_another_width(self, student):
        """values d_v wide, d_v ≠ d_model, give an output d_v wide"""
        query, key, value = qkv(54, 2, 3, 5, 8, 6)
        out, w = attention(student, query, key, value, 2)
        expected, _ = multi_head_reference(query, key, value, 2)
        assert tuple(out.shape) == (2, 3, 6), (
            f"for values of width d_v = 6 (d_model = 8) the output should be (batch, len_q, d_v) = (2, 3, 6), got "
            f"{tuple(out.shape)}" + hint(multi_head_mistake(query, key, value, 2, out, w),
                                          ": take the output's width from the values, or let merge_heads do it")
        )
        assert close(out, expected), (
            "for values of width d_v = 6 (d_model = 8) the output is wrong"
            + hint(multi_head_mistake(query, key, value, 2, out, w))
        )

    @pytest.mark.points(1)
    def test_one_head_is_plain_attention(self, student):
        """with one head, multi-head attention is plain scaled dot-product attention"""
        query, key, value = qkv(55, 2, 4, 3, 6, 6)
        out, w = attention(student, query, key, value, 1)
        expected_out, expected_w = multi_head_reference(query, key, value, 1)
        assert close(out, expected_out) and close(w, expected_w), (
            "with num_heads = 1 the result should be softmax(q kᵀ / √d_model) v, weights (batch, 1, len_q, len_k)"
            + hint(multi_head_mistake(query, key, value, 1, out, w))
        )


# -- task 4: from_torch_state_dict -----------------------------------------------------------------


def convert(student, mha: torch.nn.MultiheadAttention) -> dict:
    state = {k: t.detach().clone() for k, t in mha.state_dict().items()}
    try:
        got = student.from_torch_state_dict(state)
    except StudentRaised as err:
        raise AssertionError(
            f"{err}. This layer's state dict has the keys {sorted(state)}: in_proj_weight when kdim = embed_dim, "
            "q_proj_weight, k_proj_weight and v_proj_weight otherwise; no in_proj_bias when bias=False"
        ) from None
    assert isinstance(got, dict) and all(isinstance(k, str) for k in got), (
        f"from_torch_state_dict should return a dict from names to tensors; got {describe_value(got)}"
    )
    return got


def loaded(mha: torch.nn.MultiheadAttention, converted: dict) -> MultiHeadAttention:
    """course_lib's layer with the converted weights, or a failed assertion saying why it cannot load them."""
    layer = MultiHeadAttention(mha.embed_dim, mha.num_heads, d_context=mha.kdim, bias=mha.in_proj_bias is not None)
    try:
        layer.load_state_dict({k: torch.as_tensor(v) for k, v in converted.items()})
    except (RuntimeError, TypeError) as err:
        raise AssertionError(
            "MultiHeadAttention cannot load the converted weights: "
            + (conversion_mistake(mha.state_dict(), converted) or str(err).splitlines()[-1].strip()[:300])
        ) from None
    return layer.eval()


def same_outputs(mha: torch.nn.MultiheadAttention, layer: MultiHeadAttention, seed: int) -> bool:
    g = torch.Generator().manual_seed(seed)
    y, src = torch.randn(2, 3, mha.embed_dim, generator=g), torch.randn(2, 5, mha.kdim, generator=g)
    with torch.no_grad():
        expected, expected_w = mha(y, src, src, average_attn_weights=False)
        out, w = layer(y, context=src, need_weights=True)
    return close(out, expected) and close(w, expected_w)


@pytest.mark.task("from_torch_state_dict")
class TestFromTorchStateDict:
    @pytest.mark.points(1)
    def test_keys(self, student):
        """the result has the eight names of the course's layer"""
        mha = random_torch_mha(8, 2, seed=60)
        got = convert(student, mha)
        assert set(got) == set(EXPECTED_KEYS + BIAS_KEYS), (
            f"the converted state dict should have the keys {sorted(EXPECTED_KEYS + BIAS_KEYS)}, got {sorted(got)}"
            + hint(conversion_mistake(mha.state_dict(), got))
        )

    @pytest.mark.points(1)
    def test_packed_weights_in_the_order_q_k_v(self, student):
        """in_proj_weight is cut into W_q, W_k, W_v, in that order"""
        mha = random_torch_mha(6, 3, seed=61)
        got = convert(student, mha)
        parts = mha.in_proj_weight.detach().chunk(3)
        ok = all(
            isinstance(got.get(f"{n}_proj.weight"), torch.Tensor) and close(got[f"{n}_proj.weight"], p)
            for n, p in zip("qkv", parts)
        )
        assert ok, (
            "q_proj.weight, k_proj.weight and v_proj.weight should be the three (d_model, d_model) blocks of "
            "in_proj_weight, from the top" + hint(conversion_mistake(mha.state_dict(), got))
        )

    @pytest.mark.points(1)
    def test_biases_in_the_order_q_k_v(self, student):
        """in_proj_bias is cut into b_q, b_k, b_v, in that order, and out_proj.bias is copied"""
        mha = random_torch_mha(6, 2, kdim=4, seed=62)
        got = convert(student, mha)
        parts = dict(zip("qkv", mha.in_proj_bias.detach().chunk(3)), out=mha.out_proj.bias.detach())
        ok = all(isinstance(got.get(f"{n}_proj.bias"), torch.Tensor) and close(got[f"{n}_proj.bias"], b)
                 for n, b in parts.items())
        assert ok, (
            "the biases are wrong: q_proj.bias, k_proj.bias and v_proj.bias are the three blocks of in_proj_bias, "
            "from the start, and out_proj.bias is copied" + hint(conversion_mistake(mha.state_dict(), got))
        )

    @pytest.mark.points(1)
    def test_packed_layer_gives_torchs_outputs(self, student):
        """a layer with kdim = embed_dim, converted, gives the same outputs and per-head weights as PyTorch's"""
        mha = random_torch_mha(8, 4, seed=63)
        got = convert(student, mha)
        assert same_outputs(mha, loaded(mha, got), seed=63), (
            "loaded with your converted weights, MultiHeadAttention differs from nn.MultiheadAttention"
            + hint(conversion_mistake(mha.state_dict(), got))
        )

    @pytest.mark.points(1)
    def test_separate_layout_for_a_wider_source(self, student):
        """a layer with kdim ≠ embed_dim (three separate matrices), converted, gives PyTorch's outputs"""
        mha = random_torch_mha(8, 2, kdim=5, seed=64)
        got = convert(student, mha)
        assert same_outputs(mha, loaded(mha, got), seed=64), (
            "for kdim = 5 ≠ embed_dim = 8, the converted layer differs from nn.MultiheadAttention"
            + hint(conversion_mistake(mha.state_dict(), got),
                   ": take W_q, W_k, W_v from q_proj_weight, k_proj_weight, v_proj_weight")
        )

    @pytest.mark.points(1)
    def test_layer_without_biases(self, student):
        """a layer built with bias=False converts to weights only, and gives PyTorch's outputs"""
        mha = random_torch_mha(6, 2, bias=False, seed=65)
        got = convert(student, mha)
        assert set(got) == set(EXPECTED_KEYS), (
            f"without biases the keys should be {sorted(EXPECTED_KEYS)}, got {sorted(got)}"
            + hint(conversion_mistake(mha.state_dict(), got))
        )
        assert same_outputs(mha, loaded(mha, got), seed=65), (
            "the converted layer without biases differs from nn.MultiheadAttention"
            + hint(conversion_mistake(mha.state_dict(), got))
        )

    @pytest.mark.points(1)
    def test_out_proj_is_copied(self, student):
        """out_proj.weight is copied as it is"""
        mha = random_torch_mha(6, 3, seed=66)
        got = convert(student, mha)
        w = got.get("out_proj.weight")
        assert isinstance(w, torch.Tensor) and close(w, mha.out_proj.weight.detach()), (
            "out_proj.weight should be nn.MultiheadAttention's out_proj.weight, unchanged (an ordinary nn.Linear)"
        )


# -- task 5: grouped-query attention ---------------------------------------------------------


def gqa_case(seed: int, batch: int, len_q: int, len_k: int, num_heads: int, num_kv_heads: int, head_dim: int,
             head_dim_v: int):
    g = torch.Generator().manual_seed(seed)
    query = 2 * torch.randn(batch, len_q, num_heads * head_dim, generator=g)
    key = 2 * torch.randn(batch, len_k, num_kv_heads * head_dim, generator=g)
    value = torch.randn(batch, len_k, num_kv_heads * head_dim_v, generator=g)
    return query, key, value


def gqa(student, query, key, value, num_heads, num_kv_heads):
    """``(output, weights)`` from the student's GQA, with the library's split_heads and merge_heads."""
    with (
        substitute(student, "split_heads", "course_lib.split_heads"),
        substitute(student, "merge_heads", "course_lib.merge_heads"),
    ):
        try:
            result = student.grouped_query_attention(query, key, value, num_heads, num_kv_heads)
        except StudentRaised as err:
            cause = attention_error_hint(
                err.type_name, err.text, reference_split(query, num_heads), reference_split(key, num_kv_heads)
            )
            raise AssertionError(
                f"{err}. For {num_heads} query heads and {num_kv_heads} key/value heads"
                + (f": {cause}" if cause else ": split the queries into num_heads heads and the keys and values into "
                   "num_kv_heads, then let each key/value head serve its group of query heads")
            ) from None
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"grouped_query_attention should return two tensors, (output, weights); got {describe_value(result)}"
    )
    return as_tensor(result[0], "the output"), as_tensor(result[1], "the weights")


@pytest.mark.task("grouped_query_attention")
class TestGroupedQueryAttention:
    @pytest.mark.points(1)
    def test_shapes(self, student):
        """6 query heads over 2 key/value heads give one map per query head and a merged output"""
        query, key, value = gqa_case(70, 2, 4, 7, 6, 2, 3, 5)
        out, w = gqa(student, query, key, value, 6, 2)
        assert tuple(w.shape) == (2, 6, 4, 7), (
            f"the weights should be (batch, num_heads, len_q, len_k) = (2, 6, 4, 7), got {tuple(w.shape)}: one "
            "map per query head" + hint(gqa_mistake(query, key, value, 6, 2, out, w))
        )
        assert tuple(out.shape) == (2, 4, 30), (
            f"the output should be (batch, len_q, num_heads · head_dim_v) = (2, 4, 30), got {tuple(out.shape)}"
        )

    @pytest.mark.points(2)
    def test_each_group_of_query_heads_shares_one_key_head(self, student):
        """query heads 0–2 read key/value head 0 and heads 3–5 head 1, in that order"""
        query, key, value = gqa_case(71, 2, 4, 7, 6, 2, 3, 5)
        out, w = gqa(student, query, key, value, 6, 2)
        expected_out, expected_w = gqa_reference(query, key, value, 6, 2)
        assert close(w, expected_w) and close(out, expected_out), (
            "with 6 query heads and 2 key/value heads the result differs from grouped-query attention"
            + hint(gqa_mistake(query, key, value, 6, 2, out, w),
                   ": query head h reads key/value head h // (num_heads // num_kv_heads)")
        )

    @pytest.mark.points(1)
    def test_one_key_value_head_is_multi_query_attention(self, student):
        """num_kv_heads = 1: every query head reads the same keys and values"""
        query, key, value = gqa_case(72, 1, 3, 5, 4, 1, 2, 2)
        out, w = gqa(student, query, key, value, 4, 1)
        expected_out, expected_w = gqa_reference(query, key, value, 4, 1)
        assert close(w, expected_w) and close(out, expected_out), (
            "with a single key/value head (multi-query attention) the result is wrong"
            + hint(gqa_mistake(query, key, value, 4, 1, out, w))
        )

    @pytest.mark.points(1)
    def test_as_many_key_value_heads_as_query_heads_is_multi_head_attention(self, student):
        """num_kv_heads = num_heads gives ordinary multi-head attention"""
        query, key, value = gqa_case(73, 2, 5, 3, 3, 3, 4, 2)
        out, w = gqa(student, query, key, value, 3, 3)
        expected_out, expected_w = multi_head_reference(query, key, value, 3)
        assert close(w, expected_w) and close(out, expected_out), (
            "with num_kv_heads = num_heads = 3 the result should be multi-head attention"
            + hint(gqa_mistake(query, key, value, 3, 3, out, w))
        )

    @pytest.mark.points(1)
    def test_indivisible_heads_raise_value_error(self, student):
        """num_kv_heads that does not divide num_heads raises ValueError"""
        query, key, value = gqa_case(74, 1, 2, 3, 6, 4, 2, 2)
        with (
            substitute(student, "split_heads", "course_lib.split_heads"),
            substitute(student, "merge_heads", "course_lib.merge_heads"),
        ):
            try:
                student.grouped_query_attention(query, key, value, 6, 4)
            except StudentRaised as err:
                assert err.is_a(ValueError), (
                    f"num_kv_heads = 4 does not divide num_heads = 6: raise ValueError naming both, not "
                    f"{err.type_name}"
                )
            else:
                raise AssertionError("num_kv_heads = 4 does not divide num_heads = 6: raise ValueError naming both")

