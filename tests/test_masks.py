import math

import numpy as np
import pytest
import torch

from course_lib import (
    causal_mask,
    combine_masks,
    from_torch_key_padding_mask,
    key_padding_to_attn_mask,
    padding_mask,
    to_additive_mask,
    to_torch_key_padding_mask,
)


def test_padding_mask_true_at_real_tokens():
    m = padding_mask([3, 1, 0], max_len=4)
    assert m.dtype == torch.bool
    assert m.tolist() == [[True, True, True, False], [True, False, False, False], [False] * 4]


def test_padding_mask_numpy_and_default_length():
    m = padding_mask(np.array([2, 3]))
    assert isinstance(m, np.ndarray) and m.shape == (2, 3)
    assert m.sum(1).tolist() == [2, 3]


@pytest.mark.parametrize("lengths,max_len", [([5], 4), ([-1], 3)])
def test_padding_mask_bad_lengths(lengths, max_len):
    with pytest.raises(ValueError, match="max_len"):
        padding_mask(lengths, max_len)


def test_padding_mask_rejects_2d_and_floats():
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        padding_mask(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        padding_mask(torch.tensor([1.5]))


def test_causal_square_is_lower_triangular():
    assert torch.equal(causal_mask(4), torch.ones(4, 4, dtype=torch.bool).tril())


def test_causal_is_bottom_right_aligned_when_lengths_differ():
    # 2 new queries after 3 cached keys: the last query sees all 5 keys.
    assert causal_mask(2, 5).tolist() == [[True, True, True, True, False], [True] * 5]
    # More queries than keys: the first rows see nothing.
    m = causal_mask(4, 2)
    assert m.tolist() == [[False, False], [False, False], [True, False], [True, True]]


def test_causal_matches_torch_lower_right_bias():
    bias = pytest.importorskip("torch.nn.attention.bias")
    for lq, lk in [(3, 7), (5, 5), (6, 2)]:
        lower_right = bias.causal_lower_right(lq, lk)._materialize()
        assert torch.equal(causal_mask(lq, lk), lower_right)


def test_combine_masks_broadcasts_and_skips_none():
    pad = key_padding_to_attn_mask(padding_mask([3, 2]))  # (2, 1, 1, 3)
    both = combine_masks(pad, None, causal_mask(3))
    assert both.shape == (2, 1, 3, 3)
    assert both[1, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    assert combine_masks(None, None) is None


def test_combine_masks_errors():
    with pytest.raises(ValueError, match="boolean"):
        combine_masks(torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 3\)"):
        combine_masks(torch.ones(2, 3, dtype=torch.bool), torch.ones(4, 3, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_additive_mask_uses_minus_inf_not_a_finite_constant(dtype):
    add = to_additive_mask(torch.tensor([True, False]), dtype)
    assert add.dtype == dtype
    assert add[0] == 0 and add[1] == -math.inf
    # adding two masks never overflows into NaN
    assert not (add + add).isnan().any()


def test_additive_mask_numpy():
    add = to_additive_mask(np.array([True, False]), np.float32)
    assert add.dtype == np.float32 and add.tolist() == [0.0, -np.inf]


def test_key_padding_polarity_round_trip():
    ours = padding_mask([2, 3], 3)
    theirs = to_torch_key_padding_mask(ours)
    assert theirs.tolist() == [[False, False, True], [False, False, False]]
    assert torch.equal(from_torch_key_padding_mask(theirs), ours)
    with pytest.raises(ValueError, match=r"\(batch, len_k\)"):
        to_torch_key_padding_mask(torch.ones(2, 3, 4, dtype=torch.bool))
