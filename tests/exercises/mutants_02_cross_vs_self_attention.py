"""Deliberately wrong solutions of exercise 02, one per typical mistake.

``MUTANTS[name] = (task, code, caught_by)``: ``code`` replaces the solution region of the
cell whose ``grade_id`` is ``task`` in ``solutions/02_cross_vs_self_attention.ipynb``;
graded, the mutant must fail at least one of the hidden tests named in ``caught_by``
(test function names), lose points, and keep every point of the other tasks.
``tests/grading/test_mutants.py`` runs them all.
"""

# The body of a correct CrossAttention.forward up to the projections: the layer mutants change what follows.
_CHECKS = """
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (batch, len_q, {self.d_model}), got {tuple(x.shape)}")
        if context is None:
            if self.d_context != self.d_model:
                raise ValueError("self-attention needs d_context == d_model")
            context = x
        if context.shape[-1] != self.d_context:
            raise ValueError(f"context must be (batch, len_k, {self.d_context}), got {tuple(context.shape)}")
"""

MUTANTS = {
    # -- task 1: the projections
    "keys projected from the target": (
        "project_qkv",
        """
        q = x @ params["q_proj.weight"].T + params["q_proj.bias"]
        k = x @ params["k_proj.weight"].T + params["k_proj.bias"]
        v = context @ params["v_proj.weight"].T + params["v_proj.bias"]
        return q, k, v
        """,
        ["test_source_of_the_same_shape_as_the_target", "test_keys_and_values_are_the_projected_source"],
    ),
    "values projected from the target": (
        "project_qkv",
        """
        q = x @ params["q_proj.weight"].T + params["q_proj.bias"]
        k = context @ params["k_proj.weight"].T + params["k_proj.bias"]
        v = x @ params["v_proj.weight"].T + params["v_proj.bias"]
        return q, k, v
        """,
        ["test_source_of_the_same_shape_as_the_target"],
    ),
    "queries projected from the context": (
        "project_qkv",
        """
        q = context @ params["q_proj.weight"].T + params["q_proj.bias"]
        k = context @ params["k_proj.weight"].T + params["k_proj.bias"]
        v = context @ params["v_proj.weight"].T + params["v_proj.bias"]
        return q, k, v
        """,
        ["test_shapes_for_a_source_of_another_length_and_width", "test_source_of_the_same_shape_as_the_target"],
    ),
    "weights used untransposed": (
        "project_qkv",
        """
        q = x @ params["q_proj.weight"] + params["q_proj.bias"]
        k = context @ params["k_proj.weight"] + params["k_proj.bias"]
        v = context @ params["v_proj.weight"] + params["v_proj.bias"]
        return q, k, v
        """,
        ["test_source_of_the_same_shape_as_the_target"],
    ),
    "only the square W_q untransposed": (
        "project_qkv",
        """
        q = x @ params["q_proj.weight"] + params["q_proj.bias"]
        k = context @ params["k_proj.weight"].T + params["k_proj.bias"]
        v = context @ params["v_proj.weight"].T + params["v_proj.bias"]
        return q, k, v
        """,
        ["test_queries_are_the_projected_target"],
    ),
    "biases forgotten": (
        "project_qkv",
        """
        return x @ params["q_proj.weight"].T, context @ params["k_proj.weight"].T, context @ params["v_proj.weight"].T
        """,
        ["test_biases_are_added"],
    ),
    "keys and values swapped": (
        "project_qkv",
        """
        q = x @ params["q_proj.weight"].T + params["q_proj.bias"]
        k = context @ params["v_proj.weight"].T + params["v_proj.bias"]
        v = context @ params["k_proj.weight"].T + params["k_proj.bias"]
        return q, k, v
        """,
        ["test_keys_and_values_are_the_projected_source"],
    ),
    # -- task 2: the layer
    "layer: keys projected from x": (
        "cross_attention",
        _CHECKS
        + """
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-1)
        return self.out_proj(weights @ v), weights
        """,
        ["test_source_of_the_same_shape_as_the_target"],
    ),
    "layer: values projected from x": (
        "cross_attention",
        _CHECKS
        + """
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(x)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-1)
        return self.out_proj(weights @ v), weights
        """,
        ["test_source_of_the_same_shape_as_the_target"],
    ),
    "layer: W_q applied to the context": (
        "cross_attention",
        _CHECKS
        + """
        q, k, v = self.q_proj(context), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-1)
        return self.out_proj(weights @ v), weights
        """,
        ["test_shapes_for_a_source_of_another_length_and_width", "test_source_of_the_same_shape_as_the_target"],
    ),
    "layer: scores not scaled": (
        "cross_attention",
        _CHECKS
        + """
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return self.out_proj(weights @ v), weights
        """,
        ["test_weights_match_the_library"],
    ),
    "layer: scaled by √d_context": (
        "cross_attention",
        _CHECKS
        + """
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_context), dim=-1)
        return self.out_proj(weights @ v), weights
        """,
        ["test_weights_match_the_library"],
    ),
    "layer: softmax over the queries": (
        "cross_attention",
        _CHECKS
        + """
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-2)
        return self.out_proj(weights @ v), weights
        """,
        ["test_weights_are_distributions_over_the_source"],
    ),
    "layer: k.T, which reverses the batch axis too": (
        "cross_attention",
        _CHECKS
        + """
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.T / math.sqrt(self.d_model), dim=-1)
        return self.out_proj(weights @ v), weights
        """,
        ["test_shapes_for_a_source_of_another_length_and_width"],
    ),
    "layer: out_proj forgotten": (
        "cross_attention",
        _CHECKS
        + """
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-1)
        return weights @ v, weights
        """,
        ["test_output_matches_the_library"],
    ),
    "layer: returns (weights, output)": (
        "cross_attention",
        _CHECKS
        + """
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-1)
        return weights, self.out_proj(weights @ v)
        """,
        ["test_shapes_for_a_source_of_another_length_and_width"],
    ),
    "layer: context=None not handled": (
        "cross_attention",
        """
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (batch, len_q, {self.d_model}), got {tuple(x.shape)}")
        if context is not None and context.shape[-1] != self.d_context:
            raise ValueError(f"context must be (batch, len_k, {self.d_context}), got {tuple(context.shape)}")
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-1)
        return self.out_proj(weights @ v), weights
        """,
        ["test_self_attention_when_context_is_none"],
    ),
    "layer: squeezes the length axis away": (
        "cross_attention",
        _CHECKS
        + """
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-1).squeeze()
        return self.out_proj(weights @ v), weights
        """,
        ["test_one_target_token_at_a_time"],
    ),
    "layer: no width checks": (
        "cross_attention",
        """
        context = x if context is None else context
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-1)
        return self.out_proj(weights @ v), weights
        """,
        ["test_wrong_widths_raise_value_error"],
        {"self_check": "x of width 5 for d_model=4 should raise ValueError"},
    ),
    "layer: checks the width of x only": (
        "cross_attention",
        """
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (batch, len_q, {self.d_model}), got {tuple(x.shape)}")
        context = x if context is None else context
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-1)
        return self.out_proj(weights @ v), weights
        """,
        ["test_wrong_widths_raise_value_error"],
        {"feedback": "a context of width 4 for d_context = 6", "self_check": "a context of width 4 for d_context=6"},
    ),
    "layer: no check that self-attention needs d_context == d_model": (
        "cross_attention",
        """
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (batch, len_q, {self.d_model}), got {tuple(x.shape)}")
        if context is not None and context.shape[-1] != self.d_context:
            raise ValueError(f"context must be (batch, len_k, {self.d_context}), got {tuple(context.shape)}")
        context = x if context is None else context
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_model), dim=-1)
        return self.out_proj(weights @ v), weights
        """,
        ["test_wrong_widths_raise_value_error"],
        {"feedback": "context=None when d_context = 6", "self_check": "context=None (self-attention)"},
    ),
    # -- task 3: shuffles
    "shuffle: inverse permutations": (
        "predict_shuffled",
        """
        inv_t, inv_s = torch.argsort(perm_target), torch.argsort(perm_source)
        return output[:, inv_t], weights[:, inv_t][:, :, inv_s]
        """,
        ["test_target_shuffle_moves_the_output_rows", "test_source_shuffle_moves_the_weight_columns"],
    ),
    "shuffle: weight columns left in place": (
        "predict_shuffled",
        """
        return output[:, perm_target], weights[:, perm_target]
        """,
        ["test_source_shuffle_moves_the_weight_columns"],
    ),
    "shuffle: weight rows left in place": (
        "predict_shuffled",
        """
        return output[:, perm_target], weights[:, :, perm_source]
        """,
        ["test_target_shuffle_moves_the_weight_rows"],
    ),
    "shuffle: output also follows the source": (
        "predict_shuffled",
        """
        return output[:, perm_target][:, perm_source], weights[:, perm_target][:, :, perm_source]
        """,
        ["test_source_shuffle_leaves_the_output_unchanged"],
    ),
    "shuffle: output left in place": (
        "predict_shuffled",
        """
        return output, weights[:, perm_target][:, :, perm_source]
        """,
        ["test_target_shuffle_moves_the_output_rows"],
    ),
    "shuffle: the batch axis indexed": (
        "predict_shuffled",
        """
        return output[perm_target], weights[perm_target][:, :, perm_source]
        """,
        ["test_target_shuffle_moves_the_output_rows", "test_both_shuffles_at_once"],
    ),
    # -- task 4: entropy
    "entropy: 0 · log 0 gives nan": (
        "attention_entropy",
        """
        return -(weights * torch.log(weights)).sum(dim=-1)
        """,
        ["test_one_hot_rows_give_zero_not_nan"],
    ),
    "entropy: log base 2": (
        "attention_entropy",
        """
        return -(torch.special.xlogy(weights, weights) / math.log(2)).sum(dim=-1)
        """,
        ["test_uniform_rows_give_log_len_k"],
    ),
    "entropy: minus sign forgotten": (
        "attention_entropy",
        """
        return torch.special.xlogy(weights, weights).sum(dim=-1)
        """,
        ["test_uniform_rows_give_log_len_k"],
    ),
    "entropy: mean over the keys": (
        "attention_entropy",
        """
        return -torch.special.xlogy(weights, weights).mean(dim=-1)
        """,
        ["test_uniform_rows_give_log_len_k"],
    ),
    "entropy: summed over the queries": (
        "attention_entropy",
        """
        return -torch.special.xlogy(weights, weights).sum(dim=-2)
        """,
        ["test_matches_the_formula_on_batched_weights"],
    ),
    "entropy: summed over everything": (
        "attention_entropy",
        """
        return -torch.special.xlogy(weights, weights).sum()
        """,
        ["test_matches_the_formula_on_batched_weights"],
    ),
    "entropy: zeros replaced in place": (
        "attention_entropy",
        """
        weights[weights == 0] = 1.0  # 1 · log 1 = 0, right, but it writes into the caller's tensor
        return -(weights * torch.log(weights)).sum(dim=-1)
        """,
        ["test_does_not_modify_its_input"],
    ),
    "entropy: a fully masked row gives nan": (
        "attention_entropy",
        """
        w = weights / weights.sum(dim=-1, keepdim=True)  # renormalise: 0 / 0 for a masked row
        return -torch.special.xlogy(w, w).sum(dim=-1)
        """,
        ["test_fully_masked_rows_give_zero"],
    ),
    # -- task 5: two sources
    "two sources: one softmax per source, averaged": (
        "two_source_attention",
        """
        def linear(t, name):
            return t @ params[f"{name}.weight"].T + params[f"{name}.bias"]

        q = linear(x, "q_proj")
        w_i = torch.softmax(q @ linear(image, "k_image").transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        w_t = torch.softmax(q @ linear(text, "k_text").transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        out = (w_i @ linear(image, "v_image") + w_t @ linear(text, "v_text")) / 2
        return out, torch.cat([w_i, w_t], dim=-1) / 2
        """,
        ["test_one_softmax_over_both_sources"],
        {"feedback": "one softmax per source", "self_check": "one softmax per source"},
    ),
    "two sources: the text's keys first": (
        "two_source_attention",
        """
        def linear(t, name):
            return t @ params[f"{name}.weight"].T + params[f"{name}.bias"]

        q = linear(x, "q_proj")
        k = torch.cat([linear(text, "k_text"), linear(image, "k_image")], dim=-2)
        v = torch.cat([linear(text, "v_text"), linear(image, "v_image")], dim=-2)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return weights @ v, weights
        """,
        ["test_image_keys_come_first"],
        {"self_check": "the image's keys come first"},
    ),
    "two sources: keys and values of the image reused for the text's values": (
        "two_source_attention",
        """
        def linear(t, name):
            return t @ params[f"{name}.weight"].T + params[f"{name}.bias"]

        q = linear(x, "q_proj")
        k = torch.cat([linear(image, "k_image"), linear(text, "k_text")], dim=-2)
        v = torch.cat([linear(image, "v_image"), linear(text, "k_text")], dim=-2)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return weights @ v, weights
        """,
        ["test_one_softmax_over_both_sources"],
    ),
    "two sources: scaled by √d_image": (
        "two_source_attention",
        """
        def linear(t, name):
            return t @ params[f"{name}.weight"].T + params[f"{name}.bias"]

        q = linear(x, "q_proj")
        k = torch.cat([linear(image, "k_image"), linear(text, "k_text")], dim=-2)
        v = torch.cat([linear(image, "v_image"), linear(text, "v_text")], dim=-2)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(image.shape[-1]), dim=-1)
        return weights @ v, weights
        """,
        ["test_one_softmax_over_both_sources"],
    ),
    "two sources: the image only": (
        "two_source_attention",
        """
        def linear(t, name):
            return t @ params[f"{name}.weight"].T + params[f"{name}.bias"]

        q = linear(x, "q_proj")
        k, v = linear(image, "k_image"), linear(image, "v_image")
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return weights @ v, weights
        """,
        ["test_shapes"],
    ),
}
