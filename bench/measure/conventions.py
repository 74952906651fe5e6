"""One model's computation under every counting convention its users meet, side by side.

Papers and repositories of this field print "FLOPs" that differ by 2x (MACs vs FLOPs), by the frame count
(per clip vs per output frame) and by what is counted (Linear layers only, or attention and norms too).
`count_conventions` runs the real counters on the same model and clip (batch 1):

| key | counter | unit | what it counts |
|---|---|---|---|
| paper | vptbench `gflops` | FLOPs (2 x MACs) | Linear/Conv layers only (the HoT paper's tables) |
| total | vptbench `gflops_total` | FLOPs (2 x MACs) | every op with a handle: attention, norms, pruning |
| fvcore | fvcore 0.1.5 `FlopCountAnalysis`, default handles | MACs (fvcore calls them flops) | traced linear, matmul, bmm, einsum, norms |
| thop | thop 0.1.1 `profile` | MACs | module hooks (nn.Linear, norms, activations); functional ops are invisible |
| torchprofile | torchprofile 0.1.0 `profile_macs` | MACs | traced matmul-like ops, attention included |
| ptflops | ptflops 0.7.5 `get_model_complexity_info`, pytorch backend | MACs | module hooks plus patched functionals |
| flopcounter | torch `FlopCounterMode` (attention on the math kernel) | FLOPs | mm/bmm/conv/SDPA; counts nothing under inference_mode |

The third-party counters are an optional, pinned extra (`pip install -e '.[flops]'`); one that is not
installed gives None and is named in `missing`, never a silent zero. They run on copies (thop and
ptflops add attributes to the modules they visit).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .inputs import Inputs, as_inputs

__all__ = ["CONVENTIONS", "Convention", "ConventionCounts", "count_conventions", "record_fields", "installed_since",
           "INSTALL_HINT"]

INSTALL_HINT = "pip install -e '.[flops]' (thop, torchprofile, ptflops, pinned)"


@dataclass(frozen=True)
class Convention:
    key: str
    counter: str
    unit: str          # "FLOPs" or "MACs"
    counts: str


CONVENTIONS = (
    Convention("paper", "vptbench gflops (HoT's tables)", "FLOPs", "Linear/Conv layers only"),
    Convention("total", "vptbench gflops_total", "FLOPs", "every op with a handle (attention, norms, pruning)"),
    Convention("fvcore", "fvcore 0.1.5 FlopCountAnalysis", "MACs", "traced linear/matmul/bmm/einsum/norms"),
    Convention("thop", "thop 0.1.1 profile", "MACs", "module hooks: nn.Linear, norms, activations"),
    Convention("torchprofile", "torchprofile 0.1.0 profile_macs", "MACs", "traced matmul-like ops"),
    Convention("ptflops", "ptflops 0.7.5 (pytorch backend)", "MACs", "module hooks and patched functionals"),
    Convention("flopcounter", "torch FlopCounterMode", "FLOPs", "mm/bmm/conv/SDPA (math kernel)"),
)


@dataclass
class ConventionCounts:
    giga: Dict[str, Optional[float]]           # convention key -> count per clip, in G of its unit
    frames_out: int                            # output frames per clip (per-frame figures divide by it)
    missing: List[str] = field(default_factory=list)

    def per_frame(self, key: str) -> Optional[float]:
        v = self.giga.get(key)
        return None if v is None else v / self.frames_out


def _quiet():
    """Counters print per-module warnings; keep them off the user's terminal."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _thop(model, inputs):
    import thop

    with _quiet():
        macs, _ = thop.profile(copy.deepcopy(model), inputs=inputs, verbose=False)
    return float(macs)


def _torchprofile(model, inputs):
    import torchprofile

    with _quiet(), torch.no_grad():
        return float(torchprofile.profile_macs(copy.deepcopy(model), inputs))


def _ptflops(model, inputs):
    from ptflops import get_model_complexity_info

    names = [f"x{i}" for i in range(len(inputs))]

    class _Positional(nn.Module):  # ptflops calls model(**input_constructor(shape))
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            return self.inner(*(kw[n] for n in names))

    with _quiet():
        macs, _ = get_model_complexity_info(_Positional(copy.deepcopy(model)), tuple(inputs[0].shape[1:]),
                                            input_constructor=lambda _: dict(zip(names, inputs)),
                                            as_strings=False, print_per_layer_stat=False, backend="pytorch")
    return float(macs)


def _fvcore_default(model, inputs):
    from ._fvcore import FlopCountAnalysis

    with _quiet():
        fca = FlopCountAnalysis(model, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        fca.tracer_warnings("none")
        return float(fca.total())


THIRD_PARTY = {"thop": _thop, "torchprofile": _torchprofile, "ptflops": _ptflops}  # key = the module's name


def installed_since(missing: List[str]) -> List[str]:
    """The counters a record lists as not installed that are importable now (the record can be completed)."""
    return [k for k in missing if k in THIRD_PARTY and importlib.util.find_spec(k) is not None]


def count_conventions(model: nn.Module, inputs: Inputs, frames_out: int, paper_gflops: Optional[float] = None,
                      total_gflops: Optional[float] = None) -> ConventionCounts:
    """Every convention of CONVENTIONS for one clip (batch 1). `paper_gflops` / `total_gflops`: vptbench's
    own counts when the caller has them (they cost a trace); else they are counted here."""
    from .flops import count_flops, flop_counter_mode_gflops

    inputs = as_inputs(inputs)
    model = model.eval()
    if paper_gflops is None or total_gflops is None:
        rep = count_flops(model, inputs)
        paper_gflops, total_gflops = rep.gflops, rep.gflops_total
    giga: Dict[str, Optional[float]] = {"paper": paper_gflops, "total": total_gflops,
                                        "fvcore": _fvcore_default(model, inputs) / 1e9,
                                        "flopcounter": flop_counter_mode_gflops(model, inputs)}
    missing = []
    for key, fn in THIRD_PARTY.items():
        try:
            giga[key] = fn(model, inputs) / 1e9
        except ImportError:
            giga[key], missing = None, missing + [key]
    return ConventionCounts(giga=giga, frames_out=frames_out, missing=missing)


def record_fields(counts: ConventionCounts) -> Dict[str, Optional[float]]:
    """The record's fields: `<key>_g<unit>` per clip for the third-party and torch counters (paper and total
    are the record's `gflops` / `gflops_total`), and the counters that were not installed."""
    out = {f"{c.key}_g{c.unit.lower()}": counts.giga.get(c.key) for c in CONVENTIONS if c.key not in ("paper", "total")}
    out["flops_counters_missing"] = counts.missing
    return out
