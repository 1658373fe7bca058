"""Hidden tests of exercise 07, sparse and latent cross-attention.

Each test probes one property on seeded inputs, so that each typical mistake loses its
own points, and its message names the concept (students see the message, never this
code). The references are ``course_lib.sparse`` (``band_mask``, ``block_layout``, ``LatentCrossAttention``,
``linear_attention``) and ``course_lib.complexity.attention_flops``, run in the grader's
process. ``tests/exercises/mutants_07_sparse_and_latent_attention.py`` lists the mistakes
these tests must catch; ``tests/grading/test_mutants.py`` proves that they do.
"""

import numpy as np
import pytest
import torch

from course_lib import padding_mask
from course_lib.checks import (
    band_flops_mistake,
    band_mask_mistake,
    bigbird_mask_mistake,
    keys_read,
    linear_attention_mistake,
    reference_bigbird_mask,
)
from course_lib.checks import describe as describe_value
from course_lib.checks.ex07 import reference_latent
from course_lib.complexity import attention_flops
from course_lib.grading import StudentRaised, keep, keep_attr, substitute
from course_lib.sparse import band_mask as reference_band_mask
from course_lib.sparse import linear_attention as reference_linear

NOTEBOOK_RUNS_POINTS = 1


def with_hint(message: str, hint: str | None) -> str:
    return f"{message}: {hint}" if hint else message


# -- task 1: the band mask -------------------------------------------------------------------------


def student_band(student, len_q: int, len_k: int, width: int):
    """``(what came back, the same as a numpy bool array)`` from the student's ``band_mask``."""
    got = student.band_mask(len_q, len_k, width)
    if isinstance(got, torch.Tensor):
        mask = got.numpy()
    else:
        mask = got
    assert isinstance(mask, np.ndarray) and (mask.dtype == bool or np.issubdtype(mask.dtype, np.number)), (
        f"band_mask({len_q}, {len_k}, {width}) should return a torch bool tensor, got {describe_value(got)}"
    )
    return got, mask != 0


def assert_band(student, len_q: int, len_k: int, width: int, property_: str) -> None:
    """The student's band equals the course's definition, or a message naming the first wrong query."""
    got, mask = student_band(student, len_q, len_k, width)
    expected = reference_band_mask(len_q, len_k, width).numpy()
    mistake = band_mask_mistake(len_q, len_k, width, got)
    assert mask.shape == expected.shape, with_hint(
        f"band_mask({len_q}, {len_k}, {width}) should have shape (len_q, len_k) = {expected.shape}, got {mask.shape}",
        mistake,
    )
    if not np.array_equal(mask, expected):
        i = int(np.flatnonzero((mask != expected).any(-1))[0])
        raise AssertionError(
            with_hint(
                f"{property_}: in band_mask({len_q}, {len_k}, {width}) query {i} should read "
                f"{keys_read(expected[i])}, got {keys_read(mask[i])}",
                mistake,
            )
        )


@pytest.mark.task("band_mask")
class TestBandMask:
    @pytest.mark.points(1)
    def test_shape_and_dtype(self, student):
        """band_mask returns a (len_q, len_k) bool tensor when len_q ≠ len_k"""
        got, mask = student_band(student, 5, 13, 3)
        mistake = band_mask_mistake(5, 13, 3, got)
        assert mask.shape == (5, 13), with_hint(
            f"for 5 queries and 13 keys the mask should be (len_q, len_k) = (5, 13), got {mask.shape}",
            mistake or "one row per query, one column per key",
        )
        assert got.dtype in (torch.bool, np.bool_), (
            f"the mask should have dtype bool (True = may attend), got {got.dtype}: comparisons such as "
            "(j >= start) & (j < start + width) give booleans; do not convert them to int or float"
        )

    @pytest.mark.points(1)
    def test_each_query_reads_width_consecutive_keys(self, student):
        """each query reads exactly `width` consecutive keys, fewer only where clipped at the ends"""
        for len_q, len_k, width in [(8, 8, 4), (6, 30, 6), (10, 25, 3)]:
            got, mask = student_band(student, len_q, len_k, width)
            assert mask.shape == (len_q, len_k), with_hint(
                f"band_mask({len_q}, {len_k}, {width}) should have shape {(len_q, len_k)}, got {mask.shape}",
                band_mask_mistake(len_q, len_k, width, got),
            )
            for i in range(len_q):
                idx = np.flatnonzero(mask[i])
                consecutive = idx.size > 0 and idx[-1] - idx[0] + 1 == idx.size
                clipped = consecutive and (idx[0] == 0 or idx[-1] == len_k - 1)
                # Wherever the window sits, it holds `width` keys unless it runs off an end of the source.
                if not consecutive or idx.size > width or (idx.size < width and not clipped):
                    raise AssertionError(
                        with_hint(
                            f"in band_mask({len_q}, {len_k}, {width}) query {i} reads {keys_read(mask[i])}: a window "
                            f"is one run of `width` = {width} consecutive keys, fewer only where it is clipped at the "
                            "ends of the source",
                            band_mask_mistake(len_q, len_k, width, got)
                            or "the window holds the keys start_i <= j < start_i + width: the end is excluded",
                        )
                    )

    @pytest.mark.points(1)
    def test_square_band(self, student):
        """with len_q == len_k the band is the diagonal band of the definition, odd and even widths"""
        assert_band(student, 11, 11, 5, "with len_q == len_k and width 5 the band is |i − j| <= 2")
        assert_band(student, 9, 9, 4, "with len_q == len_k and width 4 the window of query i is i−1..i+2")

    @pytest.mark.points(1)
    @pytest.mark.parametrize(
        "cases",
        [[(6, 24, 4), (10, 35, 5), (7, 30, 4)], [(12, 5, 2), (15, 7, 3), (10, 4, 1)]],
        ids=["len_q<len_k", "len_q>len_k"],
    )
    def test_follows_the_slope(self, student, cases):
        """the band follows the slope s = len_k / len_q, centred on (i + ½)·s − ½"""
        for len_q, len_k, width in cases:
            own_slice = " (width = s: each query reads its own slice [i·s, (i+1)·s))" if len_k == width * len_q else ""
            assert_band(student, len_q, len_k, width, f"the band must follow the slope s = {len_k}/{len_q}{own_slice}")

    @pytest.mark.points(1)
    def test_exact_at_ties(self, student):
        """the window starts are exact, also where (i + ½)·s − width/2 is a whole number"""
        for len_q, len_k, width in [(11, 25, 3), (14, 36, 4), (11, 29, 3), (13, 14, 2), (15, 33, 5)]:
            got, mask = student_band(student, len_q, len_k, width)
            expected = reference_band_mask(len_q, len_k, width).numpy()
            if mask.shape != expected.shape or np.array_equal(mask, expected):
                continue  # the shape has its own test
            i = np.arange(len_q)
            tie = ((2 * i + 1) * len_k - width * len_q) % (2 * len_q) == 0  # the start is a whole number
            wrong = (mask != expected).any(-1)
            first = int(np.flatnonzero(wrong)[0])
            where = f"in band_mask({len_q}, {len_k}, {width}) query {first} should read {keys_read(expected[first])}"
            where += f", got {keys_read(mask[first])}"
            if np.all(tie[wrong]):
                raise AssertionError(
                    f"{where}, a tie where (i + ½)·s − width/2 is a whole number and float rounding decides the "
                    "ceil: compute ceil(((2i + 1)·len_k − width·len_q) / (2·len_q)) with integers, as -((-a) // b)"
                )
            raise AssertionError(with_hint(where, band_mask_mistake(len_q, len_k, width, got)))


# -- task 2: the FLOPs of a band ---------------------------------------------------------------------


def student_flops(student, sizes: tuple, dim_v: int | None = None, global_tokens: int = 0):
    kwargs = {}
    if dim_v is not None:
        kwargs["dim_v"] = dim_v
    if global_tokens:
        kwargs["global_tokens"] = global_tokens
    with substitute(student, "band_mask", "course_lib.sparse.band_mask"):  # in case band_flops uses task 1
        result = student.band_flops(*sizes, **kwargs)
    assert isinstance(result, (tuple, list)) and len(result) == 3, (
        f"band_flops should return three values, (dense_flops, band_flops, saving); got {describe_value(result)}"
    )
    for value in result:
        assert isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool), (
            f"band_flops should return numbers, got {describe_value(result)}"
        )
    return result


def flops(b: int, h: int, lq: int, lk: int, d: int, dv: int | None = None) -> int:
    return attention_flops(b, h, lq, lk, d, dim_v=dv)


@pytest.mark.task("band_flops")
class TestBandFlops:
    @pytest.mark.points(1)
    def test_returns_int_counts_and_the_saving(self, student):
        """band_flops returns two int counts and the saving dense / band"""
        sizes = (1, 2, 16, 96, 8, 8)
        dense, band, saving = result = student_flops(student, sizes)
        assert isinstance(dense, (int, np.integer)) and isinstance(band, (int, np.integer)), (
            f"the FLOP counts should be ints, got {type(dense).__name__} and {type(band).__name__}: multiply "
            "integers, and avoid `/`, which gives a float"
        )
        assert band != 0 and abs(float(saving) - dense / band) <= 1e-9 * abs(dense / band), with_hint(
            f"the saving should be dense / band = {dense / band if band else float('nan'):.6g} (with your counts), "
            f"got {saving!r}",
            band_flops_mistake(sizes, None, 0, result),
        )

    @pytest.mark.points(1)
    def test_dense_count(self, student):
        """the dense count is 4·B·H·Lq·Lk·d: two products, 2 FLOPs per multiply-add"""
        sizes = (3, 5, 7, 19, 6, 8)
        result = student_flops(student, sizes)
        expected = flops(3, 5, 7, 19, 8)
        assert result[0] == expected, with_hint(
            f"dense attention with batch 3, 5 heads, Lq = 7, Lk = 19, d = 8 costs {expected:,} FLOPs, "
            f"got {result[0]:,}",
            band_flops_mistake(sizes, None, 0, result)
            or "Q Kᵀ costs 2·Lq·Lk·d per head and weights @ V 2·Lq·Lk·d_v, over every batch element and head",
        )

    @pytest.mark.points(1)
    def test_band_count_does_not_depend_on_len_k(self, student):
        """the band computes W = width slots per query, clipped or not, whatever len_k is"""
        for sizes in [(2, 3, 7, 19, 6, 8), (2, 3, 7, 190, 6, 8), (1, 1, 3, 4, 6, 8)]:
            b, h, lq, lk, w, d = sizes
            result = student_flops(student, sizes)
            expected = flops(b, h, lq, w, d)
            assert result[1] == expected, with_hint(
                f"with Lq = {lq}, Lk = {lk}, width {w} (batch {b}, {h} heads, d = {d}) band attention costs "
                f"{expected:,} FLOPs, got {result[1]:,}",
                band_flops_mistake(sizes, None, 0, result)
                or "the band is dense attention over `width` keys per query instead of len_k",
            )

    @pytest.mark.points(1)
    def test_global_tokens_are_extra_slots(self, student):
        """each global token adds one slot to every query's window"""
        sizes = (2, 3, 9, 40, 5, 8)
        result = student_flops(student, sizes, global_tokens=3)
        expected = flops(2, 3, 9, 3 + 5, 8)
        assert result[1] == expected, with_hint(
            f"with width 5 and 3 global tokens each query scores W = 8 keys: {expected:,} FLOPs, got {result[1]:,}",
            band_flops_mistake(sizes, None, 3, result) or "W = global_tokens + width slots per query",
        )
        assert result[0] == flops(2, 3, 9, 40, 8), (
            "global tokens change the band, not dense attention: dense attention reads all len_k keys anyway"
        )

    @pytest.mark.points(1)
    def test_values_of_another_size(self, student):
        """with d_v ≠ d the cost per score is 2·(d + d_v)"""
        sizes = (2, 3, 10, 50, 4, 8)
        result = student_flops(student, sizes, dim_v=20)
        expected = (flops(2, 3, 10, 50, 8, 20), flops(2, 3, 10, 4, 8, 20))
        hint = band_flops_mistake(sizes, 20, 0, result) or "weights @ V costs 2·Lq·Lk·d_v: use dim_v"
        assert result[0] == expected[0], with_hint(
            f"with d = 8 and d_v = 20 dense attention costs {expected[0]:,} FLOPs, got {result[0]:,}", hint
        )
        assert result[1] == expected[1], with_hint(
            f"with d = 8 and d_v = 20 band attention costs {expected[1]:,} FLOPs, got {result[1]:,}", hint
        )


# -- task 3: BigBird's pattern ------------------------------------------------------------------------


def assert_bigbird(student, len_q: int, len_k: int, bs: int, window: int, g: int, property_: str) -> np.ndarray:
    """The student's pattern equals the specification's, or a message naming the first wrong query."""
    what = f"bigbird_mask({len_q}, {len_k}, block_size={bs}, window={window}, num_global={g})"
    with substitute(student, "band_mask", "course_lib.sparse.band_mask"):  # task 1 graded on its own
        got = student.bigbird_mask(len_q, len_k, bs, window, g)
    mask = got.numpy() if isinstance(got, torch.Tensor) else got
    assert isinstance(mask, np.ndarray) and (mask.dtype == bool or np.issubdtype(mask.dtype, np.number)), (
        f"{what} should return a torch bool tensor, got {describe_value(got)}"
    )
    mask = mask != 0
    expected = reference_bigbird_mask(len_q, len_k, bs, window, g).numpy()
    mistake = bigbird_mask_mistake(len_q, len_k, bs, window, g, got)
    assert mask.shape == expected.shape, with_hint(
        f"{what} should have shape (len_q, len_k) = {expected.shape}, got {mask.shape}", mistake
    )
    if not np.array_equal(mask, expected):
        i = int(np.flatnonzero((mask != expected).any(-1))[0])
        raise AssertionError(
            with_hint(
                f"{property_}: in {what} query {i} should read {keys_read(expected[i])}, got {keys_read(mask[i])}",
                mistake,
            )
        )
    return mask


@pytest.mark.task("bigbird_mask")
class TestBigBirdMask:
    @pytest.mark.points(1)
    def test_band_of_blocks_follows_the_slope(self, student):
        """without global tokens: a band of window blocks, following num_k_blocks / num_q_blocks"""
        assert_bigbird(student, 12, 30, 3, 3, 0, "the band of blocks follows the slope of the block counts")

    @pytest.mark.points(1)
    def test_global_keys_are_read_by_every_query(self, student):
        """the first num_global keys are read by every query"""
        mask = assert_bigbird(student, 16, 24, 4, 1, 3, "global keys and queries")
        assert mask[:, :3].all(), "every query must read the first num_global keys (the global keys)"

    @pytest.mark.points(1)
    def test_global_queries_read_every_key(self, student):
        """the first num_global queries read every key (BigBird's global tokens go both ways)"""
        assert_bigbird(student, 20, 20, 4, 1, 2, "global queries read the whole source")

    @pytest.mark.points(1)
    def test_partial_last_blocks(self, student):
        """lengths that are no multiple of block_size: partial last blocks, the mask cut to (len_q, len_k)"""
        assert_bigbird(student, 13, 22, 4, 2, 1, "partial last blocks")

    @pytest.mark.points(1)
    def test_more_query_blocks_than_key_blocks(self, student):
        """len_q > len_k, odd sizes: the band of blocks and the global tokens together"""
        assert_bigbird(student, 27, 10, 2, 2, 1, "more query blocks than key blocks")

    @pytest.mark.points(1)
    def test_window_counts_blocks_not_tokens(self, student):
        """window counts key blocks per query block: each query reads whole blocks"""
        assert_bigbird(student, 16, 32, 4, 2, 0, "window counts blocks, not tokens")


# -- task 4: latent cross-attention ------------------------------------------------------------------


def latent_pair(student, d_model: int, heads: int, num_latents: int, d_context: int | None, seed: int):
    """The student's layer with the reference's weights loaded, and the reference itself."""
    reference = reference_latent(d_model, heads, num_latents, d_context, seed)
    layer = student.LatentCrossAttention(d_model, heads, num_latents, d_context=d_context)
    try:
        layer.load_state_dict(reference.state_dict())
    except StudentRaised as err:
        raise AssertionError(
            f"known weights could not be loaded into LatentCrossAttention ({err.text.splitlines()[0][:200]}): it "
            "must have exactly two attributes, `latents`, an nn.Parameter of shape (num_latents, d_model), and "
            "`attn`, a MultiHeadAttention(d_model, num_heads, d_context=d_context)"
        ) from None
    layer.eval()
    return layer, reference


def contexts(seed: int, batch: int, length: int, width: int) -> torch.Tensor:
    return torch.randn(batch, length, width, generator=torch.Generator().manual_seed(seed))


def as_tensor(value, what: str) -> torch.Tensor:
    assert isinstance(value, torch.Tensor) and value.is_floating_point(), (
        f"{what} should be a floating-point torch tensor, got {describe_value(value)}"
    )
    return value


@pytest.mark.task("latent_attention")
class TestLatentCrossAttention:
    @pytest.mark.points(1)
    def test_output_has_one_row_per_latent(self, student):
        """the output is (batch, num_latents, d_model): the latents ask, the source answers"""
        layer, _ = latent_pair(student, 12, 3, 4, None, seed=30)
        out = as_tensor(layer(contexts(31, 1, 9, 12)), "the output")
        hint = "the latents are the queries: one output row per latent, whatever the source's length"
        if tuple(out.shape) == (1, 9, 12):
            hint = (
                "that is one row per source token: the source attended to the latents. The latents must be the "
                "queries, self.attn(latents, context)"
            )
        assert tuple(out.shape) == (1, 4, 12), (
            f"4 latents reading a source of 9 tokens should give (batch, num_latents, d_model) = (1, 4, 12), got "
            f"{tuple(out.shape)}: {hint}"
        )

    @pytest.mark.points(1)
    def test_matches_the_reference_with_its_weights(self, student):
        """with the same weights, the output equals course_lib's LatentCrossAttention (d_context ≠ d_model)"""
        layer, reference = latent_pair(student, 16, 4, 5, 10, seed=32)
        context = contexts(33, 1, 7, 10)
        out = as_tensor(layer(context), "the output")
        expected = reference(context).detach()
        assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-5, rtol=1e-4), (
            f"with known weights the output differs from the reference's (got {describe_value(out, sums=False)}): "
            "the latents, the same for every source, are the queries of self.attn and the context its keys and "
            "values; use self.latents as they are, not new random numbers"
        )

    @pytest.mark.points(1)
    def test_each_source_of_a_batch_is_read_by_the_same_latents(self, student):
        """a batch of 3 sources gives what each source gives alone"""
        layer, reference = latent_pair(student, 16, 2, 3, 6, seed=34)
        context = contexts(35, 3, 5, 6)
        hint = "expand the latents over the batch: self.latents.expand(batch, -1, -1) is (batch, num_latents, d_model)"
        try:
            out = as_tensor(layer(context), "the output for a batch of 3")
        except StudentRaised as err:
            raise AssertionError(
                f"a batch of 3 sources raised {err.type_name} ({err.text.splitlines()[0][:200]}): {hint}"
            ) from None
        assert tuple(out.shape) == (3, 3, 16), (
            f"a batch of 3 sources should give (3, 3, 16), got {tuple(out.shape)}: {hint}"
        )
        expected = reference(context).detach()
        assert torch.allclose(out, expected, atol=1e-5, rtol=1e-4), (
            f"each source of a batch should be read by the same latents, as if it were alone: {hint}"
        )

    @pytest.mark.points(1)
    def test_padded_source_tokens_are_ignored(self, student):
        """with context_mask, padded source tokens change nothing"""
        layer, reference = latent_pair(student, 8, 2, 3, 5, seed=36)
        source = contexts(37, 1, 5, 5)
        padded = torch.cat([source, 10 * contexts(38, 1, 4, 5)], dim=1)  # 4 tokens of padding
        mask = padding_mask([5], 9)
        out = as_tensor(layer(padded, context_mask=mask), "the output with a context_mask")
        alone = reference(source).detach()
        assert out.shape == alone.shape and torch.allclose(out, alone, atol=1e-5, rtol=1e-4), (
            "a source of 5 tokens padded to 9 should give the same latents as the 5 tokens alone: pass "
            "context_mask on to self.attn, which then gives padded tokens no weight"
        )

    @pytest.mark.points(1)
    def test_latents_are_learned_parameters(self, student):
        """self.latents is an nn.Parameter that receives gradients"""
        layer, _ = latent_pair(student, 8, 2, 4, None, seed=39)
        state = layer.state_dict()
        assert "latents" in state and tuple(state["latents"].shape) == (4, 8), (
            "the module's state should hold `latents` of shape (num_latents, d_model) = (4, 8)"
        )
        out = keep(layer, contexts(40, 1, 6, 8))
        keep(keep(out.pow, 2).sum).backward()
        grad = keep_attr(layer, "latents").grad
        assert isinstance(grad, torch.Tensor) and grad.abs().sum() > 0, (
            "a loss on the output sends no gradient to self.latents: make them an nn.Parameter (not a buffer or "
            "a plain tensor), and use them in forward without .detach() or torch.no_grad()"
        )


# -- tasks 5 and 6: linear attention -------------------------------------------------------------------


def random_qkv(seed: int, batch: int, heads: int, len_q: int, len_k: int, d: int, dv: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, len_q, d, generator=g).to(dtype)
    k = torch.randn(batch, heads, len_k, d, generator=g).to(dtype)
    v = torch.randn(batch, heads, len_k, dv, generator=g).to(dtype)
    return q, k, v


def student_linear(student, name: str, q, k, v, key_mask=None) -> torch.Tensor:
    fn = getattr(student, name)
    out = fn(q, k, v) if key_mask is None else fn(q, k, v, key_mask=key_mask)
    return as_tensor(out, f"the output of {name}")


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return got.shape == expected.shape and torch.allclose(got.double(), expected.double(), atol=1e-5, rtol=1e-4)


def assert_matches_the_formula(student, name: str) -> None:
    q, k, v = random_qkv(50, 2, 3, 5, 9, 4, 7)
    q = 1.5 * q
    out = student_linear(student, name, q, k, v)
    expected = reference_linear(q, k, v)
    mistake = linear_attention_mistake(q, k, v, None, 1e-6, out)
    assert out.shape == expected.shape, with_hint(
        f"for query (2, 3, 5, 4), key (2, 3, 9, 4) and value (2, 3, 9, 7) the output should be "
        f"(batch, heads, len_q, dim_v) = (2, 3, 5, 7), got {tuple(out.shape)}",
        mistake,
    )
    assert close(out, expected), with_hint("the output differs from linear attention with φ = elu + 1", mistake)


def assert_padded_keys_are_ignored(student, name: str) -> None:
    q, k, v = random_qkv(51, 3, 2, 4, 8, 5, 3)
    mask = padding_mask([8, 3, 0], 8)
    k[1, :, 3:], v[1, :, 3:] = 5 * k[1, :, 3:], 50.0  # padding: whatever it holds must not matter
    out = student_linear(student, name, q, k, v, key_mask=mask)
    assert tuple(out.shape) == (3, 2, 4, 3), f"the output should be (3, 2, 4, 3), got {tuple(out.shape)}"
    mistake = linear_attention_mistake(q, k, v, mask, 1e-6, out)
    assert bool(torch.isfinite(out[:2]).all()), with_hint(
        "the output contains NaN or inf for sources with real keys", mistake
    )
    alone = reference_linear(q[1:2], k[1:2, :, :3], v[1:2, :, :3])
    assert close(out[1:2], alone), with_hint(
        "a source of 3 real keys padded to 8 should give what the 3 keys give alone",
        mistake or "zero the weights φ(q_i)·φ(k_j) of padded keys, in the sum over values and in the normaliser",
    )
    assert close(out[:1], reference_linear(q[:1], k[:1], v[:1])), "a source without padding came out wrong"
    assert bool(torch.isfinite(out[2]).all()) and bool((out[2] == 0).all()), (
        "a source whose keys are all padding should give zeros: its numerator is 0, and eps in the denominator "
        "keeps 0 / 0 from giving NaN"
    )


@pytest.mark.task("linear_explicit")
class TestLinearAttentionExplicit:
    name = "linear_attention_explicit"

    @pytest.mark.points(1)
    def test_matches_the_formula(self, student):
        """the output equals Σ_j φ(q_i)·φ(k_j) v_j / Σ_j φ(q_i)·φ(k_j), φ = elu + 1, with len_q ≠ len_k, d ≠ d_v"""
        assert_matches_the_formula(student, self.name)

    @pytest.mark.points(1)
    def test_padded_keys_are_ignored(self, student):
        """padded keys add nothing, and a source with no real key gives zeros, not NaN"""
        assert_padded_keys_are_ignored(student, self.name)

    @pytest.mark.points(1)
    def test_weights_are_positive(self, student):
        """each output is a weighted average of the values with positive weights (φ = elu + 1 > 0)"""
        q, k, v = random_qkv(52, 1, 4, 6, 10, 3, 5)
        q, k = 2 * q - 0.5, 2 * k - 0.5  # many negative entries, where elu alone is negative
        out = student_linear(student, self.name, q, k, v)
        low, high = v.amin(dim=-2, keepdim=True), v.amax(dim=-2, keepdim=True)
        inside = bool(((out >= low - 1e-5) & (out <= high + 1e-5)).all()) if out.shape == (1, 4, 6, 5) else False
        assert inside, with_hint(
            "some outputs lie outside the range of the values, so some weights are negative",
            linear_attention_mistake(q, k, v, None, 1e-6, out)
            or "φ(x) = elu(x) + 1 is positive; elu(x) alone is negative for x < 0",
        )

    @pytest.mark.points(1)
    def test_normalised_over_the_keys(self, student):
        """constant values come out unchanged: each query's weights sum to 1 over the keys"""
        q, k, _ = random_qkv(53, 2, 2, 7, 4, 6, 3)
        v = torch.full((2, 2, 4, 3), 2.5)
        out = student_linear(student, self.name, q, k, v)
        assert out.shape == (2, 2, 7, 3) and torch.allclose(out, torch.full_like(out, 2.5), atol=1e-4), with_hint(
            "with every value equal to 2.5 every output should be 2.5",
            linear_attention_mistake(q, k, v, None, 1e-6, out)
            or "divide by the normaliser Σ_j φ(q_i)·φ(k_j), a sum over the keys (the last axis of φ(Q)φ(K)ᵀ)",
        )


@pytest.mark.task("linear_attention")
class TestLinearAttention:
    name = "linear_attention"

    @pytest.mark.points(1)
    def test_equals_the_explicit_form(self, student):
        """the regrouped form equals φ(Q)φ(K)ᵀV / normaliser, with len_q ≠ len_k, d ≠ d_v"""
        assert_matches_the_formula(student, self.name)

    @pytest.mark.points(1)
    def test_padded_keys_do_not_leak_into_the_summary(self, student):
        """padded keys add nothing to φ(K)ᵀV nor to Σ φ(k_j); a source with no real key gives zeros"""
        assert_padded_keys_are_ignored(student, self.name)

    @pytest.mark.points(2)
    def test_linear_in_the_source_length(self, student):
        """50 000 queries over 50 000 keys fit in memory: no len_q × len_k tensor"""
        q, k, v = random_qkv(54, 1, 1, 50_000, 50_000, 4, 4)
        try:
            out = student_linear(student, self.name, q, k, v)
        except StudentRaised as err:
            if err.is_a(MemoryError) or "alloc" in err.text.lower() or "memory" in err.text.lower():
                raise AssertionError(
                    "with 50 000 queries and 50 000 keys linear_attention ran out of memory: it built a "
                    "len_q × len_k tensor (φ(Q)φ(K)ᵀ alone is 10 GB). Regroup: kv = φ(K)ᵀ V and z = Σ_j φ(k_j) "
                    "first, then φ(Q) kv / (φ(Q) z + eps)"
                ) from None
            raise
        assert close(out, reference_linear(q, k, v)), (
            "with 50 000 queries and keys the output differs from linear attention: check the regrouped form "
            "against the explicit one on small inputs"
        )

    @pytest.mark.points(1)
    def test_float64_is_computed_in_float64(self, student):
        """float64 inputs stay float64: equal to the float64 formula to 1e-12"""
        q, k, v = random_qkv(56, 2, 2, 6, 300, 5, 3, dtype=torch.float64)
        out = student_linear(student, self.name, q, k, v)
        assert out.dtype == torch.float64, (
            f"float64 inputs should give a float64 output, got {out.dtype}: only float16 and bfloat16 are computed "
            "in float32, and the result goes back to the input's dtype"
        )
        expected = reference_linear(q, k, v)
        assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-12, rtol=1e-12), (
            "float64 inputs give a result that differs from the float64 formula by more than 1e-12: upcast only "
            "float16 and bfloat16 to float32; .float() on float64 throws away half its digits"
        )

    @pytest.mark.points(1)
    def test_half_precision_over_a_long_source(self, student):
        """float16 inputs over 90 000 keys: computed in float32, returned in float16"""
        q, k, v = random_qkv(55, 1, 2, 5, 90_000, 4, 3, dtype=torch.float16)
        v = v + 1  # outputs near 1, so that a wrong 0 stands out
        out = student_linear(student, self.name, q, k, v)
        assert out.dtype == torch.float16, (
            f"float16 inputs should give a float16 output, got {out.dtype}: convert the result back with "
            "out.to(query.dtype)"
        )
        hint = (
            "over 90 000 keys Σ_j φ(k_j) is about 100 000, more than float16's largest number (65504): compute in "
            "float32 and convert the result back"
        )
        assert bool(torch.isfinite(out).all()), f"the float16 output contains NaN or inf: {hint}"
        expected = reference_linear(q, k, v)
        assert out.shape == expected.shape and torch.allclose(out.float(), expected.float(), atol=5e-3, rtol=5e-3), (
            f"the float16 output is wrong: {hint}"
        )
