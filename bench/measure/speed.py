"""Throughput, latency and peak memory (timm benchmark.py / nanoGPT bench.py habits, STYLE.md 5).

Inputs are built once before the clock starts; warm-up forwards are untimed; each repeat times
`iters` forwards under inference mode with a fixed thread count; the median repeat gives the speed
and the coefficient of variation of the repeats is recorded next to it.
"""
from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ["measure_speed", "measure_speed_sweep", "RssPeak"]

_PAGE = 4096


def _rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class RssPeak:
    """Samples this process's resident set size every ~1 ms in a background thread. CPU torch has no
    allocator statistics, so peak memory is the RSS rise over the value at start (approximate)."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s, self.base, self.peak = interval_s, 0, 0
        self._stop = threading.Event()

    def __enter__(self):
        self.base = self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval_s)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 2 ** 20


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_speed(model: nn.Module, make_input: Callable[[int], Tuple], *, frames_out_per_clip: int,
                  batch_size: int = 1, threads: Optional[int] = None, warmup: int = 2, iters: int = 5,
                  repeats: int = 5, device: str = "cpu") -> Dict:
    """Median-of-repeats throughput of `model(*make_input(batch_size))`."""
    if min(batch_size, iters, repeats) < 1 or warmup < 0:
        raise ValueError("batch_size, iters and repeats must be >= 1 and warmup >= 0")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval().to(device)
    try:
        inputs = tuple(x.to(device) for x in make_input(batch_size))
        with torch.inference_mode():
            for _ in range(warmup):
                model(*inputs)
            _sync(device)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            secs: List[float] = []
            with RssPeak() as rss:
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    for _ in range(iters):
                        model(*inputs)
                    _sync(device)
                    secs.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda") else rss.delta_mb
        per_step = statistics.median(secs) / iters
        cv = statistics.stdev(secs) / statistics.mean(secs) if len(secs) > 1 else 0.0
        clips = batch_size / per_step
        return {"clips_per_s": clips, "frames_per_s": clips * frames_out_per_clip, "latency_ms": per_step * 1e3,
                "speed_cv": cv, "peak_mem_mb": peak, "threads": torch.get_num_threads(), "batch_size": batch_size,
                "warmup": warmup, "iters": iters, "repeats": repeats, "device": device}
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)


def measure_speed_sweep(model: nn.Module, make_input: Callable[[int], Tuple], batch_sizes: Sequence[int],
                        **kwargs) -> List[Dict]:
    """One row per batch size; an out-of-memory batch size is recorded as failed, the sweep goes on."""
    rows = []
    for b in batch_sizes:
        try:
            rows.append(dict(measure_speed(model, make_input, batch_size=b, **kwargs), status="ok"))
        except (RuntimeError, MemoryError) as e:
            if "out of memory" not in str(e).lower() and not isinstance(e, MemoryError):
                raise
            rows.append({"batch_size": b, "status": "failed", "error": f"{type(e).__name__}: {e}"})
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows
