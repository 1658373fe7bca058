"""Deliberately wrong solutions of exercise 05, one per typical mistake.

``MUTANTS[name] = (task, code, caught_by)``: ``code`` replaces the solution region of the
cell whose ``grade_id`` is ``task`` in ``solutions/05_complexity.ipynb``; graded, the mutant
must fail at least one of the hidden tests named in ``caught_by`` (test function names),
lose points, and keep every point of the other tasks. ``tests/grading/test_mutants.py``
runs them all.

The cell ``cached_cross_attention`` has two solution regions, ``__init__`` and ``step``, and
a mutant replaces the first. A mistake in ``step`` is written as an ``__init__`` that binds
the wrong ``step`` to the instance (``self.step = step``), which then hides the class's
correct one: the object behaves exactly as a class with that wrong ``step`` would.
"""

import textwrap

# The correct __init__ of task 6, which the mutants of its step keep.
_SELF_CACHE = """
self.layer = layer
self.key = self.value = None
"""


def _wrong_self_step(body: str, *, append: bool = False) -> str:
    """The correct empty cache of task 6, and ``step(x_t)`` replaced by ``body`` for this instance.

    ``append``: ``body`` follows the correct projections and growth of the cache (``_PROJECT_AND_APPEND``).
    """
    body = textwrap.dedent(body).strip("\n")
    if append:
        body = _PROJECT_AND_APPEND.strip("\n") + "\n" + body
    return _SELF_CACHE + "\n\ndef step(x_t):\n" + textwrap.indent(body, "    ") + "\n\n\nself.step = step\n"


# The projections and the growing cache of a correct step of task 6; the mutants change what follows.
_PROJECT_AND_APPEND = """
q = split_heads(layer.q_proj(x_t), layer.num_heads)
k, v = split_heads(layer.k_proj(x_t), layer.num_heads), split_heads(layer.v_proj(x_t), layer.num_heads)
self.key = k if self.key is None else torch.cat([self.key, k], dim=2)
self.value = v if self.value is None else torch.cat([self.value, v], dim=2)
"""

# The correct __init__ of task 5, which the mutants of its step keep.
_CACHE = """
self.layer, self.mask = layer, context_mask
self.key = split_heads(layer.k_proj(context), layer.num_heads)
self.value = split_heads(layer.v_proj(context), layer.num_heads)
"""


def _wrong_step(body: str) -> str:
    """The correct cache, and ``step(x_t)`` replaced by ``body`` for this instance."""
    return _CACHE + "\n\ndef step(x_t):\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + (
        "\n\n\nself.step = step\n"
    )


MUTANTS = {
    # -- task 1: bytes of the score matrix
    "score bytes with 4 bytes per element whatever the dtype": (
        "score_matrix_bytes",
        "return batch * heads * len_q * len_k * 4",
        ["test_bytes_per_element_follow_the_dtype"],
    ),
    "score bytes counted in bits": (
        "score_matrix_bytes",
        "return batch * heads * len_q * len_k * dtype.itemsize * 8",
        ["test_counts_every_score_of_every_head", "test_bytes_per_element_follow_the_dtype"],
    ),
    "score bytes of a len_q × len_q matrix": (
        "score_matrix_bytes",
        "return batch * heads * len_q * len_q * dtype.itemsize",
        ["test_counts_every_score_of_every_head"],
    ),
    "score bytes without the heads": (
        "score_matrix_bytes",
        "return batch * len_q * len_k * dtype.itemsize",
        ["test_counts_every_score_of_every_head"],
    ),
    "score bytes of S and P together": (
        "score_matrix_bytes",
        "return 2 * batch * heads * len_q * len_k * dtype.itemsize",
        ["test_counts_every_score_of_every_head"],
    ),
    "score bytes in MiB": (
        "score_matrix_bytes",
        "return batch * heads * len_q * len_k * dtype.itemsize / 2**20",
        ["test_counts_every_score_of_every_head"],
    ),
    "number of scores instead of bytes": (
        "score_matrix_bytes",
        "return batch * heads * len_q * len_k",
        ["test_counts_every_score_of_every_head"],
    ),
    # -- task 2: FLOPs of attention
    "attention FLOPs without the factor 2 of a multiply-add": (
        "attention_flops",
        """
        dim_v = head_dim if dim_v is None else dim_v
        pairs = batch * heads * len_q * len_k
        if backward:
            return pairs * (3 * head_dim + 2 * dim_v)
        return pairs * (head_dim + dim_v)
        """,
        ["test_forward_counts_both_products"],
    ),
    "attention FLOPs without the value product": (
        "attention_flops",
        """
        dim_v = head_dim if dim_v is None else dim_v
        pairs = batch * heads * len_q * len_k
        if backward:
            return 2 * pairs * (3 * head_dim + 2 * dim_v)
        return 2 * pairs * head_dim
        """,
        ["test_forward_counts_both_products"],
    ),
    "attention FLOPs with d instead of d_v in P V": (
        "attention_flops",
        """
        dim_v = head_dim if dim_v is None else dim_v
        pairs = batch * heads * len_q * len_k
        if backward:
            return 2 * pairs * (3 * head_dim + 2 * dim_v)
        return 4 * pairs * head_dim
        """,
        ["test_values_of_another_size"],
    ),
    "attention FLOPs ignoring dim_v": (
        "attention_flops",
        """
        pairs = batch * heads * len_q * len_k
        return (10 if backward else 4) * pairs * head_dim
        """,
        ["test_values_of_another_size", "test_backward_with_values_of_another_size"],
    ),
    "attention backward as autograd's four products": (
        "attention_flops",
        """
        dim_v = head_dim if dim_v is None else dim_v
        forward = 2 * batch * heads * len_q * len_k * (head_dim + dim_v)
        return 2 * forward if backward else forward
        """,
        ["test_backward_is_five_products"],
    ),
    "attention backward as 2.5 × forward even when d_v ≠ d": (
        "attention_flops",
        """
        dim_v = head_dim if dim_v is None else dim_v
        forward = 2 * batch * heads * len_q * len_k * (head_dim + dim_v)
        return 2.5 * forward if backward else forward
        """,
        ["test_backward_with_values_of_another_size"],
    ),
    "attention backward with the sizes d and d_v swapped": (
        "attention_flops",
        """
        dim_v = head_dim if dim_v is None else dim_v
        pairs = batch * heads * len_q * len_k
        if backward:
            return 2 * pairs * (2 * head_dim + 3 * dim_v)
        return 2 * pairs * (head_dim + dim_v)
        """,
        ["test_backward_with_values_of_another_size"],
    ),
    "attention FLOPs ignoring backward": (
        "attention_flops",
        """
        dim_v = head_dim if dim_v is None else dim_v
        return 2 * batch * heads * len_q * len_k * (head_dim + dim_v)
        """,
        ["test_backward_is_five_products"],
    ),
    # -- task 3: FLOPs of a layer
    "layer FLOPs without W_o": (
        "layer_flops",
        """
        d_context = d_model if d_context is None else d_context
        q_only = 2 * batch * len_q * d_model * d_model
        k_and_v = 0 if cached_kv else 4 * batch * len_k * d_context * d_model
        return q_only + k_and_v + attention_flops(batch, num_heads, len_q, len_k, d_model // num_heads)
        """,
        ["test_counts_the_projections_and_the_attention", "test_one_cached_decoding_step"],
    ),
    "layer FLOPs with W_k and W_v reading d_model, not d_context": (
        "layer_flops",
        """
        q_and_o = 4 * batch * len_q * d_model * d_model
        k_and_v = 0 if cached_kv else 4 * batch * len_k * d_model * d_model
        return q_and_o + k_and_v + attention_flops(batch, num_heads, len_q, len_k, d_model // num_heads)
        """,
        ["test_context_width_sets_the_key_value_cost"],
    ),
    "layer FLOPs with W_k and W_v on the len_q queries": (
        "layer_flops",
        """
        d_context = d_model if d_context is None else d_context
        q_and_o = 4 * batch * len_q * d_model * d_model
        k_and_v = 0 if cached_kv else 4 * batch * len_q * d_context * d_model
        return q_and_o + k_and_v + attention_flops(batch, num_heads, len_q, len_k, d_model // num_heads)
        """,
        ["test_context_width_sets_the_key_value_cost"],
    ),
    "layer FLOPs with every head as wide as d_model": (
        "layer_flops",
        """
        d_context = d_model if d_context is None else d_context
        q_and_o = 4 * batch * len_q * d_model * d_model
        k_and_v = 0 if cached_kv else 4 * batch * len_k * d_context * d_model
        return q_and_o + k_and_v + attention_flops(batch, num_heads, len_q, len_k, d_model)
        """,
        ["test_heads_do_not_change_the_flops"],
    ),
    "layer FLOPs ignoring cached_kv": (
        "layer_flops",
        """
        d_context = d_model if d_context is None else d_context
        q_and_o = 4 * batch * len_q * d_model * d_model
        k_and_v = 4 * batch * len_k * d_context * d_model
        return q_and_o + k_and_v + attention_flops(batch, num_heads, len_q, len_k, d_model // num_heads)
        """,
        ["test_one_cached_decoding_step"],
    ),
    "layer FLOPs with cached_kv skipping every projection": (
        "layer_flops",
        """
        d_context = d_model if d_context is None else d_context
        attention = attention_flops(batch, num_heads, len_q, len_k, d_model // num_heads)
        if cached_kv:
            return attention
        return 4 * batch * (len_q * d_model + len_k * d_context) * d_model + attention
        """,
        ["test_one_cached_decoding_step"],
    ),
    "layer FLOPs with 1 FLOP per multiply-add in the projections": (
        "layer_flops",
        """
        d_context = d_model if d_context is None else d_context
        q_and_o = 2 * batch * len_q * d_model * d_model
        k_and_v = 0 if cached_kv else 2 * batch * len_k * d_context * d_model
        return q_and_o + k_and_v + attention_flops(batch, num_heads, len_q, len_k, d_model // num_heads)
        """,
        ["test_counts_the_projections_and_the_attention"],
    ),
    "layer FLOPs without the attention": (
        "layer_flops",
        """
        d_context = d_model if d_context is None else d_context
        return 4 * batch * len_q * d_model * d_model + (0 if cached_kv else 4 * batch * len_k * d_context * d_model)
        """,
        ["test_counts_the_projections_and_the_attention", "test_one_cached_decoding_step"],
    ),
    # -- task 4: fitting an exponent
    "fit on linear axes": (
        "fit_exponent",
        """
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if np.any(xs <= 0) or np.any(ys <= 0):
            raise ValueError("every x and y must be > 0")
        slope, intercept = np.polyfit(xs, ys, 1)
        return float(slope), float(intercept)
        """,
        ["test_recovers_the_exponent_of_an_exact_power_law"],
    ),
    "fit with log10 for y and the natural log for x": (
        "fit_exponent",
        """
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if np.any(xs <= 0) or np.any(ys <= 0):
            raise ValueError("every x and y must be > 0")
        slope, intercept = np.polyfit(np.log(xs), np.log10(ys), 1)
        return float(slope), float(10**intercept)
        """,
        ["test_recovers_the_exponent_of_an_exact_power_law"],
    ),
    "fit of log y against x (semi-log)": (
        "fit_exponent",
        """
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if np.any(xs <= 0) or np.any(ys <= 0):
            raise ValueError("every x and y must be > 0")
        slope, intercept = np.polyfit(xs, np.log(ys), 1)
        return float(slope), float(np.exp(intercept))
        """,
        ["test_recovers_the_exponent_of_an_exact_power_law"],
    ),
    "fit returning the intercept as the prefactor": (
        "fit_exponent",
        """
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if np.any(xs <= 0) or np.any(ys <= 0):
            raise ValueError("every x and y must be > 0")
        slope, intercept = np.polyfit(np.log(xs), np.log(ys), 1)
        return float(slope), float(intercept)
        """,
        ["test_prefactor_undoes_the_logarithm"],
    ),
    "fit undoing the natural log with 10**": (
        "fit_exponent",
        """
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if np.any(xs <= 0) or np.any(ys <= 0):
            raise ValueError("every x and y must be > 0")
        slope, intercept = np.polyfit(np.log(xs), np.log(ys), 1)
        return float(slope), float(10**intercept)
        """,
        ["test_prefactor_undoes_the_logarithm"],
    ),
    "fit through the first and the last point only": (
        "fit_exponent",
        """
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if np.any(xs <= 0) or np.any(ys <= 0):
            raise ValueError("every x and y must be > 0")
        log_x, log_y = np.log(xs), np.log(ys)
        slope = (log_y[-1] - log_y[0]) / (log_x[-1] - log_x[0])
        return float(slope), float(np.exp(log_y.mean() - slope * log_x.mean()))
        """,
        ["test_least_squares_on_noisy_data"],
    ),
    "fit averaging the slopes between neighbours": (
        "fit_exponent",
        """
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if np.any(xs <= 0) or np.any(ys <= 0):
            raise ValueError("every x and y must be > 0")
        log_x, log_y = np.log(xs), np.log(ys)
        slope = np.mean(np.diff(log_y) / np.diff(log_x))
        return float(slope), float(np.exp(log_y.mean() - slope * log_x.mean()))
        """,
        ["test_least_squares_on_noisy_data"],
    ),
    "fit regressing log x on log y, inverted": (
        "fit_exponent",
        """
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if np.any(xs <= 0) or np.any(ys <= 0):
            raise ValueError("every x and y must be > 0")
        log_x, log_y = np.log(xs), np.log(ys)
        slope = 1 / np.polyfit(log_y, log_x, 1)[0]
        return float(slope), float(np.exp(log_y.mean() - slope * log_x.mean()))
        """,
        ["test_least_squares_on_noisy_data"],
    ),
    "fit without the check of positive values": (
        "fit_exponent",
        """
        slope, intercept = np.polyfit(np.log(xs), np.log(ys), 1)
        return float(slope), float(np.exp(intercept))
        """,
        ["test_rejects_values_without_a_logarithm"],
    ),
    "fit checking the ys only (least squares by hand)": (
        "fit_exponent",
        """
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if np.any(ys <= 0):
            raise ValueError("every y must be > 0")
        log_x, log_y = np.log(xs), np.log(ys)  # least squares by hand: slope = cov / var
        dx = log_x - log_x.mean()
        slope = np.sum(dx * (log_y - log_y.mean())) / np.sum(dx**2)
        return float(slope), float(np.exp(log_y.mean() - slope * log_x.mean()))
        """,
        ["test_rejects_values_without_a_logarithm"],
    ),
    "fit that needs numpy arrays": (
        "fit_exponent",
        """
        if (xs <= 0).any() or (ys <= 0).any():
            raise ValueError("every x and y must be > 0")
        slope, intercept = np.polyfit(np.log(xs), np.log(ys), 1)
        return float(slope), float(np.exp(intercept))
        """,
        ["test_accepts_plain_lists"],
    ),
    # -- task 5: cached cross-attention
    "cache of keys and values not split into heads": (
        "cached_cross_attention",
        """
        self.layer, self.mask = layer, context_mask
        self.key, self.value = layer.k_proj(context), layer.v_proj(context)  # (batch, len_k, d_model)


        def step(x_t):
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            key, value = split_heads(self.key, layer.num_heads), split_heads(self.value, layer.num_heads)
            mask = None if context_mask is None else context_mask[:, None, None, :]
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, key, value, mask)))


        self.step = step
        """,
        ["test_cache_holds_the_projected_source_per_head"],
    ),
    "cache split into heads with a bare view": (
        "cached_cross_attention",
        """
        self.layer, self.mask = layer, context_mask
        batch, len_k, _ = context.shape
        shape = (batch, layer.num_heads, len_k, layer.head_dim)
        self.key = layer.k_proj(context).reshape(shape)
        self.value = layer.v_proj(context).reshape(shape)
        """,
        ["test_cache_holds_the_projected_source_per_head"],
    ),
    "step projecting the source again": (
        "cached_cross_attention",
        _wrong_step(
            """
            key = split_heads(layer.k_proj(context), layer.num_heads)
            value = split_heads(layer.v_proj(context), layer.num_heads)
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            mask = None if context_mask is None else context_mask[:, None, None, :]
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, key, value, mask)))
            """
        ),
        ["test_steps_reuse_the_cached_keys_and_values"],
    ),
    "step calling the whole layer": (
        "cached_cross_attention",
        _wrong_step("return layer(x_t, context, context_mask=context_mask)"),
        ["test_one_step_equals_the_full_computation"],
    ),
    "step scaled by 1/√d_model": (
        "cached_cross_attention",
        _wrong_step(
            """
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            mask = None if context_mask is None else context_mask[:, None, None, :]
            scale = 1 / math.sqrt(layer.d_model)
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, self.key, self.value, mask, scale=scale)))
            """
        ),
        ["test_one_step_equals_the_full_computation"],
    ),
    "step without the 1/√d scale": (
        "cached_cross_attention",
        _wrong_step(
            """
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            scores = q @ self.key.transpose(-2, -1)
            if context_mask is not None:
                scores = scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))
            return layer.out_proj(merge_heads(torch.softmax(scores, dim=-1) @ self.value))
            """
        ),
        ["test_one_step_equals_the_full_computation"],
    ),
    "step ignoring the padding mask": (
        "cached_cross_attention",
        _wrong_step(
            """
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, self.key, self.value)))
            """
        ),
        ["test_padded_source_tokens_get_no_weight"],
    ),
    "step with the padding mask inverted": (
        "cached_cross_attention",
        _wrong_step(
            """
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            mask = None if context_mask is None else ~context_mask[:, None, None, :]
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, self.key, self.value, mask)))
            """
        ),
        ["test_padded_source_tokens_get_no_weight"],
    ),
    "step with the padding mask shaped (batch, 1, len_k)": (
        "cached_cross_attention",
        _wrong_step(
            """
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            mask = None if context_mask is None else context_mask[:, None, :]
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, self.key, self.value, mask)))
            """
        ),
        ["test_padded_source_tokens_get_no_weight"],
    ),
    "step without the output projection": (
        "cached_cross_attention",
        _wrong_step(
            """
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            mask = None if context_mask is None else context_mask[:, None, None, :]
            return merge_heads(scaled_dot_product_attention(q, self.key, self.value, mask))
            """
        ),
        ["test_one_step_equals_the_full_computation"],
    ),
    "step merging the heads with a bare reshape": (
        "cached_cross_attention",
        _wrong_step(
            """
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            mask = None if context_mask is None else context_mask[:, None, None, :]
            out = scaled_dot_product_attention(q, self.key, self.value, mask)
            return layer.out_proj(out.reshape(x_t.shape[0], x_t.shape[1], layer.d_model))
            """
        ),
        ["test_several_queries_at_once"],
    ),
    "self-attention step with PyTorch's top-left is_causal=True": (
        "cached_self_attention",
        _wrong_self_step(
            """
            out = torch.nn.functional.scaled_dot_product_attention(q, self.key, self.value, is_causal=True)
            return layer.out_proj(merge_heads(out))
            """,
            append=True,
        ),
        ["test_token_by_token_equals_causal_self_attention",
         "test_several_new_tokens_after_the_past_are_aligned_bottom_right"],
        {"feedback": "aligned top-left", "self_check": "aligned top-left"},
    ),
    "self-attention step with a top-left causal mask built by hand": (
        "cached_self_attention",
        _wrong_self_step(
            """
            mask = torch.ones(x_t.shape[1], self.key.shape[2], dtype=torch.bool).tril()
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, self.key, self.value, mask)))
            """,
            append=True,
        ),
        ["test_token_by_token_equals_causal_self_attention"],
        {"feedback": "new query i sees keys j <= i + (n - t)", "self_check": "aligned top-left"},
    ),
    "self-attention step without a causal mask": (
        "cached_self_attention",
        _wrong_self_step(
            """
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, self.key, self.value)))
            """,
            append=True,
        ),
        ["test_a_prompt_in_one_step_is_causal", "test_several_new_tokens_after_the_past_are_aligned_bottom_right"],
        {"feedback": "no causal mask among the new tokens", "self_check": "no causal mask among the new tokens"},
    ),
    "self-attention cache that keeps only the newest keys and values": (
        "cached_self_attention",
        _wrong_self_step(
            """
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            self.key = split_heads(layer.k_proj(x_t), layer.num_heads)
            self.value = split_heads(layer.v_proj(x_t), layer.num_heads)
            mask = causal_mask(x_t.shape[1], self.key.shape[2])
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, self.key, self.value, mask)))
            """
        ),
        ["test_cache_grows_by_the_new_keys_and_values", "test_token_by_token_equals_causal_self_attention"],
        {"feedback": "the cache does not grow", "self_check": "append each step's new keys"},
    ),
    "self-attention cache grown along the heads axis": (
        "cached_self_attention",
        _wrong_self_step(
            """
            q = split_heads(layer.q_proj(x_t), layer.num_heads)
            k, v = split_heads(layer.k_proj(x_t), layer.num_heads), split_heads(layer.v_proj(x_t), layer.num_heads)
            self.key = k if self.key is None else torch.cat([self.key, k], dim=1)
            self.value = v if self.value is None else torch.cat([self.value, v], dim=1)
            mask = causal_mask(x_t.shape[1], self.key.shape[2])
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, self.key, self.value, mask)))
            """
        ),
        ["test_cache_grows_by_the_new_keys_and_values"],
    ),
    "self-attention step masked with causal_mask(n), as if every token were new": (
        "cached_self_attention",
        _wrong_self_step(
            """
            mask = causal_mask(self.key.shape[2])
            return layer.out_proj(merge_heads(scaled_dot_product_attention(q, self.key, self.value, mask)))
            """,
            append=True,
        ),
        ["test_token_by_token_equals_causal_self_attention"],
    ),
}
