"""Interactive explorers (ipywidgets): move a control and watch the attention weights change.

Each function returns an ``ipywidgets.VBox``, its controls above its figure; make it the
last line of a notebook cell to display it. The box also exposes what it shows, so an
explorer can be tested without a browser:

* ``box.controls``: ``{name: widget}``; setting a widget's ``.value`` redraws the figure;
* ``box.figure``: the ``matplotlib.figure.Figure`` drawn into, and ``box.image``, the
  ``ipywidgets.Image`` that shows it as a PNG;
* ``box.shown``: ``{name: value}``, the data drawn right now (e.g. ``"weights"``).

The figure is a plain ``Figure`` that pyplot does not manage, so Jupyter's inline
backend never shows it a second time below the widget; ``box.figure`` as the last line
of a cell shows the current picture without a live widget.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from ..attention import scaled_dot_product_attention, softmax
from ..masks import causal_mask, padding_mask
from .core import as_numpy, heatmap

__all__ = ["head_explorer", "mask_explorer", "target_explorer", "temperature_explorer"]


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _explorer(controls: dict[str, widgets.ValueWidget], figure: Figure, draw: Callable[[], dict]) -> widgets.VBox:
    """Controls above a picture of ``figure``. ``draw()`` draws into the cleared figure and returns what it shows.

    The picture is an ``ipywidgets.Image`` whose PNG bytes are replaced on every change: it lives in the
    widget's state, so it needs no output capture and behaves the same in JupyterLab, in nbclient and in tests.
    """
    image = widgets.Image(format="png")
    box = widgets.VBox([widgets.HBox(list(controls.values())), image])
    box.controls, box.figure, box.image, box.shown = controls, figure, image, {}

    def refresh(_change: Any = None) -> None:
        figure.clear()
        box.shown = draw()
        image.value = _png(figure)

    for control in controls.values():
        control.observe(refresh, names="value")
    refresh()
    return box


def _labels(tokens: Sequence[str]) -> list[tuple[str, int]]:
    """``(label, index)`` options for a selection widget; repeated tokens get their position appended."""
    counts = {t: list(tokens).count(t) for t in tokens}
    return [(t if counts[t] == 1 else f"{t} ({i})", i) for i, t in enumerate(tokens)]


def _check_labels(name: str, tokens: Sequence[str] | None, size: int, shape: tuple[int, ...]) -> None:
    if tokens is not None and len(tokens) != size:
        raise ValueError(f"{name} has {len(tokens)} labels but the weights of shape {shape} need {size}")


def _bars(ax: Any, values: np.ndarray, keys: Sequence[str] | None, color: str, ylabel: str) -> None:
    """A bar per source token, each bar labelled with its value."""
    xs = np.arange(len(values))
    bars = ax.bar(xs, values, color=color)
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8, padding=1)
    ax.set_xticks(xs, keys if keys is not None else [str(i) for i in xs])
    ax.set_xlabel("key (source)")
    ax.set_ylabel(ylabel)


def target_explorer(
    weights: Any, keys: Sequence[str] | None = None, queries: Sequence[str] | None = None, *, title: str | None = None
) -> widgets.VBox:
    """Choose a target token and see how its attention spreads over the source.

    Args:
        weights: ``(len_q, len_k)`` attention weights, array or tensor.
        keys, queries: source and target tokens.

    Returns:
        A ``VBox`` with control ``"target"`` (the query's row index); ``shown`` holds
        ``"target"`` and ``"weights"``, that query's ``(len_k,)`` row.
    """
    w = as_numpy(weights)
    if w.ndim != 2:
        raise ValueError(f"target_explorer needs (len_q, len_k) weights, got shape {w.shape}")
    _check_labels("keys", keys, w.shape[1], w.shape)
    _check_labels("queries", queries, w.shape[0], w.shape)
    queries = list(queries) if queries is not None else [str(i) for i in range(w.shape[0])]
    target = widgets.ToggleButtons(options=_labels(queries), value=0, description="target")
    target.style.button_width = "auto"
    figure = Figure(figsize=(3.2 + 0.95 * w.shape[1], 1.2 + 0.45 * max(w.shape[0], 5)), layout="constrained")

    def draw() -> dict:
        i = target.value
        ax_map, ax_bar = figure.subplots(1, 2, width_ratios=[1, 1.3])
        heatmap(w, keys, queries, ax=ax_map, colorbar=False, title=title or "all weights")
        ax_map.add_patch(_row_outline(i, w.shape[1]))
        _bars(ax_bar, w[i], keys, "#f28e2b", "weight")
        ax_bar.set_ylim(0, 1.1)
        ax_bar.set_title(f"'{queries[i]}' reads the source (sums to {w[i].sum():.2f})")
        return {"target": i, "weights": w[i].copy()}

    return _explorer({"target": target}, figure, draw)


def _row_outline(row: int, width: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((-0.5, row - 0.5), width, 1, fill=False, ec="crimson", lw=2.5)


def temperature_explorer(
    scores: Any, keys: Sequence[str] | None = None, *, query: str | None = None, temperature: float = 1.0
) -> widgets.VBox:
    """Divide one query's scores by a temperature and watch the softmax sharpen or flatten.

    Dividing by ``√d`` in attention *is* a temperature of ``√d``. Low temperatures give
    one-hot weights (argmax), high temperatures give uniform weights.

    Args:
        scores: ``(len_k,)`` scores of one query against every key.
        keys: source tokens; ``query``: the query's name, for the title.

    Returns:
        A ``VBox`` with control ``"temperature"``; ``shown`` holds ``"temperature"``,
        ``"weights"`` (``(len_k,)``) and ``"entropy"`` (nats; 0 = one-hot,
        ``log len_k`` = uniform).
    """
    s = as_numpy(scores).astype(np.float64)
    if s.ndim != 1:
        raise ValueError(f"temperature_explorer needs the (len_k,) scores of one query, got shape {s.shape}")
    _check_labels("keys", keys, s.shape[0], s.shape)
    slider = widgets.FloatLogSlider(
        value=temperature,
        base=10,
        min=-1.3,
        max=1.3,
        step=0.05,
        description="temperature",
        readout_format=".2f",
        continuous_update=False,  # redraw when the slider is released, not at every pixel
    )
    figure = Figure(figsize=(3.0 + 1.5 * len(s), 3.3), layout="constrained")

    def draw() -> dict:
        t = float(slider.value)
        w = softmax(s / t)
        entropy = float(-(w * np.log(np.where(w > 0, w, 1.0))).sum())
        ax_s, ax_w = figure.subplots(1, 2)
        _bars(ax_s, s / t, keys, "#9a9a9a", "score / temperature")
        ax_s.axhline(0, color="black", lw=0.8)
        ax_s.set_title(f"scores / {t:.2f}")
        _bars(ax_w, w, keys, "#f28e2b", "weight")
        ax_w.set_ylim(0, 1.1)
        who = f"'{query}'" if query else "the query"
        ax_w.set_title(f"weights of {who}: max {w.max():.2f}, entropy {entropy:.2f} nats", fontsize=10)
        return {"temperature": t, "weights": w, "entropy": entropy}

    return _explorer({"temperature": slider}, figure, draw)


def mask_explorer(sentences: Sequence[Sequence[str]], *, pad: str = "<pad>", seed: int = 0) -> widgets.VBox:
    """Decoder self-attention over a padded batch: toggle the padding and causal masks.

    The sentences are padded at the end to a common length ``L``. Scores are random
    (seeded); what matters is which cells the masks kill. Dead cells get weight exactly
    0 and are drawn crossed out.

    Args:
        sentences: a batch of token lists, of different lengths.

    Returns:
        A ``VBox`` with controls ``"sentence"`` (batch index), ``"padding"`` and
        ``"causal"`` (bools); ``shown`` holds ``"mask"`` (``(L, L)`` bool, True = may
        attend) and ``"weights"`` (``(L, L)``).
    """
    if not sentences or any(len(s) == 0 for s in sentences):
        raise ValueError("mask_explorer needs a batch of non-empty sentences")
    length = max(len(s) for s in sentences)
    tokens = [list(s) + [pad] * (length - len(s)) for s in sentences]
    keep = padding_mask(np.array([len(s) for s in sentences]), length)  # (batch, L), True = real token
    future = causal_mask(length).numpy()  # (L, L), True = not in the future
    rng = np.random.default_rng(seed)
    q, k, v = (rng.normal(size=(len(sentences), length, 8)) for _ in range(3))

    sentence = widgets.Dropdown(options=[(" ".join(s), b) for b, s in enumerate(sentences)], description="sentence")
    use_padding = widgets.Checkbox(value=True, description="key padding mask")
    use_causal = widgets.Checkbox(value=False, description="causal mask")
    figure = Figure(figsize=(2.5 + 1.1 * length, 0.9 + 0.5 * length), layout="constrained")

    def draw() -> dict:
        b = sentence.value
        mask = np.ones((length, length), dtype=bool)
        if use_padding.value:
            mask &= keep[b][None, :]  # the same key columns die for every query
        if use_causal.value:
            mask &= future
        _, w = scaled_dot_product_attention(q[b], k[b], v[b], mask, return_weights=True)
        ax_m, ax_w = figure.subplots(1, 2)
        heatmap(
            mask.astype(float),
            tokens[b],
            tokens[b],
            ax=ax_m,
            colorbar=False,
            vmax=1.0,
            title="mask (bright = attend)",
            xlabel="key",
            ylabel="query",
        )
        # Dead cells are NaN in the picture only (they are exactly 0 in ``w``): drawn blank and crossed out.
        heatmap(
            np.where(mask, w, np.nan),
            tokens[b],
            tokens[b],
            ax=ax_w,
            colorbar=False,
            vmax=1.0,
            title=f"weights ({(~mask).sum()} dead cells)",
            xlabel="key",
            ylabel="query",
        )
        ax_w.set_facecolor("#eeeeee")
        dead_i, dead_j = np.nonzero(~mask)
        ax_w.scatter(dead_j, dead_i, marker="x", color="#999999", s=40)
        return {"sentence": b, "mask": mask, "weights": w}

    controls = {"sentence": sentence, "padding": use_padding, "causal": use_causal}
    return _explorer(controls, figure, draw)


def head_explorer(
    weights: Any,
    keys: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    *,
    head_names: Sequence[str] | None = None,
) -> widgets.VBox:
    """Choose a head and compare its weights with the average over all heads.

    Args:
        weights: ``(heads, len_q, len_k)`` weights of one example.
        keys, queries: source and target tokens; ``head_names``: one label per head.

    Returns:
        A ``VBox`` with control ``"head"``; ``shown`` holds ``"head"`` and
        ``"weights"``, that head's ``(len_q, len_k)`` weights.
    """
    w = as_numpy(weights)
    if w.ndim != 3:
        raise ValueError(f"head_explorer needs (heads, len_q, len_k) weights, got shape {w.shape}")
    _check_labels("keys", keys, w.shape[2], w.shape)
    _check_labels("queries", queries, w.shape[1], w.shape)
    _check_labels("head_names", head_names, w.shape[0], w.shape)
    names = list(head_names) if head_names is not None else [f"head {h}" for h in range(w.shape[0])]
    head = widgets.ToggleButtons(options=_labels(names), value=0, description="head")
    head.style.button_width = "auto"
    small = w.shape[1] * w.shape[2] <= 64
    figure = Figure(figsize=(2.8 + 1.1 * w.shape[2], 1.3 + 0.45 * w.shape[1]), layout="constrained")

    def draw() -> dict:
        h = head.value
        ax_h, ax_mean = figure.subplots(1, 2)
        heatmap(w[h], keys, queries, ax=ax_h, colorbar=False, annotate=small, title=names[h])
        heatmap(
            w.mean(0), keys, queries, ax=ax_mean, colorbar=False, annotate=small, title="mean over heads", ylabel=""
        )
        return {"head": h, "weights": w[h].copy()}

    return _explorer({"head": head}, figure, draw)
