"""Deliberately wrong solutions of exercise 03, one per typical mistake.

``MUTANTS[name] = (task, code, caught_by)``: ``code`` replaces the solution region of the
cell whose ``grade_id`` is ``task`` in ``solutions/03_multi_head_attention.ipynb``;
graded, the mutant must fail at least one of the hidden tests named in ``caught_by``
(test function names), lose points, and keep every point of the other tasks.
``tests/grading/test_mutants.py`` runs them all.
"""

_SPLIT_START = """
        batch, length, d_model = x.shape
        if d_model % num_heads:
            raise ValueError(f"d_model = {d_model} is not divisible by num_heads = {num_heads}")
        head_dim = d_model // num_heads
"""

_CONVERT_BIASES = """
        if "in_proj_bias" in state:
            b_q, b_k, b_v = state["in_proj_bias"].chunk(3)
            out.update({"q_proj.bias": b_q, "k_proj.bias": b_k, "v_proj.bias": b_v,
                        "out_proj.bias": state["out_proj.bias"]})
        return out
"""

MUTANTS = {
    # -- task 1: split_heads
    "split: reshape without transpose": (
        "split_heads",
        _SPLIT_START
        + """
        return x.reshape(batch, num_heads, length, head_dim)
        """,
        ["test_each_head_gets_its_own_features_of_every_token", "test_len_equal_to_head_dim"],
    ),
    "split: every num_heads-th feature to a head": (
        "split_heads",
        _SPLIT_START
        + """
        return x.view(batch, length, head_dim, num_heads).permute(0, 3, 1, 2)
        """,
        ["test_each_head_gets_its_own_features_of_every_token"],
    ),
    "split: tokens and head_dim swapped": (
        "split_heads",
        _SPLIT_START
        + """
        return x.view(batch, length, num_heads, head_dim).permute(0, 2, 3, 1)
        """,
        ["test_shape", "test_len_equal_to_head_dim"],
    ),
    "split: num_heads and head_dim swapped": (
        "split_heads",
        _SPLIT_START
        + """
        return x.view(batch, length, head_dim, num_heads).transpose(1, 2)
        """,
        ["test_shape", "test_many_heads_of_width_one"],
    ),
    "split: heads not moved before the tokens": (
        "split_heads",
        _SPLIT_START
        + """
        return x.view(batch, length, num_heads, head_dim)
        """,
        ["test_shape"],
    ),
    "split: no ValueError for an indivisible width": (
        "split_heads",
        """
        batch, length, d_model = x.shape
        return x.view(batch, length, num_heads, d_model // num_heads).transpose(1, 2)
        """,
        ["test_indivisible_width_raises_value_error"],
    ),
    # -- task 2: merge_heads
    "merge: reshape without transpose": (
        "merge_heads",
        """
        batch, num_heads, length, head_dim = x.shape
        return x.reshape(batch, length, num_heads * head_dim)
        """,
        ["test_inverts_split_heads", "test_each_row_is_one_token"],
    ),
    "merge: view after the transpose": (
        "merge_heads",
        """
        batch, num_heads, length, head_dim = x.shape
        return x.transpose(1, 2).view(batch, length, num_heads * head_dim)
        """,
        ["test_inverts_split_heads"],
    ),
    "merge: features interleaved": (
        "merge_heads",
        """
        batch, num_heads, length, head_dim = x.shape
        return x.permute(0, 2, 3, 1).reshape(batch, length, num_heads * head_dim)
        """,
        ["test_inverts_split_heads", "test_each_row_is_one_token"],
    ),
    "merge: transpose of the wrong axes": (
        "merge_heads",
        """
        batch, num_heads, length, head_dim = x.shape
        return x.transpose(2, 3).reshape(batch, length, num_heads * head_dim)
        """,
        ["test_inverts_split_heads", "test_each_row_is_one_token"],
    ),
    "merge: heads stacked along the tokens": (
        "merge_heads",
        """
        batch, num_heads, length, head_dim = x.shape
        return x.reshape(batch, num_heads * length, head_dim)
        """,
        ["test_shape"],
    ),
    # -- task 3: multi-head attention
    "mha: scaled by √d_model": (
        "multi_head_attention",
        """
        q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(query.shape[-1]), dim=-1)
        return merge_heads(weights @ v), weights
        """,
        ["test_each_head_is_scaled_by_sqrt_head_dim"],
    ),
    "mha: einsum that names no batch or head axes": (
        "multi_head_attention",
        """
        q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
        weights = torch.softmax(torch.einsum("qd,kd->qk", q, k) / math.sqrt(q.shape[-1]), dim=-1)
        return merge_heads(torch.einsum("qk,kd->qd", weights, v)), weights
        """,
        ["test_shapes"],
        {"feedback": "write the batch axes as '...'"},
    ),
    "mha: k.T, which reverses every axis": (
        "multi_head_attention",
        """
        q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
        weights = torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1)
        return merge_heads(weights @ v), weights
        """,
        ["test_shapes"],
        {"feedback": "key.T reverses every axis"},
    ),
    "mha: scores not scaled": (
        "multi_head_attention",
        """
        q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return merge_heads(weights @ v), weights
        """,
        ["test_each_head_is_scaled_by_sqrt_head_dim"],
    ),
    "mha: softmax over the queries": (
        "multi_head_attention",
        """
        q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-2)
        return merge_heads(weights @ v), weights
        """,
        ["test_weights_are_distributions_over_the_keys"],
    ),
    "mha: weights averaged over the heads": (
        "multi_head_attention",
        """
        q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return merge_heads(weights @ v), weights.mean(dim=1)
        """,
        ["test_shapes"],
    ),
    "mha: heads not merged": (
        "multi_head_attention",
        """
        q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return weights @ v, weights
        """,
        ["test_shapes"],
    ),
    "mha: merged by a reshape without transpose": (
        "multi_head_attention",
        """
        q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return (weights @ v).reshape(query.shape[0], query.shape[1], value.shape[-1]), weights
        """,
        ["test_output_matches_the_formula"],
    ),
    "mha: num_heads and head_dim confused": (
        "multi_head_attention",
        """
        head_dim = query.shape[-1] // num_heads
        q, k, v = (split_heads(t, head_dim) for t in (query, key, value))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(head_dim), dim=-1)
        return merge_heads(weights @ v), weights
        """,
        ["test_shapes", "test_one_head_is_plain_attention"],
    ),
    "mha: output as wide as the queries": (
        "multi_head_attention",
        """
        batch, len_q, d_model = query.shape
        q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return (weights @ v).transpose(1, 2).reshape(batch, len_q, d_model), weights
        """,
        ["test_values_of_another_width"],
    ),
    # -- task 4: from_torch_state_dict
    "convert: in_proj_weight cut in the order k, q, v": (
        "from_torch_state_dict",
        """
        if "in_proj_weight" in state:
            w_k, w_q, w_v = state["in_proj_weight"].chunk(3)
        else:
            w_q, w_k, w_v = state["q_proj_weight"], state["k_proj_weight"], state["v_proj_weight"]
        out = {"q_proj.weight": w_q, "k_proj.weight": w_k, "v_proj.weight": w_v,
               "out_proj.weight": state["out_proj.weight"]}
        """
        + _CONVERT_BIASES,
        ["test_packed_weights_in_the_order_q_k_v"],
    ),
    "convert: in_proj_weight cut along dim 1": (
        "from_torch_state_dict",
        """
        if "in_proj_weight" in state:
            w_q, w_k, w_v = state["in_proj_weight"].chunk(3, dim=1)
        else:
            w_q, w_k, w_v = state["q_proj_weight"], state["k_proj_weight"], state["v_proj_weight"]
        out = {"q_proj.weight": w_q, "k_proj.weight": w_k, "v_proj.weight": w_v,
               "out_proj.weight": state["out_proj.weight"]}
        """
        + _CONVERT_BIASES,
        ["test_packed_weights_in_the_order_q_k_v"],
    ),
    "convert: weights transposed": (
        "from_torch_state_dict",
        """
        if "in_proj_weight" in state:
            w_q, w_k, w_v = (w.T for w in state["in_proj_weight"].chunk(3))
        else:
            w_q, w_k, w_v = state["q_proj_weight"], state["k_proj_weight"], state["v_proj_weight"]
        out = {"q_proj.weight": w_q, "k_proj.weight": w_k, "v_proj.weight": w_v,
               "out_proj.weight": state["out_proj.weight"]}
        """
        + _CONVERT_BIASES,
        ["test_packed_weights_in_the_order_q_k_v", "test_packed_layer_gives_torchs_outputs"],
    ),
    "convert: only the packed layout": (
        "from_torch_state_dict",
        """
        w_q, w_k, w_v = state["in_proj_weight"].chunk(3)
        out = {"q_proj.weight": w_q, "k_proj.weight": w_k, "v_proj.weight": w_v,
               "out_proj.weight": state["out_proj.weight"]}
        """
        + _CONVERT_BIASES,
        ["test_separate_layout_for_a_wider_source"],
    ),
    "convert: biases forgotten": (
        "from_torch_state_dict",
        """
        if "in_proj_weight" in state:
            w_q, w_k, w_v = state["in_proj_weight"].chunk(3)
        else:
            w_q, w_k, w_v = state["q_proj_weight"], state["k_proj_weight"], state["v_proj_weight"]
        return {"q_proj.weight": w_q, "k_proj.weight": w_k, "v_proj.weight": w_v,
                "out_proj.weight": state["out_proj.weight"]}
        """,
        ["test_keys", "test_biases_in_the_order_q_k_v"],
    ),
    "convert: biases in the order k, q, v": (
        "from_torch_state_dict",
        """
        if "in_proj_weight" in state:
            w_q, w_k, w_v = state["in_proj_weight"].chunk(3)
        else:
            w_q, w_k, w_v = state["q_proj_weight"], state["k_proj_weight"], state["v_proj_weight"]
        out = {"q_proj.weight": w_q, "k_proj.weight": w_k, "v_proj.weight": w_v,
               "out_proj.weight": state["out_proj.weight"]}
        if "in_proj_bias" in state:
            b_k, b_q, b_v = state["in_proj_bias"].chunk(3)
            out.update({"q_proj.bias": b_q, "k_proj.bias": b_k, "v_proj.bias": b_v,
                        "out_proj.bias": state["out_proj.bias"]})
        return out
        """,
        ["test_biases_in_the_order_q_k_v"],
    ),
    "convert: bias=False not handled": (
        "from_torch_state_dict",
        """
        if "in_proj_weight" in state:
            w_q, w_k, w_v = state["in_proj_weight"].chunk(3)
        else:
            w_q, w_k, w_v = state["q_proj_weight"], state["k_proj_weight"], state["v_proj_weight"]
        b_q, b_k, b_v = state["in_proj_bias"].chunk(3)
        return {"q_proj.weight": w_q, "k_proj.weight": w_k, "v_proj.weight": w_v,
                "out_proj.weight": state["out_proj.weight"], "q_proj.bias": b_q, "k_proj.bias": b_k,
                "v_proj.bias": b_v, "out_proj.bias": state["out_proj.bias"]}
        """,
        ["test_layer_without_biases"],
    ),
    "convert: out_proj left at its initial weights": (
        "from_torch_state_dict",
        """
        if "in_proj_weight" in state:
            w_q, w_k, w_v = state["in_proj_weight"].chunk(3)
        else:
            w_q, w_k, w_v = state["q_proj_weight"], state["k_proj_weight"], state["v_proj_weight"]
        d_model = w_q.shape[0]
        fresh = nn.Linear(d_model, d_model, bias="in_proj_bias" in state)  # not the trained out_proj
        out = {"q_proj.weight": w_q, "k_proj.weight": w_k, "v_proj.weight": w_v, "out_proj.weight": fresh.weight.data}
        if "in_proj_bias" in state:
            b_q, b_k, b_v = state["in_proj_bias"].chunk(3)
            out.update({"q_proj.bias": b_q, "k_proj.bias": b_k, "v_proj.bias": b_v, "out_proj.bias": fresh.bias.data})
        return out
        """,
        ["test_out_proj_is_copied"],
    ),
    # -- task 5: grouped-query attention
    "gqa: key/value heads tiled with repeat (0, 1, 0, 1)": (
        "grouped_query_attention",
        """
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
        group = num_heads // num_kv_heads
        q = split_heads(query, num_heads)
        k, v = split_heads(key, num_kv_heads), split_heads(value, num_kv_heads)
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return merge_heads(weights @ v), weights
        """,
        ["test_each_group_of_query_heads_shares_one_key_head"],
        {"feedback": "repeat_interleave", "self_check": "the key/value heads are tiled"},
    ),
    "gqa: every query head reads key/value head 0": (
        "grouped_query_attention",
        """
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
        group = num_heads // num_kv_heads
        q = split_heads(query, num_heads)
        k, v = split_heads(key, num_kv_heads), split_heads(value, num_kv_heads)
        k, v = k[:, :1], v[:, :1]
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return merge_heads(weights @ v), weights
        """,
        ["test_each_group_of_query_heads_shares_one_key_head"],
        {"self_check": "every query head reads key/value head 0"},
    ),
    "gqa: scaled by √d_model": (
        "grouped_query_attention",
        """
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
        group = num_heads // num_kv_heads
        q = split_heads(query, num_heads)
        k, v = split_heads(key, num_kv_heads), split_heads(value, num_kv_heads)
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(query.shape[-1]), dim=-1)
        return merge_heads(weights @ v), weights
        """,
        ["test_each_group_of_query_heads_shares_one_key_head"],
        {"self_check": "scale by √head_dim"},
    ),
    "gqa: no ValueError for indivisible heads": (
        "grouped_query_attention",
        """
        group = max(num_heads // num_kv_heads, 1)
        q = split_heads(query, num_heads)
        k, v = split_heads(key, num_kv_heads), split_heads(value, num_kv_heads)
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return merge_heads(weights @ v), weights
        """,
        ["test_indivisible_heads_raise_value_error"],
        {"self_check": "expected a ValueError"},
    ),
    "gqa: key/value heads split as many as the query heads": (
        "grouped_query_attention",
        """
        q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return merge_heads(weights @ v), weights
        """,
        ["test_shapes", "test_each_group_of_query_heads_shares_one_key_head"],
    ),
}
