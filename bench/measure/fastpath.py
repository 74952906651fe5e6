"""The timing path: the kernel choices `measure_speed` applies to a *copy* of a model before timing it.

The models stay plain torch modules (nn.Linear, nn.LayerNorm, ...), so every FLOP counter (fvcore,
thop, ptflops, torchprofile, FlopCounterMode) sees them as it sees the official code. How they are
run fast is decided here, measured on the CPU at hand rather than assumed, and recorded with each
timing (`speed_path`):

- fp32 on a CPU: `nn.Linear` calls MKL's sgemm; oneDNN's matmul (`torch.ops.mkldnn._linear_pointwise`)
  runs the same product about 2x faster on some CPUs (an AMD EPYC here: ~200 vs ~430 GFLOP/s on 2
  threads) and at the same rate on others (an Intel Xeon with AMX: ~300 both). `gemm_path` times both
  on the model's own largest Linear call and routes the copy's Linears through oneDNN only where that
  wins by more than 5 %.
- bf16 / fp16: what deployment does: the copy holds its weights and runs its activations in that dtype
  (inputs are cast), not autocast around fp32 weights. Outputs then move against fp32 by the
  precision's rounding (bf16: about 1e-2 relative).
"""
from __future__ import annotations

import copy
import time
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..precision import dtype_of

__all__ = ["OneDNNLinear", "timing_model", "gemm_path", "onednn_available", "linear_calls"]
ONEDNN_MARGIN = 1.05  # oneDNN must be this much faster to be used (below it, keep torch's default path)


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDNNLinear(nn.Module):
    """A Linear of the timing copy whose CPU product runs on oneDNN (same weights, same maths)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _onednn_linear(x, self.weight, self.bias)


def linear_calls(model: nn.Module, inputs: tuple) -> List[Tuple[str, torch.Size, torch.Size, bool, dict]]:
    """(kind, input shape, weight shape, has bias, conv settings) of every Linear/Conv call of one forward,
    in call order: what the GEMM floor and the path choice time."""
    calls = []

    def hook(mod, args, _out):
        x = args[0]
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            conv = dict(stride=mod.stride, padding=mod.padding, dilation=mod.dilation, groups=mod.groups)
            calls.append(("conv", x.shape, mod.weight.shape, mod.bias is not None, conv))
        else:
            calls.append(("linear", x.shape, mod.weight.shape, mod.bias is not None, {}))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, OneDNNLinear))]
    try:
        with torch.inference_mode():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


def _best_of(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_path(calls, dtype: torch.dtype = torch.float32) -> str:
    """'onednn' when oneDNN runs the largest fp32 Linear call of `calls` faster than torch's default
    (by more than ONEDNN_MARGIN) on this CPU, else 'aten'."""
    linears = [c for c in calls if c[0] == "linear"]
    if dtype != torch.float32 or not linears or not onednn_available():
        return "aten"
    _, xs, ws, bias, _ = max(linears, key=lambda c: c[1].numel() * c[2][0])
    x, w = torch.randn(xs, dtype=dtype), torch.randn(ws, dtype=dtype) * 0.02
    b = torch.zeros(ws[0], dtype=dtype) if bias else None
    with torch.inference_mode():
        aten = _best_of(lambda: F.linear(x, w, b))
        onednn = _best_of(lambda: _onednn_linear(x, w, b))
    return "onednn" if aten > ONEDNN_MARGIN * onednn else "aten"


def timing_model(model: nn.Module, inputs: tuple, precision: str, device: str,
                 calls: Optional[list] = None) -> Tuple[nn.Module, tuple, str]:
    """(the model to time, its inputs, the path's label). The original model is left untouched. `calls`:
    the model's `linear_calls` when the caller already captured them (one forward fewer)."""
    dtype = dtype_of(precision)
    run = model
    if dtype != torch.float32:
        run = copy.deepcopy(model).to(dtype)
        inputs = tuple(x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs)
    label = f"{precision} weights and activations" if dtype != torch.float32 else "fp32"
    if torch.device(device).type == "cpu" and dtype == torch.float32:
        path = gemm_path(calls if calls is not None else linear_calls(model, inputs), dtype)
        if path == "onednn":
            run = _with_onednn_linears(model)
        label += ", oneDNN linear" if path == "onednn" else ", aten linear"
    return run, inputs, label


def _with_onednn_linears(model: nn.Module) -> nn.Module:
    """A copy whose nn.Linear modules run on oneDNN."""
    run = copy.deepcopy(model)
    for mod in list(run.modules()):
        for child_name, child in list(mod.named_children()):
            if type(child) is nn.Linear:
                setattr(mod, child_name, OneDNNLinear(child))
    return run
