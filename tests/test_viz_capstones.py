"""The capstones' image overlays and explorers, drawn headlessly (Agg)."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from course_lib.data import Scene, make_caption_task, make_translation_task
from course_lib.models import captioning_model, translation_model
from course_lib.viz import (
    alignment_heatmap,
    attention_overlay,
    caption_attention,
    caption_explorer,
    patch_grid,
    translation_explorer,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_patch_grid():
    w = torch.arange(32.0).reshape(2, 16)
    g = patch_grid(w)
    assert g.shape == (2, 4, 4) and g[1, 2, 3] == 16 + 2 * 4 + 3  # raster order
    assert patch_grid(np.arange(8), (2, 4)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"15 patches.*4×4"):
        patch_grid(np.zeros(15), 4)


def test_attention_overlay_keeps_the_attended_patch_bright():
    image = np.full((3, 32, 32), 0.8)
    weights = np.zeros(16)
    weights[6] = 1.0  # grid row 1, column 2
    targets = np.zeros(16, dtype=bool)
    targets[6] = True
    ax = attention_overlay(image, weights, targets=targets, floor=0.25)
    shown = ax.images[0].get_array()
    assert shown.shape == (32, 32, 3)
    np.testing.assert_allclose(shown[8:16, 16:24], 0.8)  # attended: unchanged
    np.testing.assert_allclose(shown[0:8, 0:8], 0.8 * 0.25)  # unattended: dimmed to the floor
    (outline,) = ax.collections  # the target patch is outlined: its four edges
    assert len(outline.get_segments()) == 4
    with pytest.raises(ValueError, match="image must be"):
        attention_overlay(np.zeros((32, 32)), weights)


def test_attention_overlay_outlines_the_union_of_neighbouring_targets():
    targets = np.zeros(16, dtype=bool)
    targets[[5, 6, 10]] = True  # an L of three patches: (1, 1), (1, 2) and (2, 2) on the 4×4 grid
    ax = attention_overlay(np.full((3, 32, 32), 0.5), np.full(16, 1 / 16), targets=targets)
    edges = {tuple(map(tuple, seg)) for seg in ax.collections[0].get_segments()}
    assert len(edges) == 8  # the L's perimeter, 8 patch edges; the two shared edges are not drawn
    shared = [((15.5, 7.5), (15.5, 15.5)), ((15.5, 15.5), (23.5, 15.5))]  # 5|6 and 6 over 10
    assert not edges & set(shared)
    assert ((7.5, 7.5), (15.5, 7.5)) in edges  # the top of patch 5


def test_caption_attention_draws_one_panel_per_word():
    fig = caption_attention(np.zeros((3, 32, 32)), ["red", "square"], np.full((2, 16), 1 / 16))
    assert len(fig.axes) == 3 and fig.axes[1].get_title() == "“red”"
    with pytest.raises(ValueError, match=r"len\(words\)=3"):
        caption_attention(np.zeros((3, 32, 32)), ["a", "b", "c"], np.zeros((2, 16)))


def test_alignment_heatmap_marks_the_true_cells():
    ax = alignment_heatmap(np.eye(3), ["a", "b", "c"], ["x", "y", "z"], [2, 0, -1])
    offsets = ax.collections[-1].get_offsets()
    assert offsets.tolist() == [[2, 0], [0, 1]]  # (source, target) of each aligned word


def test_translation_explorer_updates_when_the_controls_change():
    task = make_translation_task(20, 5)
    model = translation_model(len(task.src_vocab), len(task.tgt_vocab), d_model=16, num_heads=2, d_ff=32)
    ex = translation_explorer(model, task)
    first_text, first_png = ex.info.value, ex.image.value
    assert "translation:" in first_text and first_png[:4] == b"\x89PNG"
    ex.controls["sentence"].value = "the big red dog sees a cat in room four two"
    assert ex.image.value != first_png
    assert "wrong" in ex.info.value and "der hund rot gross ein katze im zimmer 2 4 sieht" in ex.info.value
    png = ex.image.value
    ex.controls["head"].value = "1"
    assert ex.image.value != png and ex.figure.axes[0].get_title() == "layer 1, head 1"
    png = ex.image.value
    ex.controls["sentence"].value = "dog the sees"
    assert "Not a sentence" in ex.info.value and ex.image.value == png  # the last picture stays


def test_caption_explorer_updates_when_the_scene_changes():
    task = make_caption_task(5)
    model = captioning_model(task.patch_dim, task.num_patches, len(task.vocab), d_model=16, num_heads=2, d_ff=32)
    scenes = [
        Scene((("red", "square", 0, 0), ("blue", "circle", 2, 2)), noise_seed=0),
        Scene((("green", "cross", 1, 1), ("yellow", "triangle", 2, 0)), noise_seed=1),
    ]
    ex = caption_explorer(model, task, scenes)
    png = ex.image.value
    assert "expected: red square top left and blue circle bottom right" in ex.info.value
    ex.controls["scene"].value = 1
    assert ex.image.value != png
    assert "expected: green cross middle centre and yellow triangle bottom left" in ex.info.value
    png = ex.image.value
    ex.controls["layer"].value = "0"
    assert ex.image.value != png
    assert len(ex.figure.axes) >= 2 and ex.figure.axes[0].get_title() == "image"
