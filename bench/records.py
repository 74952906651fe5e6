"""The schema of a results-store record, in one place and on the stdlib only, so that the store (read by
every worker) and the readers of its records (report, compare; store directories and results.csv alike)
agree on what a record may hold. A record that breaks it is skipped with one warning by whoever reads it:
one bad file must never stop a report, hang it or put a nonsense value in a table (a negative GFLOPs
count would be "best" in bold).

A record is a JSON object. Known fields:
- `key` (non-empty string) and `status` ("ok" or "failed"): always (STORE_REQUIRED: what the store
  itself needs);
- the cell: `backbone`, `preset`, `pipeline`, `pruner`, `recoverer`, `data` (strings), `frames` (int >= 1),
  `seed` (int >= 0), `schedule` (a list of [layer, tokens] integer pairs): required (REQUIRED) by readers
  that put records in tables (report, compare), as they align a record with its row; every record
  `run_cell` writes has them. `mode` (string; absent in records older than modes), `depth` and
  `speed_batch` and `speed_attempts` (int >= 1), `data_label`, `experiment` and `speed_noisy` (string, why a
  timing that stayed noisy after re-measuring is not a clean number): when present;
- metrics (METRICS below): absent, null or NaN means "not measured" (a results.csv writes an absent
  value as an empty cell, read back as NaN); otherwise a real number (not a bool or a string) that is
  finite and in range;
- `error` (string), `per_action_mpjpe_mm` (object: action -> finite number), `config` and `env` (objects).
Other fields (training and speed settings, timings) are free.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

__all__ = ["record_problem", "METRIC_GROUPS", "METRICS", "REQUIRED", "STORE_REQUIRED", "INTS", "STRINGS", "STATUSES",
           "MAX_RECORD_BYTES"]

MAX_RECORD_BYTES = 8 << 20  # a record is a few KB; anything this big is not one
STATUSES = ("ok", "failed")
STORE_REQUIRED = ("key", "status")
REQUIRED = ("key", "status", "backbone", "preset", "pipeline", "pruner", "recoverer", "data", "frames", "seed",
            "schedule")
STRINGS = ("backbone", "preset", "pipeline", "pruner", "recoverer", "data", "mode", "device", "data_label",
           "experiment", "error", "speed_skipped", "speed_path", "pruner_args", "recoverer_args", "weights",
           "weights_sha256", "speed_noisy")
INTS = {"frames": 1, "depth": 1, "seed": 0, "speed_batch": 1, "speed_attempts": 1}  # field -> lowest allowed value
# The fields each metric of `metrics=[...]` writes: the one list the config (valid names), the cell (what
# to measure and merge), the timer, the grid (what makes a record complete) and the reports read.
METRIC_GROUPS: Dict[str, Tuple[str, ...]] = {
    "params": ("params_m",),
    "flops": ("gflops", "gflops_total"),
    # floor_s: the forward's Linear/Conv calls alone (bench.measure.floor); hw_efficiency = floor_s / the
    # forward's seconds; latency_b1_ms: one clip's latency, whatever batch the throughput was timed at
    "speed": ("clips_per_s", "frames_per_s", "latency_ms", "peak_mem_mb", "speed_cv", "floor_s", "hw_efficiency",
              "latency_b1_ms"),
    "accuracy": ("mpjpe_mm", "p_mpjpe_mm", "mpjve_mm"),
}
# metric -> (bound, whether the bound itself is allowed): counts and errors may be 0, rates and times not
METRICS: Dict[str, Tuple[float, bool]] = {
    "params_m": (0.0, True), "gflops": (0.0, True), "gflops_total": (0.0, True),
    "clips_per_s": (0.0, False), "frames_per_s": (0.0, False), "latency_ms": (0.0, False),
    "peak_mem_mb": (0.0, True), "speed_cv": (0.0, True), "floor_s": (0.0, False), "hw_efficiency": (0.0, False),
    "latency_b1_ms": (0.0, False),
    # a pruned seq2seq cell's throughput over its unpruned baseline's, timed alternately in the cell's run
    # (bench.measure.speed `paired`): not part of the speed group, as baselines have none
    "speedup_paired": (0.0, False),
    # the same clip under other counters (bench.measure.conventions), per clip: not part of a metric group
    "fvcore_gmacs": (0.0, True), "thop_gmacs": (0.0, True), "torchprofile_gmacs": (0.0, True),
    "ptflops_gmacs": (0.0, True), "flopcounter_gflops": (0.0, True),
    "mpjpe_mm": (0.0, True), "p_mpjpe_mm": (0.0, True), "mpjve_mm": (0.0, True),
}
DICTS = ("config", "env")
assert set(METRICS) >= {f for fields in METRIC_GROUPS.values() for f in fields}


def _show(value: Any) -> str:
    """`'abc' (str)`: the value, cut short (a record may hold a huge list), and its type."""
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_unmeasured(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _metric(name: str, v: Any) -> Optional[str]:
    bound, inclusive = METRICS[name]
    rule = f"must be a finite number {'>=' if inclusive else '>'} {bound:g}"
    if _is_unmeasured(v):
        return None
    ok = _is_number(v) and math.isfinite(v) and (v >= bound if inclusive else v > bound)
    return None if ok else f"{name} is {_show(v)}, {rule}"


def _schedule(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(s, list) and len(s) == 2 and _is_int(s[0]) and _is_int(s[1]) and s[0] >= 0 and s[1] >= 1
        for s in v)


def _per_action(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _is_number(x) and math.isfinite(x)
                                       for k, x in v.items())


# field -> (test of a present, non-null value, what it must be)
_SHAPES: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "key": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "status": (lambda v: v in STATUSES and isinstance(v, str), "'ok' or 'failed'"),
    "schedule": (_schedule, "a list of [layer, tokens] integer pairs"),
    "per_action_mpjpe_mm": (_per_action, "an object of action -> finite number"),
    **{f: (lambda v: isinstance(v, str), "a string") for f in STRINGS},
    **{f: ((lambda lo: lambda v: _is_int(v) and v >= lo)(lo), f"an integer >= {lo}") for f, lo in INTS.items()},
    **{f: (lambda v: isinstance(v, dict), "an object") for f in DICTS},
}


def record_problem(rec: Any, required: Tuple[str, ...] = REQUIRED) -> Optional[str]:
    """None for a valid record, else a short description of its first problem, e.g.
    "gflops is 'abc' (str), must be a finite number >= 0". `required`: the fields that must be present
    (STORE_REQUIRED for the store itself; every known field present is checked either way)."""
    if not isinstance(rec, dict):
        return f"the record is {_show(rec)}, must be a JSON object"
    for name, (test, what) in _SHAPES.items():  # a wrong value says more than a missing field
        if name not in rec or (rec[name] is None and name not in required):
            continue
        if not test(rec[name]):
            return f"{name} is {_show(rec[name])}, must be {what}"
    for name in required:
        if name not in rec:
            return f"{name} is missing"
    for name in METRICS:
        problem = _metric(name, rec.get(name))
        if problem:
            return problem
    return None
