"""What this CPU can run, asked of torch and oneDNN rather than read off the vendor's name.

The timing path depends on three facts that differ between the CPUs this project runs on (an AMD EPYC
with AVX2 only; an Intel Xeon with AVX-512 and AMX):

- whether oneDNN's linear primitive exists for a dtype. It is *probed*: the primitive is created once, on
  a small shape, and the answer cached for the process. On an AVX2-only CPU oneDNN has no bf16 or fp16
  inner product at all ("could not create a primitive descriptor"); on a CPU with AVX-512 it has bf16.
  `ONEDNN_MAX_CPU_ISA=AVX2` (oneDNN's own setting, read when the process starts) makes a larger CPU
  answer as an AVX2 one does, which is how the tests exercise both answers on either machine;
- whether the CPU has arithmetic for a reduced precision (torch's ISA queries: AVX512-BF16 or AMX for
  bf16; AVX512-FP16 or AMX-FP16 for fp16) and oneDNN can use it. Without both, a bf16/fp16 timing
  still runs, on torch's own kernels, which widen to fp32 inside every product (on the AMD EPYC, a
  bf16 linear took 6.6x the fp32 one's time): the record says `emulated` and the run warns once that
  such a timing says little about deployment;
- whether torch's own kernels run the dtype at all: the ops the models use (linear, layer norm, GELU,
  softmax, fused attention, convolution, batch norm) on small probe tensors. Where one fails, no path
  works and a cell asking for that precision is refused in one line before compute.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from ..precision import DTYPES, dtype_of

__all__ = ["PrecisionSupport", "UnsupportedPrecision", "cpu_isa", "cpu_features", "onednn_linear_works",
           "precision_support", "check_precision", "warn_if_emulated"]
log = logging.getLogger(__name__)
_PRECISION_OF = {dtype: name for name, dtype in DTYPES.items()}


class UnsupportedPrecision(ValueError):
    """A precision no kernel on this CPU runs: a one-line user error (exit 2), raised before compute."""


def cpu_isa() -> str:
    """The vector ISA torch's own kernels dispatch to here ('AVX2', 'AVX512', 'DEFAULT', ...)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - an unknown build: say so rather than fail a timing
        return "unknown"


def _query(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # noqa: BLE001 - a query this build lacks counts as absent
        return False


@lru_cache(maxsize=1)
def cpu_features() -> Dict[str, bool]:
    """The CPU's instruction-set extensions that matter to the timing path, from torch's queries."""
    return {name: _query(f"_is_{name}_supported") for name in
            ("avx2", "avx512", "avx512_bf16", "vnni", "amx_tile", "amx_fp16")}


def _has_reduced_arithmetic(dtype: torch.dtype) -> bool:
    """Does the CPU compute in `dtype` (not widen it to fp32 in software)? x86 through torch's ISA queries;
    elsewhere (aarch64) oneDNN's own check, which there asks the CPU for its bf16/fp16 extensions."""
    f = cpu_features()
    mkldnn = torch.ops.mkldnn
    if dtype == torch.bfloat16:
        if f["avx2"] or f["avx512"]:  # an x86 CPU: AVX512-BF16 or AMX (whose tiles come with bf16)
            return f["avx512_bf16"] or f["amx_tile"]
        return _call(getattr(mkldnn, "_is_mkldnn_bf16_supported", None))
    if dtype == torch.float16:
        if f["avx2"] or f["avx512"]:
            return f["amx_fp16"] or (f["avx512"] and _call(getattr(mkldnn, "_is_mkldnn_fp16_supported", None)))
        return _call(getattr(mkldnn, "_is_mkldnn_fp16_supported", None))
    return True


def _call(fn: Optional[Callable[[], bool]]) -> bool:
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # noqa: BLE001
        return False


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """oneDNN's own linear (the op inductor's freezing emits), bias fused into the product."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@lru_cache(maxsize=None)
def onednn_linear_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN's linear primitive can be created for `dtype` on this CPU: created once on a probe
    shape (a failure is a RuntimeError from oneDNN, caught here), the answer kept for the process."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    x, w, b = torch.randn(4, 16, dtype=dtype), torch.randn(8, 16, dtype=dtype), torch.zeros(8, dtype=dtype)
    try:
        with torch.inference_mode():
            out = onednn_linear(x, w, b)
        return out.shape == (4, 8) and bool(torch.isfinite(out).all())
    except RuntimeError:
        return False


def _torch_kernels(dtype: torch.dtype) -> Dict[str, Callable[[], object]]:
    x, w = torch.randn(2, 9, 16, dtype=dtype), torch.randn(8, 16, dtype=dtype)
    q = torch.randn(2, 2, 9, 8, dtype=dtype)
    return {
        "linear": lambda: F.linear(x, w, torch.zeros(8, dtype=dtype)),
        "layer_norm": lambda: F.layer_norm(x, (16,)),
        "gelu": lambda: F.gelu(x),
        "softmax": lambda: torch.softmax(q @ q.transpose(-1, -2), -1),
        "scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(q, q, q),
        "conv1d": lambda: F.conv1d(x.transpose(1, 2), torch.randn(8, 16, 3, dtype=dtype), padding=1),
        "conv2d": lambda: F.conv2d(x[:, None], torch.randn(4, 1, 3, 3, dtype=dtype), padding=1),
        "batch_norm": lambda: F.batch_norm(x.transpose(1, 2), torch.zeros(16, dtype=dtype),
                                           torch.ones(16, dtype=dtype)),
    }


@lru_cache(maxsize=None)
def torch_kernel_failure(dtype: torch.dtype) -> Optional[str]:
    """None when torch's own CPU kernels run every op the models use in `dtype`, else 'op: first line of
    its error' for the first that fails."""
    with torch.inference_mode():
        for name, run in _torch_kernels(dtype).items():
            try:
                run()
            except (RuntimeError, NotImplementedError) as e:
                return f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None


@dataclass(frozen=True)
class PrecisionSupport:
    """How a precision runs on this CPU. `emulated`: the products run without arithmetic of that dtype
    (`why` says which fact decided it); `refusal`: None, or why no kernel runs it at all."""

    precision: str
    isa: str
    native: bool            # the CPU has arithmetic for the dtype (torch's ISA queries)
    onednn_linear: bool     # oneDNN's linear primitive exists for the dtype (probed)
    refusal: Optional[str]  # torch's own kernels fail on an op the models use

    @property
    def emulated(self) -> bool:
        return self.precision != "fp32" and not (self.native and self.onednn_linear)

    @property
    def why(self) -> str:
        if not self.native:
            return f"this CPU ({self.isa}) has no {self.precision} arithmetic"
        return f"oneDNN has no {self.precision} linear here (ONEDNN_MAX_CPU_ISA set below the CPU's?)"

    def label(self) -> str:
        """What the speed_path says of the dtype, e.g. 'bf16 weights and activations, emulated (...)'."""
        if self.precision == "fp32":
            return "fp32"
        base = f"{self.precision} weights and activations"
        return f"{base}, emulated ({self.why}: torch's own kernels, widened to fp32)" if self.emulated else base


def precision_support(precision: str) -> PrecisionSupport:
    """Every fact above for one precision name (an unknown name is the usual one-line error)."""
    dtype = dtype_of(precision)
    return PrecisionSupport(precision=precision, isa=cpu_isa(), native=_has_reduced_arithmetic(dtype),
                            onednn_linear=onednn_linear_works(dtype), refusal=torch_kernel_failure(dtype))


def check_precision(precision: str, setting: str = "speed.precision") -> PrecisionSupport:
    """The precision's support on this CPU, or UnsupportedPrecision (one line, naming the fix) when no
    kernel here runs it."""
    support = precision_support(precision)
    if support.refusal:
        raise UnsupportedPrecision(f"{setting}={precision} cannot run on this CPU ({support.isa}): torch's "
                                   f"{support.refusal}; use {setting}=fp32 or a machine with {precision} kernels")
    return support


_warned: set = set()


def warn_if_emulated(support: PrecisionSupport) -> None:
    """One warning per precision and process: an emulated timing is slow for reasons deployment lacks."""
    if support.emulated and support.precision not in _warned:
        _warned.add(support.precision)
        log.warning("%s timing is emulated: %s; torch's own kernels widen it to fp32, so the figure says little "
                    "about deployment on a CPU with %s arithmetic or a GPU", support.precision, support.why,
                    support.precision)


def precision_name(dtype: torch.dtype) -> str:
    return _PRECISION_OF[dtype]
