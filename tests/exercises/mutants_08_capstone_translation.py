"""Deliberately wrong solutions of exercise 08, one per typical mistake.

``MUTANTS[name] = (task, code, caught_by)``: ``code`` replaces the solution region of the
cell whose ``grade_id`` is ``task`` in ``solutions/08_capstone_translation.ipynb``;
graded, the mutant must fail at least one of the hidden tests named in ``caught_by``
(test function names), lose points, and keep every point of the other tasks.
``tests/grading/test_mutants.py`` runs them all.
"""

_DECODE_LOOP_END = """
                logits = model.decoder.out(model.decoder.norm(y))[:, 0]
                token = logits.argmax(dim=-1).masked_fill(done, PAD)
                out.append(token)
                done |= token == EOS
                if bool(done.all()):
                    break
            return torch.stack(out, dim=1)
"""

MUTANTS = {
    # -- task 1: alignment accuracy --------------------------------------------------------------
    "alignment: arg-max over the target tokens": (
        "alignment_accuracy",
        """
        counted = alignment >= 0
        hits = (weights.argmax(dim=1) == alignment) & counted
        return float(hits.sum()) / float(counted.sum())
        """,
        ["test_argmax_over_the_source_words"],
        {"feedback": "the arg-max runs over the target tokens"},  # the self-check: a RuntimeError with a hint note
    ),
    "alignment: <eos> and padding counted": (
        "alignment_accuracy",
        """
        hits = weights.argmax(dim=-1) == alignment
        return float(hits.sum()) / alignment.numel()
        """,
        ["test_perfect_attention_scores_one"],
    ),
    "alignment: source index 0 taken for padding": (
        "alignment_accuracy",
        """
        counted = alignment > 0
        hits = (weights.argmax(dim=-1) == alignment) & counted
        return float(hits.sum()) / float(counted.sum())
        """,
        ["test_source_index_zero_counts"],
    ),
    "alignment: mean of per-sentence accuracies": (
        "alignment_accuracy",
        """
        counted = alignment >= 0
        hits = (weights.argmax(dim=-1) == alignment) & counted
        return float((hits.sum(dim=1) / counted.sum(dim=1)).mean())
        """,
        ["test_every_token_weighs_the_same"],
    ),
    "alignment: the number of hits, not a fraction": (
        "alignment_accuracy",
        """
        counted = alignment >= 0
        return float(((weights.argmax(dim=-1) == alignment) & counted).sum())
        """,
        ["test_matches_the_definition"],
    ),
    "alignment: a percentage": (
        "alignment_accuracy",
        """
        counted = alignment >= 0
        hits = (weights.argmax(dim=-1) == alignment) & counted
        return 100.0 * float(hits.sum()) / float(counted.sum())
        """,
        ["test_matches_the_definition"],
    ),
    "alignment: the largest weight compared with the index": (
        "alignment_accuracy",
        """
        counted = alignment >= 0
        hits = (weights.max(dim=-1).values == alignment) & counted
        return float(hits.sum()) / float(counted.sum())
        """,
        ["test_perfect_attention_scores_one"],
    ),
    "alignment: integer floor division": (
        "alignment_accuracy",
        """
        counted = alignment >= 0
        hits = (weights.argmax(dim=-1) == alignment) & counted
        return float(hits.sum() // counted.sum())
        """,
        ["test_matches_the_definition", "test_every_token_weighs_the_same"],
        {"feedback": "`//` is floor division", "self_check": "`//` is floor division"},
    ),
    # -- task 2: the decoder layer ---------------------------------------------------------------
    "layer: no causal mask": (
        "decoder_layer",
        """
        y = y + layer.self_attn(layer.norm1(y), context_mask=tgt_mask)
        out, weights = layer.cross_attn(layer.norm2(y), memory, context_mask=src_mask, need_weights=True)
        y = y + out
        return y + layer.ff(layer.norm3(y)), weights
        """,
        ["test_target_tokens_do_not_read_the_future"],
    ),
    "layer: causal mask transposed": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        y = y + layer.self_attn(layer.norm1(y), context_mask=tgt_mask, attn_mask=causal.T)
        out, weights = layer.cross_attn(layer.norm2(y), memory, context_mask=src_mask, need_weights=True)
        y = y + out
        return y + layer.ff(layer.norm3(y)), weights
        """,
        ["test_target_tokens_do_not_read_the_future"],
    ),
    "layer: the masks swapped (target mask in cross-attention)": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        y = y + layer.self_attn(layer.norm1(y), attn_mask=causal)
        out, weights = layer.cross_attn(layer.norm2(y), memory, context_mask=tgt_mask, need_weights=True)
        y = y + out
        return y + layer.ff(layer.norm3(y)), weights
        """,
        ["test_source_mask_not_target_mask_in_cross_attention"],
    ),
    "layer: no source padding mask": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        y = y + layer.self_attn(layer.norm1(y), context_mask=tgt_mask, attn_mask=causal)
        out, weights = layer.cross_attn(layer.norm2(y), memory, need_weights=True)
        y = y + out
        return y + layer.ff(layer.norm3(y)), weights
        """,
        ["test_source_padding_is_never_read"],
    ),
    "layer: no target padding mask": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        y = y + layer.self_attn(layer.norm1(y), attn_mask=causal)
        out, weights = layer.cross_attn(layer.norm2(y), memory, context_mask=src_mask, need_weights=True)
        y = y + out
        return y + layer.ff(layer.norm3(y)), weights
        """,
        ["test_target_padding_is_masked_in_self_attention"],
    ),
    "layer: causal mask in cross-attention": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        y = y + layer.self_attn(layer.norm1(y), context_mask=tgt_mask, attn_mask=causal)
        out, weights = layer.cross_attn(
            layer.norm2(y), memory, context_mask=src_mask, attn_mask=causal_mask(y.shape[1], memory.shape[1]),
            need_weights=True,
        )
        y = y + out
        return y + layer.ff(layer.norm3(y)), weights
        """,
        ["test_cross_attention_reads_every_source_word"],
    ),
    "layer: post-norm": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        y = layer.norm1(y + layer.self_attn(y, context_mask=tgt_mask, attn_mask=causal))
        out, weights = layer.cross_attn(y, memory, context_mask=src_mask, need_weights=True)
        y = layer.norm2(y + out)
        return layer.norm3(y + layer.ff(y)), weights
        """,
        ["test_matches_the_library_layer_without_padding"],
    ),
    "layer: no residual around the cross-attention": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        y = y + layer.self_attn(layer.norm1(y), context_mask=tgt_mask, attn_mask=causal)
        y, weights = layer.cross_attn(layer.norm2(y), memory, context_mask=src_mask, need_weights=True)
        return y + layer.ff(layer.norm3(y)), weights
        """,
        ["test_matches_the_library_layer_without_padding"],
    ),
    "layer: the memory normalised as well": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        y = y + layer.self_attn(layer.norm1(y), context_mask=tgt_mask, attn_mask=causal)
        out, weights = layer.cross_attn(
            layer.norm2(y), layer.norm2(memory), context_mask=src_mask, need_weights=True
        )
        y = y + out
        return y + layer.ff(layer.norm3(y)), weights
        """,
        ["test_matches_the_library_layer_without_padding"],
    ),
    "layer: one norm for every block": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        y = y + layer.self_attn(layer.norm1(y), context_mask=tgt_mask, attn_mask=causal)
        out, weights = layer.cross_attn(layer.norm1(y), memory, context_mask=src_mask, need_weights=True)
        y = y + out
        return y + layer.ff(layer.norm1(y)), weights
        """,
        ["test_matches_the_library_layer_without_padding"],
    ),
    "layer: queries from the memory, keys from the target": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        y = y + layer.self_attn(layer.norm1(y), context_mask=tgt_mask, attn_mask=causal)
        out, weights = layer.cross_attn(memory, layer.norm2(y), context_mask=tgt_mask, need_weights=True)
        y = y + out
        return y + layer.ff(layer.norm3(y)), weights
        """,
        ["test_shapes_when_source_and_target_lengths_differ"],
    ),
    "layer: returns the self-attention's weights": (
        "decoder_layer",
        """
        causal = causal_mask(y.shape[1], device=y.device)
        out, weights = layer.self_attn(layer.norm1(y), context_mask=tgt_mask, attn_mask=causal, need_weights=True)
        y = y + out
        y = y + layer.cross_attn(layer.norm2(y), memory, context_mask=src_mask)
        return y + layer.ff(layer.norm3(y)), weights
        """,
        ["test_shapes_when_source_and_target_lengths_differ"],
    ),
    # -- task 3: greedy decoding with the cache ---------------------------------------------------
    "decode: the source projected again at every step": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            self_caches = [layer.self_attn.new_cache() for layer in model.decoder.layers]
            token = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out = []
            for t in range(max_len):
                y = model.decoder.embed(token[:, None]) + model.decoder.pos[t]
                for layer, self_cache in zip(model.decoder.layers, self_caches):
                    cross_cache = layer.cross_attn.precompute_context(memory, src_mask)
                    y, _ = layer.step(y, self_cache, cross_cache)
        """
        + _DECODE_LOOP_END,
        ["test_encodes_and_projects_the_source_once"],
    ),
    "decode: the source encoded again at every step": (
        "greedy_decode",
        """
        with torch.no_grad():
            self_caches = [layer.self_attn.new_cache() for layer in model.decoder.layers]
            token = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out, cross_caches = [], None
            for t in range(max_len):
                memory = model.encoder(src, src_mask)
                if cross_caches is None:
                    cross_caches = [l.cross_attn.precompute_context(memory, src_mask) for l in model.decoder.layers]
                y = model.decoder.embed(token[:, None]) + model.decoder.pos[t]
                for layer, self_cache, cross_cache in zip(model.decoder.layers, self_caches, cross_caches):
                    y, _ = layer.step(y, self_cache, cross_cache)
        """
        + _DECODE_LOOP_END,
        ["test_encodes_and_projects_the_source_once"],
    ),
    "decode: no cache, the whole prefix at every step": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            tokens = torch.full((src.shape[0], 1), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            for t in range(max_len):
                logits, _ = model.decoder(tokens, memory, src_mask)
                token = logits[:, -1].argmax(dim=-1).masked_fill(done, PAD)
                tokens = torch.cat([tokens, token[:, None]], dim=1)
                done |= token == EOS
                if bool(done.all()):
                    break
            return tokens[:, 1:]
        """,
        ["test_feeds_one_token_per_step"],
    ),
    "decode: no cache and no causal mask": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            tokens = torch.full((src.shape[0], 1), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            for t in range(max_len):
                y = model.decoder.embed(tokens) + model.decoder.pos[: tokens.shape[1]]
                for layer in model.decoder.layers:
                    y = y + layer.self_attn(layer.norm1(y))  # every token reads every other
                    y = y + layer.cross_attn(layer.norm2(y), memory, context_mask=src_mask)
                    y = y + layer.ff(layer.norm3(y))
                logits = model.decoder.out(model.decoder.norm(y))[:, -1]
                token = logits.argmax(dim=-1).masked_fill(done, PAD)
                tokens = torch.cat([tokens, token[:, None]], dim=1)
                done |= token == EOS
                if bool(done.all()):
                    break
            return tokens[:, 1:]
        """,
        ["test_generates_the_greedy_tokens"],
    ),
    "decode: never stops before max_len": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            caches = [(l.self_attn.new_cache(), l.cross_attn.precompute_context(memory, src_mask))
                      for l in model.decoder.layers]
            token = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out = []
            for t in range(max_len):
                y = model.decoder.embed(token[:, None]) + model.decoder.pos[t]
                for layer, (self_cache, cross_cache) in zip(model.decoder.layers, caches):
                    y, _ = layer.step(y, self_cache, cross_cache)
                logits = model.decoder.out(model.decoder.norm(y))[:, 0]
                token = logits.argmax(dim=-1).masked_fill(done, PAD)
                out.append(token)
                done |= token == EOS
            return torch.stack(out, dim=1)
        """,
        ["test_stops_when_every_sentence_has_finished"],
    ),
    "decode: the whole batch stops at the first <eos>": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            caches = [(l.self_attn.new_cache(), l.cross_attn.precompute_context(memory, src_mask))
                      for l in model.decoder.layers]
            token = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out = []
            for t in range(max_len):
                y = model.decoder.embed(token[:, None]) + model.decoder.pos[t]
                for layer, (self_cache, cross_cache) in zip(model.decoder.layers, caches):
                    y, _ = layer.step(y, self_cache, cross_cache)
                logits = model.decoder.out(model.decoder.norm(y))[:, 0]
                token = logits.argmax(dim=-1).masked_fill(done, PAD)
                out.append(token)
                done |= token == EOS
                if bool((token == EOS).any()):
                    break
            return torch.stack(out, dim=1)
        """,
        ["test_generates_the_greedy_tokens", "test_padding_does_not_change_a_translation"],
        {
            "feedback": "the whole batch stopped at the first <eos>",
            "self_check": "decoding stopped for the whole batch",
        },
    ),
    "decode: no padding after <eos>": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            caches = [(l.self_attn.new_cache(), l.cross_attn.precompute_context(memory, src_mask))
                      for l in model.decoder.layers]
            token = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out = []
            for t in range(max_len):
                y = model.decoder.embed(token[:, None]) + model.decoder.pos[t]
                for layer, (self_cache, cross_cache) in zip(model.decoder.layers, caches):
                    y, _ = layer.step(y, self_cache, cross_cache)
                token = model.decoder.out(model.decoder.norm(y))[:, 0].argmax(dim=-1)
                out.append(token)
                done |= token == EOS
                if bool(done.all()):
                    break
            return torch.stack(out, dim=1)
        """,
        ["test_pads_after_eos"],
    ),
    "decode: stops only at <eos>, ignoring max_len": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            caches = [(l.self_attn.new_cache(), l.cross_attn.precompute_context(memory, src_mask))
                      for l in model.decoder.layers]
            token = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out, t = [], 0
            while not bool(done.all()):
                y = model.decoder.embed(token[:, None]) + model.decoder.pos[t]
                for layer, (self_cache, cross_cache) in zip(model.decoder.layers, caches):
                    y, _ = layer.step(y, self_cache, cross_cache)
                token = model.decoder.out(model.decoder.norm(y))[:, 0].argmax(dim=-1).masked_fill(done, PAD)
                out.append(token)
                done |= token == EOS
                t += 1
            return torch.stack(out, dim=1)
        """,
        ["test_stops_at_max_len"],
    ),
    "decode: positions shifted by one": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            caches = [(l.self_attn.new_cache(), l.cross_attn.precompute_context(memory, src_mask))
                      for l in model.decoder.layers]
            token = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out = []
            for t in range(max_len):
                y = model.decoder.embed(token[:, None]) + model.decoder.pos[t + 1]
                for layer, (self_cache, cross_cache) in zip(model.decoder.layers, caches):
                    y, _ = layer.step(y, self_cache, cross_cache)
        """
        + _DECODE_LOOP_END,
        ["test_generates_the_greedy_tokens"],
    ),
    "decode: no source padding mask": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src)
            caches = [(l.self_attn.new_cache(), l.cross_attn.precompute_context(memory))
                      for l in model.decoder.layers]
            token = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out = []
            for t in range(max_len):
                y = model.decoder.embed(token[:, None]) + model.decoder.pos[t]
                for layer, (self_cache, cross_cache) in zip(model.decoder.layers, caches):
                    y, _ = layer.step(y, self_cache, cross_cache)
        """
        + _DECODE_LOOP_END,
        ["test_padding_does_not_change_a_translation"],
        {"feedback": "without the source padding mask"},
    ),
    "decode: no final LayerNorm": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            caches = [(l.self_attn.new_cache(), l.cross_attn.precompute_context(memory, src_mask))
                      for l in model.decoder.layers]
            token = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out = []
            for t in range(max_len):
                y = model.decoder.embed(token[:, None]) + model.decoder.pos[t]
                for layer, (self_cache, cross_cache) in zip(model.decoder.layers, caches):
                    y, _ = layer.step(y, self_cache, cross_cache)
                token = model.decoder.out(y)[:, 0].argmax(dim=-1).masked_fill(done, PAD)
                out.append(token)
                done |= token == EOS
                if bool(done.all()):
                    break
            return torch.stack(out, dim=1)
        """,
        ["test_generates_the_greedy_tokens"],
    ),
    "decode: <bos> kept in the output": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            caches = [(l.self_attn.new_cache(), l.cross_attn.precompute_context(memory, src_mask))
                      for l in model.decoder.layers]
            token = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out = [token]
            for t in range(max_len):
                y = model.decoder.embed(token[:, None]) + model.decoder.pos[t]
                for layer, (self_cache, cross_cache) in zip(model.decoder.layers, caches):
                    y, _ = layer.step(y, self_cache, cross_cache)
        """
        + _DECODE_LOOP_END,
        ["test_generates_the_greedy_tokens"],
    ),
    "decode: always feeds <bos>": (
        "greedy_decode",
        """
        with torch.no_grad():
            memory = model.encoder(src, src_mask)
            caches = [(l.self_attn.new_cache(), l.cross_attn.precompute_context(memory, src_mask))
                      for l in model.decoder.layers]
            bos = torch.full((src.shape[0],), BOS, dtype=torch.long)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            out = []
            for t in range(max_len):
                y = model.decoder.embed(bos[:, None]) + model.decoder.pos[t]
                for layer, (self_cache, cross_cache) in zip(model.decoder.layers, caches):
                    y, _ = layer.step(y, self_cache, cross_cache)
                token = model.decoder.out(model.decoder.norm(y))[:, 0].argmax(dim=-1).masked_fill(done, PAD)
                out.append(token)
                done |= token == EOS
                if bool(done.all()):
                    break
            return torch.stack(out, dim=1)
        """,
        ["test_generates_the_greedy_tokens"],
    ),
}

MUTANTS |= {
    # -- task 4: the alignment loss ---------------------------------------------------------------
    "loss: F.cross_entropy on the weights (a second softmax)": (
        "alignment_loss",
        """
        return torch.nn.functional.cross_entropy(weights.flatten(0, 1), alignment.flatten(), ignore_index=-1)
        """,
        ["test_perfect_attention_costs_nothing", "test_matches_the_definition"],
        {"feedback": "F.cross_entropy applies a softmax", "self_check": "F.cross_entropy applies a softmax"},
    ),
    "loss: <eos> and padding counted": (
        "alignment_loss",
        """
        picked = weights.gather(-1, alignment.clamp(min=0)[..., None])[..., 0]
        return -picked.clamp_min(eps).log().mean()
        """,
        ["test_uncounted_tokens_do_not_count"],
        {"self_check": "alignment -1 (<eos>, padding) were counted"},
    ),
    "loss: a sum, not a mean": (
        "alignment_loss",
        """
        counted = alignment >= 0
        picked = weights.gather(-1, alignment.clamp(min=0)[..., None])[..., 0]
        return -(picked.clamp_min(eps).log() * counted).sum()
        """,
        ["test_a_mean_not_a_sum"],
        {"self_check": "you summed the losses"},
    ),
    "loss: mean of per-sentence means": (
        "alignment_loss",
        """
        counted = alignment >= 0
        picked = weights.gather(-1, alignment.clamp(min=0)[..., None])[..., 0]
        nll = -(picked.clamp_min(eps).log() * counted)
        return (nll.sum(dim=1) / counted.sum(dim=1).clamp(min=1))[counted.any(dim=1)].mean()
        """,
        ["test_every_token_weighs_the_same"],
        {"feedback": "you averaged per sentence", "self_check": "you averaged per sentence"},
    ),
    "loss: no clamp before the log": (
        "alignment_loss",
        """
        counted = alignment >= 0
        picked = weights.gather(-1, alignment.clamp(min=0)[..., None])[..., 0]
        return -picked.log()[counted].mean()
        """,
        ["test_a_zero_weight_is_clamped"],
        {"feedback": "log 0 = -inf", "self_check": "log 0 = -inf"},
    ),
    "loss: the largest weight instead of the true word's": (
        "alignment_loss",
        """
        counted = alignment >= 0
        return -(weights.amax(dim=-1).clamp_min(eps).log() * counted).sum() / counted.sum()
        """,
        ["test_matches_the_definition"],
        {"feedback": "you took the largest weight", "self_check": "you took the largest weight"},
    ),
    "loss: the log without its minus sign": (
        "alignment_loss",
        """
        counted = alignment >= 0
        picked = weights.gather(-1, alignment.clamp(min=0)[..., None])[..., 0]
        return (picked.clamp_min(eps).log() * counted).sum() / counted.sum()
        """,
        ["test_matches_the_definition"],
        {"feedback": "the loss is negative", "self_check": "the loss is negative"},
    ),
    "loss: returned as a float": (
        "alignment_loss",
        """
        counted = alignment >= 0
        picked = weights.gather(-1, alignment.clamp(min=0)[..., None])[..., 0]
        return float(-(picked.clamp_min(eps).log() * counted).sum() / counted.sum())
        """,
        ["test_gradient_reaches_the_weights"],
        {"feedback": "did not backpropagate", "self_check": "should return a torch tensor"},
    ),
    "loss: detached from the weights": (
        "alignment_loss",
        """
        counted = alignment >= 0
        picked = weights.detach().gather(-1, alignment.clamp(min=0)[..., None])[..., 0]
        return -(picked.clamp_min(eps).log() * counted).sum() / counted.sum()
        """,
        ["test_gradient_reaches_the_weights"],
        {"feedback": "did not backpropagate", "self_check": "should backpropagate to the weights"},
    ),
}
