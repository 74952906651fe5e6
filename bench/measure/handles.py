"""fvcore op handles that fvcore 0.1.5 lacks or gets wrong, and the ops we leave uncounted on purpose.

A handle receives the traced op's inputs and outputs as `torch._C.Value`s and returns its
multiply-accumulates (MACs): fvcore counts one multiply-add as one flop (so paper FLOPs = 2 x MACs).
"""
from __future__ import annotations

from math import prod
from typing import Any, List, Sequence

import torch
from ._fvcore import get_shape

__all__ = ["sdpa_flop_jit", "cdist_flop_jit", "matmul_flop_jit", "EXTRA_HANDLES", "CHEAP_OPS"]


def _batch(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of matrices in a broadcast batch: the leading dims of `a` and `b` broadcast together."""
    return prod(torch.broadcast_shapes(tuple(a), tuple(b)))


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of attention: q·kᵀ (N·M·D) plus attn·v (N·M·Dv) per batch-head, B·H·N·M·(D + Dv).

    Softmax, scaling and masking are elementwise and not counted; a causal mask is counted as dense
    (the math kernel computes the full score matrix). With grouped-query attention q carries the heads.
    """
    # aten::scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    q, k, v = (get_shape(x) for x in inputs[:3])      # (..., N, D) (..., M, D) (..., M, Dv)
    assert q is not None and k is not None and v is not None, (q, k, v)
    assert q[-1] == k[-1] and k[-2] == v[-2], (q, k, v)
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def cdist_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of a pairwise distance matrix, B·N·M·D: one multiply-add per coordinate of every pair
    (the square root per pair and the p-norm variant are not distinguished)."""
    # aten::cdist(x1, x2, p, compute_mode)
    x1, x2 = get_shape(inputs[0]), get_shape(inputs[1])   # (..., N, D) (..., M, D)
    assert x1 is not None and x2 is not None and x1[-1] == x2[-1], (x1, x2)
    return _batch(x1[:-2], x2[:-2]) * x1[-2] * x2[-2] * x1[-1]


def matmul_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of `a @ b`: batch·n·k·m, the batch being the broadcast of both operands' leading dims.

    Replaces fvcore's handle, which multiplies the numel of `a` by m and so misses the batch when only
    `b` is batched (a fixed (J, J) adjacency @ (B·T, J, C) features counts J·J·C instead of B·T·J·J·C)
    and raises an IndexError when `b` is a vector.
    """
    # aten::matmul(self, other)
    assert len(inputs) == 2, len(inputs)
    a, b = get_shape(inputs[0]), get_shape(inputs[1])
    assert a is not None and b is not None, (a, b)
    a = [1] + list(a) if len(a) == 1 else list(a)     # a vector is a 1-row matrix
    b = list(b) + [1] if len(b) == 1 else list(b)     # ... or a 1-column matrix
    assert a[-1] == b[-2], (a, b)
    return _batch(a[:-2], b[:-2]) * a[-2] * a[-1] * b[-1]


# added to (or replacing) fvcore's default handles for `gflops_total`
EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::cdist": cdist_flop_jit,
    "aten::matmul": matmul_flop_jit,
}

# Not counted on purpose (handle None): elementwise, reduction, selection and bookkeeping ops, each
# O(numel) next to the O(numel·dim) matmuls; fvcore ignores the same kind (its `_IGNORED_OPS`).
# Anything else without a handle ends up in `FlopReport.uncounted_ops`.
CHEAP_OPS = tuple(f"aten::{op}" for op in (
    # arithmetic and activations
    "add", "add_", "sub", "rsub", "mul", "mul_", "div", "div_", "neg", "abs", "pow", "sqrt", "rsqrt", "exp",
    "log", "round", "softmax", "log_softmax", "gelu", "relu", "tanh", "sigmoid", "silu", "cos", "clamp_min",
    # reductions
    "mean", "sum", "min", "max", "argmin", "argmax", "linalg_vector_norm", "norm", "cumsum",
    # selection, sorting, comparison (token pruning)
    "topk", "sort", "argsort", "gather", "index", "index_select", "scatter", "scatter_", "scatter_add",
    "searchsorted", "where",
    "masked_fill", "lt", "le", "gt", "ge", "eq", "ne",
    # creation, randomness, copies
    "rand", "randn", "linspace", "cat", "clone", "repeat", "expand_as", "ones_like", "zeros_like", "zero_",
    "empty_like",
    "diagonal",
))
