"""Deliberately wrong solutions of exercise 07, one per typical mistake.

``MUTANTS[name] = (task, code, caught_by)``: ``code`` replaces the solution region of the
cell whose ``grade_id`` is ``task`` in ``solutions/07_sparse_and_latent_attention.ipynb``;
graded, the mutant must fail at least one of the hidden tests named in ``caught_by``
(test function names), lose points, and keep every point of the other tasks.
``tests/grading/test_mutants.py`` runs them all.

The cell of ``LatentCrossAttention`` has two solution regions, ``__init__``'s and then
``forward``'s, and a mutant replaces the first. A mistake in ``forward`` is therefore
written as a correct ``__init__`` that installs a wrong ``forward`` on the instance
(``latent_forward``); ``nn.Module.__call__`` looks ``self.forward`` up on the instance first.
"""

import textwrap

_BAND = """
i = torch.arange(len_q)
j = torch.arange(len_k)
{start}
return (j[None, :] >= start[:, None]) & (j[None, :] < start[:, None] + width)
"""

_FLOPS = """
dim_v = head_dim if dim_v is None else dim_v
per_score = {per_score}
dense = {dense}
band = {band}
return dense, band, {saving}
"""

_LATENT_INIT = """
self.latents = nn.Parameter(torch.randn(num_latents, d_model) / math.sqrt(d_model))
self.attn = MultiHeadAttention(d_model, num_heads, d_context=d_context)
"""

_EXPLICIT = """
weights = (F.elu(query) + 1) @ (F.elu(key) + 1).transpose(-2, -1)
if key_mask is not None:
    weights = weights.masked_fill(~key_mask[:, None, None, :], 0.0)
return (weights @ value) / (weights.sum(dim=-1, keepdim=True) + eps)
"""

_LINEAR = """
dtype = query.dtype
if dtype in (torch.float16, torch.bfloat16):
    query, key, value = query.float(), key.float(), value.float()
phi_q, phi_k = F.elu(query) + 1, F.elu(key) + 1
if key_mask is not None:
    phi_k = phi_k * key_mask[:, None, :, None]
kv = phi_k.transpose(-2, -1) @ value
z = phi_k.sum(dim=-2)
out = (phi_q @ kv) / (phi_q @ z.unsqueeze(-1) + eps)
return out.to(dtype)
"""


def band(start: str) -> str:
    return _BAND.format(start=start.strip())


def band_flops(
    per_score: str = "2 * (head_dim + dim_v)",
    dense: str = "batch * heads * len_q * len_k * per_score",
    band: str = "batch * heads * len_q * (global_tokens + width) * per_score",
    saving: str = "dense / band",
) -> str:
    return _FLOPS.format(per_score=per_score, dense=dense, band=band, saving=saving)


def latent_forward(body: str) -> str:
    """A correct ``__init__`` that installs ``forward(context, context_mask=None)`` with ``body``."""
    forward = "def forward(context, context_mask=None):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ")
    return _LATENT_INIT + forward + "\n\nself.forward = forward  # an instance attribute wins over the class's method\n"


def replace(code: str, old: str, new: str) -> str:
    assert old in code, old
    return code.replace(old, new)


EXACT_START = "start = -((-((2 * i + 1) * len_k - width * len_q)) // (2 * len_q))"

MUTANTS = {
    # -- task 1: band_mask --------------------------------------------------------------------
    "band on the diagonal j ≈ i, ignoring the slope": (
        "band_mask",
        band("start = torch.ceil(i + 0.5 - width / 2).long()"),
        ["test_follows_the_slope"],
    ),
    "band with the slope inverted, len_q / len_k": (
        "band_mask",
        band("start = -((-((2 * i + 1) * len_q - width * len_k)) // (2 * len_k))"),
        ["test_follows_the_slope"],
    ),
    "band centred on i·s, without the half key": (
        "band_mask",
        band("start = -((-(2 * i * len_k - (width - 1) * len_q)) // (2 * len_q))"),
        ["test_follows_the_slope"],
    ),
    "band of width + 1 keys (end included)": (
        "band_mask",
        replace(band(EXACT_START), "< start[:, None] + width", "<= start[:, None] + width"),
        ["test_each_query_reads_width_consecutive_keys"],
    ),
    "band as |j − centre| <= width / 2": (
        "band_mask",
        """
        centre = (torch.arange(len_q) + 0.5) * len_k / len_q - 0.5
        j = torch.arange(len_k)
        return (j[None, :] - centre[:, None]).abs() <= width / 2
        """,
        ["test_each_query_reads_width_consecutive_keys"],
    ),
    "band rounded down (floor instead of ceil)": (
        "band_mask",
        band("start = ((2 * i + 1) * len_k - width * len_q) // (2 * len_q)"),
        ["test_square_band", "test_follows_the_slope"],
    ),
    "band in float64 with s = len_k / len_q first": (
        "band_mask",
        band("start = torch.tensor([math.ceil((n + 0.5) * (len_k / len_q) - width / 2) for n in range(len_q)])"),
        ["test_exact_at_ties"],
    ),
    "band in float32 torch arithmetic": (
        "band_mask",
        band("start = torch.ceil((i + 0.5) * (len_k / len_q) - width / 2).long()"),
        ["test_exact_at_ties"],
    ),
    "band mask transposed": (
        "band_mask",
        replace(band(EXACT_START), "return (j[None, :]", "return ((j[None, :]").replace("+ width)\n", "+ width)).T\n"),
        ["test_shape_and_dtype"],
    ),
    "band mask of ints instead of booleans": (
        "band_mask",
        replace(band(EXACT_START), "+ width)\n", "+ width).int()\n"),
        ["test_shape_and_dtype"],
    ),
    # -- task 2: band_flops ------------------------------------------------------------------
    "FLOPs of Q Kᵀ only": (
        "band_flops",
        band_flops(per_score="2 * head_dim"),
        ["test_dense_count"],
    ),
    "FLOPs counting one per multiply-add": (
        "band_flops",
        band_flops(per_score="head_dim + dim_v"),
        ["test_dense_count"],
    ),
    "FLOPs as 4·d whatever d_v": (
        "band_flops",
        band_flops(per_score="4 * head_dim"),
        ["test_values_of_another_size"],
    ),
    "FLOPs without the heads": (
        "band_flops",
        band_flops(
            dense="batch * len_q * len_k * per_score", band="batch * len_q * (global_tokens + width) * per_score"
        ),
        ["test_dense_count"],
    ),
    "band FLOPs without the global tokens": (
        "band_flops",
        band_flops(band="batch * heads * len_q * width * per_score"),
        ["test_global_tokens_are_extra_slots"],
    ),
    "band FLOPs counting the mask's True entries": (
        "band_flops",
        band_flops(
            band="batch * heads * (int(band_mask(len_q, len_k, width).sum()) + len_q * global_tokens) * per_score"
        ),
        ["test_band_count_does_not_depend_on_len_k"],
    ),
    "band FLOPs over all len_k keys": (
        "band_flops",
        band_flops(band="batch * heads * len_q * len_k * per_score"),
        ["test_band_count_does_not_depend_on_len_k"],
    ),
    "saving inverted, band / dense": (
        "band_flops",
        band_flops(saving="band / dense"),
        ["test_returns_int_counts_and_the_saving"],
    ),
    "band FLOPs as a float, dense · W / len_k": (
        "band_flops",
        band_flops(band="dense * (global_tokens + width) / len_k"),
        ["test_returns_int_counts_and_the_saving"],
    ),
    # -- task 4: LatentCrossAttention --------------------------------------------------------
    "latents attended by the source (direction reversed)": (
        "latent_attention",
        latent_forward("return self.attn(context, self.latents.expand(context.shape[0], -1, -1))"),
        ["test_output_has_one_row_per_latent"],
    ),
    "latents not expanded over the batch": (
        "latent_attention",
        latent_forward("return self.attn(self.latents[None], context, context_mask=context_mask)"),
        ["test_each_source_of_a_batch_is_read_by_the_same_latents"],
    ),
    "latents that forget the context mask": (
        "latent_attention",
        latent_forward("return self.attn(self.latents.expand(context.shape[0], -1, -1), context)"),
        ["test_padded_source_tokens_are_ignored"],
    ),
    "latents detached from the graph": (
        "latent_attention",
        latent_forward(
            "return self.attn(self.latents.detach().expand(context.shape[0], -1, -1), context, "
            "context_mask=context_mask)"
        ),
        ["test_latents_are_learned_parameters"],
    ),
    "new random latents at every call": (
        "latent_attention",
        latent_forward(
            "latents = torch.randn(context.shape[0], *self.latents.shape)\n"
            "return self.attn(latents, context, context_mask=context_mask)"
        ),
        ["test_matches_the_reference_with_its_weights"],
    ),
    "latents as a buffer, not a parameter": (
        "latent_attention",
        """
        self.register_buffer("latents", torch.randn(num_latents, d_model) / math.sqrt(d_model))
        self.attn = MultiHeadAttention(d_model, num_heads, d_context=d_context)
        """,
        ["test_latents_are_learned_parameters"],
    ),
    "MultiHeadAttention without d_context": (
        "latent_attention",
        """
        self.latents = nn.Parameter(torch.randn(num_latents, d_model) / math.sqrt(d_model))
        self.attn = MultiHeadAttention(d_model, num_heads)
        """,
        ["test_matches_the_reference_with_its_weights"],
    ),
    # -- task 5: linear_attention_explicit ------------------------------------------------------
    "explicit: φ = elu without +1": (
        "linear_explicit",
        replace(_EXPLICIT, "(F.elu(query) + 1) @ (F.elu(key) + 1)", "F.elu(query) @ F.elu(key)"),
        ["test_weights_are_positive", "test_matches_the_formula"],
    ),
    "explicit: softmax attention instead of φ": (
        "linear_explicit",
        """
        scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], -math.inf)
        return torch.nan_to_num(torch.softmax(scores, dim=-1)) @ value
        """,
        ["test_matches_the_formula"],
    ),
    "explicit: no normaliser": (
        "linear_explicit",
        replace(_EXPLICIT, "/ (weights.sum(dim=-1, keepdim=True) + eps)", ""),
        ["test_normalised_over_the_keys"],
    ),
    "explicit: normalised over the queries": (
        "linear_explicit",
        replace(
            _EXPLICIT,
            "return (weights @ value) / (weights.sum(dim=-1, keepdim=True) + eps)",
            "return (weights / (weights.sum(dim=-2, keepdim=True) + eps)) @ value",
        ),
        ["test_normalised_over_the_keys"],
    ),
    "explicit: key mask ignored": (
        "linear_explicit",
        replace(_EXPLICIT, "if key_mask is not None:", "if False:"),
        ["test_padded_keys_are_ignored"],
    ),
    "explicit: key mask as -inf, the softmax habit": (
        "linear_explicit",
        replace(
            _EXPLICIT,
            "masked_fill(~key_mask[:, None, None, :], 0.0)",
            "masked_fill(~key_mask[:, None, None, :], -math.inf)",
        ),
        ["test_padded_keys_are_ignored"],
    ),
    "explicit: no eps, 0 / 0 for a source of padding": (
        "linear_explicit",
        replace(_EXPLICIT, " + eps)", ")"),
        ["test_padded_keys_are_ignored"],
    ),
    "explicit: returns the weights": (
        "linear_explicit",
        replace(
            _EXPLICIT,
            "return (weights @ value) / (weights.sum(dim=-1, keepdim=True) + eps)",
            "return weights / (weights.sum(dim=-1, keepdim=True) + eps)",
        ),
        ["test_matches_the_formula"],
    ),
    # -- task 6: linear_attention ------------------------------------------------------------
    "regrouped: builds φ(Q)φ(K)ᵀ after all": (
        "linear_attention",
        replace(
            _LINEAR,
            "out = (phi_q @ kv) / (phi_q @ z.unsqueeze(-1) + eps)",
            "a = phi_q @ phi_k.transpose(-2, -1)\nout = (a @ value) / (a.sum(dim=-1, keepdim=True) + eps)",
        ),
        ["test_linear_in_the_source_length"],
    ),
    "regrouped: half precision summed in half precision": (
        "linear_attention",
        replace(_LINEAR, "if dtype in (torch.float16, torch.bfloat16):", "if False:"),
        ["test_half_precision_over_a_long_source"],
    ),
    "regrouped: every dtype computed in float32, float64 included": (
        "linear_attention",
        replace(_LINEAR, "if dtype in (torch.float16, torch.bfloat16):", "if True:"),
        ["test_float64_is_computed_in_float64"],
        {"feedback": "upcast only float16 and bfloat16", "self_check": "float64 was computed in float32"},
    ),
    "regrouped: float32 result for float16 inputs": (
        "linear_attention",
        replace(_LINEAR, "return out.to(dtype)", "return out"),
        ["test_half_precision_over_a_long_source"],
    ),
    "regrouped: key mask ignored": (
        "linear_attention",
        replace(_LINEAR, "if key_mask is not None:", "if False:"),
        ["test_padded_keys_do_not_leak_into_the_summary"],
    ),
    "regrouped: padded keys leak into the normaliser": (
        "linear_attention",
        replace(
            _LINEAR,
            "    phi_k = phi_k * key_mask[:, None, :, None]\nkv = phi_k.transpose(-2, -1) @ value",
            "    value = value * key_mask[:, None, :, None]\nkv = phi_k.transpose(-2, -1) @ value",
        ),
        ["test_padded_keys_do_not_leak_into_the_summary"],
    ),
    "regrouped: no eps, 0 / 0 for a source of padding": (
        "linear_attention",
        replace(_LINEAR, " + eps)", ")"),
        ["test_padded_keys_do_not_leak_into_the_summary"],
    ),
    "regrouped: φ forgotten on the queries": (
        "linear_attention",
        replace(
            _LINEAR,
            "out = (phi_q @ kv) / (phi_q @ z.unsqueeze(-1) + eps)",
            "out = (query @ kv) / (query @ z.unsqueeze(-1) + eps)",
        ),
        ["test_equals_the_explicit_form"],
    ),
    "regrouped: φ = elu without +1": (
        "linear_attention",
        replace(_LINEAR, "phi_q, phi_k = F.elu(query) + 1, F.elu(key) + 1", "phi_q, phi_k = F.elu(query), F.elu(key)"),
        ["test_equals_the_explicit_form"],
    ),
    # -- task 3: bigbird_mask -----------------------------------------------------------------
    "bigbird with global keys only (no global queries)": (
        "bigbird_mask",
        """
        num_q_blocks, num_k_blocks = -(-len_q // block_size), -(-len_k // block_size)
        layout = band_mask(num_q_blocks, num_k_blocks, window)
        mask = layout.repeat_interleave(block_size, dim=0).repeat_interleave(block_size, dim=1)[:len_q, :len_k]
        mask[:, :num_global] = True
        return mask
        """,
        ["test_global_queries_read_every_key"],
        {"feedback": "the rows are missing", "self_check": "the rows are missing"},
    ),
    "bigbird with global queries only (no global keys)": (
        "bigbird_mask",
        """
        num_q_blocks, num_k_blocks = -(-len_q // block_size), -(-len_k // block_size)
        layout = band_mask(num_q_blocks, num_k_blocks, window)
        mask = layout.repeat_interleave(block_size, dim=0).repeat_interleave(block_size, dim=1)[:len_q, :len_k]
        mask[:num_global, :] = True
        return mask
        """,
        ["test_global_keys_are_read_by_every_query"],
        {"feedback": "the columns are missing", "self_check": "the columns are missing"},
    ),
    "bigbird with a token-level band of window * block_size keys": (
        "bigbird_mask",
        """
        mask = band_mask(len_q, len_k, window * block_size)
        mask[:, :num_global] = True
        mask[:num_global, :] = True
        return mask
        """,
        ["test_window_counts_blocks_not_tokens", "test_band_of_blocks_follows_the_slope"],
        {"feedback": "counted in blocks", "self_check": "counted in blocks"},
    ),
    "bigbird expanded without cutting the partial last blocks": (
        "bigbird_mask",
        """
        num_q_blocks, num_k_blocks = -(-len_q // block_size), -(-len_k // block_size)
        layout = band_mask(num_q_blocks, num_k_blocks, window)
        mask = layout.repeat_interleave(block_size, dim=0).repeat_interleave(block_size, dim=1)
        mask[:, :num_global] = True
        mask[:num_global, :] = True
        return mask
        """,
        ["test_partial_last_blocks"],
        {"feedback": "cut the expanded", "self_check": "cut the expanded"},
    ),
    "bigbird counting the blocks with a floor": (
        "bigbird_mask",
        """
        num_q_blocks, num_k_blocks = len_q // block_size, len_k // block_size
        layout = band_mask(num_q_blocks, num_k_blocks, window)
        mask = layout.repeat_interleave(block_size, dim=0).repeat_interleave(block_size, dim=1)[:len_q, :len_k]
        mask[:, :num_global] = True
        mask[:num_global, :] = True
        return mask
        """,
        ["test_partial_last_blocks"],
        {"feedback": "with a ceiling", "self_check": "with a ceiling"},
    ),
    "bigbird with the global tokens last": (
        "bigbird_mask",
        """
        num_q_blocks, num_k_blocks = -(-len_q // block_size), -(-len_k // block_size)
        layout = band_mask(num_q_blocks, num_k_blocks, window)
        mask = layout.repeat_interleave(block_size, dim=0).repeat_interleave(block_size, dim=1)[:len_q, :len_k]
        if num_global:
            mask[:, -num_global:] = True
            mask[-num_global:, :] = True
        return mask
        """,
        ["test_global_keys_are_read_by_every_query", "test_global_queries_read_every_key"],
        {"feedback": "not the last ones", "self_check": "not the last ones"},
    ),
    "bigbird with a diagonal band of blocks that ignores the slope": (
        "bigbird_mask",
        """
        num_q_blocks, num_k_blocks = -(-len_q // block_size), -(-len_k // block_size)
        a, b = torch.arange(num_q_blocks)[:, None], torch.arange(num_k_blocks)[None, :]
        layout = (a - b).abs() <= (window - 1) // 2
        mask = layout.repeat_interleave(block_size, dim=0).repeat_interleave(block_size, dim=1)[:len_q, :len_k]
        mask[:, :num_global] = True
        mask[:num_global, :] = True
        return mask
        """,
        ["test_band_of_blocks_follows_the_slope"],
        {"feedback": "follows the slope", "self_check": "follows the slope"},
    ),
}
