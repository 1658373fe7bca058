"""Self-checks of exercise 02, cross-attention vs self-attention.

from course_lib.checks import (check_project_qkv, check_cross_attention_layer, check_predict_shuffled,
                               check_attention_entropy)

The ``*_mistake`` functions name the usual mistake behind a wrong answer, by comparing it
with what each mistake would have given; the hidden tests reuse them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..multihead import MultiHeadAttention
from ._common import Check, describe

__all__ = [
    "check_attention_entropy",
    "check_cross_attention_layer",
    "check_predict_shuffled",
    "check_project_qkv",
    "check_two_source_attention",
    "two_source_mistake",
    "two_source_params",
    "two_source_reference",
    "entropy_mistake",
    "layer_mistake",
    "projection_mistake",
    "shuffle_mistake",
]

LINEAR_LAYOUT = "nn.Linear stores weight as (out_features, in_features): compute input @ weight.T + bias"


def _same(got, expected) -> bool:
    """Whether ``got`` is a tensor equal to ``expected`` (same shape, close values)."""
    if expected is None or not isinstance(got, (torch.Tensor, np.ndarray)):
        return False
    got = torch.as_tensor(got).detach().double()
    return got.shape == expected.shape and bool(torch.allclose(got, expected.double(), atol=1e-5))


def _linear(t: torch.Tensor, params: dict, name: str, *, transpose: bool = True, bias: bool = True):
    """``t @ W.T + b`` for the layer ``name`` of ``params``, or a usual mistake's version of it; None if the
    shapes do not fit."""
    w = params[f"{name}.weight"].double()
    w = w.T if transpose else w
    if t.shape[-1] != w.shape[0]:
        return None
    out = t.double() @ w
    return out + params[f"{name}.bias"].double() if bias else out


# -- task 1: the projections ---------------------------------------------------------------


def projection_mistake(x, context, params, q, k, v) -> str | None:
    """Name the usual mistake that explains the student's ``(q, k, v)`` from ``project_qkv``, if one does."""
    try:
        return _projection_mistake(x, context, params, q, k, v)
    except (TypeError, ValueError, RuntimeError, KeyError):  # not tensors: nothing to diagnose
        return None


def _projection_mistake(x, context, params, q, k, v) -> str | None:
    right_q = _linear(x, params, "q_proj")
    right_k, right_v = _linear(context, params, "k_proj"), _linear(context, params, "v_proj")
    if _same(k, right_v) and _same(v, right_k):
        return "the keys and the values are swapped: k uses k_proj, v uses v_proj"
    if _same(k, _linear(x, params, "k_proj")) or _same(v, _linear(x, params, "v_proj")):
        return "the keys and the values come from the source: k_proj(context) and v_proj(context), not from x"
    if _same(q, _linear(context, params, "q_proj")):
        return "the queries come from the target x (q_proj(x)), not from the context"
    triples = ((q, x, "q_proj"), (k, context, "k_proj"), (v, context, "v_proj"))
    untransposed = [name for got, t, name in triples if _same(got, _linear(t, params, name, transpose=False))]
    if untransposed:
        return f"{' and '.join(n + '.weight' for n in untransposed)} used untransposed: {LINEAR_LAYOUT}"
    unbiased = [name for got, t, name in triples if _same(got, _linear(t, params, name, bias=False))]
    if unbiased:
        return f"{' and '.join(n + '.bias' for n in unbiased)} missing: {LINEAR_LAYOUT}"
    if not (_same(q, right_q) and _same(k, right_k) and _same(v, right_v)) and isinstance(q, torch.Tensor):
        if q.shape == right_v.shape and k.shape == right_q.shape:
            return "return (q, k, v) in that order"
    return None


def _random_params(d_model: int, d_context: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    shapes = {"q_proj": (d_model, d_model), "k_proj": (d_model, d_context), "v_proj": (d_model, d_context)}
    params = {}
    for name, shape in shapes.items():
        params[f"{name}.weight"] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        params[f"{name}.bias"] = torch.randn(shape[0], generator=g)
    return params


def check_project_qkv(project_qkv: Callable) -> None:
    """Check ``project_qkv(x, context, params) -> (q, k, v)``."""
    c = Check("project_qkv")
    g = torch.Generator().manual_seed(3)
    x, context = torch.randn(2, 3, 4, generator=g), torch.randn(2, 5, 6, generator=g)
    params = _random_params(4, 6, seed=4)
    hint = (
        "queries from x with q_proj, keys and values from the context with k_proj and v_proj; " + LINEAR_LAYOUT
    )
    result = c.call(project_qkv, x, context, params, hint=hint)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 3,
        "return three tensors: (q, k, v)",
        got=describe(result),
    )
    q, k, v = (c.array(r, n) for r, n in zip(result, ("q", "k", "v")))
    mistake = projection_mistake(x, context, params, *result)
    c.shape(q, (2, 3, 4), "q for a target (batch=2, len_q=3, d_model=4)", mistake or "q has the target's length")
    c.shape(k, (2, 5, 4), "k for a source (batch=2, len_k=5, d_context=6)", mistake or "k has the source's length")
    c.shape(v, (2, 5, 4), "v for a source (batch=2, len_k=5, d_context=6)", mistake or "v has the source's length")
    for got, t, name in ((q, x, "q_proj"), (k, context, "k_proj"), (v, context, "v_proj")):
        c.close(got, _linear(t, params, name).numpy(), f"{name[0]} = {name}(...)", mistake, atol=1e-5)

    # Same length and width: a key projected from x would go unnoticed by the shapes.
    x, context = torch.randn(1, 4, 5, generator=g), torch.randn(1, 4, 5, generator=g)
    params = _random_params(5, 5, seed=5)
    q, k, v = c.call(project_qkv, x, context, params)
    mistake = projection_mistake(x, context, params, q, k, v)
    for got, t, name in ((q, x, "q_proj"), (k, context, "k_proj"), (v, context, "v_proj")):
        c.close(
            c.array(got, name[0]),
            _linear(t, params, name).numpy(),
            f"{name[0]} when the target and the source have the same shape (1, 4, 5)",
            mistake or "keys and values from the context, queries from x",
            atol=1e-5,
        )
    c.done()


# -- task 2: the layer ---------------------------------------------------------------------


def one_head(params: dict, x, context, *, scale: float | None = None, axis: int = -1, keys_from=None,
             values_from=None, queries_from=None, out_proj: bool = True):
    """One-head attention in float64 from a state dict, or a usual mistake's version of it (None if the
    shapes do not fit)."""
    q = _linear(x if queries_from is None else queries_from, params, "q_proj")
    k = _linear(context if keys_from is None else keys_from, params, "k_proj")
    v = _linear(context if values_from is None else values_from, params, "v_proj")
    if q is None or k is None or v is None or k.shape[-2] != v.shape[-2]:
        return None
    d_model = params["q_proj.weight"].shape[0]
    scores = q @ k.transpose(-2, -1) / (math.sqrt(d_model) if scale is None else scale)
    weights = torch.softmax(scores, dim=axis)
    out = weights @ v
    return (_linear(out, params, "out_proj") if out_proj else out), weights


def layer_mistake(params: dict, x, context, output, weights) -> str | None:
    """Name the usual mistake that explains a layer's ``(output, weights)``, if one does.

    ``params`` is the state dict the layer was loaded with, ``x`` and ``context`` its inputs.
    """
    try:
        return _layer_mistake(params, x, context, output, weights)
    except (TypeError, ValueError, RuntimeError, KeyError):
        return None


def _layer_mistake(params, x, context, output, weights) -> str | None:
    d_model, d_context = params["q_proj.weight"].shape[0], params["k_proj.weight"].shape[1]

    def matches(**kwargs) -> bool:
        res = one_head(params, x, context, **kwargs)
        return res is not None and _same(weights, res[1]) and _same(output, res[0])

    def weights_match(**kwargs) -> bool:
        res = one_head(params, x, context, **kwargs)
        return res is not None and _same(weights, res[1])

    if weights_match(keys_from=x):
        return "the keys come from the source: self.k_proj(context), not self.k_proj(x)"
    if matches(values_from=x):
        return "the values come from the source: self.v_proj(context), not self.v_proj(x)"
    if weights_match(scale=1.0):
        return "the scores are not scaled: divide q kᵀ by √d_model"
    if d_context != d_model and weights_match(scale=math.sqrt(d_context)):
        return "scale by √d_model, the width of q and k after the projections, not √d_context"
    if weights_match(scale=float(d_model)):
        return "divide the scores by √d_model, not by d_model"
    if weights_match(axis=-2):
        return "the softmax runs over the queries; it must run over the keys (dim=-1), so that each row sums to 1"
    if matches(out_proj=False):
        return "the output goes through self.out_proj: return self.out_proj(weights @ v)"
    return None


def _expect_value_error(c: Check, fn: Callable, *args, problem: str, hint: str) -> None:
    """Call ``fn(*args)`` and fail unless it raises ``ValueError``."""
    c.count += 1
    try:
        fn(*args)
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as err:  # noqa: BLE001 (whatever it is, it is not the ValueError asked for)
        c.fail(problem, got=f"{type(err).__name__}: {err}"[:200], hint=hint)
    c.fail(problem, got="no error", hint=hint)


def _layer_call(c: Check, layer, x, context, what: str, hint: str | None = None):
    result = c.call(layer, x, context, hint=hint)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2,
        f"{what}: forward should return two tensors, (output, weights)",
        got=describe(result),
    )
    return c.array(result[0], "the output"), c.array(result[1], "the weights")


def check_cross_attention_layer(CrossAttention: Callable) -> None:  # noqa: N803 (a class)
    """Check the class ``CrossAttention(d_model, d_context)`` against ``MultiHeadAttention(num_heads=1)``."""
    c = Check("CrossAttention")
    torch.manual_seed(6)
    d_model, d_context = 4, 6
    lib = MultiHeadAttention(d_model, num_heads=1, d_context=d_context)
    layer = c.call(CrossAttention, d_model, d_context)
    try:
        layer.load_state_dict(lib.state_dict())
    except RuntimeError as err:
        c.fail(
            "the layer's parameters differ from MultiHeadAttention's",
            got=str(err).splitlines()[0][:200],
            hint="keep the __init__ as given: q_proj, k_proj, v_proj, out_proj",
        )
    params = {n: t.detach() for n, t in lib.state_dict().items()}
    g = torch.Generator().manual_seed(7)
    x, context = torch.randn(2, 3, d_model, generator=g), torch.randn(2, 5, d_context, generator=g)
    with torch.no_grad():
        out, w = _layer_call(c, layer, x, context, "CrossAttention(4, 6)(x, context)",
                             "queries from self.q_proj(x), keys and values from self.k_proj(context) and "
                             "self.v_proj(context); transpose only the last two axes of k")
        expected_out, expected_w = (t.numpy() for t in lib(x, context=context, need_weights=True))
    mistake = layer_mistake(params, x, context, out, w)
    cross = layer
    c.shape(w, (2, 3, 5), "weights for (batch=2, len_q=3) queries and len_k=5 keys", mistake or "(batch, len_q, len_k)")
    c.shape(out, (2, 3, 4), "output for x of shape (2, 3, 4)", mistake or "(batch, len_q, d_model): the target's shape")
    c.close(w.sum(axis=-1), np.ones((2, 3)), "the row sums of the weights", mistake or "softmax over the keys (dim=-1)")
    c.close(w, expected_w[:, 0], "the weights", mistake, atol=1e-5)
    c.close(out, expected_out, "the output", mistake, atol=1e-5)

    # Self-attention: context=None.
    square = MultiHeadAttention(d_model, num_heads=1)
    layer = c.call(CrossAttention, d_model, d_model)
    layer.load_state_dict(square.state_dict())
    with torch.no_grad():
        out, w = _layer_call(c, layer, x, None, "CrossAttention(4, 4)(x) (self-attention)",
                             hint="context=None means self-attention: use context = x")
        expected = square(x).numpy()
    c.close(out, expected, "self-attention, forward(x) with context=None", "context=None means context = x", atol=1e-5)

    _expect_value_error(
        c,
        layer,
        torch.randn(2, 3, 5),
        None,
        problem="x of width 5 for d_model=4 should raise ValueError",
        hint="compare x.shape[-1] with self.d_model before projecting, and raise ValueError naming the shapes",
    )
    _expect_value_error(
        c,
        cross,
        torch.randn(2, 3, 4),
        torch.randn(2, 5, 4),
        problem="a context of width 4 for d_context=6 should raise ValueError",
        hint="compare context.shape[-1] with self.d_context, and raise ValueError naming the shapes",
    )
    _expect_value_error(
        c,
        cross,
        torch.randn(2, 3, 4),
        None,
        problem="context=None (self-attention) when d_context=6 ≠ d_model=4 should raise ValueError",
        hint="self-attention uses x as its source, so it needs d_context == d_model: check it when context is None",
    )
    c.done()


# -- task 3: shuffles ------------------------------------------------------------------------


def shuffle_mistake(output, weights, perm_target, perm_source, got_output, got_weights) -> str | None:
    """Name the usual mistake behind ``predict_shuffled``'s ``(got_output, got_weights)``, if one does."""
    try:
        return _shuffle_mistake(output, weights, perm_target, perm_source, got_output, got_weights)
    except (TypeError, ValueError, RuntimeError, IndexError):
        return None


def _shuffle_mistake(output, weights, pt, ps, got_output, got_weights) -> str | None:
    right_out, right_w = output[:, pt], weights[:, pt][:, :, ps]
    inv_t, inv_s = torch.argsort(pt), torch.argsort(ps)
    out_ok, w_ok = _same(got_output, right_out), _same(got_weights, right_w)
    if not out_ok:
        if _same(got_output, output[:, inv_t]):
            return "x[:, perm] puts the old token perm[i] at position i: index with perm itself, not its inverse"
        if _same(got_output, output) and not torch.equal(pt, torch.arange(len(pt))):
            return "shuffling the target moves the output rows with their tokens: output[:, perm_target]"
        if output.shape[0] == len(pt) and _same(got_output, output[pt]):
            return "index the sequence axis (dim 1), not the batch axis: output[:, perm_target]"
        if len(ps) == output.shape[1] and _same(got_output, output[:, pt][:, ps]):
            return "the output does not depend on the source's order: apply only perm_target to it"
        return None
    if not w_ok:
        if _same(got_weights, weights[:, inv_t][:, :, inv_s]) or _same(got_weights, weights[:, pt][:, :, inv_s]):
            return "x[:, perm] puts the old token perm[i] at position i: index with perm itself, not its inverse"
        if _same(got_weights, weights[:, pt]):
            return "shuffling the source moves the weight columns with their tokens: [:, :, perm_source]"
        if _same(got_weights, weights[:, :, ps]):
            return "shuffling the target moves the weight rows with their tokens: [:, perm_target]"
    return None


def check_predict_shuffled(predict_shuffled: Callable) -> None:
    """Check ``predict_shuffled(output, weights, perm_target, perm_source) -> (output, weights)``."""
    c = Check("predict_shuffled")
    torch.manual_seed(8)
    lib = MultiHeadAttention(4, num_heads=1, d_context=3)
    g = torch.Generator().manual_seed(9)
    x, context = torch.randn(2, 4, 4, generator=g), torch.randn(2, 5, 3, generator=g)
    pt, ps = torch.tensor([1, 3, 0, 2]), torch.tensor([4, 2, 0, 1, 3])
    with torch.no_grad():
        out, w = lib(x, context=context, need_weights=True)
        out, w = out, w[:, 0]
        expected_out, expected_w = lib(x[:, pt], context=context[:, ps], need_weights=True)
    result = c.call(predict_shuffled, out.clone(), w.clone(), pt, ps)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2,
        "return two tensors: (output, weights)",
        got=describe(result),
    )
    got_out, got_w = c.array(result[0], "the output"), c.array(result[1], "the weights")
    mistake = shuffle_mistake(out, w, pt, ps, *result)
    c.shape(got_out, (2, 4, 4), "the predicted output", mistake or "same shape as the output")
    c.shape(got_w, (2, 4, 5), "the predicted weights", mistake or "same shape as the weights")
    c.close(got_out, expected_out.numpy(), "the predicted output (the layer run on the shuffled inputs)", mistake,
            atol=1e-5)
    c.close(got_w, expected_w[:, 0].numpy(), "the predicted weights (the layer run on the shuffled inputs)", mistake,
            atol=1e-5)
    c.done()


# -- task 4: entropy -------------------------------------------------------------------------


def entropy_mistake(weights, got) -> str | None:
    """Name the usual mistake behind ``attention_entropy(weights)`` returning ``got``, if one does."""
    try:
        return _entropy_mistake(weights.double(), got)
    except (TypeError, ValueError, RuntimeError, AttributeError):
        return None


def _entropy_mistake(w: torch.Tensor, got) -> str | None:
    right = -torch.special.xlogy(w, w).sum(-1)
    if not isinstance(got, torch.Tensor):
        return None
    if got.shape != right.shape:
        return "one entropy per query row: sum over the keys only (dim=-1), for a result of shape (..., len_q)"
    if torch.isnan(got).any() and (w == 0).any():
        return (
            "nan where some weights are 0: 0 · log 0 is 0 · -inf = nan in floating point; "
            "torch.special.xlogy(w, w) is 0 where w is 0"
        )
    if _same(got, -right):
        return "the entropy is -Σ w log w: it is never negative (mind the minus sign)"
    if _same(got, right / math.log(2)):
        return "use the natural log (nats), not log2"
    if _same(got, right / w.shape[-1]):
        return "sum over the keys, do not average"
    if _same(got, -torch.special.xlogy(w, w).sum(-2)):
        return "sum over the keys, the last axis (dim=-1): one entropy per query row"
    return None


def check_attention_entropy(attention_entropy: Callable) -> None:
    """Check ``attention_entropy(weights) -> (..., len_q)``."""
    c = Check("attention_entropy")
    w = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    got = c.array(c.call(attention_entropy, w.clone()), "attention_entropy of 3 rows")
    mistake = entropy_mistake(w, torch.as_tensor(got))
    c.shape(got, (3,), "the entropy of (len_q=3, len_k=4) weights", mistake or "one entropy per row: sum over dim=-1")
    c.finite(got, "the entropy of weights with zeros", mistake)
    expected = [math.log(4), math.log(2), -sum(p * math.log(p) for p in (0.1, 0.2, 0.3, 0.4))]
    c.close(got, expected, "the entropy of [uniform over 4, uniform over 2, (0.1, 0.2, 0.3, 0.4)]", mistake, atol=1e-5)

    w = torch.softmax(torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(10)), dim=-1)
    w[1, 2] = 0.0  # a fully masked query row
    got = c.array(c.call(attention_entropy, w.clone()), "attention_entropy of (2, 3, 5) weights")
    mistake = entropy_mistake(w, torch.as_tensor(got))
    c.shape(got, (2, 3), "the entropy of (batch=2, len_q=3, len_k=5) weights", mistake or "sum over dim=-1 only")
    c.close(got, (-torch.special.xlogy(w, w).sum(-1)).numpy(), "the entropy of batched weights with a zero row",
            mistake or "a row of zeros has entropy 0", atol=1e-5)
    kept = w.clone()
    c.call(attention_entropy, w)
    c.true(bool(torch.equal(w, kept)), "attention_entropy changed its input", got=describe(w),
           hint="an in-place operation (w[w == 0] = ..., clamp_, +=) modifies the caller's tensor; work on a copy")
    c.done()


# -- task 5: two sources --------------------------------------------------------------------------


def two_source_params(d_model: int, d_image: int, d_text: int, seed: int) -> dict:
    """Random weights (``nn.Linear`` layout) of ``q_proj``, ``k_image``, ``v_image``, ``k_text``, ``v_text``."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"q_proj": d_model, "k_image": d_image, "v_image": d_image, "k_text": d_text, "v_text": d_text}
    params = {}
    for name, width in shapes.items():
        params[f"{name}.weight"] = torch.randn(d_model, width, generator=g) / math.sqrt(width)
        params[f"{name}.bias"] = torch.randn(d_model, generator=g) / 2
    return params


def two_source_reference(x, image, text, params: dict, *, mode: str = "joint"):
    """``(output, weights)`` in float64, or a usual mistake's (``mode``: "joint" (right), "separate" (one
    softmax per source, averaged), "text_first" (the text's keys first)); ``None`` if the shapes do not fit."""
    q = _linear(x, params, "q_proj")
    k_i, v_i = _linear(image, params, "k_image"), _linear(image, params, "v_image")
    k_t, v_t = _linear(text, params, "k_text"), _linear(text, params, "v_text")
    if any(t is None for t in (q, k_i, v_i, k_t, v_t)):
        return None
    scale = math.sqrt(q.shape[-1])
    if mode == "separate":
        w_i = torch.softmax(q @ k_i.transpose(-2, -1) / scale, dim=-1)
        w_t = torch.softmax(q @ k_t.transpose(-2, -1) / scale, dim=-1)
        return (w_i @ v_i + w_t @ v_t) / 2, torch.cat([w_i, w_t], dim=-1) / 2
    first, second = ((k_t, v_t), (k_i, v_i)) if mode == "text_first" else ((k_i, v_i), (k_t, v_t))
    k, v = torch.cat([first[0], second[0]], dim=-2), torch.cat([first[1], second[1]], dim=-2)
    weights = torch.softmax(q @ k.transpose(-2, -1) / scale, dim=-1)
    return weights @ v, weights


def two_source_mistake(x, image, text, params, output, weights) -> str | None:
    """Name the usual two-source mistake behind ``(output, weights)``, if one does."""
    try:
        if _same(weights, two_source_reference(x, image, text, params)[1]):
            return None
        if _same(weights, two_source_reference(x, image, text, params, mode="separate")[1]):
            return (
                "one softmax per source, averaged, gives each source half the weight whatever the query asks; "
                "concatenate the projected keys and values along the length axis and take one softmax over all"
            )
        if _same(weights, two_source_reference(x, image, text, params, mode="text_first")[1]):
            return "the image's keys come first, then the text's: torch.cat([k_image, k_text], dim=-2)"
        if isinstance(weights, torch.Tensor) and tuple(weights.shape[-1:]) != (image.shape[-2] + text.shape[-2],):
            return (
                f"the weights should cover len_image + len_text = {image.shape[-2] + text.shape[-2]} keys: "
                "concatenate along the length axis (dim=-2) after projecting, not along the features"
            )
    except (TypeError, ValueError, RuntimeError, IndexError):
        return None
    return None


def check_two_source_attention(two_source_attention: Callable) -> None:
    """Check ``two_source_attention(x, image, text, params) -> (output, weights)``."""
    c = Check("two_source_attention")
    g = torch.Generator().manual_seed(40)
    x, image, text = (
        torch.randn(2, 3, 4, generator=g),
        torch.randn(2, 5, 6, generator=g),
        torch.randn(2, 2, 3, generator=g),
    )
    params = two_source_params(4, 6, 3, seed=41)
    result = c.call(two_source_attention, x, image, text, params)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2,
        "return two tensors: (output, weights)",
        got=describe(result),
    )
    out, w = c.array(result[0], "the output"), c.array(result[1], "the weights")
    mistake = two_source_mistake(x, image, text, params, result[0], result[1])
    expected_out, expected_w = two_source_reference(x, image, text, params)
    c.shape(w, (2, 3, 7), "weights for 3 queries over 5 image and 2 text tokens", mistake)
    c.shape(out, (2, 3, 4), "output for x of shape (2, 3, 4)", mistake)
    c.close(w, expected_w.numpy(), "the weights over both sources", mistake, atol=1e-5)
    c.close(out, expected_out.numpy(), "the output", mistake, atol=1e-5)
    c.done()
