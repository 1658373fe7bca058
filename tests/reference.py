"""Float64 references and tolerances shared by the tests.

Tolerances follow PyTorch's own attention tests (test/test_transformers.py).
"""

from __future__ import annotations

import math

import torch

ATOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-3}
RTOL = {torch.float64: 1e-10, torch.float32: 1.3e-6, torch.float16: 1e-3, torch.bfloat16: 1.6e-2}


def tol(dtype: torch.dtype) -> dict:
    return {"atol": ATOL[dtype], "rtol": RTOL[dtype]}


def reference_attention(q, k, v, mask=None, scale=None):
    """Attention in float64 by the textbook formula; fully masked rows give zeros.

    q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv); mask bool, True = may attend.
    Returns (output, weights) in float64.
    """
    q, k, v = q.double(), k.double(), v.double()
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    weights = torch.softmax(scores, dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)  # a fully masked row: 0/0 -> 0
    return weights @ v, weights
