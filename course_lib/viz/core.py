"""Attention heatmaps and head grids in the course's style.

Weights are drawn with queries (target tokens) as rows and keys (source tokens) as
columns, the layout of the ``(len_q, len_k)`` weight matrix itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["CMAP", "as_numpy", "head_grid", "heatmap", "use_course_style"]

CMAP = "viridis"  # perceptually uniform, readable in grey and by colour-blind readers


def use_course_style() -> None:
    """Set the matplotlib defaults every lesson uses."""
    plt.rcParams.update(
        {
            "figure.dpi": 90,
            "figure.figsize": (5.5, 4.0),
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "xtick.labelsize": 9,
            "ytick.labelsize": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "image.cmap": CMAP,
        }
    )


def as_numpy(x: Any) -> np.ndarray:
    """A numpy copy of a numpy array or (possibly CUDA, possibly grad-tracking) tensor."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def heatmap(
    weights: Any,
    keys: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    *,
    ax: plt.Axes | None = None,
    title: str | None = None,
    xlabel: str = "key (source)",
    ylabel: str = "query (target)",
    annotate: bool = False,
    vmin: float | None = 0.0,
    vmax: float | None = None,
    colorbar: bool = True,
) -> plt.Axes:
    """Draw a ``(len_q, len_k)`` matrix of attention weights.

    Args:
        weights: ``(len_q, len_k)`` array or tensor.
        keys, queries: tick labels (source and target tokens).
        annotate: write each value in its cell (small matrices only).
    """
    w = as_numpy(weights)
    if w.ndim != 2:
        raise ValueError(f"heatmap draws a (len_q, len_k) matrix, got shape {w.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.45 * w.shape[1], 0.8 + 0.4 * w.shape[0]))
    image = ax.imshow(w, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if keys is not None:
        rotate = max(map(len, keys), default=0) > 3
        ax.set_xticks(range(len(keys)), keys, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    if queries is not None:
        ax.set_yticks(range(len(queries)), queries)
    if title:
        ax.set_title(title)
    if annotate:
        for (i, j), value in np.ndenumerate(w):
            top = np.nanmax(w) if vmax is None else vmax
            bright = value > ((vmin or 0) + top) / 2
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="black" if bright else "white")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def head_grid(
    weights: Any,
    keys: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    *,
    ncols: int = 4,
    title: str | None = None,
    colorbar: bool = False,
) -> plt.Figure:
    """One heatmap per head for ``(heads, len_q, len_k)`` weights, on a shared colour scale.

    ``colorbar=True`` adds one colour bar for all heads, so that values can be read off
    (a uniform head, for example, is one flat colour whose level only the bar tells).
    """
    w = as_numpy(weights)
    if w.ndim != 3:
        raise ValueError(f"head_grid draws (heads, len_q, len_k) weights, got shape {w.shape}")
    heads = w.shape[0]
    ncols = min(ncols, heads)
    nrows = -(-heads // ncols)
    cell_w, cell_h = 0.9 + 0.32 * w.shape[2], 0.9 + 0.3 * w.shape[1]
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_w * ncols, cell_h * nrows), squeeze=False)
    vmax = float(w.max()) if w.size else 1.0
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.axis("off")
            continue
        heatmap(
            w[h],
            keys,
            queries,
            ax=ax,
            title=f"head {h}",
            vmax=vmax,
            colorbar=False,
            xlabel="key (source)" if h >= heads - ncols else "",
            ylabel="query (target)" if h % ncols == 0 else "",
        )
        if h % ncols:
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if colorbar and heads:
        # after tight_layout, which cannot place a bar shared by several axes
        fig.colorbar(axes.flat[0].images[0], ax=list(axes.flat), fraction=0.025, pad=0.02, label="weight")
    return fig
