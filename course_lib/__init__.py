"""Companion library of the course "Cross-attention, from the formula to a fast GPU kernel".

The public API, imported by the notebooks and the exercises::

    softmax, scaled_dot_product_attention                         # course_lib.attention
    padding_mask, causal_mask, combine_masks, to_additive_mask,   # course_lib.masks
    to_torch_key_padding_mask, from_torch_key_padding_mask,
    key_padding_to_attn_mask
    MultiHeadAttention, KVCache, split_heads, merge_heads         # course_lib.multihead
    default_device                                                # course_lib.device

Later lessons import their own modules: ``course_lib.complexity`` (05), ``course_lib.efficient``
(06), ``course_lib.sparse`` (07), ``course_lib.data`` and ``course_lib.models`` (08-09),
``course_lib.viz`` (figures and explorers), ``course_lib.checks`` and ``course_lib.grading``
(exercises). Importing ``course_lib`` also chooses how Triton kernels run (``course_lib.device``).
"""

from .attention import scaled_dot_product_attention, softmax
from .device import default_device
from .masks import (
    causal_mask,
    combine_masks,
    from_torch_key_padding_mask,
    key_padding_to_attn_mask,
    padding_mask,
    to_additive_mask,
    to_torch_key_padding_mask,
)
from .multihead import KVCache, MultiHeadAttention, merge_heads, split_heads

__all__ = [
    "KVCache",
    "MultiHeadAttention",
    "causal_mask",
    "combine_masks",
    "default_device",
    "from_torch_key_padding_mask",
    "key_padding_to_attn_mask",
    "merge_heads",
    "padding_mask",
    "scaled_dot_product_attention",
    "softmax",
    "split_heads",
    "to_additive_mask",
    "to_torch_key_padding_mask",
]

__version__ = "0.1.0"
