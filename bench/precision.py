"""Precision names (`bench.config.PRECISIONS`) as torch dtypes and autocast, shared by training (autocast)
and timing (a model copy in that dtype) so that both read a name the same way and reject a bad one in
the same words."""
from __future__ import annotations

import contextlib

import torch

from .config import PRECISIONS

__all__ = ["autocast", "dtype_of", "DTYPES"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dtype_of(precision: str, setting: str = "precision") -> torch.dtype:
    """The torch dtype of a precision name; an unknown name is one line naming `setting`'s valid values."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown {setting} {precision!r}; valid: {', '.join(PRECISIONS)}")
    return DTYPES[precision]


def autocast(device_type: str, precision: str, setting: str = "precision"):
    """fp32 enters no autocast at all, so the fp32 path runs exactly the operations it always did; bf16
    / fp16 autocast keeps the weights in fp32 and runs matmuls in the reduced type (on a CPU with
    AVX512-BF16 or AMX, bf16 is about 2.5x the fp32 throughput; on one without, such as an AVX2-only
    AMD EPYC, torch's own kernels widen bf16 to fp32 and a bf16 linear took 6.6x the fp32 one's time:
    it runs, slowly; outputs move by ~1e-2 relative either way).
    `setting` names the option in the error, e.g. train.precision."""
    dtype = dtype_of(precision, setting)
    return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device_type, dtype=dtype)
