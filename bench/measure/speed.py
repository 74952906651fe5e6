"""Throughput, latency and peak memory of inference (timm benchmark.py / nanoGPT bench.py habits).

The input is built once, before any clock starts. `warmup` untimed forwards, then `repeats` timed
runs of `iters` forwards each, all under `model.eval()` and `torch.inference_mode()` with a fixed
intra-op thread count (set here, restored after: joblib workers are reused between cells). The
median repeat gives the speed; the coefficient of variation of the repeats is recorded next to it.
There are no sleeps anywhere in the loop, and nothing waits between models.

Peak memory: on CUDA, `torch.cuda.max_memory_allocated()` over the timed forwards (weights and input
included). On CPU torch keeps no allocator statistics, so a background thread samples the bytes this
process has allocated (glibc's `mallinfo2`; the resident set size where that is missing) about every
millisecond during the first warm-up forward (an extra untimed forward when `warmup` is 0): `peak_mem_mb`
is the peak minus the value just before that forward, the activation memory one forward adds;
approximate (a spike shorter than the sampling interval can be missed). It is None where neither can be
read. Sampling in an untimed forward keeps the sampler off the clock, and counting allocated bytes
rather than resident pages keeps the figure right once freed memory is kept (`allocator`).
"""
from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..devices import is_out_of_memory
from ..precision import dtype_of
from ..records import METRIC_GROUPS
from .allocator import heap_in_use_bytes, keep_freed_memory
from .capability import check_precision
from .fastpath import forward_calls, timing_model
from .floor import gemm_floor_s
from .inputs import as_inputs

__all__ = ["measure_speed", "measure_speed_sweep", "SPEED_FIELDS"]

# the metric columns of a row; a failed row has them all, set to None
SPEED_FIELDS = METRIC_GROUPS["speed"]



def measure_speed(model: nn.Module, make_input: Callable[[int], Tuple[torch.Tensor, ...]], *,
                  frames_out_per_clip: int, batch_size: int = 1, threads: Optional[int] = None,
                  warmup: int = 2, iters: int = 5, repeats: int = 5, device: str = "cpu",
                  precision: str = "fp32", compile: bool = False, floor: bool = True,
                  batch1_latency: bool = False, paired: Optional[nn.Module] = None) -> Dict:
    """Time `model(*make_input(batch_size))` and return one flat row (see the module docstring).

    Args:
        model: moved to `device` (and left there); eval mode for the run, its mode restored after.
        make_input: batch size -> the model's positional inputs; called once, before timing.
        frames_out_per_clip: output frames of one clip (T for seq2seq, 1 for seq2frame).
        threads: torch intra-op threads for the run; None keeps the current setting.
        warmup, iters, repeats: untimed forwards; forwards per timed repeat; timed repeats.
        device: 'cpu' or a CUDA device ('cuda', 'cuda:1').
        precision: 'fp32', or 'bf16' / 'fp16': a copy of the model with weights and activations in that
            dtype, as deployed (`fastpath.timing_model`, which also picks the CPU's faster GEMM path). On
            a CPU without that dtype's arithmetic the label says `emulated` (and a warning is logged
            once); where no kernel runs it, `capability.UnsupportedPrecision` before any forward.
        compile: time `torch.compile(model)`; its first forward (the compilation) is timed apart as
            `compile_s` and never counted in the throughput; the warm-up forwards follow it.
        floor: also time the forward's Linear/Conv calls alone (`floor.gemm_floor_s`).
        batch1_latency: also time single-clip forwards (`latency_b1_ms`), when batch_size > 1.
        paired: a second model taking the same inputs (a pruned cell's unpruned baseline), put through the
            same timing path and timed repeat by repeat between the model's own repeats, so that the drift
            of a shared machine's speed hits both: `paired_clips_per_s`, and the ratio of the two is a
            within-run speed-up. Not with `compile`.

    Returns: `clips_per_s` (batch x iters / median repeat seconds), `frames_per_s` (= clips_per_s x
    frames_out_per_clip), `latency_ms` (median time of one forward), `speed_cv` (stdev / mean of the
    repeat times; 0.0 for a single repeat), `paired_ratio_cv` (that of the per-repeat time ratio to `paired`), `peak_mem_mb`, `floor_s` and `hw_efficiency` (floor_s /
    seconds per forward), `speed_path` (what was timed), `latency_b1_ms`, and the settings used.
    """
    counts = dict(batch_size=batch_size, iters=iters, repeats=repeats, threads=threads if threads is not None else 1)
    bad = [f"{k}={v}" for k, v in counts.items() if v < 1] + ([f"warmup={warmup}"] if warmup < 0 else [])
    if bad:
        raise ValueError(f"measure_speed needs batch_size, iters, repeats, threads >= 1 and warmup >= 0; "
                         f"got {', '.join(bad)}")
    dtype = dtype_of(precision)  # an unknown name fails here, before any work
    cuda = torch.device(device).type == "cuda"
    if not cuda:
        check_precision(precision)  # no kernel on this CPU runs it: one line, before any forward
    allocator = None if cuda else keep_freed_memory()  # before the first forward: process-wide, see .allocator
    old_threads, modes = torch.get_num_threads(), {m: m.training for m in model.modules()}
    old_benchmark = torch.backends.cudnn.benchmark
    if threads is not None:
        torch.set_num_threads(threads)
    compile_s = floor_s = latency_b1 = paired_secs = None
    try:
        model.eval().to(device)
        torch.backends.cudnn.benchmark = cuda  # cuDNN picks its fastest kernels during the warm-up
        inputs = as_inputs(make_input(batch_size))
        inputs = plain = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
        calls = forward_calls(model, inputs)  # one untimed forward: the GEMM path choice and the floor use it
        run, inputs, path = timing_model(model, inputs, precision, device, calls, attention=not compile,
                                         gemm=not compile)
        if allocator:
            path += f", {allocator}"
        if compile:
            run = _compile(run)
            path += ", torch.compile (freezing)"
            compile_s = _first_forward_s(run, inputs, cuda)
        if paired is None or compile:
            secs, peak_mb = _timed_repeats(run, inputs, warmup, iters, repeats, cuda)
        else:
            secs, paired_secs, peak_mb = _alternated(run, timing_model(paired.eval().to(device), plain, precision,
                                                                       device)[0], inputs, warmup, iters, repeats, cuda)
        if floor:
            floor_s = gemm_floor_s(calls, dtype, device, repeats=max(3, repeats))
        if batch1_latency and batch_size > 1:
            one = tuple(x[:1] if isinstance(x, torch.Tensor) else x for x in inputs)
            latency_b1 = statistics.median(_timed_repeats(run, one, max(1, warmup), iters, repeats, cuda,
                                                           memory=False)[0]) / iters
        used_threads = torch.get_num_threads()
    except Exception as e:
        e.add_note(f"while measuring the speed of {type(model).__name__} at batch_size={batch_size} on {device}")
        raise
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cudnn.benchmark = old_benchmark
        for m, training in modes.items():
            m.training = training
    per_forward = statistics.median(secs) / iters
    clips_per_s = batch_size / per_forward
    latency_b1 = per_forward if batch_size == 1 else latency_b1
    return {"clips_per_s": clips_per_s, "frames_per_s": clips_per_s * frames_out_per_clip,
            "latency_ms": per_forward * 1e3, "floor_s": floor_s,
            "hw_efficiency": floor_s / per_forward if floor_s else None, "speed_path": path,
            "latency_b1_ms": latency_b1 * 1e3 if latency_b1 is not None else None,
            "speed_cv": _cv(secs),
            "peak_mem_mb": peak_mb, "threads": used_threads, "batch_size": batch_size, "warmup": warmup,
            "iters": iters, "repeats": repeats, "device": device, "precision": precision, "compile": compile,
            "compile_s": compile_s,
            "paired_clips_per_s": batch_size * iters / statistics.median(paired_secs) if paired_secs else None,
            "paired_ratio_cv": _cv([a / b for a, b in zip(secs, paired_secs)]) if paired_secs else None}


def _cv(values: List[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def _compile(model: nn.Module) -> nn.Module:
    """torch.compile (inductor) with freezing, the way CPU inference is deployed: the timed copy never
    trains, so its weights are constants inductor may fold and pre-pack (oneDNN's blocked layouts on a
    CPU). On an Intel Xeon with AMX, paper MixSTE at batch 1 against the eager timing path: 1.00x in fp32,
    1.20x in bf16 (fused norms and activations), after 15-24 s of compilation. Tests swap the backend."""
    return _Frozen(torch.compile(model))


class _Frozen(nn.Module):
    """Runs a compiled model with inductor's freezing on: it applies when a graph is compiled, which is at
    the first forward of each input shape, so every forward carries the setting."""

    def __init__(self, compiled: nn.Module):
        super().__init__()
        self.compiled = compiled

    def forward(self, *args, **kwargs):
        import torch._inductor.config as inductor

        with inductor.patch(freezing=True):
            return self.compiled(*args, **kwargs)


def _first_forward_s(model: nn.Module, inputs: tuple, cuda: bool) -> float:
    """Seconds of the first forward of a compiled model: tracing and code generation, timed apart."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(*inputs)
        _sync(cuda)
    return time.perf_counter() - t0


def measure_speed_sweep(model: nn.Module, make_input: Callable[[int], Tuple[torch.Tensor, ...]],
                        batch_sizes: Sequence[int], **kwargs) -> List[Dict]:
    """One row per batch size (`kwargs` go to `measure_speed`), each with `status` 'ok' or 'failed'.

    A batch size that runs out of memory becomes a failed row with the `error` and None metrics, and
    the sweep goes on; any other error propagates (it would fail every batch size the same way).
    """
    rows = []
    for b in batch_sizes:
        try:
            rows.append(dict(measure_speed(model, make_input, batch_size=b, **kwargs), status="ok"))
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            rows.append({**dict.fromkeys(SPEED_FIELDS), "batch_size": b, "status": "failed",
                         "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def _timed_repeats(model: nn.Module, inputs: tuple, warmup: int, iters: int, repeats: int,
                   cuda: bool, memory: bool = True) -> Tuple[List[float], Optional[float]]:
    """Warm-up, then the wall-clock seconds of each repeat and (with `memory`) the peak memory in MiB."""
    with torch.inference_mode():
        peak_mb = None
        if memory and not cuda:
            with _MemoryPeak() as mem:  # the first warm-up forward (or one more) is the sampled one
                model(*inputs)
            peak_mb, warmup = mem.delta_mb, warmup - 1
        for _ in range(warmup):
            model(*inputs)
        _sync(cuda)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        secs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(iters):
                model(*inputs)
            _sync(cuda)
            secs.append(time.perf_counter() - t0)
    if cuda and memory:
        peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    return secs, peak_mb


def _alternated(run: nn.Module, pair: nn.Module, inputs: tuple, warmup: int, iters: int, repeats: int,
                cuda: bool) -> Tuple[List[float], List[float], Optional[float]]:
    """`_timed_repeats` of two models, one repeat of each in turn: (run's seconds, pair's seconds, run's
    peak memory). The memory is taken from `run` alone, before the pair has allocated anything (an
    allocator grown by the larger pair would hide the run's own growth): on a CPU from its sampled warm-up
    forward, on CUDA from one repeat (the allocator's peak covers the timed forwards)."""
    _, peak_mb = _timed_repeats(run, inputs, warmup, iters, 1 if cuda else 0, cuda)
    _timed_repeats(pair, inputs, warmup, iters, 0, cuda, memory=False)
    secs, pair_secs = [], []
    for _ in range(repeats):
        secs += _timed_repeats(run, inputs, 0, iters, 1, cuda, memory=False)[0]
        pair_secs += _timed_repeats(pair, inputs, 0, iters, 1, cuda, memory=False)[0]
    return secs, pair_secs, peak_mb


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


class _MemoryPeak:
    """Context manager: samples this process's allocated bytes (`allocator.heap_in_use_bytes`, else the
    resident set size) every `interval_s` in a daemon thread and keeps the highest value. `delta_mb` =
    peak - value on entry, in MiB (None where neither can be read)."""

    _PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.base = self.peak = None
        self._probe = heap_in_use_bytes if heap_in_use_bytes() is not None else self._rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "_MemoryPeak":
        self.base = self.peak = self._probe()
        if self.base is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.base is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._probe() or 0)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):  # the sampler waits, never the forward
            self.peak = max(self.peak, self._probe() or 0)

    @classmethod
    def _rss(cls) -> Optional[int]:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * cls._PAGE  # fields: size resident shared ... (pages)
        except (OSError, ValueError, IndexError):
            return None

    @property
    def delta_mb(self) -> Optional[float]:
        return None if self.base is None else max(0, self.peak - self.base) / 2 ** 20
