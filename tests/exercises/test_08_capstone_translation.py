"""Hidden tests of exercise 08, capstone: translation.

Each test probes one property on seeded inputs, so that each typical mistake loses its
own points, and its message names the concept (students see the message, never this
code). The models are small and untrained: the tests are about wiring and equality,
so they run in a fraction of a second. A model or a layer is built inside the
student's worker from ``course_lib`` (``library_object``) and gets the grader's state
dict, so that the student's function runs on exactly the module the grader compares
with. ``tests/exercises/mutants_08_capstone_translation.py`` lists the mistakes these
tests must catch; ``tests/grading/test_mutants.py`` proves that they do.
"""

import pytest
import torch

from course_lib.checks import describe, difference
from course_lib.checks.ex08 import (
    alignment_mistake,
    as_number,
    decode_padding_mistake,
    decode_structure_mistake,
    layer_mistake,
    loss_gradient,
    loss_mistake,
    random_decoder_layer,
    reference_alignment_accuracy,
    reference_alignment_loss,
    reference_decoder_layer,
    tiny_translation_model,
)
from course_lib.data import EOS, PAD
from course_lib.grading import StudentRaised, substitute
from course_lib.models import greedy_decode as reference_greedy_decode

NOTEBOOK_RUNS_POINTS = 1


def library_object(student, dotted: str, *args, **kwargs):
    """Build ``dotted(*args, **kwargs)`` (a ``course_lib`` function) in the student's worker: a ``Remote``."""
    with substitute(student, "_hidden_test_factory", dotted):
        return student._hidden_test_factory(*args, **kwargs)


def as_tensor(value, what: str) -> torch.Tensor:
    assert isinstance(value, torch.Tensor), f"{what} should be a torch tensor, got {describe(value)}"
    return value


# -- task 1: alignment accuracy ------------------------------------------------------------------


def alignment_batch(seed: int, tgt_lengths: list[int], len_src: int, len_tgt: int | None = None):
    """Random weights ``(batch, len_tgt, len_src)`` and an alignment with -1 after each length; about
    half of the counted tokens attend most to their true source word."""
    g = torch.Generator().manual_seed(seed)
    batch, len_tgt = len(tgt_lengths), len_tgt or max(tgt_lengths) + 1
    weights = torch.rand(batch, len_tgt, len_src, generator=g)
    alignment = torch.randint(0, len_src, (batch, len_tgt), generator=g)
    alignment[torch.arange(len_tgt)[None, :] >= torch.tensor(tgt_lengths)[:, None]] = -1
    hit = (torch.rand(batch, len_tgt, generator=g) < 0.5) & (alignment >= 0)
    weights[hit] += 2.0 * torch.nn.functional.one_hot(alignment[hit], len_src).float()
    return weights.softmax(dim=-1), alignment


def accuracy(student, weights: torch.Tensor, alignment: torch.Tensor) -> float:
    got = student.alignment_accuracy(weights.clone(), alignment.clone())
    value = as_number(got)
    assert value is not None, f"alignment_accuracy should return a number (a float), got {describe(got)}"
    return value


def explain(weights, alignment, value) -> str:
    hint = alignment_mistake(weights, alignment, value)
    return f": {hint}" if hint else ""


@pytest.mark.task("alignment_accuracy")
class TestAlignmentAccuracy:
    @pytest.mark.points(1)
    def test_perfect_attention_scores_one(self, student):
        """attention that always lands on the true source word scores 1.0"""
        weights, alignment = alignment_batch(10, [5, 2, 4], len_src=7)
        counted = alignment >= 0
        weights[counted] = torch.nn.functional.one_hot(alignment[counted], 7).float()
        value = accuracy(student, weights, alignment)
        assert abs(value - 1.0) < 1e-9, (
            f"every counted target token attends most to its source word, so the accuracy is 1.0; got {value:.4g}"
            + explain(weights, alignment, value)
        )

    @pytest.mark.points(1)
    def test_matches_the_definition(self, student):
        """on random attention, the fraction of counted tokens whose arg-max is their source word"""
        weights, alignment = alignment_batch(11, [6, 3, 5, 1], len_src=9)
        expected = reference_alignment_accuracy(weights, alignment)
        value = accuracy(student, weights, alignment)
        assert abs(value - expected) < 1e-9, f"expected {expected:.4g}, got {value:.4g}" + (
            explain(weights, alignment, value)
            or ": the fraction is (counted tokens whose arg-max over the source words is their alignment) / "
            "(tokens with alignment >= 0)"
        )

    @pytest.mark.points(1)
    def test_argmax_over_the_source_words(self, student):
        """the arg-max runs over the source words, also when there are as many target tokens as source words"""
        weights, alignment = alignment_batch(12, [6, 6, 4], len_src=6, len_tgt=6)
        expected = reference_alignment_accuracy(weights, alignment)
        value = accuracy(student, weights, alignment)
        assert abs(value - expected) < 1e-9, (
            f"with len_tgt == len_src == 6 expected {expected:.4g}, got {value:.4g}"
            + explain(weights, alignment, value)
        )

    @pytest.mark.points(1)
    def test_source_index_zero_counts(self, student):
        """a target token aligned with the first source word (index 0) is counted"""
        weights, alignment = alignment_batch(13, [4, 4], len_src=5)
        alignment[:, :3] = 0  # three tokens per sentence come from the first source word
        weights[:, :3] = torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1])  # and attend to it
        expected = reference_alignment_accuracy(weights, alignment)
        value = accuracy(student, weights, alignment)
        assert abs(value - expected) < 1e-9, f"expected {expected:.4g}, got {value:.4g}" + (
            explain(weights, alignment, value)
        )

    @pytest.mark.points(1)
    def test_every_token_weighs_the_same(self, student):
        """the accuracy pools the tokens of the whole batch: a long sentence counts more than a short one"""
        weights, alignment = alignment_batch(14, [8, 1], len_src=9)
        weights[0] = torch.nn.functional.one_hot(alignment[0].clamp(min=0), 9).float()  # 8 hits of 8
        weights[1, 0] = torch.nn.functional.one_hot((alignment[1, 0] + 1) % 9, 9).float()  # 0 hits of 1
        value = accuracy(student, weights, alignment)
        assert abs(value - 8 / 9) < 1e-9, (
            f"8 hits among 9 counted tokens (8 in the first sentence, 1 in the second) give 8/9 = 0.889; got "
            f"{value:.4g}" + explain(weights, alignment, value)
        )


# -- task 2: the decoder layer -------------------------------------------------------------------

D_MODEL, HEADS, D_FF = 12, 3, 20


def layer_pair(student, seed: int):
    """The same random ``DecoderLayer`` here and in the student's worker."""
    local = random_decoder_layer(D_MODEL, HEADS, D_FF, seed=seed)
    remote = library_object(student, "course_lib.checks.ex08.random_decoder_layer", D_MODEL, HEADS, D_FF, seed=seed)
    remote.load_state_dict(local.state_dict())
    return local, remote


def layer_inputs(seed: int, batch: int, len_tgt: int, len_src: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, len_tgt, D_MODEL, generator=g), torch.randn(batch, len_src, D_MODEL, generator=g)


def lengths_mask(lengths: list[int], length: int) -> torch.Tensor:
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


def run_layer(student, remote, y, memory, src_mask, tgt_mask):
    """``(output, weights)`` of the student's layer; a raised error is explained when it is a known mistake."""
    try:
        result = student.decoder_layer(remote, y.clone(), memory.clone(), src_mask.clone(), tgt_mask.clone())
    except StudentRaised as err:
        if "context_mask must be (batch, len_k)" in err.text:
            raise AssertionError(
                f"decoder_layer raised {err.type_name}: {err.text}. Each mask goes with the keys it hides: the "
                "cross-attention's keys are the source, so its mask is src_mask; the self-attention's keys are the "
                "target, so its padding mask is tgt_mask"
            ) from None
        if "must match the size" in err.text or "do not broadcast" in err.text:
            raise AssertionError(
                f"decoder_layer raised {err.type_name} for {y.shape[1]} target and {memory.shape[1]} source tokens: "
                f"{err.text}. The cross-attention's queries come from the target (y), its keys and values from the "
                "memory; the causal mask is (len_tgt, len_tgt) and belongs to the self-attention only"
            ) from None
        raise
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"decoder_layer should return two tensors, (output, cross-attention weights); got {describe(result)}"
    )
    return as_tensor(result[0], "the output"), as_tensor(result[1], "the weights")


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4)


def layer_hint(case: tuple, out, weights, default: str) -> str:
    """The usual mistake behind ``(out, weights)`` for ``case = (layer, y, memory, src_mask, tgt_mask)``."""
    return layer_mistake(*case, out, weights) or default


@pytest.mark.task("decoder_layer")
class TestDecoderLayer:
    @pytest.mark.points(1)
    def test_shapes_when_source_and_target_lengths_differ(self, student):
        """output is (batch, len_tgt, d_model) and weights (batch, heads, len_tgt, len_src), len_tgt ≠ len_src"""
        local, remote = layer_pair(student, 20)
        y, memory = layer_inputs(20, batch=3, len_tgt=7, len_src=5)
        src_mask, tgt_mask = lengths_mask([5, 3, 4], 5), lengths_mask([7, 7, 5], 7)
        out, weights = run_layer(student, remote, y, memory, src_mask, tgt_mask)
        hint = layer_mistake(local, y, memory, src_mask, tgt_mask, out, weights)
        assert tuple(out.shape) == (3, 7, D_MODEL), (
            f"for 7 target tokens the output should be (batch, len_tgt, d_model) = (3, 7, {D_MODEL}), got "
            f"{tuple(out.shape)}: " + (hint or "one output vector per target token")
        )
        assert tuple(weights.shape) == (3, HEADS, 7, 5), (
            f"the cross-attention weights should be (batch, heads, len_tgt, len_src) = (3, {HEADS}, 7, 5), got "
            f"{tuple(weights.shape)}: " + (hint or "layer.cross_attn(..., need_weights=True) returns them")
        )

    @pytest.mark.points(1)
    def test_matches_the_library_layer_without_padding(self, student):
        """without padding, the output and weights equal course_lib's DecoderLayer"""
        local, remote = layer_pair(student, 21)
        y, memory = layer_inputs(21, batch=2, len_tgt=6, len_src=8)
        src_mask, tgt_mask = torch.ones(2, 8, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool)
        out, weights = run_layer(student, remote, y, memory, src_mask, tgt_mask)
        with torch.no_grad():
            expected_out, expected_w = local(y, memory, src_mask)
        hint = layer_hint(
            (local, y, memory, src_mask, tgt_mask),
            out,
            weights,
            "three pre-norm residual blocks, y = y + block(norm(y)): self-attention (norm1), "
            "cross-attention to the memory (norm2), feed-forward (norm3)",
        )
        assert close(weights, expected_w), f"the cross-attention weights differ from the library layer's: {hint}"
        assert close(out, expected_out), f"the layer's output differs from the library layer's: {hint}"

    @pytest.mark.points(1)
    def test_matches_with_padded_source_and_target(self, student):
        """with padded sources and targets, the output and weights are right at every position"""
        local, remote = layer_pair(student, 22)
        y, memory = layer_inputs(22, batch=3, len_tgt=6, len_src=9)
        src_mask, tgt_mask = lengths_mask([9, 4, 6], 9), lengths_mask([6, 3, 5], 6)
        out, weights = run_layer(student, remote, y, memory, src_mask, tgt_mask)
        expected_out, expected_w = reference_decoder_layer(local, y, memory, src_mask, tgt_mask)
        hint = layer_hint(
            (local, y, memory, src_mask, tgt_mask),
            out,
            weights,
            "causal mask and target padding mask in the self-attention, source padding mask in the cross-attention",
        )
        assert close(weights, expected_w), f"on a padded batch the cross-attention weights are wrong: {hint}"
        assert close(out, expected_out), f"on a padded batch the output is wrong: {hint}"

    @pytest.mark.points(1)
    def test_target_tokens_do_not_read_the_future(self, student):
        """changing the target after position t leaves the outputs up to t unchanged (causal self-attention)"""
        _, remote = layer_pair(student, 23)
        y, memory = layer_inputs(23, batch=2, len_tgt=7, len_src=5)
        src_mask, tgt_mask = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 7, dtype=torch.bool)
        future = y.clone()
        future[:, 4:] = torch.randn(2, 3, D_MODEL, generator=torch.Generator().manual_seed(1))
        out, weights = run_layer(student, remote, y, memory, src_mask, tgt_mask)
        out_future, weights_future = run_layer(student, remote, future, memory, src_mask, tgt_mask)
        assert close(out[:, :4], out_future[:, :4]) and close(weights[:, :, :4], weights_future[:, :, :4]), (
            "changing target tokens 4 to 6 changed the outputs of tokens 0 to 3: the self-attention reads the "
            "future. Give it the causal mask, causal_mask(len_tgt), True on and below the diagonal (token t reads "
            "tokens <= t)"
        )

    @pytest.mark.points(1)
    def test_source_padding_is_never_read(self, student):
        """what sits in the source's padded positions changes nothing, and gets no attention"""
        _, remote = layer_pair(student, 24)
        y, memory = layer_inputs(24, batch=3, len_tgt=4, len_src=6)
        src_mask, tgt_mask = lengths_mask([6, 2, 4], 6), torch.ones(3, 4, dtype=torch.bool)
        noisy = memory.clone()
        g = torch.Generator().manual_seed(2)
        noisy[~src_mask] = 10.0 * torch.randn(int((~src_mask).sum()), D_MODEL, generator=g)
        out, weights = run_layer(student, remote, y, memory, src_mask, tgt_mask)
        out_noisy, _ = run_layer(student, remote, y, noisy, src_mask, tgt_mask)
        assert weights.shape == (3, HEADS, 4, 6), (
            f"the cross-attention weights should be (batch, heads, len_tgt, len_src) = (3, {HEADS}, 4, 6), got "
            f"{tuple(weights.shape)}"
        )
        padded_weight = float(weights.masked_select(~src_mask[:, None, None, :].expand_as(weights)).abs().sum())
        assert padded_weight == 0.0, (
            "the cross-attention gives weight to the source's padding: pass the source padding mask to the "
            "cross-attention (context_mask=src_mask); the target's mask hides target tokens, not source ones"
        )
        assert close(out, out_noisy), (
            "changing the source's padded positions changed the output: the cross-attention must not read them "
            "(context_mask=src_mask)"
        )

    @pytest.mark.points(1)
    def test_cross_attention_reads_every_source_word(self, student):
        """every target token may read every real source word: no causal mask in cross-attention"""
        local, remote = layer_pair(student, 25)
        y, memory = layer_inputs(25, batch=2, len_tgt=4, len_src=7)
        src_mask, tgt_mask = torch.ones(2, 7, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)
        out, weights = run_layer(student, remote, y, memory, src_mask, tgt_mask)
        assert weights.shape == (2, HEADS, 4, 7) and bool((weights > 0).all()), (
            "some target tokens give no weight to some real source words: "
            + layer_hint(
                (local, y, memory, src_mask, tgt_mask),
                out,
                weights,
                "the cross-attention needs no causal mask; the whole source is known before decoding "
                "starts. Its only mask is the source padding mask",
            )
        )

    @pytest.mark.points(1)
    def test_target_padding_is_masked_in_self_attention(self, student):
        """with targets padded on the left, no real target token reads the padding"""
        local, remote = layer_pair(student, 26)
        y, memory = layer_inputs(26, batch=2, len_tgt=6, len_src=5)
        src_mask = torch.ones(2, 5, dtype=torch.bool)
        tgt_mask = torch.tensor([[False, False, True, True, True, True], [False, True, True, True, True, True]])
        out, weights = run_layer(student, remote, y, memory, src_mask, tgt_mask)
        expected_out, _ = reference_decoder_layer(local, y, memory, src_mask, tgt_mask)
        assert out.shape == expected_out.shape and close(out[tgt_mask], expected_out[tgt_mask]), (
            "with the targets padded on the left, the outputs of the real target tokens are wrong: "
            + layer_hint(
                (local, y, memory, src_mask, tgt_mask),
                out,
                weights,
                "give the self-attention the target padding mask (context_mask=tgt_mask) besides the "
                "causal mask (attn_mask=causal_mask(len_tgt))",
            )
        )

    @pytest.mark.points(1)
    def test_source_mask_not_target_mask_in_cross_attention(self, student):
        """with as many target as source tokens, the cross-attention still uses the source's padding mask"""
        local, remote = layer_pair(student, 27)
        y, memory = layer_inputs(27, batch=3, len_tgt=5, len_src=5)
        src_mask, tgt_mask = lengths_mask([5, 2, 3], 5), lengths_mask([3, 5, 4], 5)
        out, weights = run_layer(student, remote, y, memory, src_mask, tgt_mask)
        expected_out, expected_w = reference_decoder_layer(local, y, memory, src_mask, tgt_mask)
        hint = layer_hint(
            (local, y, memory, src_mask, tgt_mask),
            out,
            weights,
            "the cross-attention reads the source, so its mask is the source padding mask (src_mask); "
            "tgt_mask belongs to the self-attention",
        )
        assert close(weights, expected_w) and close(out, expected_out), (
            f"with 5 source and 5 target tokens, padded differently, the layer is wrong: {hint}"
        )


# -- task 3: greedy decoding with the cache ------------------------------------------------------

# Sources of lengths 7, 3, 5 and 2 (0 is <pad>). With these seeds and <eos> biases the untrained models end
# the sentences at different steps, and the top two logits of every step differ by more than 0.04, so that a
# correct decoding cannot flip a token through rounding. Model B also tells causal from non-causal decoding.
SOURCES = torch.tensor([[3, 4, 5, 6, 7, 8, 9], [5, 3, 9, 0, 0, 0, 0], [8, 8, 4, 6, 3, 0, 0], [9, 7, 0, 0, 0, 0, 0]])
MODELS = {"model A": (3, -1.0), "model B": (11, 2.0)}
MAX_LEN = 12


def model_pair(student, seed: int = 3, eos_bias: float = -1.0):
    local = tiny_translation_model(seed, eos_bias=eos_bias)
    remote = library_object(student, "course_lib.checks.ex08.tiny_translation_model", seed, eos_bias=eos_bias)
    remote.load_state_dict(local.state_dict())
    return local, remote


def decode(student, remote, src, src_mask, max_len=MAX_LEN) -> torch.Tensor:
    got = student.greedy_decode(remote, src.clone(), src_mask.clone(), max_len)
    got = as_tensor(got, "greedy_decode's result")
    assert got.dim() == 2 and got.shape[0] == src.shape[0] and not got.dtype.is_floating_point, (
        f"greedy_decode should return (batch, n) integer token ids, got {describe(got)}"
    )
    return got


def sentences(tokens: torch.Tensor) -> list[list[int]]:
    """Each row up to and including its first <eos> (the whole row if there is none)."""
    out = []
    for row in tokens.tolist():
        out.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return out


def padding_explanation(local, tokens: torch.Tensor, in_batch: list[int], alone: list[int]) -> str:
    """Why one sentence decodes differently in the batch, from what the student's decoding did."""
    if EOS not in in_batch and len(in_batch) < len(alone) and alone[: len(in_batch)] == in_batch:
        return (
            f"in the batch it was cut after {len(in_batch)} tokens, without its <eos>, when another sentence "
            "finished: the whole batch stopped at the first <eos>. Stop only when every sentence is done"
        )
    if decode_padding_mistake(local, SOURCES, tokens, MAX_LEN):
        return (
            "the batch decodes as it does without the source padding mask: pass src_mask to the encoder and "
            "to precompute_context, so that no word reads the <pad> positions"
        )
    return "a sentence's translation must not depend on the other sentences of its batch or on its padding"


@pytest.mark.task("greedy_decode")
class TestGreedyDecode:
    @pytest.mark.points(1)
    @pytest.mark.parametrize("model", list(MODELS))
    def test_generates_the_greedy_tokens(self, student, model):
        """each sentence's tokens, up to its <eos>, are the greedy choices of the model"""
        local, remote = model_pair(student, *MODELS[model])
        src_mask = SOURCES != PAD
        expected = reference_greedy_decode(local, SOURCES, src_mask, max_len=MAX_LEN)
        got = decode(student, remote, SOURCES, src_mask)
        hint = (
            decode_structure_mistake(expected, got, MAX_LEN)
            or decode_padding_mistake(local, SOURCES, got, MAX_LEN)
            or "at each step t the newest token is embedded at position t (model.decoder.pos[t]), goes through "
            "every layer's step, then model.decoder.norm and model.decoder.out; the next token is the arg-max over "
            "the vocabulary"
        )
        for row, (mine, right) in enumerate(zip(sentences(got), sentences(expected))):
            assert mine == right, (
                f"sentence {row} was decoded as {mine}, but the model's greedy choices are {right}: {hint}"
            )

    @pytest.mark.points(1)
    def test_pads_after_eos(self, student):
        """after a sentence's <eos>, its row holds only <pad>"""
        _, remote = model_pair(student)
        got = decode(student, remote, SOURCES, SOURCES != PAD)
        for row in got.tolist():
            if EOS in row:
                after = row[row.index(EOS) + 1 :]
                assert all(t == PAD for t in after), (
                    f"a row continues after its <eos>: {row}. Once a sentence has emitted <eos> it is finished: "
                    f"write <pad> ({PAD}) in its row from then on (keep a `done` flag per sentence)"
                )

    @pytest.mark.points(1)
    def test_stops_when_every_sentence_has_finished(self, student):
        """decoding stops at the step where the last sentence emits <eos>"""
        _, remote = model_pair(student)
        got = decode(student, remote, SOURCES, SOURCES != PAD)
        rows = got.tolist()
        ends = [row.index(EOS) + 1 if EOS in row else None for row in rows]
        last = MAX_LEN if None in ends else max(ends)
        assert got.shape[1] == last, (
            f"your sentences end after {ends} tokens (None: no <eos>), so decoding should stop after {last} steps, "
            f"but the output has {got.shape[1]} tokens per row (max_len = {MAX_LEN}): stop as soon as every "
            "sentence has emitted <eos>, or after max_len tokens"
        )

    @pytest.mark.points(1)
    def test_stops_at_max_len(self, student):
        """when no sentence emits <eos>, decoding stops after max_len tokens"""
        _, remote = model_pair(student, eos_bias=-30.0)
        got = decode(student, remote, SOURCES, SOURCES != PAD, max_len=5)
        assert got.shape == (4, 5), (
            f"with max_len = 5 and no <eos> the output should be (batch, max_len) = (4, 5), got {tuple(got.shape)}: "
            "generate at most max_len tokens, <eos> included"
        )

    @pytest.mark.points(1)
    def test_encodes_and_projects_the_source_once(self, student):
        """the source is encoded once and projected to keys and values once per layer"""
        _, remote = model_pair(student)
        watch = library_object(student, "course_lib.checks.ex08.watch_decoding", remote)
        decode(student, remote, SOURCES, SOURCES != PAD)
        counts = watch.counts()
        assert counts["encoder_calls"] == 1, (
            f"the encoder ran {counts['encoder_calls']} times for one batch: the source does not change while "
            "decoding, encode it once before the loop"
        )
        assert counts["source_projections"] == 2, (
            f"the 2 layers' cross-attentions projected the source {counts['source_projections']} times; with the "
            "cache each layer projects it once: layer.cross_attn.precompute_context(memory, src_mask) before the "
            "loop, then layer.step (or cross_attn.step) in it"
        )

    @pytest.mark.points(1)
    def test_feeds_one_token_per_step(self, student):
        """each step feeds only the newest token through the self-attention cache"""
        _, remote = model_pair(student)
        watch = library_object(student, "course_lib.checks.ex08.watch_decoding", remote)
        got = decode(student, remote, SOURCES, SOURCES != PAD)
        lengths = watch.counts()["self_attention_lengths"]
        assert lengths and set(lengths) == {1} and len(lengths) <= 2 * got.shape[1], (
            f"the self-attention got inputs of lengths {sorted(set(lengths))} in {len(lengths)} calls for "
            f"{got.shape[1]} steps; with the cache each step feeds only the newest token, (batch, 1, d_model), once "
            "per layer: layer.self_attn.new_cache() before the loop, layer.step(y_t, self_cache, cross_cache) in it"
        )

    @pytest.mark.points(1)
    def test_padding_does_not_change_a_translation(self, student):
        """a sentence decodes the same in a padded batch as alone (the source padding mask)"""
        local, remote = model_pair(student)
        src_mask = SOURCES != PAD
        tokens = decode(student, remote, SOURCES, src_mask)
        batch = sentences(tokens)
        for row in range(len(SOURCES)):
            n = int(src_mask[row].sum())
            alone = sentences(decode(student, remote, SOURCES[row : row + 1, :n], torch.ones(1, n, dtype=torch.bool)))
            assert batch[row] == alone[0], (
                f"sentence {row} ({n} tokens, padded to {SOURCES.shape[1]}) decodes as {batch[row]} in the batch but "
                f"as {alone[0]} alone: " + padding_explanation(local, tokens, batch[row], alone[0])
            )


# -- task 4: a loss that teaches a head to align -------------------------------------------------


def loss_of(student, weights: torch.Tensor, alignment: torch.Tensor) -> float:
    got = student.alignment_loss(weights.clone(), alignment.clone())
    value = as_number(got)
    assert value is not None, f"alignment_loss should return a one-number tensor, got {describe(got)}"
    return value


def loss_explained(weights, alignment, value) -> str:
    hint = loss_mistake(weights, alignment, value)
    return f": {hint}" if hint else ""


def same(value: float, expected: float) -> bool:
    return abs(value - expected) <= 1e-5 * max(1.0, abs(expected))


@pytest.mark.task("alignment_loss")
class TestAlignmentLoss:
    @pytest.mark.points(1)
    def test_matches_the_definition(self, student):
        """on random attention, the mean of -log(weight on the true source word) over the counted tokens"""
        weights, alignment = alignment_batch(21, [6, 3, 5, 1], len_src=9)
        expected = float(reference_alignment_loss(weights, alignment))
        value = loss_of(student, weights, alignment)
        assert same(value, expected), f"expected {expected:.5g}, got {value:.5g}" + (
            loss_explained(weights, alignment, value)
            or ": the loss is the mean, over the tokens with alignment >= 0, of -log(weights[b, j, alignment[b, j]])"
        )

    @pytest.mark.points(1)
    def test_perfect_attention_costs_nothing(self, student):
        """attention that puts all its weight on the true source word has loss 0"""
        weights, alignment = alignment_batch(22, [5, 2, 4], len_src=7)
        counted = alignment >= 0
        weights[counted] = torch.nn.functional.one_hot(alignment[counted], 7).float()
        value = loss_of(student, weights, alignment)
        assert abs(value) < 1e-6, (
            f"every counted token puts weight 1 on its source word, so the loss is -log(1) = 0; got {value:.4g}"
            + loss_explained(weights, alignment, value)
        )

    @pytest.mark.points(1)
    def test_uncounted_tokens_do_not_count(self, student):
        """the rows of <eos> and padding (alignment -1) change nothing"""
        weights, alignment = alignment_batch(23, [4, 2], len_src=6)
        changed = weights.clone()
        changed[alignment < 0] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        before, after = loss_of(student, weights, alignment), loss_of(student, changed, alignment)
        assert same(before, after), (
            f"changing only the rows with alignment -1 changed the loss from {before:.5g} to {after:.5g}: leave the "
            "tokens with alignment -1 (<eos>, padding) out of the mean"
        )

    @pytest.mark.points(1)
    def test_a_mean_not_a_sum(self, student):
        """the loss of a batch repeated twice is the loss of the batch"""
        weights, alignment = alignment_batch(24, [5, 3], len_src=6)
        once = loss_of(student, weights, alignment)
        twice = loss_of(student, torch.cat([weights, weights]), torch.cat([alignment, alignment]))
        assert same(once, twice), (
            f"the loss went from {once:.5g} to {twice:.5g} when the batch was repeated: divide by the number of "
            "counted tokens (a mean), so that the loss does not grow with the batch"
            + loss_explained(weights, alignment, once)
        )

    @pytest.mark.points(1)
    def test_every_token_weighs_the_same(self, student):
        """the mean pools the tokens of the whole batch: a long sentence counts more than a short one"""
        weights, alignment = alignment_batch(25, [8, 1], len_src=9)
        expected = float(reference_alignment_loss(weights, alignment))
        value = loss_of(student, weights, alignment)
        assert same(value, expected), (
            f"with 8 counted tokens in one sentence and 1 in the other, expected {expected:.5g}, got {value:.5g}"
            + (loss_explained(weights, alignment, value) or ": sum over the counted tokens, divide by their number")
        )

    @pytest.mark.points(1)
    def test_a_zero_weight_is_clamped(self, student):
        """a true source word with weight exactly 0 gives the finite -log(eps), not inf"""
        weights, alignment = alignment_batch(26, [3, 3], len_src=5)
        weights[0, 0] = torch.nn.functional.one_hot((alignment[0, 0] + 1) % 5, 5).float()  # 0 on the true word
        expected = float(reference_alignment_loss(weights, alignment))
        value = loss_of(student, weights, alignment)
        assert same(value, expected), (
            f"one true word gets weight 0; expected {expected:.5g} (its term is -log(1e-9) = 20.7), got {value:.5g}"
            + (loss_explained(weights, alignment, value) or ": clamp each weight at eps before the log")
        )

    @pytest.mark.points(1)
    def test_gradient_reaches_the_weights(self, student):
        """the loss is a tensor whose gradient with respect to the weights is right"""
        weights, alignment = alignment_batch(27, [4, 2, 3], len_src=6)
        grad = library_object(
            student, "course_lib.checks.ex08.loss_gradient", student.alignment_loss, weights, alignment
        )
        assert grad is not None, (
            "the loss did not backpropagate to the weights: return a torch tensor computed from them, without "
            ".detach(), .item(), float(...) or torch.no_grad()"
        )
        grad = as_tensor(grad, "the gradient")
        expected = loss_gradient(reference_alignment_loss, weights, alignment)
        assert grad.shape == expected.shape and torch.allclose(grad, expected, atol=1e-5), (
            f"the gradient with respect to the weights is wrong: {difference(grad, expected)}"
        )
