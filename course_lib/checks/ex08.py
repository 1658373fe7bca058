"""Self-checks of exercise 08, capstone: translation.

from course_lib.checks import check_alignment_accuracy, check_alignment_loss, check_decoder_layer, check_greedy_decode

The hidden tests share the helpers that are not exported: the references
(``reference_alignment_accuracy``, ``reference_alignment_loss``, ``reference_decoder_layer``), the seeded test models
(``random_decoder_layer``, ``tiny_translation_model``), the diagnoses that name a
usual mistake (``*_mistake``), ``loss_gradient``, which backpropagates through the student's loss
where it runs, and ``watch_decoding``, which counts what a decoding
loop computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import BOS, EOS, PAD
from ..masks import causal_mask
from ..models import DecoderLayer, EncoderDecoder, greedy_decode, translation_model
from ._common import Check, describe

__all__ = ["check_alignment_accuracy", "check_alignment_loss", "check_decoder_layer", "check_greedy_decode"]


def as_number(value: Any) -> float | None:
    """A Python number, a numpy scalar or a one-element tensor as a float; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.number)):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and np.issubdtype(value.dtype, np.number):
        return float(value.reshape(()))
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        return float(value.reshape(()).item())
    return None


# -- task 1: alignment accuracy ----------------------------------------------------------------


def reference_alignment_accuracy(weights: torch.Tensor, alignment: torch.Tensor) -> float:
    """The fraction of counted target tokens (alignment >= 0) whose arg-max lands on their source word."""
    counted = alignment >= 0
    hits = (weights.argmax(dim=-1) == alignment) & counted
    return float(hits.sum()) / float(counted.sum())


def alignment_mistake(weights: torch.Tensor, alignment: torch.Tensor, got: float | None) -> str | None:
    """Name the usual mistake that explains ``got`` (the student's accuracy), if one does."""
    if got is None:
        return None
    right = reference_alignment_accuracy(weights, alignment)
    counted = alignment >= 0
    best = weights.argmax(dim=-1)
    hits = (best == alignment) & counted
    candidates: list[tuple[float, str]] = []
    if weights.shape[1] == weights.shape[2]:
        wrong_axis = (weights.argmax(dim=1) == alignment) & counted
        candidates.append(
            (
                float(wrong_axis.sum()) / float(counted.sum()),
                "the arg-max runs over the target tokens; take it over the source words, the last axis "
                "(weights.argmax(dim=-1)): each row is one target token",
            )
        )
    candidates += [
        (
            float(hits.sum() // counted.sum()),
            "the accuracy came out as a whole number: `//` is floor division, and the two counts are integers. "
            "Divide with `/` (float(hits.sum()) / float(counted.sum())); the arg-max and the counting are fine",
        ),
        (
            float(hits.sum()) / alignment.numel(),
            "you divided by every position; count only the target tokens with a source word (alignment >= 0): "
            "<eos> and padding are marked -1",
        ),
        (
            float(((best == alignment) & (alignment > 0)).sum()) / float((alignment > 0).sum().clamp(min=1)),
            "-1 marks the tokens to skip; 0 is a real source index (the first source word): count alignment >= 0",
        ),
        (
            float(hits.sum()),
            "return a fraction (hits / counted tokens), not the number of hits",
        ),
        (
            100.0 * right,
            "return a fraction between 0 and 1, not a percentage",
        ),
    ]
    per_sentence = hits.sum(dim=1).float() / counted.sum(dim=1).clamp(min=1).float()
    rows = counted.any(dim=1)
    candidates.append(
        (
            float(per_sentence[rows].mean()),
            "you averaged per sentence; every counted target token weighs the same: total hits / total counted "
            "tokens over the whole batch",
        )
    )
    for value, hint in candidates:
        if abs(value - right) > 1e-9 and abs(value - got) < 1e-6:
            return hint
    return None


def alignment_error_hint(err: BaseException) -> str | None:
    """A hint for the exception raised on a ``(1, 3, 4)`` batch, when it shows an arg-max over the wrong axis."""
    if isinstance(err, RuntimeError) and "must match the size of tensor" in str(err):
        return (
            "the arg-max gave one index per source word (4), not one per target token (3): take it over the "
            "source words, the last axis (weights.argmax(dim=-1))"
        )
    return None


def check_alignment_accuracy(alignment_accuracy: Callable) -> None:
    """Check ``alignment_accuracy(weights, alignment) -> float``."""
    c = Check("alignment_accuracy")
    # One sentence: 3 target tokens over 4 source words; the last token is <eos> (-1, not counted).
    weights = torch.tensor([[[0.1, 0.1, 0.7, 0.1], [0.2, 0.5, 0.2, 0.1], [0.9, 0.0, 0.0, 0.1]]])
    alignment = torch.tensor([[2, 0, -1]])
    got = c.call(alignment_accuracy, weights.clone(), alignment.clone(), hint=alignment_error_hint)
    value = as_number(got)
    c.true(value is not None, "alignment_accuracy should return a number (a float)", got=describe(got))
    c.true(
        abs(value - 0.5) < 1e-9,
        "token 0 reads source word 2 (right), token 1 reads word 1 instead of 0 (wrong), token 2 is <eos> "
        "(alignment -1, not counted): the accuracy is 1/2",
        got=value,
        hint=alignment_mistake(weights, alignment, value),
    )

    # Two sentences of different lengths, padded: as many target tokens as source words.
    g = torch.Generator().manual_seed(8)
    weights = torch.rand(2, 5, 5, generator=g).softmax(dim=-1)
    alignment = torch.tensor([[4, 0, 1, 3, -1], [1, 0, -1, -1, -1]])
    weights[0, [0, 1, 3]] += torch.eye(5)[[4, 0, 3]]  # three hits in the first sentence, the rest random
    got = c.call(alignment_accuracy, weights.clone(), alignment.clone())
    value = as_number(got)
    expected = reference_alignment_accuracy(weights, alignment)
    c.true(value is not None, "alignment_accuracy should return a number (a float)", got=describe(got))
    c.true(
        abs(value - expected) < 1e-9,
        f"on a padded batch of two sentences (4 and 2 counted tokens) the accuracy is {expected:.4g}",
        got=round(value, 4),
        hint=alignment_mistake(weights, alignment, value),
    )
    c.done()


# -- task 2: the decoder layer -------------------------------------------------------------------


def random_decoder_layer(d_model: int, num_heads: int, d_ff: int, seed: int) -> DecoderLayer:
    """A seeded ``DecoderLayer`` whose LayerNorms are random too, so that each norm's place shows."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = DecoderLayer(d_model, num_heads, d_ff)
        with torch.no_grad():
            for norm in (layer.norm1, layer.norm2, layer.norm3):
                norm.weight.copy_(1.0 + 0.5 * torch.randn(d_model))
                norm.bias.copy_(0.5 * torch.randn(d_model))
    return layer.eval()


@torch.no_grad()
def reference_decoder_layer(
    layer: DecoderLayer,
    y: torch.Tensor,
    memory: torch.Tensor,
    src_mask: torch.Tensor | None,
    tgt_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``decoder_layer`` must return. With ``tgt_mask`` all True it is ``layer(y, memory, src_mask)``."""
    causal = causal_mask(y.shape[1], device=y.device)
    y = y + layer.self_attn(layer.norm1(y), context_mask=tgt_mask, attn_mask=causal)
    out, weights = layer.cross_attn(layer.norm2(y), memory, context_mask=src_mask, need_weights=True)
    y = y + out
    return y + layer.ff(layer.norm3(y)), weights


@torch.no_grad()
def _layer_variants(layer, y, memory, src_mask, tgt_mask) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """``(output, weights, hint)`` of the usual wrong wirings of a decoder layer."""
    n1, n2, n3 = layer.norm1, layer.norm2, layer.norm3
    causal = causal_mask(y.shape[1], device=y.device)
    len_tgt, len_src = y.shape[1], memory.shape[1]

    def run(
        *,
        self_mask=causal,
        tgt=tgt_mask,
        cross_mask=None,
        src=src_mask,
        post=False,
        cross_residual=True,
        norm_memory=False,
    ):
        if post:
            h = n1(y + layer.self_attn(y, context_mask=tgt, attn_mask=self_mask))
            out, w = layer.cross_attn(h, memory, context_mask=src, need_weights=True)
            h = n2(h + out)
            return n3(h + layer.ff(h)), w
        h = y + layer.self_attn(n1(y), context_mask=tgt, attn_mask=self_mask)
        out, w = layer.cross_attn(
            n2(h), n2(memory) if norm_memory else memory, context_mask=src, attn_mask=cross_mask, need_weights=True
        )
        h = h + out if cross_residual else out
        return h + layer.ff(n3(h)), w

    variants = [
        (
            *run(self_mask=None),
            "the self-attention has no causal mask: target token t must not read tokens after t "
            "(attn_mask=causal_mask(len_tgt))",
        ),
        (
            *run(self_mask=causal.T),
            "the causal mask is transposed: True on and *below* the diagonal (token t reads "
            "tokens <= t), as causal_mask(len_tgt) gives",
        ),
        (
            *run(src=None),
            "the cross-attention reads the source's padding: pass the source padding mask to the "
            "cross-attention (context_mask=src_mask)",
        ),
        (
            *run(tgt=None),
            "the self-attention reads the target's padding: give it the target padding mask too "
            "(context_mask=tgt_mask), besides the causal mask",
        ),
        (
            *run(post=True),
            "the blocks are post-norm (LayerNorm after the residual sum); the layer is pre-norm: x + block(norm(x))",
        ),
        (*run(cross_residual=False), "the cross-attention block lost its residual connection: y = y + cross_attn(...)"),
        (
            *run(norm_memory=True),
            "only the queries are normalised (norm2(y)); the memory is the encoder's output, "
            "already normalised: pass it as it is",
        ),
    ]
    if len_tgt <= len_src:
        variants.append(
            (
                *run(cross_mask=causal_mask(len_tgt, len_src, device=y.device)),
                "the cross-attention has a causal mask; it needs none: the whole source is known before decoding "
                "starts",
            )
        )
    return variants


def layer_mistake(layer, y, memory, src_mask, tgt_mask, out, weights) -> str | None:
    """Name the usual mistake that explains the student's ``(out, weights)``, if one does."""
    try:
        out = torch.as_tensor(out, dtype=torch.float32)
        weights = torch.as_tensor(weights, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        return None
    batch, len_tgt, _ = y.shape
    len_src = memory.shape[1]
    heads = layer.cross_attn.num_heads
    if tuple(weights.shape) == (batch, heads, len_tgt, len_tgt) and len_tgt != len_src:
        return "these are the self-attention's weights; return the cross-attention's, (batch, heads, len_tgt, len_src)"
    if tuple(out.shape[:2]) == (batch, len_src) and len_tgt != len_src:
        return (
            "the queries come from the target (the decoder, y) and the keys and values from the memory: "
            "layer.cross_attn(norm2(y), memory, ...)"
        )
    for o, w, hint in _layer_variants(layer, y, memory, src_mask, tgt_mask):
        if (
            out.shape == o.shape
            and torch.allclose(out, o, atol=1e-5)
            and weights.shape == w.shape
            and (torch.allclose(weights, w, atol=1e-5))
        ):
            return hint
    return None


def check_decoder_layer(decoder_layer: Callable) -> None:
    """Check ``decoder_layer(layer, y, memory, src_mask, tgt_mask) -> (output, cross-attention weights)``."""
    c = Check("decoder_layer")
    layer = random_decoder_layer(8, 2, 16, seed=0)
    g = torch.Generator().manual_seed(0)
    y, memory = torch.randn(2, 5, 8, generator=g), torch.randn(2, 4, 8, generator=g)
    src_mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    tgt_mask = torch.tensor([[True, True, True, True, False], [True, True, True, True, True]])
    with torch.no_grad():
        result = c.call(decoder_layer, layer, y.clone(), memory.clone(), src_mask.clone(), tgt_mask.clone())
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2,
        "decoder_layer should return two tensors: (output, cross-attention weights)",
        got=describe(result),
    )
    out, weights = c.array(result[0], "the output"), c.array(result[1], "the weights")
    hint = layer_mistake(layer, y, memory, src_mask, tgt_mask, out, weights)
    c.shape(out, (2, 5, 8), "the output for 2 targets of 5 tokens, d_model = 8", hint or "one vector per target token")
    c.shape(
        weights,
        (2, 2, 5, 4),
        "the cross-attention weights (2 targets of 5 tokens, 2 heads, 4 source tokens)",
        hint or "need_weights=True in the cross-attention gives (batch, heads, len_tgt, len_src)",
    )
    c.close(weights.sum(-1), np.ones((2, 2, 5)), "the row sums of the cross-attention weights", hint)
    c.true(
        bool(np.all(weights[0, :, :, 3] == 0)),
        "the first source has 3 real tokens, but its padding (source position 3) gets attention",
        got=weights[0, :, :, 3].round(3).tolist(),
        hint=hint or "pass the source padding mask to the cross-attention: context_mask=src_mask",
    )
    expected_out, expected_w = reference_decoder_layer(layer, y, memory, src_mask, tgt_mask)
    c.close(weights, expected_w, "the cross-attention weights", hint, atol=1e-5)
    c.close(
        out, expected_out, "the layer's output (pre-norm blocks: y = y + block(norm(y)), three times)", hint, atol=1e-5
    )
    c.done()


# -- task 3: greedy decoding with the cache ------------------------------------------------------


def tiny_translation_model(
    seed: int,
    *,
    eos_bias: float = -1.0,
    src_vocab: int = 10,
    tgt_vocab: int = 8,
    num_layers: int = 2,
    max_len: int = 16,
) -> EncoderDecoder:
    """A small untrained ``translation_model`` whose sentences end at different steps.

    The output layer is sharpened and its bias cleared, so that the hidden state, not the
    bias, picks each token; ``eos_bias`` is the ``<eos>`` logit's bias. ``<pad>`` and
    ``<bos>`` are made unlikely, so that only ``<eos>`` ends a sentence and only the
    decoding loop writes ``<pad>``.
    """
    model = translation_model(
        src_vocab, tgt_vocab, d_model=16, num_heads=2, num_layers=num_layers, d_ff=32, max_len=max_len, seed=seed
    )
    return sharpened_output(model, eos_bias)


def sharpened_output(model: EncoderDecoder, eos_bias: float) -> EncoderDecoder:
    """``model`` in eval mode, its output layer's weight ×8 and its bias cleared but for
    ``<eos>`` (``eos_bias``), ``<pad>`` and ``<bos>`` (-20: never chosen)."""
    with torch.no_grad():
        model.decoder.out.weight.mul_(8.0)
        model.decoder.out.bias.zero_()
        model.decoder.out.bias[PAD] = model.decoder.out.bias[BOS] = -20.0
        model.decoder.out.bias[EOS] = eos_bias
    return model.eval()


class DecodingWatch:
    """Counts what a decoding loop computes, through forward hooks on a model.

    ``counts()`` gives: ``encoder_calls``; ``source_projections``, the calls of a
    cross-attention's key projection (one per layer when the cache is used); and
    ``self_attention_lengths``, the number of new tokens each self-attention call got
    (always 1 with a self-attention cache).
    """

    def __init__(self, model: EncoderDecoder) -> None:
        self.encoder_calls, self.source_projections = 0, 0
        self.self_attention_lengths: list[int] = []
        self._handles = [model.encoder.register_forward_hook(self._encoder)]
        for layer in model.decoder.layers:
            self._handles.append(layer.cross_attn.k_proj.register_forward_hook(self._projection))
            self._handles.append(layer.self_attn.q_proj.register_forward_hook(self._self_attention))

    def _encoder(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.encoder_calls += 1

    def _projection(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.source_projections += 1

    def _self_attention(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.self_attention_lengths.append(int(inputs[0].shape[-2]) if inputs[0].dim() >= 2 else 1)

    def counts(self) -> dict[str, Any]:
        return {
            "encoder_calls": self.encoder_calls,
            "source_projections": self.source_projections,
            "self_attention_lengths": list(self.self_attention_lengths),
        }

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def watch_decoding(model: EncoderDecoder) -> DecodingWatch:
    """Start counting the encoder calls, source projections and self-attention inputs of ``model``."""
    return DecodingWatch(model)


def decode_structure_mistake(expected: torch.Tensor, got: torch.Tensor, max_len: int) -> str | None:
    """Name the mistake in the *shape* of a decoded batch (BOS, EOS, padding, stopping), if one shows."""
    rows, n = got.shape
    if n >= 1 and bool((got[:, 0] == BOS).all()) and not bool((expected[:, 0] == BOS).all()):
        return "the output starts with <bos>; return only the generated tokens, without the <bos> you fed first"
    for row in range(rows):
        ends = (got[row] == EOS).nonzero().flatten()
        if len(ends) and bool((got[row, int(ends[0]) + 1 :] != PAD).any()):
            return (
                "a row goes on after its <eos>: once a sentence has emitted <eos>, write <pad> in its row "
                "(keep a `done` flag per row)"
            )
    if 0 < n < expected.shape[1] and torch.equal(got, expected[:, :n]):
        finished = (got == EOS).any(dim=1)
        if bool(finished.any()) and not bool(finished.all()):
            return (
                f"decoding stopped for the whole batch after {n} step{'s' if n != 1 else ''}, when the first "
                "sentence emitted <eos>; the other sentences were cut off. Stop only when *every* sentence is done "
                "(a `done` flag per row, `if done.all(): break`)"
            )
    if n > expected.shape[1] and bool((got[:, expected.shape[1] :] == PAD).all()):
        return (
            "you kept decoding after every sentence had emitted <eos>: stop as soon as all rows are done "
            "(the output is then narrower than max_len)"
        )
    if n > max_len:
        return f"the output has {n} tokens per row; generate at most max_len = {max_len} (<eos> included)"
    return None


def decode_padding_mistake(model: EncoderDecoder, src: torch.Tensor, got: torch.Tensor, max_len: int) -> str | None:
    """The padding hint, only when ``got`` is what decoding gives without the source padding mask."""
    unmasked = greedy_decode(model, src, None, max_len=max_len)
    if got.shape == unmasked.shape and torch.equal(got, unmasked):
        return (
            "these are the tokens decoded without the source padding mask: pass src_mask to the encoder and to "
            "precompute_context, so that no word reads the <pad> positions"
        )
    return None


def decoded_difference(got: torch.Tensor, expected: torch.Tensor) -> str:
    """Where two decoded batches first differ, in one line: the shapes, and the first differing row and step."""
    width = max(got.shape[1], expected.shape[1])
    a = torch.nn.functional.pad(got, (0, width - got.shape[1]), value=-1)
    b = torch.nn.functional.pad(expected, (0, width - expected.shape[1]), value=-1)
    differ = (a != b).nonzero()
    if len(differ) == 0:
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    row, step = (int(i) for i in differ[0])
    shown = {-1: "nothing"}
    return (
        f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}; first difference in row {row} at step {step}: "
        f"{shown.get(int(a[row, step]), int(a[row, step]))}, expected {shown.get(int(b[row, step]), int(b[row, step]))}"
    )


def check_greedy_decode(greedy_decode_fn: Callable) -> None:
    """Check ``greedy_decode(model, src, src_mask, max_len) -> (batch, n)`` ids, with the KV cache."""
    c = Check("greedy_decode")
    model = tiny_translation_model(seed=11, eos_bias=2.0)
    src = torch.tensor([[8, 3, 5, 7, 7, 4], [9, 6, 4, 0, 0, 0], [3, 5, 8, 6, 0, 0]])
    src_mask = src != PAD
    max_len = 10
    expected = greedy_decode(model, src, src_mask, max_len=max_len)
    watch = watch_decoding(model)
    try:
        got = c.call(greedy_decode_fn, model, src.clone(), src_mask.clone(), max_len)
    finally:
        watch.remove()
    got = c.array(got, "greedy_decode(model, src, src_mask, max_len)")
    c.true(np.issubdtype(got.dtype, np.integer), "the output should hold token ids (integers)", got=describe(got))
    got = torch.as_tensor(got)
    c.true(
        got.dim() == 2 and got.shape[0] == 3,
        "the output should be (batch, n): one row of ids per source",
        got=describe(got),
    )
    hint = decode_structure_mistake(expected, got, max_len) or decode_padding_mistake(model, src, got, max_len)
    c.true(
        got.shape == expected.shape and torch.equal(got, expected),
        "the decoded ids differ from course_lib.models.greedy_decode on 3 sources of lengths 6, 3 and 4 (0 is <pad>)",
        got=decoded_difference(got, expected),
        hint=hint,
    )
    counts = watch.counts()
    c.true(
        counts["encoder_calls"] == 1,
        "the encoder should run once per batch: the source does not change while decoding",
        got=f"{counts['encoder_calls']} encoder calls",
    )
    c.true(
        counts["source_projections"] == len(model.decoder.layers),
        f"each of the {len(model.decoder.layers)} layers should project the source to keys and values once "
        "(precompute_context before the loop)",
        got=f"{counts['source_projections']} projections of the source",
        hint="call layer.cross_attn.precompute_context(memory, src_mask) once per layer, before the loop, and "
        "layer.cross_attn.step(...) in it",
    )
    c.true(
        bool(counts["self_attention_lengths"]) and set(counts["self_attention_lengths"]) == {1},
        "each step should feed only the newest token to the self-attention, through its cache",
        got=f"self-attention inputs of lengths {sorted(set(counts['self_attention_lengths']))}",
        hint="layer.self_attn.new_cache() once per layer, then layer.step(y_t, self_cache, cross_cache) with "
        "y_t of shape (batch, 1, d_model)",
    )
    c.done()


# -- task 4: a loss that teaches a head to align -------------------------------------------------

EPS = 1e-9


def reference_alignment_loss(weights: torch.Tensor, alignment: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The mean, over the tokens with ``alignment >= 0``, of ``-log(max(weight on the true source word, eps))``.

    ``weights`` is ``(batch, len_tgt, len_src)``, ``alignment`` ``(batch, len_tgt)``; a 0-dim tensor comes back,
    differentiable with respect to ``weights``.
    """
    counted = alignment >= 0
    picked = weights.gather(-1, alignment.clamp(min=0)[..., None])[..., 0]  # (batch, len_tgt)
    return -(picked.clamp_min(eps).log() * counted).sum() / counted.sum()


def _loss_variants(weights: torch.Tensor, alignment: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    """``(value, hint)`` of the usual wrong versions of the alignment loss."""
    counted = alignment >= 0
    picked = weights.gather(-1, alignment.clamp(min=0)[..., None])[..., 0].clamp_min(EPS)
    nll = -picked.log()
    per_sentence = (nll * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1)
    return [
        (
            nll.mean(),
            "the tokens with alignment -1 (<eos>, padding) were counted: average over alignment >= 0 only",
        ),
        (
            (nll * counted).sum(),
            "you summed the losses: divide by the number of counted tokens (a mean), so that the loss does not "
            "grow with the batch",
        ),
        (
            per_sentence[counted.any(dim=1)].mean(),
            "you averaged per sentence; every counted target token weighs the same: divide the total by the number "
            "of counted tokens of the whole batch",
        ),
        (
            torch.nn.functional.cross_entropy(weights.flatten(0, 1), alignment.flatten(), ignore_index=-1),
            "F.cross_entropy applies a softmax to its input, but the weights are already probabilities: the "
            "weights went through softmax twice. Take -log of the weight on the true word (or F.nll_loss on the "
            "log of the weights)",
        ),
        (
            (picked.log() * counted).sum() / counted.sum(),
            "the loss is negative: it is *minus* the log of the weight on the true source word",
        ),
        (
            -(weights.amax(dim=-1).clamp_min(EPS).log() * counted).sum() / counted.sum(),
            "you took the largest weight of each row; the loss reads the weight on the *true* source word, "
            "weights[b, j, alignment[b, j]] (torch.gather)",
        ),
    ]


def loss_mistake(weights: torch.Tensor, alignment: torch.Tensor, got: float | None) -> str | None:
    """Name the usual mistake that explains ``got`` (the student's loss), if one does."""
    if got is None:
        return None
    if math.isinf(got) or math.isnan(got):
        return (
            "a true source word with weight 0 gives log 0 = -inf: clamp the weight at eps before the log "
            "(weight.clamp_min(eps).log())"
        )
    right = float(reference_alignment_loss(weights, alignment))
    for value, hint in _loss_variants(weights, alignment):
        value = float(value)
        if abs(value - right) > 1e-6 and abs(value - got) < 1e-5 * max(1.0, abs(value)):
            return hint
    return None


def loss_gradient(fn: Callable, weights: torch.Tensor, alignment: torch.Tensor) -> torch.Tensor | None:
    """Call ``fn(weights, alignment)`` on a leaf tensor and return the gradient of its result with respect to
    ``weights``; ``None`` when the result is no tensor that backpropagates to ``weights``."""
    weights = weights.detach().clone().requires_grad_(True)
    got = fn(weights, alignment.clone())
    if not isinstance(got, torch.Tensor) or not got.requires_grad or got.numel() != 1:
        return None
    got.reshape(()).backward()
    return weights.grad


def check_alignment_loss(alignment_loss: Callable) -> None:
    """Check ``alignment_loss(weights, alignment, eps=1e-9) -> 0-dim tensor``."""
    c = Check("alignment_loss")
    # Two sentences: 3 and 1 counted tokens; the second sentence's true word gets weight 0 once.
    weights = torch.tensor(
        [
            [[0.7, 0.2, 0.1, 0.0], [0.1, 0.1, 0.2, 0.6], [0.25, 0.25, 0.25, 0.25]],
            [[0.0, 0.5, 0.5, 0.0], [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]],
        ]
    )
    alignment = torch.tensor([[0, 3, 1], [3, -1, -1]])
    got = c.call(alignment_loss, weights.clone(), alignment.clone())
    value = as_number(got)
    c.true(value is not None, "alignment_loss should return a one-number tensor", got=describe(got))
    expected = float(reference_alignment_loss(weights, alignment))
    c.true(
        abs(value - expected) < 1e-5 * max(1.0, expected),
        f"-log of the weight on the true word, for the 4 counted tokens: -log(0.7), -log(0.6), -log(0.25) and "
        f"-log(max(0, 1e-9)), whose mean is {expected:.4f}",
        got=value,
        hint=loss_mistake(weights, alignment, value),
    )
    c.true(
        isinstance(got, torch.Tensor),
        "alignment_loss should return a torch tensor, so that it can be trained with (loss.backward())",
        got=describe(got),
        hint="keep the computation in torch; float(...) or .item() cut the gradient",
    )
    grad = c.call(loss_gradient, alignment_loss, weights, alignment)
    c.true(
        grad is not None,
        "the loss should backpropagate to the weights: it is meant to train the attention",
        got=f"{describe(got)}, requires_grad={getattr(got, 'requires_grad', None)}",
        hint="no .detach(), .item(), float(...) or torch.no_grad() inside alignment_loss",
    )
    expected_grad = loss_gradient(reference_alignment_loss, weights, alignment)
    c.close(grad, expected_grad, "the gradient with respect to the weights", atol=1e-4)
    c.done()
