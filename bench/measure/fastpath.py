"""The timing path: the kernel choices `measure_speed` applies to a *copy* of a model before timing it.

The models stay plain torch modules (nn.Linear, nn.LayerNorm, ...), so every FLOP counter (fvcore,
thop, ptflops, torchprofile, FlopCounterMode) sees them as it sees the official code. How they are
run fast is decided here, measured on the CPU at hand rather than assumed, and recorded with each
timing (`speed_path`):

- the GEMM path on a CPU: in fp32 `nn.Linear` calls MKL's sgemm; oneDNN's matmul
  (`torch.ops.mkldnn._linear_pointwise`) runs the same product about 2x faster on some CPUs (an AMD EPYC
  here: ~200 vs ~430 GFLOP/s on 2 threads) and at the same rate on others (an Intel Xeon with AMX: ~300
  both). In bf16 both end in oneDNN, but torch's addmm first copies the broadcast bias into the output
  and then accumulates onto it, which oneDNN's own primitive fuses (Xeon with AMX, MixSTE's qkv call:
  2.43 vs 2.13 ms). `gemm_path` times both on the model's own largest Linear call and routes the copy's
  Linears through oneDNN only where that wins by more than 5 %, and only where oneDNN has a linear for
  the dtype at all (`capability.onednn_linear_works`, probed: an AVX2-only CPU has none in bf16/fp16).
- bf16 / fp16: what deployment does: the copy holds its weights and runs its activations in that dtype
  (inputs are cast), not autocast around fp32 weights. Outputs then move against fp32 by the
  precision's rounding (bf16: about 1e-2 relative). On a CPU without arithmetic of that dtype the copy
  runs on torch's own kernels and the label says `emulated` (`capability.PrecisionSupport`); where no
  kernel runs it, `check_precision` refuses it in one line before anything is built.
- attention on a CPU: fused SDPA, the explicit softmax(q k^T) v, or the explicit product with the
  softmax decomposed into max, exp, sum and divide, whichever ran each of the forward's attention
  shapes fastest here (`attention_kernel_table`, same shapes, strides and dtype). Which wins depends on
  the CPU, the key count and the head dim (on an Intel Xeon with AMX, fp32: SDPA 2.3 vs 3.6 ms for
  MixSTE's 17-key spatial attention at head dim 64, explicit 4.6 vs 8.2 ms for the tiny preset's
  27-key temporal attention at head dim 8, and over 9 kept frames, where torch's softmax takes a slow
  path for rows shorter than a SIMD vector, the decomposed softmax beats both), so it is measured, not
  assumed.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones.layers import KERNELS, attend, attention_kernels

from ..precision import dtype_of
from .capability import check_precision, onednn_linear, onednn_linear_works, warn_if_emulated

__all__ = ["OneDNNLinear", "timing_model", "gemm_path", "forward_calls", "attention_kernel_table"]
ONEDNN_MARGIN = 1.05  # oneDNN must be this much faster to be used (below it, keep torch's default path)
# an attention kernel must be this much faster than the one preferred before it (KERNELS order) to be
# used: near-ties would otherwise flip from cell to cell with the timer's noise and make cells of the
# same shapes disagree
KERNEL_MARGIN = 1.10


class OneDNNLinear(nn.Module):
    """A Linear of the timing copy whose CPU product runs on oneDNN (same weights, same maths)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn_linear(x, self.weight, self.bias)


def forward_calls(model: nn.Module, inputs: tuple) -> List[Tuple[str, torch.Size, torch.Size, bool, dict]]:
    """What one forward computes, in call order: every Linear/Conv call as (kind, input shape, weight
    shape, has bias, conv settings) -- what the GEMM floor and the path choice time -- and every attention
    call without weights as ("attention", q shape, k shape, False, {"v": v shape, "stride": strides})."""
    calls = []

    def hook(mod, args, _out):
        x = args[0]
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            conv = dict(stride=mod.stride, padding=mod.padding, dilation=mod.dilation, groups=mod.groups)
            calls.append(("conv", x.shape, mod.weight.shape, mod.bias is not None, conv))
        else:
            calls.append(("linear", x.shape, mod.weight.shape, mod.bias is not None, {}))

    def attention(q, k, v):
        calls.append(("attention", q.shape, k.shape, False,
                      {"v": tuple(v.shape), "stride": (q.stride(), k.stride(), v.stride())}))
        return None  # no opinion: the model's own rule runs

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, OneDNNLinear))]
    try:
        with torch.inference_mode(), attention_kernels(attention):
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
    """'onednn' when oneDNN has a linear for `dtype` on this CPU (probed) and runs the largest Linear call
    of `calls` faster than torch's default (by more than ONEDNN_MARGIN), else 'aten'."""
    linears = [c for c in calls if c[0] == "linear"]
    if not linears or not onednn_linear_works(dtype):
        return "aten"
    _, xs, ws, bias, _ = max(linears, key=lambda c: c[1].numel() * c[2][0])
    x, w = torch.randn(xs, dtype=dtype), torch.randn(ws, dtype=dtype) * 0.02
    b = torch.zeros(ws[0], dtype=dtype) if bias else None
    with torch.inference_mode():
        aten = _best_of(lambda: F.linear(x, w, b))
        onednn = _best_of(lambda: onednn_linear(x, w, b))
    return "onednn" if aten > ONEDNN_MARGIN * onednn else "aten"


def attention_kernel_table(calls, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Dict[tuple, str]:
    """(q, k, v shapes) -> 'sdpa', 'explicit' or 'decomposed' (`backbones.layers.KERNELS`): the kernel
    that ran each distinct attention call of `calls` fastest here, timed on fresh tensors of its shapes,
    strides and `dtype` (best of 3 x 3, alternating). SDPA unless another wins by more than
    KERNEL_MARGIN; the explicit product with torch's softmax unless the decomposed softmax beats it by
    as much."""
    table: Dict[tuple, str] = {}
    for kind, qs, ks, _, extra in calls:
        key = (tuple(qs), tuple(ks), extra.get("v"))
        if kind != "attention" or key in table:
            continue  # Linear/Conv calls, or a shape already timed
        q, k, v = (torch.empty_strided(shape, stride, dtype=dtype, device=device).normal_()
                   for shape, stride in zip(key, extra["stride"]))
        times = dict.fromkeys(KERNELS, float("inf"))
        for _ in range(3):  # alternate, so a drift of the machine's speed hits every kernel alike
            for kernel in times:
                with torch.inference_mode(), attention_kernels(lambda *_, kernel=kernel: kernel):
                    times[kernel] = min(times[kernel], _best_of(lambda: attend(q, k, v), repeats=3))
        choice = KERNELS[0]
        for other in KERNELS[1:]:  # in order of preference: a near-tie keeps the earlier kernel
            if times[choice] > KERNEL_MARGIN * times[other]:
                choice = other
        table[key] = choice
    return table


class AttentionKernels(nn.Module):
    """The timing copy's forward with each attention shape on the kernel `table` chose for it."""

    def __init__(self, model: nn.Module, table: Dict[tuple, str]):
        super().__init__()
        self.model, self.table = model, table

    def _choose(self, q, k, v) -> Optional[str]:
        return self.table.get((tuple(q.shape), tuple(k.shape), tuple(v.shape)))

    def forward(self, *args, **kwargs):
        with attention_kernels(self._choose):
            return self.model(*args, **kwargs)


def timing_model(model: nn.Module, inputs: tuple, precision: str, device: str,
                 calls: Optional[list] = None, attention: bool = True,
                 gemm: bool = True) -> Tuple[nn.Module, tuple, str]:
    """(the model to time, its inputs, the path's label). The original model is left untouched. `calls`:
    the model's `forward_calls` when the caller already captured them (one forward fewer). `attention`,
    `gemm`: choose each attention shape's kernel / the GEMM path by measurement (both off under
    torch.compile, which picks its own: inductor's freezing packs oneDNN weights itself, and fails on a
    graph that already calls oneDNN's linear)."""
    dtype = dtype_of(precision)
    cpu = torch.device(device).type == "cpu"
    support = check_precision(precision) if cpu else None  # no kernel for it: one line, before the copy
    run = model
    if dtype != torch.float32:
        run = copy.deepcopy(model).to(dtype)
        inputs = tuple(x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs)
    if not cpu:
        return run, inputs, f"{precision} weights and activations" if dtype != torch.float32 else "fp32"
    warn_if_emulated(support)
    label = support.label()
    calls = calls if calls is not None else forward_calls(run, inputs)
    if gemm:
        path = gemm_path(calls, dtype)
        if path == "onednn":
            run = _with_onednn_linears(run)
        label += ", oneDNN linear" if path == "onednn" else ", aten linear"
    table = attention_kernel_table(calls, dtype) if attention else {}
    if table:
        run = AttentionKernels(run, table)
        label += f", attention sdpa {sum(k == 'sdpa' for k in table.values())}/{len(table)} shapes"
        decomposed = sum(k == "decomposed" for k in table.values())
        label += f" (softmax decomposed in {decomposed})" if decomposed else ""
    return run, inputs, label


def _with_onednn_linears(model: nn.Module) -> nn.Module:
    """A copy whose nn.Linear modules run on oneDNN."""
    run = copy.deepcopy(model)
    for mod in list(run.modules()):
        for child_name, child in list(mod.named_children()):
            if type(child) is nn.Linear:
                setattr(mod, child_name, OneDNNLinear(child))
    return run
