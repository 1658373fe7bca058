"""Hidden tests of exercise 04, masking.

Each test probes one property on seeded random inputs, so that each typical mistake
loses its own points, and its message names the concept (students see the message,
never this code). Masks are compared in the grader's process against the library
(``course_lib.masks``, ``course_lib.scaled_dot_product_attention``), and the diagnoses
come from ``course_lib.checks.ex04``, so that a student reads the same explanation in
the notebook's self-check and here. Tests of task 4 replace the student's
``padding_mask`` and ``causal_mask`` by the library's (``substitute``), so that a broken
task 1 or 2 does not also fail task 4.
``tests/exercises/mutants_04_masking.py`` lists the mistakes these tests must catch;
``tests/grading/test_mutants.py`` proves that they do.
"""

import numpy as np
import pytest
import torch

from course_lib import MultiHeadAttention
from course_lib import causal_mask as reference_causal_mask
from course_lib import padding_mask as reference_padding_mask
from course_lib import scaled_dot_product_attention as reference_attention
from course_lib.checks import (
    as_bool_mask,
    causal_mask_mistake,
    cross_mask_mistake,
    difference,
    masked_attention_mistake,
    padding_mask_mistake,
    self_mask_mistake,
    torch_mask_mistake,
)
from course_lib.checks import describe as describe_value
from course_lib.checks.ex04 import left_padded_mistake, left_padded_reference
from course_lib.grading import StudentRaised, keep, substitute

NOTEBOOK_RUNS_POINTS = 1


def as_mask(value, what: str) -> np.ndarray:
    """The student's mask as a numpy bool array, or a failed assertion that says what it was."""
    mask = as_bool_mask(value)
    assert not isinstance(mask, str), f"{what}: {mask}"
    return mask


def explain(hint: str | None, default: str = "") -> str:
    return f": {hint}" if hint else default


# -- task 1: padding_mask ---------------------------------------------------------------------


@pytest.mark.task("padding_mask")
class TestPaddingMask:
    @pytest.mark.points(1)
    def test_shape_is_batch_by_max_len(self, student):
        """padding_mask returns a (batch, max_len) bool tensor, also when max_len exceeds every length"""
        lengths, max_len = torch.tensor([3, 7, 1, 5]), 9
        mask = as_mask(student.padding_mask(lengths.clone(), max_len), "padding_mask(lengths, max_len)")
        assert mask.shape == (4, max_len), (
            f"for 4 sequences padded to max_len = 9 the mask should be (4, 9), got {mask.shape}"
            + explain(padding_mask_mistake(lengths, max_len, mask))
        )

    @pytest.mark.points(1)
    def test_true_exactly_at_real_tokens(self, student):
        """padding_mask is True at the first `length` positions of each row and False after"""
        lengths, max_len = torch.tensor([0, 6, 2, 6, 5]), 6
        mask = as_mask(student.padding_mask(lengths.clone(), max_len), "padding_mask(lengths, max_len)")
        expected = reference_padding_mask(lengths, max_len).numpy()
        assert mask.shape == expected.shape and np.array_equal(mask, expected), (
            "padding_mask(tensor([0, 6, 2, 6, 5]), 6) has wrong values"
            + explain(
                padding_mask_mistake(lengths, max_len, mask),
                ": position j of a sequence of length n is a real token (True) when j < n; a length of 0 gives a "
                "row of False",
            )
        )

    @pytest.mark.points(1)
    def test_impossible_lengths_raise_value_error(self, student):
        """padding_mask raises ValueError for a length above max_len or below 0"""
        for lengths, problem in ((torch.tensor([2, 8, 3]), "above max_len"), (torch.tensor([2, -1]), "negative")):
            try:
                student.padding_mask(lengths, 5)
            except StudentRaised as err:
                assert err.is_a(ValueError), (
                    f"a length {problem} should raise ValueError, not {err.type_name}: check the lengths first"
                )
            else:
                raise AssertionError(
                    f"padding_mask({lengths.tolist()}, max_len=5) returned a mask: a length {problem} is a bug in the "
                    "caller, and a mask would silently cut or hide it; raise ValueError naming the lengths"
                )


# -- task 2: causal_mask ----------------------------------------------------------------------


def student_causal(student, len_q: int, len_k: int | None = None) -> np.ndarray:
    args = (len_q,) if len_k is None else (len_q, len_k)
    return as_mask(student.causal_mask(*args), f"causal_mask{args}")


@pytest.mark.task("causal_mask")
class TestCausalMask:
    @pytest.mark.points(1)
    def test_square_mask_is_the_lower_triangle(self, student):
        """a square causal mask lets token i read tokens 0 … i, itself included"""
        mask = student_causal(student, 7, 7)
        expected = reference_causal_mask(7).numpy()
        assert mask.shape == expected.shape and np.array_equal(mask, expected), (
            "causal_mask(7, 7) should be the lower triangle, diagonal included"
            + explain(causal_mask_mistake(7, 7, mask))
        )

    @pytest.mark.points(1)
    def test_shape_when_len_q_differs_from_len_k(self, student):
        """causal_mask(len_q, len_k) is (len_q, len_k), and causal_mask(n) is (n, n)"""
        for len_q, len_k in ((3, 8), (8, 3)):
            mask = student_causal(student, len_q, len_k)
            assert mask.shape == (len_q, len_k), (
                f"causal_mask({len_q}, {len_k}) should have shape ({len_q}, {len_k}), got {mask.shape}"
                + explain(causal_mask_mistake(len_q, len_k, mask))
            )
        mask, square = student_causal(student, 5), student_causal(student, 5, 5)
        assert mask.shape == (5, 5) and np.array_equal(mask, square), (
            f"causal_mask(5), with len_k left out, should be the same as causal_mask(5, 5); got "
            f"{describe_value(mask)}: len_k=None means len_k = len_q"
        )

    @pytest.mark.points(1)
    def test_bottom_right_when_fewer_queries_than_keys(self, student):
        """with len_q < len_k (decoding after cached tokens) the last query reads every key"""
        mask = student_causal(student, 3, 8)
        expected = reference_causal_mask(3, 8).numpy()
        assert mask.shape == expected.shape and np.array_equal(mask, expected), (
            "causal_mask(3, 8) is wrong: the 3 queries are the last 3 of 8 tokens, so query i reads keys "
            "j <= i + 5 and the last query reads every key"
            + explain(causal_mask_mistake(3, 8, mask), " (align the triangle bottom-right)")
        )

    @pytest.mark.points(1)
    def test_more_queries_than_keys_gives_fully_masked_rows(self, student):
        """with len_q > len_k the first len_q - len_k queries read nothing, the last one reads every key"""
        mask = student_causal(student, 8, 3)
        expected = reference_causal_mask(8, 3).numpy()
        assert mask.shape == expected.shape and np.array_equal(mask, expected), (
            "causal_mask(8, 3) is wrong: aligned bottom-right, query i reads keys j <= i - 5, so the first 5 rows "
            "are all False and the last row is all True" + explain(causal_mask_mistake(8, 3, mask))
        )


# -- task 3: attn_mask_from_torch --------------------------------------------------------------


def random_key_padding(seed: int, batch: int, len_k: int) -> torch.Tensor:
    """nn.MultiheadAttention's convention: True = padding. Every row keeps at least one real key."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, len_k + 1, (batch,), generator=g)
    lengths[0] = len_k  # one full-length sequence
    return ~reference_padding_mask(lengths, len_k)


@pytest.mark.task("attn_mask_from_torch")
class TestAttnMaskFromTorch:
    @pytest.mark.points(1)
    def test_shape_is_batch_1_1_len_k(self, student):
        """the converted mask is a (batch, 1, 1, len_k) bool tensor: the padding hides keys"""
        ignore = random_key_padding(40, batch=4, len_k=6)
        mask = as_mask(student.attn_mask_from_torch(ignore.clone()), "attn_mask_from_torch(key_padding_mask)")
        assert mask.shape == (4, 1, 1, 6), (
            f"for a (4, 6) key_padding_mask the result should be (batch, 1, 1, len_k) = (4, 1, 1, 6), got "
            f"{mask.shape}" + explain(torch_mask_mistake(ignore, mask))
        )

    @pytest.mark.points(1)
    def test_polarity_is_flipped(self, student):
        """True in nn.MultiheadAttention's mask (ignore) becomes False in ours (may attend)"""
        ignore = random_key_padding(41, batch=5, len_k=7)
        mask = as_mask(student.attn_mask_from_torch(ignore.clone()), "attn_mask_from_torch(key_padding_mask)")
        assert mask.size == ignore.numel(), (
            f"the result should hold one value per key of each sequence, {tuple(ignore.shape)}, got {mask.shape}"
        )
        values = mask.reshape(ignore.shape)  # judge the values alone; the shape has its own test
        assert np.array_equal(values, ~ignore.numpy()), "the converted mask has wrong values" + explain(
            "nn.MultiheadAttention's True means 'ignore this key', ours means 'may attend': invert it with ~"
            if np.array_equal(values, ignore.numpy())
            else None
        )

    @pytest.mark.points(1)
    def test_same_attention_as_nn_multihead_attention(self, student):
        """our attention with the converted mask equals nn.MultiheadAttention with its key_padding_mask"""
        torch.manual_seed(42)
        batch = heads = len_q = 3  # equal sizes: a mask on the wrong axis broadcasts silently, and is wrong
        mha = torch.nn.MultiheadAttention(embed_dim=6, num_heads=heads, batch_first=True)
        ours = MultiHeadAttention.from_torch(mha)
        target, source = torch.randn(batch, len_q, 6), torch.randn(batch, 5, 6)
        ignore = random_key_padding(43, batch=batch, len_k=5)
        mask = as_mask(student.attn_mask_from_torch(ignore.clone()), "attn_mask_from_torch(key_padding_mask)")
        with torch.no_grad():
            expected, _ = mha(target, source, source, key_padding_mask=ignore)
            try:
                got = ours(target, context=source, attn_mask=torch.from_numpy(mask))
            except ValueError:
                got = None
        hint = torch_mask_mistake(ignore, mask)
        assert got is not None, (
            f"the converted mask {mask.shape} does not broadcast against scores of shape (batch, heads, len_q, "
            f"len_k) = (3, 3, 3, 5)" + explain(hint)
        )
        assert torch.allclose(got, expected, atol=1e-5), (
            "with the converted mask, attention differs from nn.MultiheadAttention with its key_padding_mask"
            + explain(hint)
        )


# -- task 4: decoder_masks ---------------------------------------------------------------------


def student_decoder_masks(student, src_lengths, tgt_lengths, src_len: int, tgt_len: int):
    """``(self_mask, cross_mask)`` from the student, run with the library's padding and causal masks."""
    with (
        substitute(student, "padding_mask", "course_lib.padding_mask"),
        substitute(student, "causal_mask", "course_lib.causal_mask"),
    ):
        result = student.decoder_masks(src_lengths.clone(), tgt_lengths.clone(), src_len, tgt_len)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"decoder_masks should return two masks, (self_mask, cross_mask); got {describe_value(result)}"
    )
    return as_mask(result[0], "self_mask"), as_mask(result[1], "cross_mask")


def per_query(mask: np.ndarray, batch: int, len_q: int, len_k: int) -> np.ndarray | None:
    """A mask with or without its heads axis as ``(batch, len_q, len_k)``, or None if it does not fit."""
    if mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim > 3:
        return None
    try:
        return np.broadcast_to(mask, (batch, len_q, len_k))
    except ValueError:
        return None


def fits_scores(mask: np.ndarray, batch: int, len_q: int, len_k: int) -> bool:
    """Whether ``mask`` is (batch, 1, len_q or 1, len_k or 1) and broadcasts over heads."""
    if mask.ndim != 4 or mask.shape[0] != batch or mask.shape[1] != 1:
        return False
    try:
        return np.broadcast_shapes(mask.shape, (batch, 1, len_q, len_k)) == (batch, 1, len_q, len_k)
    except ValueError:
        return False


SRC, TGT = torch.tensor([5, 2, 7, 1]), torch.tensor([3, 6, 4, 2])  # source padded to 7, target to 6


@pytest.mark.task("decoder_masks")
class TestDecoderMasks:
    @pytest.mark.points(1)
    def test_shapes_broadcast_over_heads(self, student):
        """self_mask is (batch, 1, tgt_len, tgt_len) and cross_mask (batch, 1, 1, src_len)"""
        self_mask, cross_mask = student_decoder_masks(student, SRC, TGT, 7, 6)
        assert fits_scores(self_mask, 4, 6, 6) and self_mask.shape[2] == 6, (
            f"for 4 targets padded to 6 tokens self_mask should be (batch, 1, tgt_len, tgt_len) = (4, 1, 6, 6), got "
            f"{self_mask.shape}" + explain(self_mask_mistake(TGT, 6, self_mask))
        )
        assert fits_scores(cross_mask, 4, 6, 7), (
            f"for 4 sources padded to 7 tokens cross_mask should be (batch, 1, 1, src_len) = (4, 1, 1, 7), got "
            f"{cross_mask.shape}" + explain(cross_mask_mistake(SRC, TGT, 7, 6, cross_mask))
        )

    @pytest.mark.points(1)
    def test_cross_mask_is_the_source_padding(self, student):
        """cross-attention lets every target token read every real source token, and no padding"""
        _, cross_mask = student_decoder_masks(student, SRC, TGT, 7, 6)
        got = per_query(cross_mask, 4, 6, 7)
        hint = cross_mask_mistake(SRC, TGT, 7, 6, cross_mask)
        assert got is not None, (
            f"cross_mask {cross_mask.shape} does not broadcast against cross-attention scores (batch, heads, "
            "tgt_len, src_len) = (4, heads, 6, 7)" + explain(hint)
        )
        expected = np.broadcast_to(reference_padding_mask(SRC, 7).numpy()[:, None, :], (4, 6, 7))
        assert np.array_equal(got, expected), "cross_mask has wrong values" + explain(
            hint, ": every target token may read exactly the real source tokens (the source's padding mask)"
        )

    @pytest.mark.points(1)
    def test_cross_mask_uses_the_source_lengths_when_padded_alike(self, student):
        """cross_mask follows the source lengths even when source and target are padded to the same length"""
        src, tgt = torch.tensor([6, 2, 4]), torch.tensor([3, 6, 5])
        _, cross_mask = student_decoder_masks(student, src, tgt, 6, 6)
        got = per_query(cross_mask, 3, 6, 6)
        expected = np.broadcast_to(reference_padding_mask(src, 6).numpy()[:, None, :], (3, 6, 6))
        assert got is not None and np.array_equal(got, expected), (
            "with source and target both padded to 6 tokens, cross_mask is wrong"
            + explain(cross_mask_mistake(src, tgt, 6, 6, cross_mask))
        )

    @pytest.mark.points(1)
    def test_self_mask_is_causal_for_real_tokens(self, student):
        """in self-attention each real target token reads itself and the tokens before it, never later ones"""
        self_mask, _ = student_decoder_masks(student, SRC, TGT, 7, 6)
        got = per_query(self_mask, 4, 6, 6)
        hint = self_mask_mistake(TGT, 6, self_mask)
        assert got is not None, (
            f"self_mask {self_mask.shape} does not broadcast against self-attention scores (batch, heads, tgt_len, "
            "tgt_len) = (4, heads, 6, 6)" + explain(hint)
        )
        real = reference_padding_mask(TGT, 6).numpy()  # (batch, tgt_len): the real queries
        causal = np.broadcast_to(reference_causal_mask(6).numpy(), (4, 6, 6))
        assert np.array_equal(got[real], causal[real]), (
            "for real target tokens self_mask should be the causal mask: token i reads tokens j <= i" + explain(hint)
        )

    @pytest.mark.points(1)
    def test_self_mask_hides_target_padding_on_the_keys(self, student):
        """self_mask is the target's key padding mask AND the causal mask, padded rows included"""
        self_mask, _ = student_decoder_masks(student, SRC, TGT, 7, 6)
        got = per_query(self_mask, 4, 6, 6)
        expected = (reference_padding_mask(TGT, 6)[:, None, :] & reference_causal_mask(6)).numpy()
        assert got is not None and np.array_equal(got, expected), (
            "self_mask should be True where key j is a real target token and j <= i, for every query (padded "
            "queries included)" + explain(self_mask_mistake(TGT, 6, self_mask))
        )


# -- task 5: masked_attention ------------------------------------------------------------------


def random_qkv(seed: int, batch: tuple, len_q: int, len_k: int, d: int, d_v: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, len_q, d, generator=g)
    k = torch.randn(*batch, len_k, d, generator=g)
    v = torch.randn(*batch, len_k, d_v, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def attention_result(student, q, k, v, mask=None):
    args = (q, k, v) if mask is None else (q, k, v, mask)
    result = student.masked_attention(*args)
    assert (
        isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(t, torch.Tensor) for t in result)
    ), f"masked_attention should return two tensors, (output, weights); got {describe_value(result)}"
    return result[0], result[1]


def reference(q, k, v, mask=None):
    out, w = reference_attention(q.double(), k.double(), v.double(), mask, return_weights=True)
    return out, w


def close(got: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return got.shape == expected.shape and bool(torch.allclose(got.double(), expected, atol=atol, rtol=rtol))


def mixed_masks(seed: int) -> torch.Tensor:
    """A (2, 1, 5, 7) mask (broadcast over 3 heads) with at least one key per query row."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 1, 5, 7, generator=g) < 0.6
    mask[..., 3] = True
    return mask


@pytest.mark.task("masked_attention")
class TestMaskedAttention:
    @pytest.mark.points(1)
    def test_without_a_mask(self, student):
        """with attn_mask=None it is scaled dot-product attention, len_q ≠ len_k, d ≠ d_v"""
        q, k, v = random_qkv(50, (2, 3), len_q=4, len_k=6, d=8, d_v=5)
        out, w = attention_result(student, q, k, v)
        expected_out, expected_w = reference(q, k, v)
        assert close(w, expected_w) and close(out, expected_out), (
            "without a mask the result should be softmax(Q Kᵀ / √d) V, with weights (..., len_q, len_k) and "
            f"output (..., len_q, d_v); got weights {tuple(w.shape)} and output {tuple(out.shape)}"
        )

    @pytest.mark.points(1)
    def test_matches_the_reference_with_a_mask(self, student):
        """with a random mask, output and weights match masked softmax(Q Kᵀ / √d) V"""
        q, k, v = random_qkv(51, (2, 3), len_q=5, len_k=7, d=6, d_v=4)
        mask = mixed_masks(52)
        out, w = attention_result(student, q, k, v, mask)
        expected_out, expected_w = reference(q, k, v, mask)
        hint = masked_attention_mistake(q, k, v, mask, out, w)
        assert close(w, expected_w), "the weights with a mask are wrong" + explain(hint)
        assert close(out, expected_out), "the output with a mask is wrong" + explain(hint)

    @pytest.mark.points(1)
    def test_masked_keys_get_exactly_zero_weight(self, student):
        """keys where the mask is False get weight 0, and each row's weights sum to 1"""
        q, k, v = random_qkv(53, (2, 3), len_q=5, len_k=7, d=6, d_v=4)
        q = 4 * q  # large scores: a masked key with a high score must still get nothing
        mask = mixed_masks(54)
        out, w = attention_result(student, q, k, v, mask)
        hint = masked_attention_mistake(q, k, v, mask, out, w)
        assert w.shape == (2, 3, 5, 7), f"the weights should be (2, 3, 5, 7), got {tuple(w.shape)}"
        hidden = w.double()[~torch.broadcast_to(mask, w.shape)]
        assert bool((hidden == 0).all()), f"masked keys got weight up to {hidden.abs().max().item():.3g}" + explain(
            hint, ": where the mask is False the score must be -inf, before the softmax"
        )
        assert torch.allclose(w.double().sum(-1), torch.ones(2, 3, 5, dtype=torch.float64), atol=1e-5), (
            "each row of the weights should sum to 1 over the keys it may attend to" + explain(hint)
        )

    @pytest.mark.points(1)
    def test_padding_and_causal_masks_broadcast(self, student):
        """a (batch, 1, 1, len_k) padding mask and a (len_q, len_k) causal mask both broadcast to the scores"""
        q, k, v = random_qkv(55, (3, 2), len_q=4, len_k=6, d=8, d_v=3)
        padding = reference_padding_mask(torch.tensor([6, 3, 5]), 6)[:, None, None, :]  # (3, 1, 1, 6)
        causal = reference_causal_mask(4, 6)  # (4, 6), bottom-right aligned
        for name, mask in (("a (3, 1, 1, 6) padding mask", padding), ("a (4, 6) causal mask", causal)):
            out, w = attention_result(student, q, k, v, mask)
            expected_out, expected_w = reference(q, k, v, mask)
            assert close(w, expected_w) and close(out, expected_out), (
                f"with {name} on inputs of shape (3, 2, len, dim) the result is wrong"
                + explain(
                    masked_attention_mistake(q, k, v, mask, out, w),
                    ": use the mask as given, letting it broadcast to (..., len_q, len_k)",
                )
            )

    @pytest.mark.points(2)
    def test_fully_masked_rows_give_zeros(self, student):
        """a query that may attend to no key gets zero weights and a zero output, not NaN, not a uniform average"""
        q, k, v = random_qkv(56, (3, 2), len_q=6, len_k=4, d=8, d_v=5)
        # sequence 1 is empty; causal(6, 4) leaves queries 0 and 1 with no key in every sequence
        mask = reference_padding_mask(torch.tensor([4, 0, 3]), 4)[:, None, None, :] & reference_causal_mask(6, 4)
        out, w = attention_result(student, q, k, v, mask)
        expected_out, expected_w = reference(q, k, v, mask)
        hint = masked_attention_mistake(q, k, v, mask, out, w)
        assert bool(torch.isfinite(w).all() and torch.isfinite(out).all()), (
            "with fully masked rows the result contains NaN or inf" + explain(hint)
        )
        dead = ~mask.any(-1).expand(3, 2, 6)  # (batch, heads, len_q): queries with no key
        assert w.shape == expected_w.shape and out.shape == expected_out.shape, (
            f"expected weights {tuple(expected_w.shape)} and output {tuple(expected_out.shape)}, got "
            f"{tuple(w.shape)} and {tuple(out.shape)}" + explain(hint)
        )
        assert bool((w[dead] == 0).all() and (out[dead] == 0).all()), (
            "a query with no key to attend to should get zero weights and a zero output"
            + explain(hint, ": if a row's max is -inf subtract 0 instead, and if its sum is 0 divide by 1 instead")
        )
        assert close(w, expected_w) and close(out, expected_out), (
            "the rows that do have keys are wrong when other rows are fully masked" + explain(hint)
        )

    @pytest.mark.points(2)
    def test_half_precision(self, student):
        """float16 inputs give float16 results without NaN, fully masked rows included"""
        q, k, v = random_qkv(57, (2, 2), len_q=5, len_k=6, d=16, d_v=4, dtype=torch.float16)
        mask = reference_padding_mask(torch.tensor([4, 0]), 6)[:, None, None, :] & reference_causal_mask(5, 6)
        try:
            out, w = attention_result(student, q, k, v, mask)
        except StudentRaised as err:
            if "overflow" in err.text:
                raise AssertionError(
                    f"with float16 inputs masked_attention raised {err.type_name}: {err.text[:120]}. A finite fill "
                    "value such as -1e9 does not exist in float16 (its largest number is 65504): mask with "
                    "float('-inf'), and compute half precision in float32"
                ) from None
            raise AssertionError(
                f"with float16 inputs masked_attention raised {err.type_name}: {err.text[:160]}. Compute half "
                "precision in float32 (convert query, key and value with .float()), then cast the results back "
                "with .to(query.dtype)"
            ) from None
        hint = masked_attention_mistake(q, k, v, mask, out, w)
        assert out.dtype == torch.float16 and w.dtype == torch.float16, (
            f"float16 inputs should give float16 output and weights, got {out.dtype} and {w.dtype}: compute in "
            "float32, then cast back with .to(query.dtype)"
        )
        assert bool(torch.isfinite(w).all() and torch.isfinite(out).all()), (
            "in float16 the result contains NaN or inf"
            + explain(
                hint,
                ": -1e9 is -inf in float16, so a fully masked row is all -inf and the softmax gives 0 / 0; mask with "
                "-inf in a float32 computation, and give fully masked rows zeros",
            )
        )
        expected_out, expected_w = reference(q, k, v, mask)
        assert close(w, expected_w, atol=5e-3, rtol=5e-3) and close(out, expected_out, atol=5e-3, rtol=5e-3), (
            "in float16 the result differs from the float64 reference by more than float16's rounding" + explain(hint)
        )

    @pytest.mark.points(1)
    def test_padding_content_does_not_leak(self, student):
        """padded keys and values, however large, change neither the output nor the weights"""
        q, k, v = random_qkv(60, (3,), len_q=4, len_k=6, d=8, d_v=3)
        mask = reference_padding_mask(torch.tensor([6, 2, 4]), 6)[:, None, :]  # (3, 1, 6)
        padding = ~mask[:, 0]  # (3, 6)
        big_k, big_v = k.clone(), v.clone()
        big_k[padding] *= 200.0
        big_v[padding] *= 1000.0
        out, w = attention_result(student, q, big_k, big_v, mask)
        expected_out, expected_w = reference(q, k, v, mask)  # what the real keys alone give
        hint = masked_attention_mistake(q, big_k, big_v, mask, out, w)
        assert close(w, expected_w) and close(out, expected_out, atol=1e-4), (
            "when the padded keys hold large numbers, the result changes: padding leaks into the output"
            + (f" ({difference(out, expected_out, atol=1e-4)})" if out.shape == expected_out.shape else "")
            + explain(hint, ": fill the scores with -inf where the mask is False, before the softmax")
        )

    @pytest.mark.points(1)
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
    def test_half_precision_is_computed_in_float32(self, student, dtype):
        """half-precision inputs over 700 keys are as accurate as a float32 computation rounded to their dtype"""
        q, k, v = random_qkv(61, (2,), len_q=12, len_k=700, d=64, d_v=32, dtype=dtype)
        out, _ = attention_result(student, q, k, v)
        exact = reference(q, k, v)[0]
        in_float32 = reference_attention(q.float(), k.float(), v.float()).to(dtype).double()
        allowed = 1.5 * (in_float32 - exact).abs().mean().item()
        assert out.dtype == dtype and out.shape == exact.shape, (
            f"{dtype} inputs should give a {dtype} output of shape {tuple(exact.shape)}, got {out.dtype} "
            f"{tuple(out.shape)}"
        )
        error = (out.double() - exact).abs().mean().item()
        assert error <= allowed, (
            f"with {dtype} inputs and 700 keys the mean error is {error:.2g}, more than a float32 computation "
            f"rounded to {dtype} gives ({allowed / 1.5:.2g}): convert query, key and value to float32 first, "
            "and cast the results back with .to(query.dtype)"
        )

    @pytest.mark.points(1)
    def test_float64_is_computed_in_float64(self, student):
        """float64 inputs are computed in float64, to 1e-12"""
        q, k, v = random_qkv(62, (2, 1), len_q=3, len_k=7, d=8, d_v=4, dtype=torch.float64)
        mask = mixed_masks(63)[:, :, :3, :]
        out, w = attention_result(student, q, k, v, mask)
        expected_out, expected_w = reference(q, k, v, mask)
        assert out.dtype == torch.float64 and close(out, expected_out, atol=1e-12, rtol=0), (
            f"float64 inputs gave {out.dtype} results that differ from float64 attention "
            f"({difference(out, expected_out, atol=1e-12, rtol=0)}): only float16 and bfloat16 are converted to "
            "float32; `.float()` on a float64 tensor throws digits away"
        )

    @pytest.mark.points(1)
    def test_gradients_stay_finite_with_a_fully_masked_row(self, student):
        """backpropagating through a batch with a fully masked row gives finite gradients"""
        q, k, v = random_qkv(58, (2, 2), len_q=3, len_k=5, d=4, d_v=3)
        mask = reference_padding_mask(torch.tensor([5, 0]), 5)[:, None, None, :]  # sequence 1: no key at all
        torch_ = student.torch  # the notebook's torch module, so that the tensors and their graph live there
        inputs = [keep(torch_.tensor, t.numpy(), requires_grad=True) for t in (q, k, v)]
        result = keep(student.masked_attention, *inputs, mask)
        output = result[0]
        assert isinstance(output, torch.Tensor), (
            f"masked_attention should return two tensors, (output, weights); got {describe_value(output)} first"
        )
        assert bool(torch.isfinite(output).all()), (
            "with a fully masked row the output already contains NaN, so every gradient will too: give such rows "
            "zero weights and a zero output"
        )
        g = torch.Generator().manual_seed(59)
        grad_outputs = [torch.randn(2, 2, 3, 3, generator=g), torch.randn(2, 2, 3, 5, generator=g)]
        try:
            grads = torch_.autograd.grad(result, inputs, grad_outputs=grad_outputs, allow_unused=True)
        except StudentRaised as err:
            raise AssertionError(
                f"could not backpropagate through masked_attention's (output, weights): {err.text[:200]}. Return two "
                "tensors computed from the inputs with torch operations"
            ) from None
        bad = [name for name, grad in zip(("query", "key", "value"), grads) if grad is not None and not
               bool(torch.isfinite(grad).all())]  # fmt: skip
        assert not bad, (
            f"the gradients of {', '.join(bad)} contain NaN although the output has none: the fully masked row's NaN "
            "was patched after the softmax (nan_to_num, where), and 0 * NaN is still NaN in the backward pass. "
            "Avoid the NaN instead: subtract 0 when a row's max is -inf, and divide by 1 when its sum is 0"
        )


# -- task 6: left padding -----------------------------------------------------------------------


def student_left_mask(student, lengths: torch.Tensor, max_len: int) -> np.ndarray:
    with (
        substitute(student, "padding_mask", "course_lib.padding_mask"),
        substitute(student, "causal_mask", "course_lib.causal_mask"),
    ):
        got = student.left_padded_self_mask(lengths.clone(), max_len)
    return as_mask(got, "left_padded_self_mask")


LEFT = torch.tensor([6, 2, 4, 1, 5])


@pytest.mark.task("left_padded_self_mask")
class TestLeftPaddedSelfMask:
    @pytest.mark.points(1)
    def test_shape_is_batch_1_len_len(self, student):
        """the mask is (batch, 1, max_len, max_len)"""
        mask = student_left_mask(student, LEFT, 6)
        assert mask.shape == (5, 1, 6, 6), (
            f"for 5 sequences padded to 6 the mask should be (batch, 1, max_len, max_len) = (5, 1, 6, 6), got "
            f"{mask.shape}" + explain(left_padded_mistake(LEFT, 6, mask))
        )

    @pytest.mark.points(2)
    def test_real_tokens_never_read_the_padding(self, student):
        """no query reads a padded key: the padding comes first and the causal mask does not hide it"""
        mask = student_left_mask(student, LEFT, 6)
        full = per_query(mask, 5, 6, 6)
        assert full is not None, f"the mask {mask.shape} does not broadcast to (batch, len, len) = (5, 6, 6)"
        padded_keys = ~(np.arange(6)[None, :] >= (6 - LEFT.numpy())[:, None])  # (5, 6)
        assert not (full & padded_keys[:, None, :]).any(), (
            "queries may read padded keys: in a left-padded batch the padding comes before the real tokens, so "
            "the causal mask does not hide it" + explain(left_padded_mistake(LEFT, 6, mask))
        )

    @pytest.mark.points(1)
    def test_matches_the_specification(self, student):
        """key j is visible to query i when j is real and j <= i"""
        mask = student_left_mask(student, LEFT, 6)
        full = per_query(mask, 5, 6, 6)
        expected = left_padded_reference(LEFT, 6)[:, 0]
        assert full is not None and np.array_equal(full, expected), (
            "the left-padded mask has wrong values" + explain(left_padded_mistake(LEFT, 6, mask),
                                                             ": key j is real (j >= max_len - length) and j <= i")
        )

    @pytest.mark.points(1)
    def test_real_tokens_attend_as_if_unpadded(self, student):
        """with the mask, every real token gets the attention output it gets in its sequence alone"""
        lengths, max_len = torch.tensor([3, 5, 1]), 5
        mask = torch.from_numpy(student_left_mask(student, lengths, max_len).copy())
        g = torch.Generator().manual_seed(64)
        x = torch.randn(3, 2, max_len, 4, generator=g)
        try:
            out = reference_attention(x, x, x, mask)
        except ValueError as err:
            raise AssertionError(f"the mask {tuple(mask.shape)} cannot be used as an attention mask: {err}") from None
        for b, n in enumerate(lengths.tolist()):
            real = x[b : b + 1, :, max_len - n :]
            alone = reference_attention(real, real, real, reference_causal_mask(n))
            assert torch.allclose(out[b : b + 1, :, max_len - n :], alone, atol=1e-6), (
                f"sequence {b}, with {n} real tokens after {max_len - n} padded ones, gets other outputs than "
                "alone" + explain(left_padded_mistake(lengths, max_len, mask.numpy()))
            )

