"""The diagrams draw what they say: tokens, lengths and matrix shapes."""

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

from course_lib.viz.diagrams import attention_shapes_diagram, encoder_decoder_diagram


def texts(ax):
    return [t.get_text() for t in ax.texts]


def test_encoder_decoder_diagram_names_both_sequences():
    ax = encoder_decoder_diagram(["a", "b", "c"], ["<s>", "x"], predicted=None)
    words = texts(ax)
    assert "CROSS-ATTENTION" in words
    assert "source, len_k = 3" in words and "target so far, len_q = 2" in words
    assert {"a", "b", "c", "<s>", "x", "h1", "h2", "h3"} <= set(words)
    assert "next-token predictions" not in words
    plt.close(ax.figure)


def test_attention_shapes_diagram_is_drawn_to_scale():
    ax = attention_shapes_diagram(len_q=5, len_k=3, d=2, d_v=4)
    cells = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_fill()]
    # Q, Kᵀ, S, A, V, output: one square per entry
    assert len(cells) == 5 * 2 + 2 * 3 + 5 * 3 + 5 * 3 + 3 * 4 + 5 * 4
    labels = " ".join(texts(ax))
    for shape in ("(5 × 2)", "(2 × 3)", "(5 × 3)", "(3 × 4)", "(5 × 4)"):
        assert shape in labels
    plt.close(ax.figure)


def test_encoder_decoder_diagram_says_each_layer_projects_its_own_keys_and_values():
    ax = encoder_decoder_diagram()
    label = next(t for t in texts(ax) if "every decoder" in t)
    assert "each projects its" in label and "own K, V" in label
    plt.close(ax.figure)


def test_attention_shapes_diagram_counts_the_outlined_row_from_one():
    ax = attention_shapes_diagram(row=1)
    assert any("the second target token" in t for t in texts(ax))
    plt.close(ax.figure)
    ax = attention_shapes_diagram(row=0)
    assert any("the first target token" in t for t in texts(ax))
    plt.close(ax.figure)
