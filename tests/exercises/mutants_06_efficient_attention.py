"""Deliberately wrong solutions of exercise 06, one per typical mistake.

``MUTANTS[name] = (task, code, caught_by)``: ``code`` replaces the solution region of the
cell whose ``grade_id`` is ``task`` in ``solutions/06_efficient_attention.ipynb``; graded,
the mutant must fail at least one of the hidden tests named in ``caught_by`` (test function
names), lose points, and keep every point of the other tasks.
``tests/grading/test_mutants.py`` runs them all.
"""

import textwrap

# The parts of the Triton kernel's region that most mutants keep: the loads, and the store.
_LOOP_HEAD = """
for start_n in range(0, kv_len, BLOCK_N):
    keys = start_n + tl.arange(0, BLOCK_N)
    key_ok = keys < kv_len
    k = tl.load(K + keys[:, None] * HEAD_DIM + dims[None, :], mask=key_ok[:, None], other=0.0)
    v = tl.load(V + keys[:, None] * HEAD_DIM + dims[None, :], mask=key_ok[:, None], other=0.0)
    s = tl.dot(q, tl.trans(k)) * scale
    s = tl.where(key_ok[None, :], s, float("-inf"))
"""
_STORE = """
out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
tl.store(Out + rows[:, None] * HEAD_DIM + dims[None, :], out, mask=row_ok[:, None])
"""


def _kernel(body: str, head: str = _LOOP_HEAD, store: str = _STORE) -> str:
    """A kernel region: the loop's head, ``body`` (indented into the loop), the store."""
    inner = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return head.strip("\n") + "\n" + inner + "\n" + store.strip("\n")


_UPDATE = """
m_new = tl.maximum(m_i, tl.max(s, axis=1))
alpha = tl.exp(m_i - m_new)
p = tl.exp(s - m_new[:, None])
l_i = l_i * alpha + tl.sum(p, axis=1)
acc = acc * alpha[:, None] + tl.dot(p, v)
m_i = m_new
"""

# The tiled loop with one line changed; TILED_LOOP is the solution's.
_TILED = """
len_k, d = key.shape[-2], query.shape[-1]
rows = query.shape[:-1]
m_i = torch.full(rows, {m0}, dtype=query.dtype)
l_i = torch.zeros(rows, dtype=query.dtype)
acc = torch.zeros(*rows, value.shape[-1], dtype=query.dtype)
for start in {loop}:
    k_block = key[:, :, start : start + block_size]
    scores = query @ k_block.transpose(-1, -2) {scale}
    if kv_lens is not None:
        index = {index}
        real = {real}
        scores = scores.masked_fill(~real[:, None, None, :], -math.inf)
    m_i, l_i, acc = online_softmax_update(m_i, l_i, acc, scores, value[:, :, start : start + block_size])
    {inside}
return {final}
"""
_TILED_DEFAULTS = {
    "m0": "-math.inf",
    "loop": "range(0, len_k, block_size)",
    "scale": "/ math.sqrt(d)",
    "index": "torch.arange(start, start + k_block.shape[-2])",
    "real": "index < torch.as_tensor(kv_lens)[:, None]",
    "inside": "pass",
    "final": "acc / torch.where(l_i == 0, torch.ones_like(l_i), l_i)[..., None]",
}


def _tiled(**changes: str) -> str:
    return _TILED.format(**{**_TILED_DEFAULTS, **changes})


MUTANTS = {
    # -- task 1: one step of the online softmax --------------------------------------------------
    "update: acc not rescaled": (
        "online_update",
        """
        m_new = torch.maximum(m_i, scores.amax(dim=-1))
        m_safe = torch.where(m_new == -math.inf, torch.zeros_like(m_new), m_new)
        alpha = torch.exp(m_i - m_safe)
        p = torch.exp(scores - m_safe[..., None])
        return m_new, l_i * alpha + p.sum(dim=-1), acc + p @ values
        """,
        ["test_rescales_the_accumulator"],
    ),
    "update: l not rescaled": (
        "online_update",
        """
        m_new = torch.maximum(m_i, scores.amax(dim=-1))
        m_safe = torch.where(m_new == -math.inf, torch.zeros_like(m_new), m_new)
        alpha = torch.exp(m_i - m_safe)
        p = torch.exp(scores - m_safe[..., None])
        return m_new, l_i + p.sum(dim=-1), acc * alpha[..., None] + p @ values
        """,
        ["test_rescales_the_running_sum"],
    ),
    "update: exp with the old max": (
        "online_update",
        """
        p = torch.exp(scores - m_i[..., None])
        m_new = torch.maximum(m_i, scores.amax(dim=-1))
        alpha = torch.exp(m_i - m_new)
        return m_new, l_i * alpha + p.sum(dim=-1), acc * alpha[..., None] + p @ values
        """,
        ["test_first_block_from_the_empty_state"],
    ),
    "update: no guard for a max of -inf": (
        "online_update",
        """
        m_new = torch.maximum(m_i, scores.amax(dim=-1))
        alpha = torch.exp(m_i - m_new)
        p = torch.exp(scores - m_new[..., None])
        return m_new, l_i * alpha + p.sum(dim=-1), acc * alpha[..., None] + p @ values
        """,
        ["test_masked_keys_and_rows_with_no_key"],
    ),
    "update: acc divided by l inside the loop": (
        "online_update",
        """
        m_new = torch.maximum(m_i, scores.amax(dim=-1))
        m_safe = torch.where(m_new == -math.inf, torch.zeros_like(m_new), m_new)
        alpha = torch.exp(m_i - m_safe)
        p = torch.exp(scores - m_safe[..., None])
        l_new = l_i * alpha + p.sum(dim=-1)
        return m_new, l_new, (acc * alpha[..., None] + p @ values) / l_new[..., None]
        """,
        ["test_first_block_from_the_empty_state"],
    ),
    "update: alpha inverted, exp(m_new - m)": (
        "online_update",
        """
        m_new = torch.maximum(m_i, scores.amax(dim=-1))
        m_safe = torch.where(m_new == -math.inf, torch.zeros_like(m_new), m_new)
        m_old = torch.where(m_i == -math.inf, m_safe, m_i)
        alpha = torch.exp(m_safe - m_old)
        p = torch.exp(scores - m_safe[..., None])
        return m_new, l_i * alpha + p.sum(dim=-1), acc * alpha[..., None] + p @ values
        """,
        ["test_rescales_the_running_sum", "test_rescales_the_accumulator"],
    ),
    "update: alpha not broadcast over the rows of acc": (
        "online_update",
        """
        m_new = torch.maximum(m_i, scores.amax(dim=-1))
        m_safe = torch.where(m_new == -math.inf, torch.zeros_like(m_new), m_new)
        alpha = torch.exp(m_i - m_safe)
        p = torch.exp(scores - m_safe[..., None])
        return m_new, l_i * alpha + p.sum(dim=-1), acc * alpha + p @ values
        """,
        ["test_scales_the_rows_of_acc"],
    ),
    "update: m_new is the block's max only": (
        "online_update",
        """
        m_new = scores.amax(dim=-1)
        m_safe = torch.where(m_new == -math.inf, torch.zeros_like(m_new), m_new)
        alpha = torch.exp(m_i - m_safe)
        p = torch.exp(scores - m_safe[..., None])
        return m_new, l_i * alpha + p.sum(dim=-1), acc * alpha[..., None] + p @ values
        """,
        ["test_keeps_the_largest_max"],
    ),
    "update: no max subtracted": (
        "online_update",
        """
        p = torch.exp(scores)
        m_new = torch.maximum(m_i, scores.amax(dim=-1))
        return m_new, l_i + p.sum(dim=-1), acc + p @ values
        """,
        ["test_large_scores"],
    ),
    "update: state modified in place": (
        "online_update",
        """
        m_new = torch.maximum(m_i, scores.amax(dim=-1))
        m_safe = torch.where(m_new == -math.inf, torch.zeros_like(m_new), m_new)
        alpha = torch.exp(m_i - m_safe)
        p = torch.exp(scores - m_safe[..., None])
        l_i.mul_(alpha).add_(p.sum(dim=-1))
        acc.mul_(alpha[..., None]).add_(p @ values)
        return m_new, l_i, acc
        """,
        ["test_does_not_modify_its_inputs"],
    ),
    # -- task 2: merging two states -------------------------------------------------------------
    "merge: summed without rescaling": (
        "merge_states",
        """
        return torch.maximum(m1, m2), l1 + l2, acc1 + acc2
        """,
        ["test_merged_sum_and_accumulator"],
    ),
    "merge: weights against the second state's max": (
        "merge_states",
        """
        m2_safe = torch.where(m2 == -math.inf, torch.zeros_like(m2), m2)
        a1 = torch.exp(m1 - m2_safe)
        return m2, l1 * a1 + l2, acc1 * a1[..., None] + acc2
        """,
        ["test_merged_max_is_the_joint_max", "test_far_apart_maxima_stay_finite"],
    ),
    "merge: no guard for two empty states": (
        "merge_states",
        """
        m = torch.maximum(m1, m2)
        a1, a2 = torch.exp(m1 - m), torch.exp(m2 - m)
        return m, l1 * a1 + l2 * a2, acc1 * a1[..., None] + acc2 * a2[..., None]
        """,
        ["test_empty_states"],
    ),
    "merge: l not rescaled": (
        "merge_states",
        """
        m = torch.maximum(m1, m2)
        m_safe = torch.where(m == -math.inf, torch.zeros_like(m), m)
        a1, a2 = torch.exp(m1 - m_safe), torch.exp(m2 - m_safe)
        return m, l1 + l2, acc1 * a1[..., None] + acc2 * a2[..., None]
        """,
        ["test_merged_sum_and_accumulator"],
    ),
    "merge: weights not broadcast over the rows of acc": (
        "merge_states",
        """
        m = torch.maximum(m1, m2)
        m_safe = torch.where(m == -math.inf, torch.zeros_like(m), m)
        a1, a2 = torch.exp(m1 - m_safe), torch.exp(m2 - m_safe)
        return m, l1 * a1 + l2 * a2, acc1 * a1 + acc2 * a2
        """,
        ["test_scales_the_rows_of_acc"],
    ),
    "merge: weights swapped between the states": (
        "merge_states",
        """
        m = torch.maximum(m1, m2)
        m_safe = torch.where(m == -math.inf, torch.zeros_like(m), m)
        a1, a2 = torch.exp(m1 - m_safe), torch.exp(m2 - m_safe)
        return m, l1 * a2 + l2 * a1, acc1 * a2[..., None] + acc2 * a1[..., None]
        """,
        ["test_merged_sum_and_accumulator"],
    ),
    "merge: the average of the two outputs": (
        "merge_states",
        """
        m = torch.maximum(m1, m2)
        m_safe = torch.where(m == -math.inf, torch.zeros_like(m), m)
        a1, a2 = torch.exp(m1 - m_safe), torch.exp(m2 - m_safe)
        l_i = l1 * a1 + l2 * a2
        out1 = acc1 / torch.where(l1 == 0, torch.ones_like(l1), l1)[..., None]
        out2 = acc2 / torch.where(l2 == 0, torch.ones_like(l2), l2)[..., None]
        return m, l_i, (out1 + out2) / 2 * l_i[..., None]
        """,
        ["test_merged_sum_and_accumulator", "test_split_k_decoding"],
    ),
    # -- task 3: tiled attention -------------------------------------------------------------------
    "tiled: the last partial block dropped": (
        "tiled_forward",
        _tiled(loop="range(0, len_k - block_size + 1, block_size)"),
        ["test_last_partial_block"],
    ),
    "tiled: padding mask off by one (<=)": (
        "tiled_forward",
        _tiled(real="index <= torch.as_tensor(kv_lens)[:, None]"),
        ["test_padding_keys_get_no_weight", "test_padding_boundaries"],
    ),
    "tiled: kv_lens ignored": (
        "tiled_forward",
        _tiled(real="torch.ones(len(kv_lens), k_block.shape[-2], dtype=torch.bool)"),
        ["test_padding_keys_get_no_weight"],
    ),
    "tiled: padding mask with the index inside the block": (
        "tiled_forward",
        _tiled(index="torch.arange(k_block.shape[-2])"),
        ["test_padding_keys_get_no_weight", "test_padding_boundaries"],
    ),
    "tiled: the longest length for the whole batch": (
        "tiled_forward",
        _tiled(real="(index < max(kv_lens)).expand(len(kv_lens), -1)"),
        ["test_padding_keys_get_no_weight", "test_padding_boundaries"],
    ),
    "tiled: no guard for an empty source": (
        "tiled_forward",
        _tiled(final="acc / l_i[..., None]"),
        ["test_empty_source_gives_zeros"],
    ),
    "tiled: scores not scaled": (
        "tiled_forward",
        _tiled(scale=""),
        ["test_matches_attention"],
    ),
    "tiled: running max starts at 0": (
        "tiled_forward",
        _tiled(m0="0.0"),
        ["test_large_scores"],
    ),
    "tiled: acc normalised inside the loop": (
        "tiled_forward",
        _tiled(inside="acc = acc / torch.where(l_i == 0, torch.ones_like(l_i), l_i)[..., None]"),
        ["test_matches_attention"],
    ),
    # -- task 4: the Triton kernel ---------------------------------------------------------------
    "kernel: acc not rescaled": (
        "flash_kernel",
        _kernel(_UPDATE.replace("acc = acc * alpha[:, None] + tl.dot(p, v)", "acc = acc + tl.dot(p, v)")),
        ["test_matches_attention_on_whole_blocks", "test_large_scores_and_a_rising_max"],
    ),
    "kernel: l not rescaled": (
        "flash_kernel",
        _kernel(_UPDATE.replace("l_i = l_i * alpha + tl.sum(p, axis=1)", "l_i = l_i + tl.sum(p, axis=1)")),
        ["test_matches_attention_on_whole_blocks", "test_large_scores_and_a_rising_max"],
    ),
    "kernel: exp with the old max": (
        "flash_kernel",
        _kernel(
            """
            p = tl.exp(s - m_i[:, None])
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p, v)
            m_i = m_new
            """
        ),
        ["test_matches_attention_on_whole_blocks"],
    ),
    "kernel: no max subtracted": (
        "flash_kernel",
        _kernel(
            """
            p = tl.exp(s)
            l_i = l_i + tl.sum(p, axis=1)
            acc = acc + tl.dot(p, v)
            """
        ),
        ["test_large_scores_and_a_rising_max"],
    ),
    "kernel: m_i never updated": (
        "flash_kernel",
        _kernel(_UPDATE.replace("m_i = m_new", "")),
        ["test_matches_attention_on_whole_blocks"],
    ),
    # Exact for any reference value that does not overflow: only large scores reveal it.
    "kernel: max over the queries (axis 0)": (
        "flash_kernel",
        _kernel(_UPDATE.replace("tl.max(s, axis=1)", "tl.max(s, axis=0)")),
        ["test_large_scores_and_a_rising_max"],
    ),
    "kernel: acc normalised inside the loop": (
        "flash_kernel",
        _kernel(_UPDATE + "acc = acc / l_i[:, None]\n"),
        ["test_matches_attention_on_whole_blocks"],
    ),
    "kernel: scores not scaled": (
        "flash_kernel",
        _kernel(_UPDATE, head=_LOOP_HEAD.replace("tl.dot(q, tl.trans(k)) * scale", "tl.dot(q, tl.trans(k))")),
        ["test_matches_attention_on_whole_blocks"],
    ),
    "kernel: key offsets without start_n": (
        "flash_kernel",
        _kernel(_UPDATE, head=_LOOP_HEAD.replace("keys = start_n + tl", "keys = tl")),
        ["test_matches_attention_on_whole_blocks"],
    ),
    "kernel: scores past kv_len not masked": (
        "flash_kernel",
        _kernel(_UPDATE, head=_LOOP_HEAD.replace('s = tl.where(key_ok[None, :], s, float("-inf"))', "")),
        ["test_ragged_last_key_block", "test_padding_is_never_read"],
    ),
    "kernel: V loaded without mask": (
        "flash_kernel",
        _kernel(
            _UPDATE,
            head=_LOOP_HEAD.replace(
                "v = tl.load(V + keys[:, None] * HEAD_DIM + dims[None, :], mask=key_ok[:, None], other=0.0)",
                "v = tl.load(V + keys[:, None] * HEAD_DIM + dims[None, :])",
            ),
        ),
        ["test_ragged_last_key_block", "test_padding_is_never_read"],
    ),
    "kernel: store without mask": (
        "flash_kernel",
        _kernel(_UPDATE, store=_STORE.replace(", out, mask=row_ok[:, None])", ", out)")),
        ["test_ragged_last_query_block"],
    ),
    "kernel: no guard for l = 0": (
        "flash_kernel",
        _kernel(_UPDATE, store=_STORE.replace("tl.where(l_i == 0.0, 1.0, l_i)[:, None]", "l_i[:, None]")),
        ["test_empty_source_gives_zeros"],
    ),
    "kernel: loop over every key block up to len_k": (
        "flash_kernel",
        _kernel(_UPDATE, head=_LOOP_HEAD.replace("range(0, kv_len, BLOCK_N)", "range(0, len_k, BLOCK_N)")),
        ["test_empty_source_gives_zeros"],
    ),
    "combine by a plain mean of the split outputs": (
        "combine_splits",
        """
        return outputs.mean(dim=0), torch.logsumexp(lses, dim=0)
        """,
        ["test_uneven_splits_equal_attention_over_all_keys"],
        {"feedback": "not equally", "self_check": "not equally"},
    ),
    "combine with weights exp(lse_s - m) that are not normalised": (
        "combine_splits",
        """
        m = lses.amax(dim=0)
        m_safe = torch.where(m == -math.inf, torch.zeros_like(m), m)
        w = torch.exp(lses - m_safe)
        return (w[..., None] * outputs).sum(dim=0), m_safe + torch.log(w.sum(dim=0))
        """,
        ["test_uneven_splits_equal_attention_over_all_keys"],
        {"feedback": "divided by their sum", "self_check": "divided by their sum"},
    ),
    "combine with exp(lse) before subtracting the largest lse": (
        "combine_splits",
        """
        w = torch.exp(lses)
        total = w.sum(dim=0)
        return (w[..., None] * outputs).sum(dim=0) / total[..., None], torch.log(total)
        """,
        ["test_large_scores_do_not_overflow"],
        {"feedback": "overflows", "self_check": True},
    ),
    "combine by torch.softmax over the splits, NaN where every split is empty": (
        "combine_splits",
        """
        share = torch.softmax(lses, dim=0)
        return (share[..., None] * outputs).sum(dim=0), torch.logsumexp(lses, dim=0)
        """,
        ["test_empty_splits_weigh_nothing_and_empty_rows_give_zero"],
        {"feedback": "every split is empty", "self_check": "every split is empty"},
    ),
    "combine with the row weights missing their last axis": (
        "combine_splits",
        """
        m = lses.amax(dim=0)
        m_safe = torch.where(m == -math.inf, torch.zeros_like(m), m)
        w = torch.exp(lses - m_safe)
        total = w.sum(dim=0)
        share = w / torch.where(total == 0, torch.ones_like(total), total)
        return (share * outputs).sum(dim=0), m_safe + torch.log(total)
        """,
        ["test_uneven_splits_equal_attention_over_all_keys"],
    ),
    "combine returning the largest lse as the lse": (
        "combine_splits",
        """
        m = lses.amax(dim=0)
        m_safe = torch.where(m == -math.inf, torch.zeros_like(m), m)
        w = torch.exp(lses - m_safe)
        total = w.sum(dim=0)
        share = w / torch.where(total == 0, torch.ones_like(total), total)
        return (share[..., None] * outputs).sum(dim=0), m
        """,
        ["test_lse_is_the_log_sum_exp_of_all_scores"],
        {"feedback": "not their max", "self_check": "not their max"},
    ),
    "combine that shifts the lses in place": (
        "combine_splits",
        """
        m = lses.amax(dim=0)
        m_safe = torch.where(m == -math.inf, torch.zeros_like(m), m)
        w = lses.sub_(m_safe).exp_()
        total = w.sum(dim=0)
        share = w / torch.where(total == 0, torch.ones_like(total), total)
        return (share[..., None] * outputs).sum(dim=0), m_safe + torch.log(total)
        """,
        ["test_inputs_are_not_modified"],
    ),
}
