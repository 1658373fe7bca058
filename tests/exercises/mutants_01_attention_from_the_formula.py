"""Deliberately wrong solutions of exercise 01, one per typical mistake.

``MUTANTS[name] = (task, code, caught_by)``: ``code`` replaces the solution region of the
cell whose ``grade_id`` is ``task`` in ``solutions/01_attention_from_the_formula.ipynb``;
graded, the mutant must fail at least one of the hidden tests named in ``caught_by``
(test function names), lose points, and keep every point of the other tasks.
``tests/grading/test_mutants.py`` runs them all.
"""

MUTANTS = {
    "softmax without the max subtraction": (
        "softmax",
        """
        e = np.exp(x)
        return e / np.sum(e, axis=axis, keepdims=True)
        """,
        ["test_large_scores_do_not_overflow"],
    ),
    "softmax shifted by the max of the whole array": (
        "softmax",
        """
        e = np.exp(x - np.max(x))
        return e / np.sum(e, axis=axis, keepdims=True)
        """,
        ["test_each_row_uses_its_own_max"],
    ),
    "softmax normalised over axis 0": (
        "softmax",
        """
        e = np.exp(x - np.max(x, axis=0, keepdims=True))
        return e / np.sum(e, axis=0, keepdims=True)
        """,
        ["test_matches_the_formula", "test_sums_to_one_along_the_given_axis"],
    ),
    "softmax that ignores its axis argument": (
        "softmax",
        """
        e = np.exp(x - np.max(x, axis=-1, keepdims=True))
        return e / np.sum(e, axis=-1, keepdims=True)
        """,
        ["test_sums_to_one_along_the_given_axis"],
    ),
    "softmax divided by the sum of the whole array": (
        "softmax",
        """
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e)
        """,
        ["test_matches_the_formula", "test_sums_to_one_along_the_given_axis"],
    ),
    "softmax without keepdims": (
        "softmax",
        """
        e = np.exp(x - np.max(x, axis=axis))
        return e / np.sum(e, axis=axis)
        """,
        ["test_matches_the_formula"],
    ),
    "softmax that modifies its input in place": (
        "softmax",
        """
        x -= np.max(x, axis=axis, keepdims=True)
        e = np.exp(x)
        return e / np.sum(e, axis=axis, keepdims=True)
        """,
        ["test_does_not_modify_its_input"],
    ),
    "score_std returning the variance": (
        "score_std",
        """
        rng = np.random.default_rng(seed)
        q, k = rng.standard_normal((num_pairs, d)), rng.standard_normal((num_pairs, d))
        scores = np.sum(q * k, axis=-1)
        return float(scores.var()), float((scores / np.sqrt(d)).var())
        """,
        ["test_raw_scores_spread_like_sqrt_d"],
    ),
    "score_std scaled by d": (
        "score_std",
        """
        rng = np.random.default_rng(seed)
        q, k = rng.standard_normal((num_pairs, d)), rng.standard_normal((num_pairs, d))
        scores = np.sum(q * k, axis=-1)
        return float(scores.std()), float((scores / d).std())
        """,
        ["test_scaled_scores_have_unit_spread"],
    ),
    "score_std over every query-key pair": (
        "score_std",
        """
        rng = np.random.default_rng(seed)
        q, k = rng.standard_normal((num_pairs, d)), rng.standard_normal((num_pairs, d))
        scores = q @ k.T
        return float(scores.std()), float((scores / np.sqrt(d)).std())
        """,
        ["test_one_dot_product_per_pair"],
    ),
    "score_std ignoring its seed": (
        "score_std",
        """
        q, k = np.random.standard_normal((num_pairs, d)), np.random.standard_normal((num_pairs, d))
        scores = np.sum(q * k, axis=-1)
        return float(scores.std()), float((scores / np.sqrt(d)).std())
        """,
        ["test_same_seed_same_result"],
    ),
    "attention without the 1/√d scale": (
        "attention",
        """
        weights = softmax(query @ np.swapaxes(key, -1, -2), axis=-1)
        return weights @ value, weights
        """,
        ["test_matches_the_formula"],
    ),
    "attention scaled by 1/d": (
        "attention",
        """
        weights = softmax(query @ np.swapaxes(key, -1, -2) / query.shape[-1], axis=-1)
        return weights @ value, weights
        """,
        ["test_matches_the_formula"],
    ),
    "attention scaled by the number of queries": (
        "attention",
        """
        weights = softmax(query @ np.swapaxes(key, -1, -2) / np.sqrt(query.shape[-2]), axis=-1)
        return weights @ value, weights
        """,
        ["test_matches_the_formula"],
    ),
    "attention with the keys not transposed": (
        "attention",
        """
        weights = softmax(query @ key / np.sqrt(query.shape[-1]), axis=-1)
        return weights @ value, weights
        """,
        ["test_keys_are_transposed_even_when_square"],
    ),
    "attention with key.T, which breaks batches": (
        "attention",
        """
        weights = softmax(query @ key.T / np.sqrt(query.shape[-1]), axis=-1)
        return weights @ value, weights
        """,
        ["test_batched_inputs"],
        {"feedback": "key.T reverses every axis"},
    ),
    "attention with the softmax over the queries": (
        "attention",
        """
        weights = softmax(query @ np.swapaxes(key, -1, -2) / np.sqrt(query.shape[-1]), axis=-2)
        return weights @ value, weights
        """,
        ["test_weights_are_distributions_over_the_keys"],
    ),
    "attention returning unnormalised weights": (
        "attention",
        """
        scores = query @ np.swapaxes(key, -1, -2) / np.sqrt(query.shape[-1])
        return softmax(scores, axis=-1) @ value, scores
        """,
        ["test_weights_are_distributions_over_the_keys"],
    ),
    "attention with a naive softmax": (
        "attention",
        """
        e = np.exp(query @ np.swapaxes(key, -1, -2) / np.sqrt(query.shape[-1]))
        weights = e / e.sum(axis=-1, keepdims=True)
        return weights @ value, weights
        """,
        ["test_large_scores_stay_finite"],
    ),
    "attention assuming len_q == len_k": (
        "attention",
        """
        n = query.shape[-2]
        weights = softmax(query @ np.swapaxes(key, -1, -2)[..., :n] / np.sqrt(query.shape[-1]), axis=-1)
        return weights @ value[..., :n, :], weights
        """,
        ["test_shapes_when_len_q_differs_from_len_k"],
    ),
    "attention returning (weights, output)": (
        "attention",
        """
        weights = softmax(query @ np.swapaxes(key, -1, -2) / np.sqrt(query.shape[-1]), axis=-1)
        return weights, weights @ value
        """,
        ["test_shapes_when_len_q_differs_from_len_k"],
    ),
    "attention with the output as values times weights": (
        "attention",
        """
        weights = softmax(query @ np.swapaxes(key, -1, -2) / np.sqrt(query.shape[-1]), axis=-1)
        return np.swapaxes(value, -1, -2) @ np.swapaxes(weights, -1, -2), weights
        """,
        ["test_shapes_when_len_q_differs_from_len_k"],
    ),
    "align with the roles of target and source swapped": (
        "align",
        """
        _, weights = scaled_dot_product_attention(source, target, target)
        return np.argmax(weights, axis=-1)
        """,
        ["test_one_index_per_target_word"],
    ),
    "align with the argmax over the target words": (
        "align",
        """
        _, weights = scaled_dot_product_attention(target, source, source)
        return np.argmax(weights, axis=0)
        """,
        ["test_one_index_per_target_word", "test_finds_the_most_attended_source_word"],
    ),
    "align returning the weights' maxima instead of their indices": (
        "align",
        """
        _, weights = scaled_dot_product_attention(target, source, source)
        return np.max(weights, axis=-1)
        """,
        ["test_one_index_per_target_word"],
    ),
    "softmax shifted by the row mean": (
        "softmax",
        """
        e = np.exp(x - np.mean(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)
        """,
        ["test_rows_with_a_large_spread"],
        {"feedback": "shifted each row by its mean", "self_check": "shifted each row by its mean"},
    ),
    "softmax shifted by the row minimum": (
        "softmax",
        """
        e = np.exp(x - np.min(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)
        """,
        ["test_rows_with_a_large_spread"],
        {"feedback": "shifted each row by its min", "self_check": "shifted each row by its min"},
    ),
    "softmax shifted by the first element of each row": (
        "softmax",
        """
        e = np.exp(x - np.take(x, [0], axis=axis))
        return e / np.sum(e, axis=axis, keepdims=True)
        """,
        ["test_rows_with_a_large_spread"],
        {"feedback": "shifted each row by its first element", "self_check": "shifted each row by its first element"},
    ),
    "softmax that forgets to return": (
        "softmax",
        """
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        weights = e / np.sum(e, axis=axis, keepdims=True)
        """,
        ["test_matches_the_formula"],
        {"feedback": "did you forget `return`?", "self_check": "did you forget `return`?"},
    ),
    "attention scaled after the softmax": (
        "attention",
        """
        weights = softmax(query @ np.swapaxes(key, -1, -2), axis=-1) / np.sqrt(query.shape[-1])
        return weights @ value, weights
        """,
        ["test_weights_are_distributions_over_the_keys", "test_matches_the_formula"],
        {"self_check": "divided by √d after the softmax"},
    ),
    "online_update without rescaling the old sums": (
        "online_update",
        """
        scores = query @ key.T / np.sqrt(query.shape[-1])
        chunk_max = scores.max(axis=-1)
        if state is None:
            row_max, row_sum, acc = chunk_max, np.zeros(len(query)), np.zeros((len(query), value.shape[-1]))
        else:
            row_max, row_sum, acc = state
        new_max = np.maximum(row_max, chunk_max)
        p = np.exp(scores - new_max[:, None])
        return new_max, row_sum + p.sum(axis=-1), acc + p @ value
        """,
        ["test_a_later_chunk_with_larger_scores"],
        {"feedback": "multiply the old row_sum and acc", "self_check": "multiply the old row_sum and acc"},
    ),
    "online_update rescaling acc but not row_sum": (
        "online_update",
        """
        scores = query @ key.T / np.sqrt(query.shape[-1])
        chunk_max = scores.max(axis=-1)
        if state is None:
            row_max, row_sum, acc = chunk_max, np.zeros(len(query)), np.zeros((len(query), value.shape[-1]))
        else:
            row_max, row_sum, acc = state
        new_max = np.maximum(row_max, chunk_max)
        rescale = np.exp(row_max - new_max)
        p = np.exp(scores - new_max[:, None])
        return new_max, row_sum + p.sum(axis=-1), rescale[:, None] * acc + p @ value
        """,
        ["test_a_later_chunk_with_larger_scores"],
        {"feedback": "rescaled acc but not row_sum", "self_check": "rescaled acc but not row_sum"},
    ),
    "online_update with the rescale factor inverted": (
        "online_update",
        """
        scores = query @ key.T / np.sqrt(query.shape[-1])
        chunk_max = scores.max(axis=-1)
        if state is None:
            row_max, row_sum, acc = chunk_max, np.zeros(len(query)), np.zeros((len(query), value.shape[-1]))
        else:
            row_max, row_sum, acc = state
        new_max = np.maximum(row_max, chunk_max)
        rescale = np.exp(new_max - row_max)
        p = np.exp(scores - new_max[:, None])
        return new_max, rescale * row_sum + p.sum(axis=-1), rescale[:, None] * acc + p @ value
        """,
        ["test_a_later_chunk_with_larger_scores"],
        {"self_check": "the old sums shrink when the max grows"},
    ),
    "online_update keeping the chunk's max instead of the running max": (
        "online_update",
        """
        scores = query @ key.T / np.sqrt(query.shape[-1])
        new_max = scores.max(axis=-1)
        if state is None:
            row_max, row_sum, acc = new_max, np.zeros(len(query)), np.zeros((len(query), value.shape[-1]))
        else:
            row_max, row_sum, acc = state
        rescale = np.exp(row_max - new_max)
        p = np.exp(scores - new_max[:, None])
        return new_max, rescale * row_sum + p.sum(axis=-1), rescale[:, None] * acc + p @ value
        """,
        ["test_a_later_chunk_with_larger_scores"],
        {"self_check": "running max"},
    ),
    "online_update without the max (raw exp)": (
        "online_update",
        """
        p = np.exp(query @ key.T / np.sqrt(query.shape[-1]))
        if state is None:
            return np.zeros(len(query)), p.sum(axis=-1), p @ value
        row_max, row_sum, acc = state
        return row_max, row_sum + p.sum(axis=-1), acc + p @ value
        """,
        ["test_first_chunk_follows_the_definitions", "test_scores_in_the_thousands_stay_finite"],
    ),
    "online_update without the 1/√d scale": (
        "online_update",
        """
        scores = query @ key.T
        chunk_max = scores.max(axis=-1)
        if state is None:
            row_max, row_sum, acc = chunk_max, np.zeros(len(query)), np.zeros((len(query), value.shape[-1]))
        else:
            row_max, row_sum, acc = state
        new_max = np.maximum(row_max, chunk_max)
        rescale = np.exp(row_max - new_max)
        p = np.exp(scores - new_max[:, None])
        return new_max, rescale * row_sum + p.sum(axis=-1), rescale[:, None] * acc + p @ value
        """,
        ["test_first_chunk_follows_the_definitions"],
        {"self_check": "the scores are query @ keyᵀ / √d"},
    ),
    "online_update modifying the state in place": (
        "online_update",
        """
        scores = query @ key.T / np.sqrt(query.shape[-1])
        chunk_max = scores.max(axis=-1)
        if state is None:
            row_max, row_sum, acc = chunk_max, np.zeros(len(query)), np.zeros((len(query), value.shape[-1]))
        else:
            row_max, row_sum, acc = state
        new_max = np.maximum(row_max, chunk_max)
        rescale = np.exp(row_max - new_max)
        p = np.exp(scores - new_max[:, None])
        row_sum *= rescale
        row_sum += p.sum(axis=-1)
        acc *= rescale[:, None]
        acc += p @ value
        return new_max, row_sum, acc
        """,
        ["test_does_not_modify_the_state"],
        {"self_check": "changed the state it was given"},
    ),
    "attention with an einsum that names no batch axes": (
        "attention",
        """
        weights = softmax(np.einsum("qd,kd->qk", query, key) / np.sqrt(query.shape[-1]), axis=-1)
        return np.einsum("qk,kv->qv", weights, value), weights
        """,
        ["test_batched_inputs"],
        {"feedback": "write the batch axes as '...'"},
    ),
}
