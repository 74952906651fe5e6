"""The GEMM floor of a forward: its own Linear/Conv calls alone, timed in the same run, same precision and
threads, each on the fastest GEMM path this CPU offers. `floor_s / measured_s` is a cell's hardware
efficiency: how much of its time goes to the products that FLOPs count, which is how far a pruning
method's FLOPs cut can reach the clock (everything else, attention, norms, copies, dtype casts and
pruning itself, is the gap)."""
from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from .capability import onednn_linear, onednn_linear_works

__all__ = ["gemm_floor_s"]


def _op(call, dtype: torch.dtype, device: str, onednn: bool) -> Callable[[], object]:
    kind, xs, ws, bias, conv = call
    x = torch.randn(xs, dtype=dtype, device=device)
    w = torch.randn(ws, dtype=dtype, device=device) * 0.02
    b = torch.zeros(ws[0], dtype=dtype, device=device) if bias else None
    if kind == "conv":
        f = F.conv1d if len(ws) == 3 else F.conv2d
        return lambda: f(x, w, b, **conv)
    return (lambda: onednn_linear(x, w, b)) if onednn else (lambda: F.linear(x, w, b))


def _median_s(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_floor_s(calls: List[tuple], dtype: torch.dtype, device: str = "cpu", repeats: int = 5) -> float:
    """Seconds of one forward's Linear/Conv calls (`fastpath.forward_calls`) run alone: each distinct call
    timed on fresh tensors of its shapes (median of `repeats`), times how often the forward makes it.
    On a CPU each Linear takes the faster of torch's and oneDNN's product where oneDNN has a linear for
    `dtype` (probed: an AVX2-only CPU has none in bf16 or fp16)."""
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    counts: Dict[tuple, int] = Counter((c[0], tuple(c[1]), tuple(c[2]), c[3], tuple(sorted(c[4].items())))
                                       for c in calls if c[0] in ("linear", "conv"))
    total = 0.0
    with torch.inference_mode():
        for key, n in counts.items():
            call = (key[0], torch.Size(key[1]), torch.Size(key[2]), key[3], dict(key[4]))
            paths = [False] + ([True] if call[0] == "linear" and not cuda and onednn_linear_works(dtype) else [])
            total += n * min(_median_s(_op(call, dtype, device, p), repeats, sync) for p in paths)
    return total
