"""The C allocator's part of the timing path: keep freed memory in the process (glibc `mallopt`).

torch allocates CPU tensors with the C library's malloc. glibc serves a block larger than its mmap
threshold (128 KiB, raised as blocks are freed, but never above 32 MiB) with a fresh `mmap` and hands it
back to the kernel on free, so a model whose activations exceed that page-faults every page of every
large activation in again on every forward: the kernel zeroes each 4 KiB page before the product can
write it. At batch 16 most of MixSTE's activations are such blocks (a (16 x 243 x 17, 1536) qkv output
is 406 MB in fp32). Measured with `measure_speed` on an Intel Xeon with AMX, 2 threads, paper MixSTE at
batch 16: 9.18 s per forward in bf16 with glibc's defaults, 4.58 s with freed memory kept (fp32: 24.1 vs
19.1 s); at batch 1 the difference was within the run-to-run noise.

This is what CPU inference guides do with jemalloc or tcmalloc under LD_PRELOAD; `mallopt` does it from
inside the process: no mmap for large blocks (M_MMAP_MAX = 0) and no trimming of the heap's free top
below 1 GiB (M_TRIM_THRESHOLD), so freed activations are reused, already mapped, by the next forward.
It is process-wide and is not undone (glibc has no way back to its dynamic thresholds), which is why it
is set once, for every model the process times (ours and a reference model alike), and named in every
speed record's `speed_path`. The cost: the process keeps up to its peak heap mapped after a forward
(resident memory does not shrink between cells). `VPTBENCH_MALLOC=system` leaves glibc as it is.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Optional

__all__ = ["keep_freed_memory", "heap_in_use_bytes", "ENV"]

ENV = "VPTBENCH_MALLOC"          # "keep" (default) or "system": leave the C allocator's defaults alone
SETTINGS = ("keep", "system")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc malloc.h
_KEEP_TOP_BYTES = 1 << 30
LABEL = "glibc malloc keeps freed memory"
_state: dict = {}


def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- present in glibc only (not musl)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> Optional[str]:
    """Make glibc keep freed memory for reuse (see the module docstring), once per process. Returns the
    label for `speed_path`, or None where it does not apply (not glibc, opted out, or refused)."""
    if "label" not in _state:
        _state["label"] = _apply()
    return _state["label"]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_in_use_bytes() -> Optional[int]:
    """Bytes malloc has handed out and not had back (heap blocks + mmapped blocks; glibc's `mallinfo2`,
    glibc >= 2.33), or None where it cannot tell. Unlike the resident set size this falls when a tensor
    is freed and rises when one is allocated, whether or not its pages were already mapped, so it still
    measures a forward's activations once freed memory is kept."""
    if "mallinfo2" not in _state:
        libc = _glibc()
        fn = getattr(libc, "mallinfo2", None) if libc is not None else None
        if fn is not None:
            fn.restype = _Mallinfo2
        _state["mallinfo2"] = fn
    fn = _state["mallinfo2"]
    if fn is None:
        return None
    info = fn()
    return info.uordblks + info.hblkhd


def _apply() -> Optional[str]:
    setting = os.environ.get(ENV, "").strip().lower() or "keep"
    if setting not in SETTINGS:
        raise ValueError(f"{ENV}={os.environ[ENV]!r} is not a setting; use {ENV}=system to leave glibc's "
                         f"allocator as it is, or unset it (keep freed memory while timing)")
    if setting == "system":
        return None
    libc = _glibc()
    if libc is None:
        return None
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_TOP_BYTES) == 1
    return LABEL if ok else None
