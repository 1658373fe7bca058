"""The explorers, driven headlessly: build one, move a control, check what it shows."""

import ipywidgets as widgets
import numpy as np
import pytest
import torch

from course_lib import causal_mask, padding_mask, softmax
from course_lib.viz import head_explorer, mask_explorer, target_explorer, temperature_explorer

SRC = ["le", "chat", "noir", "dort"]
TGT = ["the", "black", "cat", "is", "sleeping"]


def random_weights(*shape, seed=0):
    return softmax(np.random.default_rng(seed).normal(size=shape) * 2)


def bar_heights(ax):
    return np.array([p.get_height() for p in ax.containers[0]])


def image(ax):
    return np.asarray(ax.images[0].get_array())


def test_target_explorer_follows_the_chosen_target():
    w = random_weights(5, 4)
    box = target_explorer(w, SRC, TGT)
    assert isinstance(box, widgets.VBox)
    assert box.shown["target"] == 0
    np.testing.assert_array_equal(box.shown["weights"], w[0])
    np.testing.assert_allclose(bar_heights(box.figure.axes[1]), w[0])

    box.controls["target"].value = 3
    assert box.shown["target"] == 3
    np.testing.assert_array_equal(box.shown["weights"], w[3])
    np.testing.assert_allclose(bar_heights(box.figure.axes[1]), w[3])  # the figure was redrawn
    assert "'is'" in box.figure.axes[1].get_title()
    assert len(box.figure.axes) == 2  # redrawn, not drawn on top of the old axes


def test_target_explorer_accepts_tensors_and_repeated_tokens():
    w = torch.softmax(torch.randn(3, 4), dim=-1)
    box = target_explorer(w, SRC, ["the", "cat", "the"])
    labels = [label for label, _ in box.controls["target"].options]
    assert labels == ["the (0)", "cat", "the (2)"]
    box.controls["target"].value = 2
    np.testing.assert_allclose(box.shown["weights"], w[2].numpy())


def test_temperature_sharpens_and_flattens():
    scores = np.array([2.0, 0.5, -1.0, 1.0])
    box = temperature_explorer(scores, SRC, query="black")
    np.testing.assert_allclose(box.shown["weights"], softmax(scores))
    entropies = []
    for t in (0.05, 1.0, 4.0, 19.9):
        box.controls["temperature"].value = t
        w = box.shown["weights"]
        np.testing.assert_allclose(w.sum(), 1.0)
        np.testing.assert_allclose(bar_heights(box.figure.axes[1]), w)
        entropies.append(box.shown["entropy"])
    assert all(a < b for a, b in zip(entropies, entropies[1:]))  # hotter = flatter
    box.controls["temperature"].value = 0.05
    assert box.shown["weights"].argmax() == scores.argmax() and box.shown["weights"].max() > 0.99
    box.controls["temperature"].value = 19.9
    assert np.ptp(box.shown["weights"]) < 0.1  # close to uniform
    assert box.shown["entropy"] == pytest.approx(np.log(4), abs=0.01)


def test_mask_explorer_kills_the_right_cells():
    batch = [["<s>", "the", "black", "cat"], ["<s>", "hi"], ["<s>", "a", "b", "c", "d"]]
    box = mask_explorer(batch)
    pad = padding_mask([4, 2, 5], 5)
    np.testing.assert_array_equal(box.shown["mask"], np.broadcast_to(pad[0][None], (5, 5)))

    box.controls["sentence"].value = 1
    mask, w = box.shown["mask"], box.shown["weights"]
    assert mask[:, 2:].sum() == 0 and mask[:, :2].all()  # the padded keys die in every row
    assert (w[~mask] == 0).all()
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)

    box.controls["causal"].value = True
    expected = causal_mask(5).numpy() & pad[1][None].numpy()  # 15 padded cells + 1 future cell
    np.testing.assert_array_equal(box.shown["mask"], expected)
    assert "(16 dead cells)" in box.figure.axes[1].get_title()

    box.controls["padding"].value = False
    np.testing.assert_array_equal(box.shown["mask"], causal_mask(5).numpy())
    box.controls["causal"].value = False
    assert box.shown["mask"].all()
    np.testing.assert_array_equal(image(box.figure.axes[0]), np.ones((5, 5)))


def test_head_explorer_shows_the_chosen_head():
    w = random_weights(4, 5, 4)
    box = head_explorer(w, SRC, TGT, head_names=["align", "first", "uniform", "verb"])
    np.testing.assert_allclose(image(box.figure.axes[0]), w[0])
    box.controls["head"].value = 2
    assert box.shown["head"] == 2
    np.testing.assert_array_equal(box.shown["weights"], w[2])
    np.testing.assert_allclose(image(box.figure.axes[0]), w[2])
    np.testing.assert_allclose(image(box.figure.axes[1]), w.mean(0))
    assert box.figure.axes[0].get_title() == "uniform"


@pytest.mark.parametrize(
    "build, control, value",
    [
        (lambda: target_explorer(random_weights(5, 4), SRC, TGT), "target", 4),
        (lambda: temperature_explorer(np.array([2.0, 0.5, -1.0, 1.0]), SRC), "temperature", 5.0),
        (lambda: mask_explorer([["a", "b", "c"], ["d"]]), "causal", True),
        (lambda: head_explorer(random_weights(3, 5, 4), SRC, TGT), "head", 2),
    ],
)
def test_the_picture_in_the_widget_follows_the_control(build, control, value):
    box = build()
    before = bytes(box.image.value)
    assert before.startswith(b"\x89PNG")  # the Image widget holds the rendered figure
    box.controls[control].value = value
    after = bytes(box.image.value)
    assert after.startswith(b"\x89PNG") and after != before


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: target_explorer(np.ones((2, 3, 4))), r"\(len_q, len_k\).*\(2, 3, 4\)"),
        (lambda: target_explorer(np.ones((5, 4)), SRC[:3], TGT), r"keys has 3 labels.*\(5, 4\)"),
        (lambda: temperature_explorer(np.ones((2, 4))), r"\(len_k,\).*\(2, 4\)"),
        (lambda: head_explorer(np.ones((5, 4))), r"\(heads, len_q, len_k\).*\(5, 4\)"),
        (lambda: head_explorer(np.ones((2, 5, 4)), head_names=["a"]), r"head_names has 1 labels"),
        (lambda: mask_explorer([["a"], []]), r"non-empty"),
    ],
)
def test_bad_input_gets_a_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()
