"""Image overlays and the capstone explorers (lessons 08 and 09).

* :func:`patch_grid` puts per-patch weights back on the image's grid;
* :func:`attention_overlay` shows one query's attention over an image: attended
  patches stay bright, the others are dimmed, so the colours stay true;
* :func:`caption_attention` draws one overlay per caption word;
* :func:`alignment_heatmap` draws a translation's cross-attention with the true
  alignment marked;
* :func:`translation_explorer` and :func:`caption_explorer` are ipywidgets
  explorers: choose an input, see the model's output and where it looked.

The explorers draw into an ``ipywidgets.Image`` (a PNG), so they work in any front
end and can be tested without one: each returns its ``VBox`` with three extra
attributes, ``controls`` (a dict of the input widgets), ``info`` (an ``HTML``
widget with the text shown) and ``image`` (the ``Image`` widget).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from .core import as_numpy, heatmap

__all__ = [
    "alignment_heatmap",
    "attention_overlay",
    "caption_attention",
    "caption_explorer",
    "patch_grid",
    "translation_explorer",
]


def patch_grid(weights: Any, grid: int | tuple[int, int] | None = None) -> np.ndarray:
    """Per-patch values ``(..., num_patches)`` → ``(..., grid_h, grid_w)``, in raster order.

    Args:
        weights: the last axis holds one value per patch, row by row (as ``patchify`` makes them).
        grid: ``(grid_h, grid_w)``, or one int for a square grid; by default the square
            root of ``num_patches``.
    """
    w = as_numpy(weights)
    n = w.shape[-1]
    if grid is None:
        side = int(round(n**0.5))
        grid = (side, side)
    elif isinstance(grid, int):
        grid = (grid, grid)
    if grid[0] * grid[1] != n:
        raise ValueError(f"{n} patches (last axis of shape {w.shape}) do not fill a {grid[0]}×{grid[1]} grid")
    return w.reshape(*w.shape[:-1], *grid)


def _hwc(image: Any) -> np.ndarray:
    img = as_numpy(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)  # channels first (as the data is) → channels last (as imshow wants)
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"image must be (3, H, W) or (H, W, 3), got shape {as_numpy(image).shape}")
    return np.clip(img, 0.0, 1.0)


def _outline(mask: np.ndarray, ph: int, pw: int) -> list[list[tuple[float, float]]]:
    """The border of the union of the True cells of a ``(rows, cols)`` grid, in pixel coordinates.

    One segment per cell edge that separates a True cell from a False one (or from the outside):
    two neighbouring target patches share no drawn edge, so the region gets a single outline.
    """
    inside = np.pad(mask, 1)  # False all around: edges on the image border are drawn
    segments = []
    for r, c in zip(*np.nonzero(mask)):
        x0, y0, x1, y1 = c * pw - 0.5, r * ph - 0.5, (c + 1) * pw - 0.5, (r + 1) * ph - 0.5
        if not inside[r, c + 1]:  # the cell above
            segments.append([(x0, y0), (x1, y0)])
        if not inside[r + 2, c + 1]:  # below
            segments.append([(x0, y1), (x1, y1)])
        if not inside[r + 1, c]:  # left
            segments.append([(x0, y0), (x0, y1)])
        if not inside[r + 1, c + 2]:  # right
            segments.append([(x1, y0), (x1, y1)])
    return segments


def attention_overlay(
    image: Any,
    weights: Any,
    *,
    ax: plt.Axes | None = None,
    title: str | None = None,
    targets: Any | None = None,
    floor: float = 0.15,
) -> plt.Axes:
    """One query's attention over an image's patches.

    Each patch is dimmed in proportion to its weight: brightness ``floor + (1 - floor) ·
    w / max(w)``. The brightest patch is where the query looked most.

    Args:
        image: ``(3, H, W)`` or ``(H, W, 3)`` in ``[0, 1]``.
        weights: ``(num_patches,)`` attention of one query (one head or an average).
        targets: optional ``(num_patches,)`` bool, patches outlined in white (e.g. the
            shape the word names); neighbouring patches share one outline.
        floor: brightness of an unattended patch.
    """
    img = _hwc(image)
    w = patch_grid(weights)
    h, wd = img.shape[:2]
    gh, gw = w.shape
    if h % gh or wd % gw:
        raise ValueError(f"a {gh}×{gw} patch grid does not tile an image of {h}×{wd} pixels")
    ph, pw = h // gh, wd // gw
    light = floor + (1 - floor) * w / max(float(w.max()), 1e-12)
    light = np.kron(light, np.ones((ph, pw)))[..., None]  # nearest-neighbour upsampling to pixels
    if ax is None:
        _, ax = plt.subplots(figsize=(2.2, 2.2))
    ax.imshow(np.clip(img * light, 0.0, 1.0), interpolation="nearest")
    if targets is not None:
        segments = _outline(as_numpy(targets).reshape(gh, gw).astype(bool), ph, pw)
        ax.add_collection(LineCollection(segments, colors="white", linewidths=1.2, linestyles="--"))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def caption_attention(
    image: Any,
    words: Sequence[str],
    weights: Any,
    *,
    targets: Any | None = None,
    ncols: int = 5,
    fig: Figure | None = None,
    title: str | None = None,
) -> Figure:
    """The image, then one overlay per caption word, ``ncols`` panels per row.

    Args:
        image: ``(3, H, W)``.
        words: the caption, one word per row of ``weights``.
        weights: ``(len(words), num_patches)`` cross-attention (one head or averaged).
        targets: optional ``(len(words), num_patches)`` bool, outlined on each overlay.
        fig: draw into this figure (the explorers reuse theirs); a new one by default.
    """
    w = as_numpy(weights)
    if w.ndim != 2 or w.shape[0] != len(words):
        raise ValueError(f"weights must be (len(words)={len(words)}, num_patches), got shape {w.shape}")
    n = len(words) + 1
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    if fig is None:
        fig = plt.figure(figsize=(1.9 * ncols, 2.1 * nrows))
    fig.set_layout_engine("constrained")  # keeps each row's titles clear of the row above
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    axes[0].imshow(_hwc(image), interpolation="nearest")
    axes[0].set_title("image")
    for ax in axes[n:]:
        ax.axis("off")
    for ax in axes[:n]:
        ax.set_xticks([])
        ax.set_yticks([])
    for j, word in enumerate(words):
        t = None if targets is None else as_numpy(targets)[j]
        attention_overlay(image, w[j], ax=axes[j + 1], title=f"“{word}”", targets=t)
    if title:
        fig.suptitle(title)
    return fig


def alignment_heatmap(
    weights: Any,
    src_words: Sequence[str],
    tgt_words: Sequence[str],
    alignment: Sequence[int] | None = None,
    *,
    ax: plt.Axes | None = None,
    title: str | None = None,
) -> plt.Axes:
    """Cross-attention of a translation, ``(len_tgt, len_src)``, with the true alignment as red dots.

    Args:
        alignment: ``alignment[j]`` = the source index target word ``j`` comes from (or
            ``-1``); a dot marks each true cell, so a bright cell with a dot is a hit.
    """
    ax = heatmap(weights, src_words, tgt_words, ax=ax, title=title, xlabel="source", ylabel="target")
    if alignment is not None:
        rows = [j for j, i in enumerate(alignment) if i >= 0]
        ax.scatter([alignment[j] for j in rows], rows, s=14, c="red", marker="o", label="true alignment")
    return ax


# --------------------------------------------------------------------------------------
# Explorers
# --------------------------------------------------------------------------------------
def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def _select(weights: list[torch.Tensor], layer: str, head: str) -> torch.Tensor:
    """Per-layer ``(heads, len_q, len_k)`` weights → one ``(len_q, len_k)`` map ("mean" averages)."""
    w = torch.stack(weights).mean(0) if layer == "mean" else weights[int(layer)]
    return w.mean(0) if head == "mean" else w[int(head)]


def _layer_head_controls(model: Any) -> tuple[Any, Any]:
    import ipywidgets as widgets

    layers = len(model.decoder.layers)
    heads = model.decoder.layers[0].cross_attn.num_heads
    layer = widgets.Dropdown(options=["mean", *map(str, range(layers))], value=str(layers - 1), description="layer")
    head = widgets.Dropdown(options=["mean", *map(str, range(heads))], value="mean", description="head")
    return layer, head


def translation_explorer(model: Any, task: Any, sentences: Sequence[str] | None = None) -> Any:
    """Choose or type an English sentence; see its translation and cross-attention.

    Args:
        model: a trained translation :class:`~course_lib.models.EncoderDecoder`.
        task: its :class:`~course_lib.data.TranslationTask` (vocabularies).
        sentences: the sentences offered; the first ten test sentences by default.
            Any sentence of the grammar can be typed.

    Returns:
        An ``ipywidgets.VBox`` with ``controls`` (``sentence``, ``layer``, ``head``), ``info``
        and ``image`` attributes.
    """
    import ipywidgets as widgets

    from ..data import translate
    from ..models import greedy_decode

    options = list(sentences) if sentences is not None else [" ".join(p.src) for p in task.test[:10]]
    sentence = widgets.Combobox(
        options=options, value=options[0], ensure_option=False, description="sentence", continuous_update=False
    )
    sentence.layout.width = "34em"
    layer, head = _layer_head_controls(model)
    info, image = widgets.HTML(), widgets.Image(format="png")
    fig = Figure(figsize=(6.0, 4.2))

    def update(_: Any = None) -> None:
        words = sentence.value.split()
        try:
            ref = translate(words)
            src = torch.tensor([task.src_vocab.encode(words)])
        except ValueError as err:
            info.value = f"<b>Not a sentence of the grammar:</b> {err}"
            return
        out, weights = greedy_decode(model, src, max_len=len(ref.tgt) + 3, need_weights=True)
        pred = task.tgt_vocab.decode(out[0])
        n = min(len(pred), len(ref.tgt))
        w = _select([wl[0, :, :n] for wl in weights], layer.value, head.value)
        verdict = "correct" if tuple(pred) == ref.tgt else f"wrong (expected: {' '.join(ref.tgt)})"
        info.value = f"<b>translation:</b> {' '.join(pred)} &nbsp; <i>{verdict}</i>"
        fig.clear()
        title = f"layer {layer.value}, head {head.value}"
        alignment_heatmap(w, words, pred[:n], ref.alignment[:n], ax=fig.add_subplot(), title=title)
        fig.tight_layout()
        image.value = _png(fig)

    for control in (sentence, layer, head):
        control.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox([sentence]), widgets.HBox([layer, head]), info, image])
    box.controls = {"sentence": sentence, "layer": layer, "head": head}
    box.info, box.image, box.figure = info, image, fig
    return box


def caption_explorer(model: Any, task: Any, scenes: Sequence[Any] | None = None) -> Any:
    """Choose a scene; see the generated caption and where each word looked.

    Args:
        model: a trained captioning :class:`~course_lib.models.EncoderDecoder`.
        task: its :class:`~course_lib.data.CaptionTask`.
        scenes: the scenes offered (the test scenes by default).

    Returns:
        An ``ipywidgets.VBox`` with ``controls`` (``scene``, ``layer``, ``head``), ``info``
        and ``image`` attributes.
    """
    import ipywidgets as widgets

    from ..models import greedy_decode

    scenes = list(task.test if scenes is None else scenes)
    scene = widgets.IntSlider(value=0, min=0, max=len(scenes) - 1, description="scene", continuous_update=False)
    layer, head = _layer_head_controls(model)
    info, image = widgets.HTML(), widgets.Image(format="png")
    fig = Figure(figsize=(9.5, 4.2))

    def update(_: Any = None) -> None:
        s = scenes[scene.value]
        batch = task.batch([s])
        out, weights = greedy_decode(model, batch.src, max_len=batch.tgt_out.shape[1] + 2, need_weights=True)
        pred = task.vocab.decode(out[0])
        w = _select([wl[0, :, : len(pred)] for wl in weights], layer.value, head.value)
        verdict = "correct" if tuple(pred) == s.caption else f"wrong (expected: {' '.join(s.caption)})"
        info.value = f"<b>caption:</b> {' '.join(pred)} &nbsp; <i>{verdict}</i>"
        fig.clear()
        targets = task.word_patches([s])[0, : len(pred)] if tuple(pred) == s.caption else None
        caption_attention(task.images([s])[0], pred, w, targets=targets, fig=fig)
        image.value = _png(fig)

    for control in (scene, layer, head):
        control.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox([scene, layer, head]), info, image])
    box.controls = {"scene": scene, "layer": layer, "head": head}
    box.info, box.image, box.figure = info, image, fig
    return box
