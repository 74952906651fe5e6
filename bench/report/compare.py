"""`vptbench compare BASELINE CURRENT`: regression check of one results store (or results.csv) against another.

Cells are aligned by their description (backbone, preset, frames, pipeline, pruner, recoverer, schedule,
data, seed). Per metric:
- params and FLOPs must match exactly (relative 1e-9: a model change shows up here first);
- MPJPE / P-MPJPE may rise by at most `mpjpe_tol` mm;
- throughput (frames/s) is compared as a ratio current/baseline and may drop by at most
  max(speed_tol, 3 × the combined coefficient of variation of the two measurements).
A metric is compared only where both sides measured it. A cell that was ok and now failed is a regression.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Tuple

import pandas as pd

from .frame import CELL_COLUMNS, read_results, stages_label

__all__ = ["compare", "Comparison", "EXACT", "ACCURACY"]

EXACT = ("params_m", "gflops", "gflops_total")
ACCURACY = ("mpjpe_mm", "p_mpjpe_mm")
SPEED = "frames_per_s"
REL_EXACT = 1e-9


@dataclass
class Comparison:
    rows: List[dict] = field(default_factory=list)        # one per (cell, metric) compared
    missing: List[str] = field(default_factory=list)      # cells in the baseline only
    new: List[str] = field(default_factory=list)          # cells in the current run only

    @property
    def regressions(self) -> List[dict]:
        return [r for r in self.rows if r["verdict"] == "REGRESSED"]

    def markdown(self, baseline: str, current: str) -> str:
        bad = self.regressions
        head = "❌ regression" if bad else "✅ no regression"
        lines = [f"## vptbench compare: {head}", "", f"baseline `{baseline}` → current `{current}`: "
                 f"{len({r['cell'] for r in self.rows})} cell(s) compared, {len(bad)} regression(s), "
                 f"{len(self.missing)} missing, {len(self.new)} new.", ""]
        if bad:
            lines += ["### Regressions", ""] + [f"- **{r['cell']}** {r['metric']}: {r['baseline']} → {r['current']} "
                                                 f"({r['change']}; {r['rule']})" for r in bad] + [""]
        if self.rows:
            lines += ["### All compared metrics", "", pd.DataFrame(self.rows).to_markdown(index=False), ""]
        for title, cells in (("Missing cells (in the baseline only)", self.missing),
                             ("New cells (in the current run only)", self.new)):
            if cells:
                lines += [f"### {title}", ""] + [f"- {c}" for c in cells] + [""]
        return "\n".join(lines)


def _cell_name(row) -> str:
    """backbone/method/schedule, as named in a CI summary."""
    method = "baseline" if row["pruner"] == "none" else (
        row["pruner"] if row["pipeline"] == "seq2frame" else f"{row['pruner']}+{row['recoverer']}")
    name = f"{row['backbone']}[{row['preset']}]/{method}/{stages_label(row['schedule'])}"
    extra = [] if row["pipeline"] == "seq2seq" else [row["pipeline"]]
    extra += [] if row["data"] == "realmocap" else [f"data={row['data']}"]
    extra += [] if int(row["seed"]) == 0 else [f"seed={int(row['seed'])}"]
    return name + (f" ({', '.join(extra)})" if extra else "")


def _index(df: pd.DataFrame, path: str) -> pd.DataFrame:
    df = df.copy()
    df["schedule"] = df["schedule"].astype(str)
    df["frames"] = df["frames"].astype(int)
    df["seed"] = df["seed"].astype(int)
    dup = df.duplicated(CELL_COLUMNS, keep=False)
    if dup.any():
        name = _cell_name(df[dup].iloc[0])
        raise ValueError(f"{path} holds several records of cell {name} (differing train/speed settings); "
                         "compare stores of one configuration")
    return df.set_index(CELL_COLUMNS, drop=False)


def _fmt(v: float, metric: str) -> str:
    """Enough digits that an exact-match failure shows the difference."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{12 if metric in EXACT else 6}g}"


def _check(metric: str, b: pd.Series, c: pd.Series, mpjpe_tol: float, speed_tol: float) -> Tuple[str, str, bool]:
    """(change, rule, regressed) for one metric of one cell."""
    bv, cv = float(b[metric]), float(c[metric])
    if metric in EXACT:
        ok = math.isclose(bv, cv, rel_tol=REL_EXACT, abs_tol=0.0)
        return f"{cv - bv:+.6g}", "must match (rel 1e-9)", not ok
    if metric in ACCURACY:
        return f"{cv - bv:+.2f} mm", f"rise ≤ {mpjpe_tol:g} mm", cv - bv > mpjpe_tol
    noise = math.hypot(float(b.get("speed_cv", 0) or 0), float(c.get("speed_cv", 0) or 0))
    allowed = max(speed_tol, 3 * (0.0 if math.isnan(noise) else noise))
    ratio = cv / bv
    return f"×{ratio:.3f}", f"drop ≤ {100 * allowed:.0f}%", ratio < 1 - allowed


def compare(baseline: str, current: str, mpjpe_tol: float = 0.5, speed_tol: float = 0.10) -> Comparison:
    if mpjpe_tol < 0 or not 0 <= speed_tol < 1:
        raise ValueError("--mpjpe-tol must be >= 0 (mm) and --speed-tol in [0, 1) (a fraction, e.g. 0.1)")
    b = _index(read_results(baseline), baseline)
    c = _index(read_results(current), current)
    out = Comparison()
    out.missing = sorted(_cell_name(b.loc[k]) for k in b.index.difference(c.index))
    out.new = sorted(_cell_name(c.loc[k]) for k in c.index.difference(b.index))
    for k in b.index.intersection(c.index):
        br, cr = b.loc[k], c.loc[k]
        name = _cell_name(br)
        if br["status"] == "ok" and cr["status"] != "ok":
            out.rows.append(dict(cell=name, metric="status", baseline="ok", current=cr["status"],
                                 change=str(cr.get("error", "")), rule="must stay ok", verdict="REGRESSED"))
            continue
        for metric in EXACT + ACCURACY + (SPEED,):
            if metric not in br or metric not in cr or pd.isna(br[metric]) or pd.isna(cr[metric]):
                continue
            change, rule, bad = _check(metric, br, cr, mpjpe_tol, speed_tol)
            out.rows.append(dict(cell=name, metric=metric, baseline=_fmt(br[metric], metric),
                                 current=_fmt(cr[metric], metric),
                                 change=change, rule=rule, verdict="REGRESSED" if bad else "ok"))
    return out
