"""Tables from store records (pandas): one row per cell, paper-style markdown per backbone/preset."""
from __future__ import annotations

import json
from typing import Any, Dict, Iterable

import numpy as np
import pandas as pd

__all__ = ["load_frame", "efficiency_table", "markdown_report", "method_name"]

FLAT_SKIP = ("config", "env", "per_action_mpjpe_mm", "flops_uncounted_ops")


def _flatten(rec: Dict[str, Any]) -> Dict[str, Any]:
    row = {k: v for k, v in rec.items() if k not in FLAT_SKIP}
    row["schedule"] = json.dumps(rec.get("schedule", []))
    for k, v in (rec.get("env") or {}).items():
        row[f"env_{k}"] = v
    for k in ("per_action_mpjpe_mm", "flops_uncounted_ops"):
        if k in rec:
            row[k] = json.dumps(rec[k], sort_keys=True)
    return row


def load_frame(records: Iterable[Dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame([_flatten(r) for r in records])
    if df.empty:
        return df
    order = ["backbone", "preset", "pipeline", "pruner", "recoverer", "schedule"]
    return df.sort_values([c for c in order if c in df]).reset_index(drop=True)


def method_name(row) -> str:
    if row["pruner"] == "none":
        return "baseline"
    rec = "" if row["pipeline"] == "seq2frame" else f" + {row['recoverer']}"
    return f"{row['pruner']}{rec}"


def _stages(schedule: str) -> str:
    stages = json.loads(schedule)
    return " → ".join(f"{k}@{l}" for l, k in stages) if stages else "–"


def efficiency_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per ok cell with deltas against the unpruned baseline of the same backbone, preset,
    pipeline and data: ΔFLOPs %, realised speed-up (frames/s ratio) and ΔMPJPE."""
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return ok
    for col in ("params_m", "gflops", "frames_per_s", "mpjpe_mm", "p_mpjpe_mm", "mpjve_mm"):
        if col not in ok:
            ok[col] = np.nan
    group = ["backbone", "preset", "data"]
    base = ok[ok["pruner"] == "none"].groupby(group)[["gflops", "frames_per_s", "mpjpe_mm"]].first()
    base.columns = [f"base_{c}" for c in base.columns]
    ok = ok.join(base, on=group)
    out = pd.DataFrame({
        "backbone": ok["backbone"], "preset": ok["preset"], "frames": ok["frames"],
        "pipeline": ok["pipeline"], "method": ok.apply(method_name, axis=1),
        "schedule (tokens@layer)": ok["schedule"].map(_stages),
        "params (M)": ok["params_m"], "GFLOPs": ok["gflops"],
        "ΔFLOPs %": 100 * (ok["gflops"] / ok["base_gflops"] - 1),
        "FLOPs ratio": ok["base_gflops"] / ok["gflops"],
        "frames/s": ok["frames_per_s"], "speed-up": ok["frames_per_s"] / ok["base_frames_per_s"],
        "MPJPE": ok["mpjpe_mm"], "P-MPJPE": ok["p_mpjpe_mm"], "MPJVE": ok["mpjve_mm"],
        "ΔMPJPE": ok["mpjpe_mm"] - ok["base_mpjpe_mm"],
    })
    # seq2frame frames/s counts one output frame per clip: its speed-up is only meaningful as a
    # clips/s ratio against a seq2frame baseline, so don't divide across pipelines
    cross = ok["pipeline"] != "seq2seq"
    out.loc[cross, "speed-up"] = np.nan
    return out.dropna(axis=1, how="all").reset_index(drop=True)


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    fmt = {"params (M)": "{:.3f}", "GFLOPs": "{:.3f}", "ΔFLOPs %": "{:+.1f}", "FLOPs ratio": "{:.3f}×",
           "frames/s": "{:.1f}", "speed-up": "{:.3f}×", "MPJPE": "{:.1f}", "P-MPJPE": "{:.1f}",
           "MPJVE": "{:.2f}", "ΔMPJPE": "{:+.1f}"}
    out = df.copy().astype(object)
    for col, f in fmt.items():
        if col in out:
            out[col] = [("–" if pd.isna(v) else f.format(v)) for v in df[col]]
    return out


def markdown_report(df: pd.DataFrame) -> str:
    lines = ["# vptbench results", ""]
    table = efficiency_table(df)
    labels = sorted(set(df.get("data_label", pd.Series(dtype=str)).dropna()) - {""})
    for (backbone, preset), part in table.groupby(["backbone", "preset"], sort=False):
        has_acc = part["MPJPE"].notna().any() if "MPJPE" in part else False
        lines += [f"## {backbone} ({preset} preset, {int(part['frames'].iloc[0])} frames)", ""]
        if has_acc and labels:
            lines += [f"Accuracy on: {', '.join(labels)}. MPJPE / P-MPJPE / MPJVE in mm, mean over actions.", ""]
        shown = part.drop(columns=["backbone", "preset", "frames"]).dropna(axis=1, how="all")
        lines += [_fmt(shown).to_markdown(index=False), ""]
    lines += ["GFLOPs: paper convention, 2 × MACs of Linear/Conv layers for one clip at batch 1. "
              "frames/s: output frames per second (T per clip for seq2seq, 1 for seq2frame), median of repeats, "
              "measured within one run; speed-up = frames/s ratio against the same run's baseline (seq2seq only).", ""]
    failed = df[df["status"] != "ok"]
    if not failed.empty:
        lines += ["## Failed cells", ""]
        lines += [f"- `{r.key}` {r.backbone} {r.pruner}+{r.recoverer} {r.schedule}: {r.error}" for r in failed.itertuples()]
        lines.append("")
    return "\n".join(lines)
