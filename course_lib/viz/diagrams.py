"""Diagrams drawn with matplotlib (no image files): where cross-attention sits, and its shapes.

* ``encoder_decoder_diagram``: the data flow of an encoder-decoder Transformer, with the
  decoder's cross-attention reading the encoder's states;
* ``attention_shapes_diagram``: the matrices of ``softmax(Q Kᵀ / √d) V`` drawn to scale, so
  that ``len_q ≠ len_k`` is visible at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

__all__ = ["attention_shapes_diagram", "encoder_decoder_diagram"]

# One colour per role, used in every diagram and lesson: the target (queries) is orange,
# the source (keys and values) is blue, the weights are grey.
TARGET_COLOR = "#f28e2b"
SOURCE_COLOR = "#4e79a7"
BLOCK_COLOR = "#e8e8e8"
CROSS_COLOR = "#fbd3a9"


def _box(ax: plt.Axes, x: float, y: float, w: float, h: float, text: str, fc: str, **text_kw) -> None:
    """A rounded box centred at ``(x, y)``, filled with ``fc``, with ``text`` in it."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=fc, ec="#555555", lw=1
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=text_kw.pop("fontsize", 9.5), **text_kw)


def _arrow(ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], color: str = "#555555", **kw) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color, lw=1.4, **kw))


def _token_row(ax: plt.Axes, tokens: Sequence[str], x_center: float, y: float, color: str, width: float) -> list[float]:
    """Draw one small box per token, centred on ``x_center``; return the boxes' x positions."""
    step = width / max(len(tokens), 1)
    xs = [x_center - width / 2 + step * (i + 0.5) for i in range(len(tokens))]
    for x, tok in zip(xs, tokens):
        _box(ax, x, y, step * 0.92, 0.5, tok, color, fontsize=8, color="white" if color == SOURCE_COLOR else "black")
    return xs


def encoder_decoder_diagram(
    source: Sequence[str] = ("le", "chat", "noir", "dort"),
    target: Sequence[str] = ("<s>", "the", "black", "cat", "is"),
    predicted: Sequence[str] | None = ("the", "black", "cat", "is", "sleeping"),
    *,
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """The data flow of an encoder-decoder Transformer, cross-attention highlighted.

    The encoder reads ``source`` (``len_k`` tokens); the decoder reads ``target``
    (``len_q`` tokens, shifted right) and predicts ``predicted``. In every decoder layer,
    cross-attention takes its queries from the decoder and its keys and values from the
    encoder's final states.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(10.5, 6.4))
    ax.set_xlim(0, 15.4)
    ax.set_ylim(-0.5, 9.2)
    ax.set_aspect("equal")
    ax.axis("off")
    enc_x, dec_x, col_w = 2.9, 12.3, 5.4
    mem_y = cross_y = 5.1  # side by side, so that K and V flow straight across

    # --- encoder: source tokens -> embeddings -> N x (self-attention, feed-forward) -> states
    ax.add_patch(Rectangle((enc_x - col_w / 2 - 0.2, 2.0), col_w + 0.4, 2.45, fill=False, ec="#999999", ls="--"))
    ax.text(enc_x - col_w / 2 - 0.1, 4.25, "encoder, × N", fontsize=8.5, color="#666666", va="center")
    _token_row(ax, source, enc_x, 0.4, SOURCE_COLOR, col_w)
    ax.text(enc_x, -0.05, f"source, len_k = {len(source)}", ha="center", va="top", fontsize=9, color=SOURCE_COLOR)
    _box(ax, enc_x, 1.4, col_w, 0.55, "embedding + position", BLOCK_COLOR)
    _box(ax, enc_x, 2.55, col_w, 0.6, "self-attention", BLOCK_COLOR)
    _box(ax, enc_x, 3.7, col_w, 0.6, "feed-forward", BLOCK_COLOR)
    _token_row(ax, [f"h{i + 1}" for i in range(len(source))], enc_x, mem_y, SOURCE_COLOR, col_w)
    ax.text(enc_x, mem_y + 0.45, "encoder states (the memory)", ha="center", fontsize=9, color=SOURCE_COLOR)
    for y0, y1 in ((0.65, 1.12), (1.68, 2.25), (2.85, 3.4), (4.0, mem_y - 0.25)):
        _arrow(ax, (enc_x, y0), (enc_x, y1))

    # --- decoder: target tokens -> embeddings -> masked self-attention -> CROSS-attention -> ...
    ax.add_patch(Rectangle((dec_x - col_w / 2 - 0.2, 2.0), col_w + 0.4, 4.7, fill=False, ec="#999999", ls="--"))
    ax.text(dec_x + col_w / 2 + 0.1, 6.5, "decoder, × N", fontsize=8.5, color="#666666", ha="right", va="center")
    _token_row(ax, target, dec_x, 0.4, TARGET_COLOR, col_w)
    ax.text(dec_x, -0.05, f"target so far, len_q = {len(target)}", ha="center", va="top", fontsize=9, color="#b05a00")
    _box(ax, dec_x, 1.4, col_w, 0.55, "embedding + position", BLOCK_COLOR)
    _box(ax, dec_x, 2.9, col_w, 0.6, "masked self-attention", BLOCK_COLOR)
    _box(ax, dec_x, cross_y, col_w, 0.75, "CROSS-ATTENTION", CROSS_COLOR, fontweight="bold")
    _box(ax, dec_x, 6.1, col_w, 0.5, "feed-forward", BLOCK_COLOR)
    _box(ax, dec_x, 7.25, col_w, 0.55, "linear + softmax", BLOCK_COLOR)
    for y0, y1 in ((0.65, 1.12), (1.68, 2.6), (cross_y + 0.38, 5.85), (6.35, 6.97)):
        _arrow(ax, (dec_x, y0), (dec_x, y1))
    _arrow(ax, (dec_x, 3.2), (dec_x, cross_y - 0.38), color="#b05a00")
    ax.text(dec_x + 0.12, 4.0, "Q: one row per\ntarget token", fontsize=9, color="#b05a00", va="center")
    if predicted is not None:
        _token_row(ax, predicted, dec_x, 8.2, "white", col_w)
        _arrow(ax, (dec_x, 7.53), (dec_x, 7.95))
        ax.text(dec_x, 8.65, "next-token predictions", ha="center", fontsize=9, color="#666666")

    # --- the one link between the two stacks: keys and values come from the encoder's states
    _arrow(ax, (enc_x + col_w / 2 + 0.1, mem_y), (dec_x - col_w / 2 - 0.05, cross_y), color=SOURCE_COLOR)
    ax.text(
        (enc_x + dec_x) / 2,
        mem_y + 0.2,
        "memory: one row per source\ntoken, read by every decoder\nlayer (each projects its\nown K, V from it)",
        fontsize=9,
        color=SOURCE_COLOR,
        ha="center",
        va="bottom",
    )
    return ax


def _matrix(ax: plt.Axes, x: float, y_top: float, colors: np.ndarray, cell: float, label: str) -> None:
    """A grid of cells coloured by ``colors`` (rows, cols, 4), top-left corner at ``(x, y_top)``, labelled below."""
    rows, cols = colors.shape[:2]
    for i in range(rows):
        for j in range(cols):
            ax.add_patch(
                Rectangle((x + j * cell, y_top - (i + 1) * cell), cell, cell, fc=colors[i, j], ec="white", lw=1.2)
            )
    ax.text(x + cols * cell / 2, y_top - rows * cell - 0.15, label, ha="center", va="top", fontsize=9)


def _ordinal(index: int) -> str:
    """'first', 'second'... for a 0-based row index (the picture counts as a reader does)."""
    words = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
    return words[index] if 0 <= index < len(words) else f"#{index + 1}"


def attention_shapes_diagram(
    len_q: int = 5, len_k: int = 4, d: int = 3, d_v: int = 2, *, row: int = 1, ax: plt.Axes | None = None
) -> plt.Axes:
    """``softmax(Q Kᵀ / √d) V`` with every matrix drawn cell by cell, to scale.

    Queries (orange) come from the target, keys and values (blue) from the source. The
    weights are coloured by a real softmax of random scores, so each row sums to one.
    Query ``row`` (0-based; the caption counts from one: row 1 is "the second") is outlined
    in every matrix that has one row per query.
    """
    cell = 0.42
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(len_q, len_k)) * 1.5
    weights = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    solid = lambda color, r, c: np.broadcast_to(np.array(plt.matplotlib.colors.to_rgba(color)), (r, c, 4))
    specs = [  # (colors, label, one row per query?)
        (solid(TARGET_COLOR, len_q, d), f"Q\n({len_q} × {d})\nfrom the target", True),
        (solid(SOURCE_COLOR, d, len_k), f"Kᵀ / √d\n({d} × {len_k})\nfrom the source", False),
        (solid("#9a9a9a", len_q, len_k), f"scores S\n({len_q} × {len_k})", True),
        (plt.get_cmap("viridis")(weights / weights.max()), f"weights A\n({len_q} × {len_k})\neach row sums to 1", True),
        (solid(SOURCE_COLOR, len_k, d_v), f"V\n({len_k} × {d_v})\nfrom the source", False),
        (solid(TARGET_COLOR, len_q, d_v), f"output\n({len_q} × {d_v})\none row per query", True),
    ]
    ops = ["·", "=", "softmax\nalong\neach row\n→", "·", "="]
    op_w = [0.7, 0.7, 1.5, 0.9, 0.9]
    total = sum(c.shape[1] for c, _, _ in specs) * cell + sum(op_w)
    if ax is None:
        _, ax = plt.subplots(figsize=(total * 0.75, 3.0))
    ax.set_xlim(-0.1, total + 0.1)
    ax.set_ylim(-max(len_q, len_k, d) * cell - 1.25, 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    x = 0.0
    for n, (colors, label, per_query) in enumerate(specs):
        _matrix(ax, x, 0.0, colors, cell, label)
        if per_query:  # one target token's path through the computation
            width = colors.shape[1] * cell
            ax.add_patch(Rectangle((x, -(row + 1) * cell), width, cell, fill=False, ec="crimson", lw=2))
        x += colors.shape[1] * cell
        if n < len(ops):
            big = len(ops[n]) == 1
            ax.text(
                x + op_w[n] / 2,
                -min(len_q, 3) * cell / 2,
                ops[n],
                ha="center",
                va="center",
                fontsize=14 if big else 8.5,
            )
            x += op_w[n]
    ax.text(
        0.0,
        0.3,
        f"Outlined in red: the {_ordinal(row)} target token asks every source token, and gets one output row.",
        fontsize=9,
        color="crimson",
    )
    return ax
