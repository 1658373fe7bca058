"""Deliberately wrong solutions of exercise 04, one per typical mistake.

``MUTANTS[name] = (task, code, caught_by)``: ``code`` replaces the solution region of the
cell whose ``grade_id`` is ``task`` in ``solutions/04_masking.ipynb``; graded, the mutant
must fail at least one of the hidden tests named in ``caught_by`` (test function names),
lose points, and keep every point of the other tasks. ``tests/grading/test_mutants.py``
runs them all.
"""

import textwrap


def _code(*parts: str) -> str:
    """Solution code from pieces written at different indentations."""
    return "\n".join(textwrap.dedent(part).strip("\n") for part in parts)


_CHECK_LENGTHS = """
if ((lengths < 0) | (lengths > max_len)).any():
    raise ValueError(f"lengths must lie in [0, max_len={max_len}], got {lengths.tolist()}")
"""

# The parts of masked_attention that most mutants keep: float32 for half precision, the scores.
_SCORES = """
dtype = query.dtype
work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
q, k, v = query.to(work), key.to(work), value.to(work)
scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
"""

# The lesson's safe softmax, for mutants whose mistake is elsewhere.
_SAFE_SOFTMAX = """
row_max = scores.amax(dim=-1, keepdim=True).detach()
row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
e = torch.exp(scores - row_max)
total = e.sum(dim=-1, keepdim=True)
weights = e / torch.where(total == 0, torch.ones_like(total), total)
"""

MUTANTS = {
    # -- task 1: padding_mask ------------------------------------------------------------------
    "padding mask with inverted polarity (True at padding)": (
        "padding_mask",
        _code(_CHECK_LENGTHS, "return torch.arange(max_len)[None, :] >= lengths[:, None]"),
        ["test_true_exactly_at_real_tokens"],
    ),
    "padding mask off by one (j <= length)": (
        "padding_mask",
        _code(_CHECK_LENGTHS, "return torch.arange(max_len)[None, :] <= lengths[:, None]"),
        ["test_true_exactly_at_real_tokens"],
    ),
    "padding mask ignoring max_len (padded to the longest length)": (
        "padding_mask",
        _code(_CHECK_LENGTHS, "return torch.arange(int(lengths.max()))[None, :] < lengths[:, None]"),
        ["test_shape_is_batch_by_max_len"],
    ),
    "padding mask transposed (max_len, batch)": (
        "padding_mask",
        _code(_CHECK_LENGTHS, "return torch.arange(max_len)[:, None] < lengths[None, :]"),
        ["test_shape_is_batch_by_max_len"],
    ),
    "padding mask as integers instead of bool": (
        "padding_mask",
        _code(_CHECK_LENGTHS, "return (torch.arange(max_len)[None, :] < lengths[:, None]).int()"),
        ["test_shape_is_batch_by_max_len", "test_true_exactly_at_real_tokens"],
    ),
    "padding mask without checking the lengths": (
        "padding_mask",
        "return torch.arange(max_len)[None, :] < lengths[:, None]",
        ["test_impossible_lengths_raise_value_error"],
    ),
    # -- task 2: causal_mask -------------------------------------------------------------------
    "causal mask without the diagonal (j < i)": (
        "causal_mask",
        """
        len_k = len_q if len_k is None else len_k
        i, j = torch.arange(len_q)[:, None], torch.arange(len_k)[None, :]
        return j < i + (len_k - len_q)
        """,
        ["test_square_mask_is_the_lower_triangle"],
    ),
    "causal mask with inverted polarity (True = future)": (
        "causal_mask",
        """
        len_k = len_q if len_k is None else len_k
        i, j = torch.arange(len_q)[:, None], torch.arange(len_k)[None, :]
        return j > i + (len_k - len_q)
        """,
        ["test_square_mask_is_the_lower_triangle"],
    ),
    "causal mask as the upper triangle (j >= i)": (
        "causal_mask",
        """
        len_k = len_q if len_k is None else len_k
        return torch.triu(torch.ones(len_q, len_k, dtype=torch.bool), diagonal=len_k - len_q)
        """,
        ["test_square_mask_is_the_lower_triangle"],
    ),
    "causal mask aligned top-left (plain tril) when len_q != len_k": (
        "causal_mask",
        """
        len_k = len_q if len_k is None else len_k
        return torch.tril(torch.ones(len_q, len_k, dtype=torch.bool))
        """,
        ["test_bottom_right_when_fewer_queries_than_keys", "test_more_queries_than_keys_gives_fully_masked_rows"],
    ),
    "causal mask with the offset's sign flipped": (
        "causal_mask",
        """
        len_k = len_q if len_k is None else len_k
        return torch.tril(torch.ones(len_q, len_k, dtype=torch.bool), diagonal=len_q - len_k)
        """,
        ["test_bottom_right_when_fewer_queries_than_keys", "test_more_queries_than_keys_gives_fully_masked_rows"],
    ),
    "causal mask ignoring len_k (always square)": (
        "causal_mask",
        "return torch.tril(torch.ones(len_q, len_q, dtype=torch.bool))",
        ["test_shape_when_len_q_differs_from_len_k"],
    ),
    "causal mask that does not handle len_k=None": (
        "causal_mask",
        """
        i, j = torch.arange(len_q)[:, None], torch.arange(len_k)[None, :]
        return j <= i + (len_k - len_q)
        """,
        ["test_shape_when_len_q_differs_from_len_k"],
    ),
    "causal mask as floats (torch.tril of ones)": (
        "causal_mask",
        """
        len_k = len_q if len_k is None else len_k
        return torch.tril(torch.ones(len_q, len_k), diagonal=len_k - len_q)
        """,
        ["test_square_mask_is_the_lower_triangle"],
    ),
    # -- task 3: attn_mask_from_torch ----------------------------------------------------------
    "conversion without flipping the polarity": (
        "attn_mask_from_torch",
        "return key_padding_mask[:, None, None, :]",
        ["test_polarity_is_flipped", "test_same_attention_as_nn_multihead_attention"],
    ),
    "conversion without the heads and queries axes": (
        "attn_mask_from_torch",
        "return ~key_padding_mask",
        ["test_shape_is_batch_1_1_len_k", "test_same_attention_as_nn_multihead_attention"],
    ),
    "conversion without the heads axis (batch, 1, len_k)": (
        "attn_mask_from_torch",
        "return ~key_padding_mask[:, None, :]",
        ["test_shape_is_batch_1_1_len_k", "test_same_attention_as_nn_multihead_attention"],
    ),
    "conversion masking queries instead of keys (batch, 1, len_k, 1)": (
        "attn_mask_from_torch",
        "return ~key_padding_mask[:, None, :, None]",
        ["test_shape_is_batch_1_1_len_k", "test_same_attention_as_nn_multihead_attention"],
    ),
    "conversion to an integer mask (1 - mask)": (
        "attn_mask_from_torch",
        "return (1 - key_padding_mask.int())[:, None, None, :]",
        ["test_shape_is_batch_1_1_len_k"],
    ),
    # -- task 4: decoder_masks -----------------------------------------------------------------
    "cross-attention with the target's padding mask": (
        "decoder_masks",
        """
        self_mask = padding_mask(tgt_lengths, tgt_len)[:, None, None, :] & causal_mask(tgt_len)
        cross_mask = padding_mask(tgt_lengths, tgt_len)[:, None, None, :]
        return self_mask, cross_mask
        """,
        ["test_cross_mask_uses_the_source_lengths_when_padded_alike"],
    ),
    "cross-attention with a causal mask too": (
        "decoder_masks",
        """
        self_mask = padding_mask(tgt_lengths, tgt_len)[:, None, None, :] & causal_mask(tgt_len)
        cross_mask = padding_mask(src_lengths, src_len)[:, None, None, :] & causal_mask(tgt_len, src_len)
        return self_mask, cross_mask
        """,
        ["test_cross_mask_is_the_source_padding"],
    ),
    "cross-attention padding on the queries' axis": (
        "decoder_masks",
        """
        self_mask = padding_mask(tgt_lengths, tgt_len)[:, None, None, :] & causal_mask(tgt_len)
        cross_mask = padding_mask(src_lengths, src_len)[:, None, :, None]
        return self_mask, cross_mask
        """,
        ["test_shapes_broadcast_over_heads", "test_cross_mask_is_the_source_padding"],
    ),
    "self-attention without the causal mask": (
        "decoder_masks",
        """
        self_mask = padding_mask(tgt_lengths, tgt_len)[:, None, None, :].expand(-1, 1, tgt_len, tgt_len)
        cross_mask = padding_mask(src_lengths, src_len)[:, None, None, :]
        return self_mask, cross_mask
        """,
        ["test_self_mask_is_causal_for_real_tokens"],
    ),
    "self-attention without the target's padding mask": (
        "decoder_masks",
        """
        self_mask = causal_mask(tgt_len)
        cross_mask = padding_mask(src_lengths, src_len)[:, None, None, :]
        return self_mask, cross_mask
        """,
        ["test_self_mask_hides_target_padding_on_the_keys"],
    ),
    "self-attention padding on the queries' axis": (
        "decoder_masks",
        """
        self_mask = padding_mask(tgt_lengths, tgt_len)[:, None, :, None] & causal_mask(tgt_len)
        cross_mask = padding_mask(src_lengths, src_len)[:, None, None, :]
        return self_mask, cross_mask
        """,
        ["test_self_mask_hides_target_padding_on_the_keys"],
    ),
    "self-attention masks combined with OR": (
        "decoder_masks",
        """
        self_mask = padding_mask(tgt_lengths, tgt_len)[:, None, None, :] | causal_mask(tgt_len)
        cross_mask = padding_mask(src_lengths, src_len)[:, None, None, :]
        return self_mask, cross_mask
        """,
        ["test_self_mask_is_causal_for_real_tokens"],
    ),
    "decoder masks without the heads axis": (
        "decoder_masks",
        """
        self_mask = padding_mask(tgt_lengths, tgt_len)[:, None, :] & causal_mask(tgt_len)
        cross_mask = padding_mask(src_lengths, src_len)[:, None, :]
        return self_mask, cross_mask
        """,
        ["test_shapes_broadcast_over_heads"],
    ),
    # -- task 5: masked_attention --------------------------------------------------------------
    "masked attention with the textbook softmax (NaN in fully masked rows)": (
        "masked_attention",
        _code(
            _SCORES,
            """
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            return (weights @ v).to(dtype), weights.to(dtype)
            """,
        ),
        ["test_fully_masked_rows_give_zeros"],
    ),
    "masked attention filling with -1e9 (fully masked rows average every key)": (
        "masked_attention",
        _code(
            _SCORES,
            """
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, -1e9)
            weights = torch.softmax(scores, dim=-1)
            return (weights @ v).to(dtype), weights.to(dtype)
            """,
        ),
        ["test_fully_masked_rows_give_zeros"],
    ),
    "masked attention filling with finfo.min (fully masked rows average every key)": (
        "masked_attention",
        _code(
            _SCORES,
            """
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1)
            return (weights @ v).to(dtype), weights.to(dtype)
            """,
        ),
        ["test_fully_masked_rows_give_zeros"],
    ),
    "masked attention filling with -1e9 in the input's dtype, rows zeroed after": (
        "masked_attention",
        """
        scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, -1e9)  # fp16: RuntimeError, -1e9 overflows
        weights = torch.softmax(scores, dim=-1)
        if attn_mask is not None:
            weights = weights * attn_mask  # zeroes masked keys, so fully masked rows too
        return weights @ value, weights
        """,
        ["test_half_precision"],
    ),
    "masked attention with an additive -1e9 mask in the input's dtype, rows zeroed after": (
        "masked_attention",
        """
        scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
        if attn_mask is not None:
            scores = scores + (~attn_mask).to(scores.dtype) * -1e9  # fp16: -1e9 becomes -inf
        weights = torch.softmax(scores, dim=-1)
        if attn_mask is not None:
            weights = weights * attn_mask
        return weights @ value, weights
        """,
        ["test_half_precision"],
    ),
    "masked attention with inverted mask polarity": (
        "masked_attention",
        _code(
            _SCORES,
            """
            if attn_mask is not None:
                scores = scores.masked_fill(attn_mask, float("-inf"))
            """,
            _SAFE_SOFTMAX,
            "return (weights @ v).to(dtype), weights.to(dtype)",
        ),
        ["test_matches_the_reference_with_a_mask", "test_masked_keys_get_exactly_zero_weight"],
    ),
    "masked attention that masks after the softmax (rows no longer sum to 1)": (
        "masked_attention",
        _code(
            _SCORES,
            """
            weights = torch.softmax(scores, dim=-1)
            if attn_mask is not None:
                weights = weights * attn_mask
            return (weights @ v).to(dtype), weights.to(dtype)
            """,
        ),
        ["test_masked_keys_get_exactly_zero_weight"],
    ),
    "masked attention with an additive -inf mask and nan_to_num (NaN gradients)": (
        "masked_attention",
        _code(
            _SCORES,
            """
            if attn_mask is not None:
                scores = scores + torch.zeros_like(scores).masked_fill(~attn_mask, float("-inf"))
            weights = torch.nan_to_num(torch.softmax(scores, dim=-1))
            return (weights @ v).to(dtype), weights.to(dtype)
            """,
        ),
        ["test_gradients_stay_finite_with_a_fully_masked_row"],
    ),
    "masked attention returning float32 for float16 inputs": (
        "masked_attention",
        _code(
            _SCORES,
            """
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            """,
            _SAFE_SOFTMAX,
            "return weights @ v, weights",
        ),
        ["test_half_precision"],
    ),
    "masked attention that fails without a mask": (
        "masked_attention",
        _code(
            _SCORES,
            'scores = scores.masked_fill(~attn_mask, float("-inf"))',
            _SAFE_SOFTMAX,
            "return (weights @ v).to(dtype), weights.to(dtype)",
        ),
        ["test_without_a_mask"],
    ),
    "masked attention treating every mask as a key padding mask (batch, len_k)": (
        "masked_attention",
        _code(
            _SCORES,
            """
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask[:, None, None, :], float("-inf"))
            """,
            _SAFE_SOFTMAX,
            "return (weights @ v).to(dtype), weights.to(dtype)",
        ),
        ["test_padding_and_causal_masks_broadcast"],
    ),
    "masked attention renormalising after the softmax with clamp_min (padding leaks)": (
        "masked_attention",
        _code(
            _SCORES,
            """
            weights = torch.softmax(scores, dim=-1)
            if attn_mask is not None:
                weights = weights * attn_mask
                weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
            return (weights @ v).to(dtype), weights.to(dtype)
            """,
        ),
        ["test_padding_content_does_not_leak"],
        {"feedback": "padding leaks into the output", "self_check": "the softmax ran over every key"},
    ),
    "masked attention computing half precision in half precision": (
        "masked_attention",
        _code(
            """
            dtype = query.dtype
            q, k, v = query, key, value
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            """,
            _SAFE_SOFTMAX,
            "return (weights @ v).to(dtype), weights.to(dtype)",
        ),
        ["test_half_precision_is_computed_in_float32"],
        {"feedback": "convert query, key and value to float32 first", "self_check": "the mean error against float64"},
    ),
    "masked attention casting every dtype to float32 (float64 downcast)": (
        "masked_attention",
        _code(
            """
            dtype = query.dtype
            q, k, v = query.float(), key.float(), value.float()
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            """,
            _SAFE_SOFTMAX,
            "return (weights @ v).to(dtype), weights.to(dtype)",
        ),
        ["test_float64_is_computed_in_float64"],
        {"feedback": "`.float()` on a float64 tensor", "self_check": "float64 inputs should be computed in float64"},
    ),
    # -- task 6: left padding
    "left padding masked as right padding": (
        "left_padded_self_mask",
        """
        real = torch.arange(max_len)[None, :] < torch.as_tensor(lengths)[:, None]
        return real[:, None, None, :] & causal_mask(max_len)
        """,
        ["test_real_tokens_never_read_the_padding"],
        {"feedback": "mask of a right-padded batch", "self_check": "mask of a right-padded batch"},
    ),
    "left padding with the causal mask alone": (
        "left_padded_self_mask",
        """
        return causal_mask(max_len).expand(len(lengths), 1, max_len, max_len)
        """,
        ["test_real_tokens_never_read_the_padding"],
        {"feedback": "causal mask alone", "self_check": "causal mask alone"},
    ),
    "left padding combined with OR": (
        "left_padded_self_mask",
        """
        lengths = torch.as_tensor(lengths)
        real = torch.arange(max_len)[None, :] >= (max_len - lengths)[:, None]
        return real[:, None, None, :] | causal_mask(max_len)
        """,
        ["test_matches_the_specification"],
        {"self_check": "combine the two masks with &"},
    ),
    "left padding off by one": (
        "left_padded_self_mask",
        """
        lengths = torch.as_tensor(lengths)
        real = torch.arange(max_len)[None, :] > (max_len - lengths)[:, None]
        return real[:, None, None, :] & causal_mask(max_len)
        """,
        ["test_matches_the_specification"],
        {"self_check": "off by one"},
    ),
    "left padding on the queries' axis": (
        "left_padded_self_mask",
        """
        lengths = torch.as_tensor(lengths)
        real = torch.arange(max_len)[None, :] >= (max_len - lengths)[:, None]
        return real[:, None, :, None] & causal_mask(max_len)
        """,
        ["test_real_tokens_never_read_the_padding"],
        {"self_check": "not the queries'"},
    ),
}
