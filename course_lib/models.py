"""A tiny Transformer encoder-decoder, built only from ``MultiHeadAttention``.

One decoder serves both capstones. It reads a source through cross-attention, and
the source can be a sentence (lesson 08, :func:`translation_model`) or the patches of
an image (lesson 09, :func:`captioning_model`)::

    source ─ Encoder ─ memory ───────────────┐ keys, values (source padding mask)
                                             ▼
    <bos> y1 … ─ Decoder: causal self-attn → cross-attn → feed-forward ─ logits

**Pre-norm.** Each block computes ``x + f(LayerNorm(x))``: the residual path from the
input to the output is the identity, so gradients reach every layer at full strength
from the first step. Post-norm (``LayerNorm(x + f(x))``, the original Transformer)
needs a learning-rate warm-up to train stably. Our training runs are a minute long, so
we cannot afford one. A pre-norm stack ends with a final ``LayerNorm``.

**Positions.** Sentences use fixed sinusoidal positions: no parameters, and any
length works. Image patches use learned positions, one vector per patch, so the model
finds out for itself which patches are neighbours in 2-D.

Shapes (batch-first): token ids ``(batch, len)``; patches ``(batch, num_patches,
patch_dim)``; hidden states ``(batch, len, d_model)``; masks ``(batch, len)`` bool,
True = real token; cross-attention weights ``(batch, heads, len_tgt, len_src)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .data import BOS, EOS, PAD, Batch
from .masks import causal_mask
from .multihead import KVCache, MultiHeadAttention

__all__ = [
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderDecoder",
    "EncoderLayer",
    "alignment_accuracy",
    "attention_on_targets",
    "captioning_model",
    "evaluate",
    "greedy_decode",
    "sinusoidal_positions",
    "train",
    "translation_model",
]


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """``(length, d_model)`` fixed positions: sines and cosines of geometrically spaced frequencies."""
    if d_model % 2:
        raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10_000.0) * torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    out = torch.zeros(length, d_model)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)
    return out


def _feed_forward(d_model: int, d_ff: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention over the source, then a feed-forward network."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, num_heads)
        self.ff = _feed_forward(d_model, d_ff)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``(batch, len_src, d_model)``; ``src_mask``: ``(batch, len_src)``, True = real token.

        Padding is masked as a *key*: no real token reads it. Padded *queries* still
        compute something, but nothing downstream reads them (cross-attention masks them).
        """
        x = x + self.self_attn(self.norm1(x), context_mask=src_mask)
        return x + self.ff(self.norm2(x))


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the memory, feed-forward."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_attn = MultiHeadAttention(d_model, num_heads)
        self.cross_attn = MultiHeadAttention(d_model, num_heads)
        self.ff = _feed_forward(d_model, d_ff)

    def forward(
        self, y: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Process the whole target at once (training, uncached decoding).

        Args:
            y: ``(batch, len_tgt, d_model)``.
            memory: ``(batch, len_src, d_model)``, the encoder's output.
            memory_mask: ``(batch, len_src)`` bool, the *source* padding mask.

        Returns:
            ``(batch, len_tgt, d_model)`` and the cross-attention weights
            ``(batch, heads, len_tgt, len_src)``.
        """
        # Causal: token t may read tokens <= t only. No target padding mask is needed:
        # pads sit at the end, so the causal mask already hides them from real tokens.
        causal = causal_mask(y.shape[1], device=y.device)
        y = y + self.self_attn(self.norm1(y), attn_mask=causal)
        # Cross-attention needs no causal mask: the whole source is known in advance.
        out, weights = self.cross_attn(self.norm2(y), memory, context_mask=memory_mask, need_weights=True)
        y = y + out
        return y + self.ff(self.norm3(y)), weights

    def step(self, y_t: torch.Tensor, self_cache: KVCache, cross_cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding step for the newest token ``y_t`` ``(batch, 1, d_model)``.

        ``self_cache`` grows by this token's key and value; ``cross_cache`` holds the
        memory's keys and values, projected once per source by ``precompute_context``.
        """
        y_t = y_t + self.self_attn.step(self.norm1(y_t), self_cache)
        out, weights = self.cross_attn.step(self.norm2(y_t), cross_cache, need_weights=True)
        y_t = y_t + out
        return y_t + self.ff(self.norm3(y_t)), weights


class Encoder(nn.Module):
    """Embedding + positions + a stack of :class:`EncoderLayer` + final ``LayerNorm``.

    Args:
        embed: maps the source to ``(batch, len_src, d_model)``: an ``nn.Embedding`` for
            token ids, an ``nn.Linear`` for flattened image patches.
        max_len: the longest source (the number of patches for images).
        learned_positions: learned position vectors instead of sinusoidal ones.
    """

    def __init__(
        self,
        embed: nn.Module,
        max_len: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        d_ff: int,
        *,
        learned_positions: bool = False,
    ) -> None:
        super().__init__()
        self.embed, self.max_len = embed, max_len
        if learned_positions:
            self.pos = nn.Parameter(0.02 * torch.randn(max_len, d_model))
        else:
            self.register_buffer("pos", sinusoidal_positions(max_len, d_model), persistent=False)
        self.layers = nn.ModuleList(EncoderLayer(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``src``: ``(batch, len_src)`` ids or ``(batch, len_src, patch_dim)`` → ``(batch, len_src, d_model)``."""
        length = src.shape[1]
        if length > self.max_len:
            raise ValueError(f"source of shape {tuple(src.shape)} is longer than max_len={self.max_len}")
        if src_mask is not None and (src_mask.dtype != torch.bool or tuple(src_mask.shape) != tuple(src.shape[:2])):
            raise ValueError(
                f"src_mask must be bool of shape (batch, len_src) = {tuple(src.shape[:2])}, "
                f"got {src_mask.dtype} {tuple(src_mask.shape)}"
            )
        x = self.embed(src) + self.pos[:length]
        for layer in self.layers:
            x = layer(x, src_mask)
        return self.norm(x)


class Decoder(nn.Module):
    """Token embedding + sinusoidal positions + :class:`DecoderLayer` stack + output projection."""

    def __init__(self, vocab_size: int, d_model: int, num_heads: int, num_layers: int, d_ff: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, d_model)
        self.register_buffer("pos", sinusoidal_positions(max_len, d_model), persistent=False)
        self.layers = nn.ModuleList(DecoderLayer(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def forward(
        self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``tgt_in``: ``(batch, len_tgt)`` ids → logits ``(batch, len_tgt, vocab)`` and, per
        layer, the cross-attention weights ``(batch, heads, len_tgt, len_src)``."""
        if tgt_in.dim() != 2 or tgt_in.shape[1] > self.max_len:
            raise ValueError(
                f"tgt_in must be (batch, len_tgt) with len_tgt <= {self.max_len}, got {tuple(tgt_in.shape)}"
            )
        y = self.embed(tgt_in) + self.pos[: tgt_in.shape[1]]
        weights = []
        for layer in self.layers:
            y, w = layer(y, memory, memory_mask)
            weights.append(w)
        return self.out(self.norm(y)), weights

    def start(self, memory: torch.Tensor, memory_mask: torch.Tensor | None) -> list[tuple[KVCache, KVCache]]:
        """Per layer, an empty self-attention cache and the memory's cross-attention cache.

        This is where the KV cache pays: each layer projects the source's keys and
        values **once**, instead of once per generated token.
        """
        return [
            (layer.self_attn.new_cache(), layer.cross_attn.precompute_context(memory, memory_mask))
            for layer in self.layers
        ]

    def step(
        self, token: torch.Tensor, position: int, caches: list[tuple[KVCache, KVCache]]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Feed one token per sequence, ``(batch,)`` ids at ``position``.

        Returns:
            logits ``(batch, vocab)`` for the next token and, per layer, the
            cross-attention weights ``(batch, heads, 1, len_src)``.
        """
        if position >= self.max_len:
            raise ValueError(f"position {position} is beyond the decoder's max_len={self.max_len}")
        y = self.embed(token[:, None]) + self.pos[position]
        weights = []
        for layer, (self_cache, cross_cache) in zip(self.layers, caches):
            y, w = layer.step(y, self_cache, cross_cache)
            weights.append(w)
        return self.out(self.norm(y))[:, 0], weights


class EncoderDecoder(nn.Module):
    """An :class:`Encoder` and a :class:`Decoder` that reads it through cross-attention."""

    def __init__(self, encoder: Encoder, decoder: Decoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(
        self, src: torch.Tensor, src_mask: torch.Tensor | None, tgt_in: torch.Tensor, *, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Teacher-forced logits ``(batch, len_tgt, vocab)``.

        Args:
            src: ``(batch, len_src)`` ids or ``(batch, len_src, patch_dim)`` patches.
            src_mask: ``(batch, len_src)`` bool, True = real token; ``None`` = all real.
            tgt_in: ``(batch, len_tgt)`` ids, starting with ``<bos>``.
            need_weights: also return every layer's cross-attention weights, a list of
                ``(batch, heads, len_tgt, len_src)`` tensors.
        """
        if src.shape[0] != tgt_in.shape[0]:
            raise ValueError(f"src {tuple(src.shape)} and tgt_in {tuple(tgt_in.shape)} have different batch sizes")
        memory = self.encoder(src, src_mask)
        logits, weights = self.decoder(tgt_in, memory, src_mask)
        return (logits, weights) if need_weights else logits


def _build(seed: int, make: Any) -> EncoderDecoder:
    # Seed the initial weights without disturbing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def translation_model(
    src_vocab_size: int,
    tgt_vocab_size: int,
    *,
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
    d_ff: int = 128,
    max_len: int = 32,
    seed: int = 0,
) -> EncoderDecoder:
    """A sentence encoder (sinusoidal positions) and the decoder, with seeded weights."""

    def make() -> EncoderDecoder:
        embed = nn.Embedding(src_vocab_size, d_model)
        encoder = Encoder(embed, max_len, d_model, num_heads, num_layers, d_ff)
        return EncoderDecoder(encoder, Decoder(tgt_vocab_size, d_model, num_heads, num_layers, d_ff, max_len))

    return _build(seed, make)


def captioning_model(
    patch_dim: int,
    num_patches: int,
    vocab_size: int,
    *,
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
    d_ff: int = 128,
    max_len: int = 16,
    seed: int = 0,
) -> EncoderDecoder:
    """A patch encoder (linear patch embedding, learned positions) and the same decoder."""

    def make() -> EncoderDecoder:
        encoder = Encoder(
            nn.Linear(patch_dim, d_model), num_patches, d_model, num_heads, num_layers, d_ff, learned_positions=True
        )
        return EncoderDecoder(encoder, Decoder(vocab_size, d_model, num_heads, num_layers, d_ff, max_len))

    return _build(seed, make)


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------
@torch.no_grad()
def greedy_decode(
    model: EncoderDecoder,
    src: torch.Tensor,
    src_mask: torch.Tensor | None = None,
    *,
    max_len: int = 20,
    use_cache: bool = True,
    need_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Generate the most likely next token, one step at a time, from ``<bos>``.

    With ``use_cache`` (the default), the encoder runs once, each decoder layer projects
    the memory's keys and values once (``precompute_context``), and each step feeds only
    the newest token through the self-attention caches (``new_cache``/``step``). Without
    it, every step re-runs the decoder on the whole prefix: the same result (tested),
    ``O(len_tgt)`` times more work.

    Args:
        src, src_mask: as in :meth:`EncoderDecoder.forward`.
        max_len: the most tokens to generate, ``<eos>`` included.
        need_weights: also return each layer's cross-attention weights.

    Returns:
        ``(batch, n)`` token ids, ``n <= max_len``, without ``<bos>``: each row ends with
        ``<eos>`` and then ``<pad>`` (or stops at ``max_len``). With ``need_weights``, a list
        (one per layer) of ``(batch, heads, n, len_src)`` weights; rows after a
        sequence's ``<eos>`` belong to its padding.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    was_training = model.training
    model.eval()
    try:
        memory = model.encoder(src, src_mask)
        batch = memory.shape[0]
        tokens = torch.full((batch, 1), BOS, dtype=torch.long, device=memory.device)
        done = torch.zeros(batch, dtype=torch.bool, device=memory.device)
        caches = model.decoder.start(memory, src_mask) if use_cache else None
        steps: list[list[torch.Tensor]] = []
        for t in range(max_len):
            if use_cache:
                logits, weights = model.decoder.step(tokens[:, -1], t, caches)
                steps.append(weights)
            else:
                all_logits, weights = model.decoder(tokens, memory, src_mask)
                logits = all_logits[:, -1]
            next_token = logits.argmax(-1).masked_fill(done, PAD)  # finished rows only pad
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            done |= next_token == EOS
            if bool(done.all()):
                break
        out = tokens[:, 1:]
        if not need_weights:
            return out
        if use_cache:
            weights = [torch.cat([s[layer] for s in steps], dim=2) for layer in range(len(steps[0]))]
        return out, weights
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------
def _loss(model: EncoderDecoder, batch: Batch) -> torch.Tensor:
    logits = model(batch.src, batch.src_mask, batch.tgt_in)
    return F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD)


def train(
    model: EncoderDecoder,
    data: Any,
    steps: int,
    *,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup: int = 50,
    weight_decay: float = 0.01,
    grad_clip: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train with AdamW, a short linear warm-up and a cosine decay to zero.

    Args:
        model: the model to train, in place.
        data: a task with a ``train`` list of examples and a ``batch(examples)`` method
            (:class:`~course_lib.data.TranslationTask`, :class:`~course_lib.data.CaptionTask`).
        steps: optimisation steps; each sees ``batch_size`` examples, drawn without
            replacement until the training set is used up, then reshuffled.
        seed: seeds the order of the examples. The run is deterministic on one CPU.
        progress: show a tqdm progress bar.

    Returns:
        The training loss of every step. The model is left in eval mode.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got steps={steps}, batch_size={batch_size}")
    examples: Sequence[Any] = data.train
    if len(examples) < batch_size:
        raise ValueError(f"the training set has {len(examples)} examples, fewer than batch_size={batch_size}")
    gen = torch.Generator().manual_seed(seed)
    # foreach: one kernel per operation over all parameters instead of one per parameter, which matters when
    # every tensor is small (about 20 % faster per step here).
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)

    def schedule(step: int) -> float:  # warm-up, then half a cosine from lr to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    order, cursor, losses = torch.randperm(len(examples), generator=gen), 0, []
    model.train()
    bar = tqdm(range(steps), disable=not progress, desc="training", leave=False)
    for _ in bar:
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(examples), generator=gen), 0
        batch = data.batch([examples[i] for i in order[cursor : cursor + batch_size].tolist()])
        cursor += batch_size
        loss = _loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if progress:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: EncoderDecoder, data: Any, examples: Sequence[Any], *, batch_size: int = 500) -> dict[str, float]:
    """Greedy-decode ``examples`` and compare with their references.

    Returns:
        ``exact_match``: the fraction of outputs equal to the reference, ``<eos>`` included;
        ``token_accuracy``: the fraction of reference tokens (``<eos>`` included) that
        the output has at the same position.
    """
    if not examples:
        raise ValueError("evaluate needs at least one example")
    exact, correct, total = 0, 0, 0
    for start in range(0, len(examples), batch_size):
        batch = data.batch(examples[start : start + batch_size])
        out = greedy_decode(model, batch.src, batch.src_mask, max_len=batch.tgt_out.shape[1])
        pred = torch.full_like(batch.tgt_out, PAD)
        pred[:, : out.shape[1]] = out
        hits = (pred == batch.tgt_out) & batch.tgt_mask
        correct += int(hits.sum())
        total += int(batch.tgt_mask.sum())
        exact += int((hits | ~batch.tgt_mask).all(dim=1).sum())
    return {"exact_match": exact / len(examples), "token_accuracy": correct / total}


# --------------------------------------------------------------------------------------
# Measuring what the attention does
# --------------------------------------------------------------------------------------
def alignment_accuracy(weights: torch.Tensor, alignment: torch.Tensor) -> float:
    """The fraction of target tokens whose arg-max attention lands on their source word.

    Args:
        weights: ``(batch, len_tgt, len_src)`` attention (one head, or an average).
        alignment: ``(batch, len_tgt)`` true source index of each target token; ``-1``
            where there is none (``<eos>``, padding), which is not counted.
    """
    if weights.dim() != 3 or tuple(alignment.shape) != tuple(weights.shape[:2]):
        raise ValueError(
            f"weights must be (batch, len_tgt, len_src) and alignment (batch, len_tgt); "
            f"got {tuple(weights.shape)} and {tuple(alignment.shape)}"
        )
    counted = alignment >= 0
    if not bool(counted.any()):
        raise ValueError("alignment has no target token with a source word (all -1)")
    hits = (weights.argmax(-1) == alignment) & counted
    return float(hits.sum()) / float(counted.sum())


def attention_on_targets(weights: torch.Tensor, targets: torch.Tensor) -> float:
    """The mean fraction of attention mass that falls on the target keys.

    Args:
        weights: ``(batch, len_q, len_k)``, rows summing to one.
        targets: ``(batch, len_q, len_k)`` bool, the keys each query *should* read
            (e.g. the patches of the shape a caption word names). Rows without any
            target are not counted.
    """
    if weights.shape != targets.shape or targets.dtype != torch.bool:
        raise ValueError(
            f"weights and targets must have one shape, targets bool; got {tuple(weights.shape)} and "
            f"{targets.dtype} {tuple(targets.shape)}"
        )
    rows = targets.any(-1)
    if not bool(rows.any()):
        raise ValueError("targets has no query with a target key")
    mass = (weights * targets).sum(-1)
    return float(mass[rows].mean())
