"""Whether a timing can be trusted, and re-measuring one that cannot.

A timing is noisy when its repeats disagree, or when the speed-up it implies is not one fewer FLOPs can
buy. On a shared machine either happens when another job takes the cores for part of the run; the remedy
is to time again, and where that does not help, to say so in the record (`speed_noisy`), so tables and
`compare` never show the number as a clean one.

The checks (each a `speed.*` option, outside the cell identity: they decide how long to measure, not what):

- `max_cv` (default 5 %): the coefficient of variation of the timed repeats, and for a pruned cell timed
  against its unpruned baseline also that of the per-repeat time ratio. On a quiet machine the quickstart's
  cells show 0.4-4 % (median 1.8 %, on an Intel Xeon); a repeat disturbed by another job lands far above.
- `max_realised` (default 1.3): a pruned cell's paired speed-up divided by its FLOPs ratio (the unpruned
  baseline's FLOPs over its own, with recovery). Fewer FLOPs cannot buy more than proportionally less time
  except through caches (a smaller working set), so a speed-up far beyond its FLOPs ratio is a disturbed
  measurement: e.g. 3.20x for a 1.71x FLOPs cut, seen on a shared AMD EPYC. No lower bound: a pruner's own
  work (clustering, gathers) and fixed per-forward costs legitimately realise much less than the FLOPs cut.
- `remeasure_s` (default 20 s): the time spent re-measuring at most. The first attempt that passes is kept;
  if none does, the one with the smallest CV, flagged with why and after how many attempts.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional

__all__ = ["timing_problem", "measure_until_clean"]


def timing_problem(row: Dict, *, max_cv: float, max_realised: float, flops_ratio: Optional[float] = None) -> Optional[str]:
    """Why the timing `row` (from `measure_speed`) is not a clean number, or None."""
    problems = []
    cv = row.get("speed_cv") or 0.0
    if cv > max_cv:
        problems.append(f"repeats disagree (CV {100 * cv:.1f} % > {100 * max_cv:g} %)")
    ratio_cv = row.get("paired_ratio_cv")
    if ratio_cv is not None and ratio_cv > max_cv:
        problems.append(f"the paired time ratio varies (CV {100 * ratio_cv:.1f} % > {100 * max_cv:g} %)")
    paired = row.get("paired_clips_per_s")
    if paired and flops_ratio and row.get("clips_per_s"):
        speedup = row["clips_per_s"] / paired
        realised = speedup / flops_ratio
        if realised > max_realised:
            problems.append(f"speed-up x{speedup:.2f} is {realised:.2f} x its FLOPs ratio x{flops_ratio:.2f} "
                            f"(more than {max_realised:g} x is not what fewer FLOPs buy)")
    return "; ".join(problems) or None


def measure_until_clean(measure: Callable[[], Dict], check: Callable[[Dict], Optional[str]],
                        budget_s: float, clock: Callable[[], float] = time.perf_counter) -> Dict:
    """`measure()` until `check` finds nothing or `budget_s` is spent (the first attempt always runs). The row
    returned gains `speed_attempts` and `speed_noisy` (None, or why, after how many attempts)."""
    t0 = clock()
    attempts = []
    while True:
        row = measure()
        problem = check(row)
        attempts.append((row, problem))
        if problem is None:
            return dict(row, speed_attempts=len(attempts), speed_noisy=None)
        if clock() - t0 >= budget_s:
            break
    row, problem = min(attempts, key=lambda a: a[0].get("speed_cv") or 0.0)
    return dict(row, speed_attempts=len(attempts),
                speed_noisy=f"{problem} after {len(attempts)} attempt(s) in {clock() - t0:.0f} s")
