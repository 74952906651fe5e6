"""FLOPs with fvcore, in two conventions (DESIGN.md "Conventions").

- `gflops` (paper convention): 2 x multiply-accumulates of Linear and Conv layers only, one clip.
  Counted *by op set*: a FlopCountAnalysis whose only handles are `aten::linear` and
  `aten::_convolution` (what nn.Linear / nn.Conv1d trace to under torch 2.13). This also catches
  `F.linear` in functional code, which counting by module type would miss; a test checks that both
  ways agree on our models.
- `gflops_total`: every op fvcore knows (matmul, bmm, einsum, norms, ...) plus handles it lacks —
  `aten::scaled_dot_product_attention` (the attention matmuls) and `aten::cdist` (TPC's distance
  matrix). Elementwise and selection ops (softmax, add, topk, sort, ...) are deliberately not
  counted, as in fvcore; any other op with no handle is listed in `uncounted_ops`.
fvcore counts one multiply-add as one flop, hence the factor 2 everywhere.
"""
from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from typing import Any, Dict, List, Tuple

import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import conv_flop_jit, get_shape, linear_flop_jit

__all__ = ["FlopReport", "count_params", "count_flops", "paper_gflops_by_module", "flop_counter_mode_gflops",
           "sdpa_flop_jit", "cdist_flop_jit", "IGNORED_OPS"]

# cheap elementwise / selection / bookkeeping ops: not FLOPs in fvcore's convention
IGNORED_OPS = tuple(f"aten::{op}" for op in (
    "softmax", "add", "add_", "sub", "rsub", "mul", "mul_", "div", "neg", "exp", "pow", "sqrt", "abs", "gelu",
    "tanh", "relu", "sigmoid", "mean", "sum", "min", "max", "argmax", "argmin", "topk", "sort", "rand",
    "searchsorted", "where", "lt", "le", "gt", "ge", "eq", "ne", "scatter", "round", "linspace", "clamp_min",
    "norm", "linalg_vector_norm", "masked_fill", "bernoulli_", "expand_as", "repeat", "clone", "index_select",
    "reciprocal", "ones_like", "empty_like", "cumsum", "diff", "log", "alias", "numpy_T", "fill_", "floor_divide"))


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of scaled_dot_product_attention: q·kᵀ and attn·v, B·H·N·M·(D + Dv).

    aten::scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, ...)
    """
    q, k, v = (get_shape(x) for x in inputs[:3])  # (..., N, D) (..., M, D) (..., M, Dv)
    assert q is not None and k is not None and v is not None, (q, k, v)
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def cdist_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of a pairwise distance matrix: B·N·M·D (one multiply-add per coordinate pair).

    aten::cdist(x1 (B, N, D), x2 (B, M, D), p, compute_mode)
    """
    x1, x2 = get_shape(inputs[0]), get_shape(inputs[1])
    assert x1 is not None and x2 is not None and x1[-1] == x2[-1], (x1, x2)
    return prod(x1[:-1]) * x2[-2] * x1[-1]


@dataclass
class FlopReport:
    gflops: float                       # paper convention: 2 x Linear/Conv MACs
    gflops_total: float                 # all counted ops (see module docstring)
    uncounted_ops: List[str] = field(default_factory=list)
    by_operator: Dict[str, float] = field(default_factory=dict)  # GFLOPs per op, total convention


def count_params(model: nn.Module) -> float:
    """Parameters in millions (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def _analysis(model: nn.Module, inputs: Tuple) -> FlopCountAnalysis:
    fca = FlopCountAnalysis(model, inputs)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return fca


def _total(fca: FlopCountAnalysis) -> int:
    # data-dependent indexing in token pruning is expected: silence the tracer's warnings
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fca.total()


def count_flops(model: nn.Module, inputs: Tuple) -> FlopReport:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            paper = _analysis(model, inputs).clear_op_handles()
            paper.set_op_handle(**{"aten::linear": linear_flop_jit, "aten::_convolution": conv_flop_jit})
            gflops = 2 * _total(paper) / 1e9
            full = _analysis(model, inputs)
            full.set_op_handle(**{"aten::scaled_dot_product_attention": sdpa_flop_jit, "aten::cdist": cdist_flop_jit})
            full.set_op_handle(**{op: None for op in IGNORED_OPS})
            gflops_total = 2 * _total(full) / 1e9
            uncounted = sorted(Counter(full.unsupported_ops()))
            by_op = {k: 2 * v / 1e9 for k, v in full.by_operator().items()}
    finally:
        model.train(was_training)
    return FlopReport(gflops, gflops_total, uncounted, by_op)


def paper_gflops_by_module(model: nn.Module, inputs: Tuple) -> float:
    """The paper convention counted the other way: by module type (nn.Linear / nn.Conv*)."""
    model.eval()
    with torch.no_grad():
        fca = _analysis(model, inputs)
        _total(fca)
        per_module = fca.by_module()
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    return 2 * sum(per_module[name] for name, m in model.named_modules() if isinstance(m, kinds)) / 1e9


def flop_counter_mode_gflops(model: nn.Module, inputs: Tuple) -> float:
    """Independent cross-check with torch's FlopCounterMode (reports 2 x MACs already). On CPU it only
    counts SDPA inside the MATH backend, which decomposes attention into bmm."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() / 1e9
