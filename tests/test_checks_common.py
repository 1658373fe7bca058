"""The self-checks' shared messages: where two arrays differ, and what a forgotten return looks like."""

import re

import numpy as np
import pytest
import torch

from course_lib.checks import Check, CheckFailed, describe, difference


def test_difference_names_the_shape_the_largest_gap_and_the_first_index():
    expected = np.zeros((4, 30))
    got = expected.copy()
    got[0, 7] = 0.1
    got[2, 5] = -0.5
    text = difference(got, expected)
    assert "shape (4, 30)" in text and "2 of 120 entries differ" in text
    assert "largest |difference| 0.5 at index (2, 5)" in text and "first difference at index (0, 7)" in text
    assert len(text) < 200, "a large array is not printed"


def test_difference_counts_a_nan_as_the_largest_gap_and_takes_tensors():
    expected = torch.zeros(3, 3)
    got = expected.clone()
    got[1, 1] = float("nan")
    assert "largest |difference| inf at index (1, 1) (got nan" in difference(got, expected)


def test_difference_of_arrays_that_agree_or_differ_in_shape():
    assert "within tolerance" in difference(np.ones(3), np.ones(3) + 1e-9)
    assert difference(np.ones((2, 3)), np.ones((3, 2))) == "shape (2, 3), expected (3, 2)"


def test_a_none_result_asks_about_return():
    assert describe(None) == "None (did you forget `return`?)"


def test_a_failed_close_check_shows_where_not_the_arrays():
    with pytest.raises(CheckFailed) as info:
        Check("softmax").close(np.zeros((50, 50)), np.eye(50), "softmax(x)", hint="subtract the row max")
    message = str(info.value)
    assert "50 of 2500 entries differ" in message and "hint: subtract the row max" in message
    assert len(message) < 300


def test_a_hint_function_speaks_only_for_the_error_it_knows():
    def hint(err: Exception) -> str | None:
        return "use `...` in einsum" if "einsum" in str(err) else None

    def broken(message):
        raise RuntimeError(message)

    for message, shown in [("einsum(): subscript mismatch", True), ("index out of range", False)]:
        with pytest.raises(RuntimeError, match=re.escape(message)) as info:
            Check("task").call(broken, message, hint=hint)
        notes = getattr(info.value, "__notes__", [])
        assert any("use `...` in einsum" in n for n in notes) is shown
