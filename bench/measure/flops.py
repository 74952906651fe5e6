"""Parameters and FLOPs in two conventions (paper and total, below), counted with fvcore.

- `gflops`, the paper convention: 2 x the multiply-accumulates (MACs) of Linear and Conv layers only,
  for the inputs given (callers pass one clip at batch 1). Counted *by op set*: the rows that the
  `aten::linear` and `aten::_convolution` handles write (under torch 2.13 `nn.Linear` traces to
  `aten::linear`, `nn.Conv1d/2d` to `aten::_convolution`). Unlike counting *by module type*
  (`paper_gflops_by_module`), this also catches `F.linear` in functional code; the tests check that
  both ways, and a literal `clear_op_handles()` analysis (`paper_gflops_by_op_set`), agree.
  `count_flops` reads the paper rows off the same trace as the total, so a model is traced once
  (a trace runs a forward: seconds for a paper-size model).
- `gflops_total`: every op fvcore has a handle for (linear, conv, matmul, bmm, einsum, norms, ...)
  plus `bench.measure.handles.EXTRA_HANDLES` (SDPA, cdist, a broadcasting matmul). The ops in
  `CHEAP_OPS` (softmax, add, topk, ...) are deliberately not counted; any other op without a handle
  is listed in `FlopReport.uncounted_ops`, so a missing handle shows up in the record, not as a
  silently low number.

fvcore counts one multiply-add as one flop; every number returned here is already x2 and in GFLOPs.
`flop_counter_mode_gflops` is an independent cross-check with torch's own counter.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Tuple

import torch
import torch.nn as nn

from ._fvcore import FlopCountAnalysis, conv_flop_jit, linear_flop_jit
from .handles import CHEAP_OPS, EXTRA_HANDLES
from .inputs import Inputs, as_inputs

__all__ = ["FlopReport", "count_params", "count_flops", "paper_gflops_by_op_set", "paper_gflops_by_module",
           "flop_counter_mode_gflops", "PAPER_HANDLES"]

# the paper convention's op set, and the by_operator rows those handles write
PAPER_HANDLES = {"aten::linear": linear_flop_jit, "aten::_convolution": conv_flop_jit}
_PAPER_ROWS = ("linear", "conv")  # conv_flop_jit renames `_convolution` to `conv`
_PAPER_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)



@dataclass
class FlopReport:
    """FLOPs of one forward, 2 x MACs, in GFLOPs."""

    gflops: float                                              # paper convention: Linear/Conv layers only
    gflops_total: float                                        # every counted op (module docstring)
    uncounted_ops: List[str] = field(default_factory=list)     # ops with no handle, e.g. ["aten::cumprod"]
    by_operator: Dict[str, float] = field(default_factory=dict)  # GFLOPs per fvcore row ("linear", "conv", ...)


def count_params(model: nn.Module) -> float:
    """All parameters, trainable or frozen, in millions; buffers (BatchNorm statistics, masks) excluded."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def count_flops(model: nn.Module, inputs: Inputs) -> FlopReport:
    """Trace `model(*inputs)` once in eval mode and count it in both conventions (module docstring)."""
    fca = _analysis(_TensorOutputs(model), inputs).set_op_handle(**EXTRA_HANDLES, **dict.fromkeys(CHEAP_OPS))
    with _eval(model), torch.no_grad():
        by_op = {name: 2 * macs / 1e9 for name, macs in _traced(fca, fca.by_operator).items()}
    return FlopReport(gflops=sum(by_op.get(row, 0.0) for row in _PAPER_ROWS),
                      gflops_total=sum(by_op.values(), 0.0),
                      uncounted_ops=sorted(fca.unsupported_ops()),
                      by_operator=by_op)


def paper_gflops_by_op_set(model: nn.Module, inputs: Inputs) -> float:
    """The paper convention from an analysis that knows only the Linear/Conv ops (`clear_op_handles`).
    Every other op is then 'unsupported' by construction: read `uncounted_ops` from `count_flops`."""
    fca = _analysis(_TensorOutputs(model), inputs).clear_op_handles().set_op_handle(**PAPER_HANDLES)
    with _eval(model), torch.no_grad():
        return 2 * _traced(fca, fca.total) / 1e9


def paper_gflops_by_module(model: nn.Module, inputs: Inputs) -> float:
    """The paper convention counted by module type: fvcore's per-module totals summed over the
    nn.Linear / nn.Conv* modules. Misses `F.linear` / `F.conv*` called outside such modules."""
    wrapper = _TensorOutputs(model)  # by_module() names are relative to the traced wrapper
    fca = _analysis(wrapper, inputs)
    with _eval(model), torch.no_grad():
        per_module = _traced(fca, fca.by_module)
    return 2 * sum(per_module[name] for name, m in wrapper.named_modules() if isinstance(m, _PAPER_MODULES)) / 1e9


def flop_counter_mode_gflops(model: nn.Module, inputs: Inputs) -> float:
    """GFLOPs of one forward by `torch.utils.flop_counter.FlopCounterMode` (already 2 x MACs).

    It counts mm/addmm/bmm/baddbmm/conv and the fused SDPA kernels it knows. The CPU flash kernel is
    not among them (torch 2.13 reports 0 for SDPA on CPU), so attention runs on the MATH backend,
    which decomposes it into bmm. It does not count cdist, matrix-vector products (aten::mv), norms
    or elementwise ops.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    inputs = as_inputs(inputs)
    with _eval(model), _frozen(model), torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as counter:
            model(*inputs)
    return counter.get_total_flops() / 1e9


class _TensorOutputs(nn.Module):
    """Calls the model and returns the tensors of its output as a flat tuple. The tracer rejects
    outputs such as an int or a string; dicts, lists and nested tuples are flattened in order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = tuple(_tensors(self.model(*inputs)))
        if not out:
            raise ValueError(f"{type(self.model).__name__} returned no tensor: nothing to trace")
        return out


def _tensors(out: Any) -> Iterator[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, dict):
        for value in out.values():
            yield from _tensors(value)
    elif isinstance(out, (tuple, list)):
        for value in out:
            yield from _tensors(value)


def _analysis(wrapper: _TensorOutputs, inputs: Inputs) -> FlopCountAnalysis:
    """A FlopCountAnalysis of the wrapped model with fvcore's warnings off: per-op 'unsupported'
    warnings (we report those ops ourselves), uncalled modules (a pruned model skips some by design)
    and tracer warnings (data-dependent indexing in token pruning is expected)."""
    fca = FlopCountAnalysis(wrapper, as_inputs(inputs))
    return fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")


def _traced(fca: FlopCountAnalysis, query):
    """Run an fvcore query (which traces the model on first use) with a hint for a common failure."""
    try:
        return query()
    except RuntimeError as e:
        if "as a constant" in str(e):
            e.add_note("vptbench: a module called in forward() that is not a registered submodule of the "
                       "traced model holds parameters the tracer cannot capture; register it as a submodule")
        raise


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every submodule's own train/eval flag restored."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters with requires_grad off for the duration. FlopCounterMode's module tracker hooks every
    tensor that requires grad; a view of a parameter taken under no_grad (`param.expand(...)`) requires
    grad yet has no grad_fn, and the hook registration fails on it."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
