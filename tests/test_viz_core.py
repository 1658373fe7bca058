"""head_grid: one panel per head, on one colour scale, with an optional shared colour bar."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from course_lib.viz.core import head_grid


def weights(heads=3, len_q=2, len_k=4):
    rng = np.random.default_rng(0)
    w = rng.random((heads, len_q, len_k))
    return w / w.sum(-1, keepdims=True)


def test_head_grid_has_no_colour_bar_by_default():
    fig = head_grid(weights())
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3  # one per head; the fourth slot of the row is not created (ncols = heads)
    assert len(fig.axes) == 3
    plt.close(fig)


def test_head_grid_colour_bar_is_shared_and_spans_the_common_scale():
    w = weights(heads=5)
    fig = head_grid(w, ncols=4, colorbar=True)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 5
    # one extra axes: the bar; every panel uses the same colour limits, the ones the bar shows
    extra = [ax for ax in fig.axes if ax not in panels and ax.get_visible() and ax.axison]
    assert len(extra) == 1
    limits = {ax.images[0].get_clim() for ax in panels}
    assert len(limits) == 1
    ((vmin, vmax),) = limits
    assert vmin == 0.0 and vmax == pytest.approx(w.max())
    assert extra[0].get_ylabel() == "weight"
    plt.close(fig)


def test_head_grid_rejects_a_single_matrix():
    with pytest.raises(ValueError, match=r"\(heads, len_q, len_k\)"):
        head_grid(np.ones((2, 3)))
