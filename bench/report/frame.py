"""Store records -> one flat pandas frame (results.csv), the cell-identity columns, method names and
seed aggregation (mean ± std over records that differ only in `seed`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable

import numpy as np
import pandas as pd

from ..store import ResultStore, cell_key

__all__ = ["load_frame", "read_results", "method_name", "stages_label", "CELL_COLUMNS", "aggregate_seeds",
           "mixed_variants"]

FLAT_SKIP = ("config", "env", "per_action_mpjpe_mm", "flops_uncounted_ops")
# what tells two cells apart in a table (the hash `key` also covers train/speed settings)
CELL_COLUMNS = ["backbone", "preset", "frames", "pipeline", "pruner", "recoverer", "schedule", "data", "mode", "seed"]
METRICS = ["params_m", "gflops", "gflops_total", "clips_per_s", "frames_per_s", "latency_ms", "peak_mem_mb",
           "speed_cv", "mpjpe_mm", "p_mpjpe_mm", "mpjve_mm"]


def _flatten(rec: Dict[str, Any]) -> Dict[str, Any]:
    row = {k: v for k, v in rec.items() if k not in FLAT_SKIP}
    row["schedule"] = json.dumps(rec.get("schedule", []))
    if isinstance(rec.get("config"), dict):  # every setting but the seed: what may be averaged over seeds
        row["variant"] = cell_key({k: v for k, v in rec["config"].items() if k != "seed"})[:8]
    for k, v in (rec.get("env") or {}).items():
        row[f"env_{k}"] = v
    for k in ("per_action_mpjpe_mm", "flops_uncounted_ops"):
        if k in rec:
            row[k] = json.dumps(rec[k], sort_keys=True)
    return row


def load_frame(records: Iterable[Dict[str, Any]]) -> pd.DataFrame:
    """One row per record, nested fields as JSON strings, sorted by the cell columns."""
    df = pd.DataFrame([_flatten(r) for r in records])
    if df.empty:
        return df
    _default_mode(df)
    order = ["backbone", "preset", "pipeline", "pruner", "recoverer", "schedule"]
    return df.sort_values([c for c in order if c in df]).reset_index(drop=True)


def read_results(path: str) -> pd.DataFrame:
    """A results store directory or a results.csv written by `vptbench report`; ValueError (one line) if
    it is neither or holds no cells."""
    p = Path(path)
    if p.is_dir():
        df = load_frame(ResultStore(p).records())
    elif p.is_file():
        try:
            df = pd.read_csv(p)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a readable results.csv ({type(e).__name__}); "
                             "pass a store directory or the results.csv of `vptbench report`") from None
    else:
        raise ValueError(f"{path} does not exist; pass a results store directory or a results.csv")
    if df.empty:
        raise ValueError(f"{path} holds no records; run some cells into it first (vptbench run ... store=DIR)")
    _default_mode(df)
    missing = [c for c in CELL_COLUMNS + ["status"] if c not in df]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; pass a store or a results.csv of `vptbench report`")
    for col in METRICS:
        if col not in df:
            df[col] = np.nan
    return df


def _default_mode(df: pd.DataFrame) -> None:
    """Records from before `mode` existed trained every model from scratch; records without a config
    (hand-written) are one variant."""
    if "variant" in df:
        df["variant"] = df["variant"].fillna("")
    if "mode" not in df:
        df["mode"] = "scratch"
    df["mode"] = df["mode"].fillna("scratch")


def method_name(row) -> str:
    if row["pruner"] == "none":
        return "baseline"
    rec = "" if row["pipeline"] == "seq2frame" else f" + {row['recoverer']}"
    mode = row.get("mode", "scratch")
    return f"{row['pruner']}{rec}" + ("" if mode in ("scratch", None) or mode != mode else f" [{mode}]")


def stages_label(schedule: str) -> str:
    """'[[1, 18], [2, 9]]' -> '18@1 → 9@2' (tokens kept @ before layer); '–' for no pruning."""
    stages = json.loads(schedule)
    return " → ".join(f"{k}@{l}" for l, k in stages) if stages else "–"


def mixed_variants(df: pd.DataFrame) -> int:
    """How many table cells the store holds in more than one variant (same cell columns, other settings
    such as train.steps or train.loss differ): they are never averaged together, but tables label them alike."""
    if "variant" not in df:
        return 0
    group = [c for c in CELL_COLUMNS + ["speed_batch"] if c != "seed" and c in df]
    return int((df.groupby(group, dropna=False)["variant"].nunique() > 1).sum())


def aggregate_seeds(df: pd.DataFrame, values: Iterable[str]) -> pd.DataFrame:
    """One row per cell over seeds: each value column's mean, `<col>_std` (NaN for one seed) and `n_seeds`."""
    # a speed measured at another batch size is another cell, not another seed; nor is a record whose
    # other settings (training, evaluation, ...) differ: `variant` hashes all of them but the seed
    group = [c for c in CELL_COLUMNS + ["speed_batch", "variant"] if c != "seed" and c in df]
    values = [v for v in values if v in df]
    g = df.groupby(group, sort=False, dropna=False)
    out = g[values].mean()
    std = g[values].std(ddof=1)
    std.columns = [f"{c}_std" for c in std.columns]
    n = (g["mpjpe_mm"].count() if "mpjpe_mm" in df else g.size()).rename("n_seeds")  # seeds with accuracy
    return pd.concat([out, std, n], axis=1).reset_index()
