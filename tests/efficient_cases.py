"""Helpers shared by the tests of ``course_lib.efficient`` (CPU, interpreter and GPU)."""

from __future__ import annotations

import math
import sys
import zlib

import pytest
import torch
from reference import reference_attention, tol

from course_lib import causal_mask, combine_masks, padding_mask
from course_lib.efficient import tiled

LENGTHS = (1, 17, 64, 129)
LENS_MODES = ("full", "mixed", "partial")  # no padding; [0, len_k, some]; random lengths in [1, len_k]


@pytest.fixture(autouse=True)
def one_thread():
    """Run each test on one thread (autouse in the test modules that import it).

    Small tensors gain nothing from a second thread, and on a shared machine every operation
    would wait for it to get a core.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def case_seed(*params) -> int:
    """A seed of its own for every test case, so each case draws fresh inputs (reproducibly)."""
    return zlib.crc32(repr(params).encode())


def make_inputs(batch, heads, len_q, len_k, dim, *, dtype=torch.float32, device="cpu", seed=0):
    """Random q, k, v (never zeros), and a random output gradient, all requiring grad where relevant."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(batch, heads, len_q, dim), (batch, heads, len_k, dim), (batch, heads, len_k, dim)]
    q, k, v = (torch.randn(s, generator=gen).to(device=device, dtype=dtype).requires_grad_() for s in shapes)
    dout = torch.randn(batch, heads, len_q, dim, generator=gen).to(device=device, dtype=dtype)
    return q, k, v, dout


def make_lens(mode: str, batch: int, len_k: int, seed: int = 0) -> list[int] | None:
    gen = torch.Generator().manual_seed(seed)
    if mode == "full":
        return None
    partial = torch.randint(1, len_k + 1, (batch,), generator=gen).tolist()
    if mode == "mixed":  # an empty source, a full one, and a partial one
        return ([0, len_k] + partial)[:batch]
    assert mode == "partial"
    return partial


def reference_mask(lens, len_q: int, len_k: int, causal: bool) -> torch.Tensor | None:
    """The mask built from the core library's own mask functions (not from course_lib.efficient)."""
    pad = None if lens is None else padding_mask(torch.tensor(lens), len_k)[:, None, None, :]
    return combine_masks(pad, causal_mask(len_q, len_k) if causal else None)


def _lowp_reference(q, k, v, mask, scale):
    """The textbook formula computed in the inputs' own (half) precision, rounding after every step."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        has_key = mask.any(dim=-1, keepdim=True)  # rows with no key: compute anything finite, then zero
        scores = scores.masked_fill(~(mask | ~has_key), -math.inf)
    out = torch.softmax(scores, dim=-1) @ v
    return out if mask is None else out.masked_fill(~has_key, 0.0)


def _tolerances(ref, lowp_ref, dtype, fudge):
    """PyTorch's rule for fused attention kernels (test_transformers.get_tolerances), for atol only.

    A kernel that rounds the probabilities to fp16/bf16 before multiplying by V (as
    FlashAttention does) may deviate from the float64 truth by ``fudge`` times as much
    as the plain formula computed in that dtype does, and never less than ``tol(dtype)``.
    """
    base = tol(dtype)
    if lowp_ref is None:
        return base
    deviation = (lowp_ref.double() - ref).abs().max().item() if ref.numel() else 0.0
    return {"atol": fudge * max(deviation, base["atol"]), "rtol": base["rtol"]}


def check_backend(attend, q, k, v, dout, lens, causal, *, scale=None, grads=True, rounds_p=False, fudge=4.0):
    """Compare ``attend(q, k, v)`` (output and gradients) with the float64 reference.

    ``rounds_p``: the backend rounds the probabilities to the (half) input dtype, so it
    is held to PyTorch's tolerance for fused kernels (see ``_tolerances``) instead of
    ``tol(dtype)``, which fits backends that compute in fp32 and round once at the end.
    """
    dtype = q.dtype
    mask = reference_mask(lens, q.shape[2], k.shape[2], causal)
    mask = None if mask is None else mask.to(q.device)
    # Grouped-query attention: the reference repeats each K/V head for its group (autograd sums dK, dV back).
    group = q.shape[1] // k.shape[1]
    k_rep, v_rep = (t.repeat_interleave(group, dim=1) for t in (k, v)) if group > 1 else (k, v)
    ref, _ = reference_attention(q, k_rep, v_rep, mask, scale=scale)
    lowp = _lowp_reference(q, k_rep, v_rep, mask, scale) if rounds_p and dtype != torch.float32 else None
    out = attend(q, k, v)
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all(), "non-finite output"
    torch.testing.assert_close(out, ref.to(dtype), **_tolerances(ref, lowp, dtype, fudge))
    if lens is not None:  # rows of an empty source are exactly zero
        for b, n in enumerate(lens):
            if n == 0:
                assert (out[b] == 0).all()
    if not grads:
        return
    ref_grads = torch.autograd.grad(ref, (q, k, v), dout.double())
    lowp_grads = (None,) * 3 if lowp is None else torch.autograd.grad(lowp, (q, k, v), dout)
    got = torch.autograd.grad(out, (q, k, v), dout)
    for name, g, r, lp in zip("qkv", got, ref_grads, lowp_grads):
        assert torch.isfinite(g).all(), f"non-finite d{name}"
        tols = _tolerances(r, lp, dtype, fudge)
        torch.testing.assert_close(g, r.to(dtype), **tols, msg=lambda m, name=name: f"d{name}: {m}")
    if lens is not None:  # padding keys get exactly zero gradient
        for b, n in enumerate(lens):
            assert (got[1][b, :, n:] == 0).all() and (got[2][b, :, n:] == 0).all()


LAYOUTS = ("contiguous", "transposed", "fused", "expanded")


def with_layout(q, k, v, layout: str):
    """The same q, k, v values, laid out in memory as real models lay them out; differentiable views.

    * ``contiguous``: ``(batch, heads, len, head_dim)`` as allocated;
    * ``transposed``: views of ``(batch, len, heads, head_dim)`` storage, as ``split_heads`` makes;
    * ``fused``: K and V sliced from one ``(batch, len_k, 2, heads, head_dim)`` projection (and Q from
      ``(batch, len_q, 3, heads, head_dim)``), as ``view(...).unbind(2)`` of a fused QKV linear makes;
    * ``expanded``: K and V ``expand()``-ed from one head (stride 0), as a multi-query model might pass
      them; their values are those of head 0.

    Returns ``(q, k, v)`` views that are not leaves: gradients with respect to them are what is tested.
    """
    q, k, v = (t.detach() for t in (q, k, v))
    if layout == "contiguous":
        return tuple(t.clone().requires_grad_() for t in (q, k, v))
    if layout == "transposed":
        bases = [t.transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v)]
        return tuple(base.transpose(1, 2) for base in bases)
    if layout == "fused":
        q3 = torch.stack([q.transpose(1, 2)] * 3, dim=2).contiguous().requires_grad_()
        kv = torch.stack([k.transpose(1, 2), v.transpose(1, 2)], dim=2).contiguous().requires_grad_()
        k_view, v_view = kv.unbind(2)
        return q3.unbind(2)[0].transpose(1, 2), k_view.transpose(1, 2), v_view.transpose(1, 2)
    assert layout == "expanded"
    heads = k.shape[1]
    k1, v1 = (t[:, :1].clone().requires_grad_() for t in (k, v))
    q_leaf = q.clone().requires_grad_()
    return q_leaf * 1.0, k1.expand(-1, heads, -1, -1), v1.expand(-1, heads, -1, -1)


def _nan_empty(*args, **kwargs) -> torch.Tensor:
    t = torch.empty(*args, **kwargs)
    return t.fill_(math.nan) if t.is_floating_point() else t


def poison_outputs(monkeypatch) -> None:
    """Make the efficient backends allocate their outputs filled with NaN, so unwritten elements show."""
    monkeypatch.setattr(tiled, "_empty", _nan_empty)
    flash = sys.modules.get("course_lib.efficient.triton_flash")
    if flash is not None:
        monkeypatch.setattr(flash, "_empty", _nan_empty)
