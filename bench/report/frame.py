"""Store records -> one flat pandas frame (results.csv), the cell-identity columns, method names and
seed aggregation (mean ± std over records that differ only in `seed`).

Records are validated against the schema in `bench.records` wherever they are read: the store skips a
bad record file, `read_results` a bad results.csv row, each with one warning naming it, so a report or a
comparison is built from the good records only."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, Iterable

import numpy as np
import pandas as pd

from ..records import INTS, METRICS as METRIC_RANGES, REQUIRED, STRINGS, record_problem
from ..store import ResultStore, cell_key

__all__ = ["load_frame", "read_results", "method_name", "stages_label", "CELL_COLUMNS", "aggregate_seeds",
           "mixed_variants"]

FLAT_SKIP = ("config", "env", "per_action_mpjpe_mm", "flops_uncounted_ops", "flops_counters_missing")
# what tells two cells apart in a table (the hash `key` also covers train/speed settings)
# `device` (cpu | cuda): a GPU timing is never put next to a CPU one as if they were one cell
# `weights_id` (the first 12 hex digits of a `weights=` file's sha256, "" for weights vptbench trained): two
# checkpoints of one backbone are two blocks, each pruned cell paired with its own file's unpruned evaluation
# `eval_protocol` ("" for the VideoPose3D/HoT one, else e.g. motionbert: MotionBERT's 2.5D test, which its
# published files are scored by): errors of two protocols are never put side by side as one
CELL_COLUMNS = ["backbone", "preset", "frames", "pipeline", "pruner", "recoverer", "schedule", "data", "mode", "device",
                "weights_id", "eval_protocol", "seed"]
# columns records written before they existed lack, and the value those records meant
DEFAULTED = {"mode": "scratch", "device": "cpu", "weights_id": "", "eval_protocol": "", "pruner_args": "",
             "recoverer_args": ""}
METRICS = list(METRIC_RANGES)
log = logging.getLogger(__name__)


def _flatten(rec: Dict[str, Any]) -> Dict[str, Any]:
    row = {k: v for k, v in rec.items() if k not in FLAT_SKIP}
    row["schedule"] = json.dumps(rec.get("schedule", []))
    row["weights_id"] = str(rec.get("weights_sha256") or "")[:12]
    row["eval_protocol"] = "" if rec.get("eval_protocol") in (None, "hot") else str(rec["eval_protocol"])
    if isinstance(rec.get("config"), dict):  # every setting but the seed: what may be averaged over seeds
        row["variant"] = cell_key({k: v for k, v in rec["config"].items() if k != "seed"})[:8]
    for k, v in (rec.get("env") or {}).items():
        row[f"env_{k}"] = v
    for k in ("per_action_mpjpe_mm", "flops_uncounted_ops", "flops_counters_missing"):
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
    it is neither or holds no cells. Invalid records (store) and rows (csv) are skipped with a warning."""
    p = Path(path)
    if p.is_dir():
        df = load_frame(ResultStore(p).records(required=REQUIRED))
    elif p.is_file():
        df = _read_csv(p)
    else:
        raise ValueError(f"{path} does not exist; pass a results store directory or a results.csv")
    if df.empty:
        raise ValueError(f"{path} holds no valid records; run some cells into it first (vptbench run ... store=DIR)")
    _default_mode(df)
    missing = [c for c in CELL_COLUMNS + ["key", "status"] if c not in df]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; pass a store or a results.csv of `vptbench report`")
    for col in METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    return df


def _read_csv(p: Path) -> pd.DataFrame:
    """The valid rows of a results.csv (its text columns read as text: a key of digits stays a string)."""
    try:
        # a commit hash is text: "4739e1234567" would read as a float (inf), "012345678901" lose its zero
        df = pd.read_csv(p, dtype={c: str for c in ("key", "status", "schedule", "weights_id", "eval_protocol",
                                                                 "env_git_commit", *STRINGS)})
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} is not a readable results.csv ({type(e).__name__}); "
                         "pass a store directory or the results.csv of `vptbench report`") from None
    missing = [c for c in CELL_COLUMNS + ["key", "status"] if c not in df and c not in DEFAULTED]
    if missing or df.empty:
        return df  # read_results names what is wrong
    good = []
    for i, row in enumerate(df.to_dict("records")):
        problem = record_problem(_csv_record(row))
        if problem:
            log.warning("skipping row %d of %s (line %d): %s; fix or delete the row", i + 1, p, i + 2, problem)
        good.append(problem is None)
    df = df[good].reset_index(drop=True)
    for col in INTS:  # all valid now; a column with an empty cell stays float (NaN)
        if col in df:
            df[col] = pd.to_numeric(df[col])
            df[col] = df[col] if df[col].isna().any() else df[col].astype(int)
    return df


def _csv_record(row: Dict[str, Any]) -> Dict[str, Any]:
    """A csv row as the record it was flattened from, for the schema check: an empty cell is absent, numbers
    written as text are numbers, JSON columns are parsed."""
    rec = {}
    for k, v in row.items():
        v = v.item() if isinstance(v, np.generic) else v
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if k in ("schedule", "per_action_mpjpe_mm"):
            v = _json_or_text(v)
        elif k in METRICS and isinstance(v, str):
            v = _number_or_text(v)
        elif k in INTS:
            v = _int_or_same(_number_or_text(v) if isinstance(v, str) else v)
        rec[k] = v
    return rec


def _json_or_text(v: Any) -> Any:
    try:
        return json.loads(v) if isinstance(v, str) else v
    except (ValueError, RecursionError):
        return v


def _number_or_text(v: str) -> Any:
    try:
        return float(v)
    except ValueError:
        return v


def _int_or_same(v: Any) -> Any:
    """27.0 -> 27: a csv column with an empty cell is read as floats."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _default_mode(df: pd.DataFrame) -> None:
    """Records from before `mode` existed trained every model from scratch, records from before `device`
    ran on the CPU; records without a config (hand-written) are one variant."""
    if "variant" in df:
        df["variant"] = df["variant"].fillna("")
    for col, value in DEFAULTED.items():
        df[col] = df[col].fillna(value) if col in df else value
    for name in ("pruner", "recoverer"):  # a variant (non-default options) is a strategy of its own in every table
        if name in df:
            args = df[f"{name}_args"].astype(str)
            labelled = ~df[name].astype(str).str.endswith(")")
            df[name] = df[name].where((args == "") | ~labelled, df[name].astype(str) + "(" + args + ")")


def method_name(row) -> str:
    if row["pruner"] == "none":  # a supplied checkpoint evaluated as loaded, or the model vptbench trained
        return "baseline [eval]" if row.get("mode") == "eval" else "baseline"
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


def noisy_timing(row) -> bool:
    """Whether a row's (or record's) timing stayed noisy after re-measuring (bench.measure.quality)."""
    v = row.get("speed_noisy")
    return isinstance(v, str) and v.strip() != ""


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
