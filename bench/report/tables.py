"""Paper-style tables from store records: efficiency, pruner × recoverer, layer × tokens and the
hierarchical schedules. Each appears only when the store has the cells it needs; accuracy is the mean
over seeds (± std, n) where several seeds exist."""
from __future__ import annotations

import json
from typing import List

import numpy as np
import pandas as pd

from ..config import MODES
from .frame import aggregate_seeds, mixed_variants, load_frame, method_name, noisy_timing, stages_label
from .render import HIGHER, LOWER, Table, best_mask

__all__ = ["load_frame", "efficiency_table", "build_tables", "markdown_report", "method_name"]

VALUES = ["params_m", "gflops", "frames_per_s", "speedup_paired", "hw_efficiency", "latency_b1_ms", "mpjpe_mm",
          "p_mpjpe_mm", "mpjve_mm"]
FMT = {"params (M)": "{:.3f}", "GFLOPs": "{:.3f}", "ΔFLOPs %": "{:+.1f}", "FLOPs ratio": "{:.3f}×",
       "frames/s": "{:.1f}", "speed-up": "{:.3f}×", "hw eff.": "{:.2f}", "ms (b=1)": "{:.2f}", "MPJPE": "{:.1f}", "P-MPJPE": "{:.1f}",
       "MPJVE": "{:.2f}", "ΔMPJPE": "{:+.1f}", "frames": "{:.0f}", "seeds": "{:.0f}", "stages": "{:.0f}"}
BEST = {"GFLOPs": LOWER, "ΔFLOPs %": LOWER, "frames/s": HIGHER, "speed-up": HIGHER, "hw eff.": HIGHER,
        "ms (b=1)": LOWER, "MPJPE": LOWER,
        "P-MPJPE": LOWER, "ΔMPJPE": LOWER}
STD = {"MPJPE": "MPJPE std", "P-MPJPE": "P-MPJPE std"}
BLOCK = ["backbone", "preset", "data", "device", "weights_id", "eval_protocol"]  # deltas and speed-ups within one block, never across


def efficiency_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per ok cell (seeds averaged) with deltas against the unpruned baseline of the same
    backbone, preset and data: ΔFLOPs %, FLOPs ratio, realised speed-up (frames/s ratio) and ΔMPJPE."""
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return ok
    for col in VALUES:
        if col not in ok:
            ok[col] = np.nan
    # a timing still noisy after re-measuring (bench.measure.quality): counted over seeds, flagged in tables
    ok["noisy_timings"] = ok.apply(noisy_timing, axis=1).astype(float)
    ok = aggregate_seeds(ok, VALUES + ["noisy_timings"])
    base = ok[ok["pruner"] == "none"].groupby(BLOCK)[["gflops", "frames_per_s", "mpjpe_mm"]].first()
    base.columns = [f"base_{c}" for c in base.columns]
    ok = ok.join(base, on=BLOCK)
    stages = ok["schedule"].map(lambda s: len(json.loads(s)))
    out = pd.DataFrame({
        "backbone": ok["backbone"], "preset": ok["preset"], "data": ok["data"], "device": ok["device"],
        "weights_id": ok["weights_id"], "eval_protocol": ok["eval_protocol"],
        "frames": ok["frames"],
        "pipeline": ok["pipeline"], "pruner": ok["pruner"], "recoverer": ok["recoverer"], "mode": ok["mode"],
        "method": ok.apply(method_name, axis=1), "schedule": ok["schedule"], "stages": stages,
        "schedule (tokens@layer)": ok["schedule"].map(stages_label),
        "params (M)": ok["params_m"], "GFLOPs": ok["gflops"],
        "ΔFLOPs %": 100 * (ok["gflops"] / ok["base_gflops"] - 1),
        "FLOPs ratio": ok["base_gflops"] / ok["gflops"],
        # the within-run ratio where the cell timed its baseline beside it, else the ratio of the two records
        "frames/s": ok["frames_per_s"],
        "speed-up": ok["speedup_paired"].fillna(ok["frames_per_s"] / ok["base_frames_per_s"]),
        "hw eff.": ok["hw_efficiency"], "ms (b=1)": ok["latency_b1_ms"],
        "MPJPE": ok["mpjpe_mm"], "MPJPE std": ok["mpjpe_mm_std"], "P-MPJPE": ok["p_mpjpe_mm"],
        "P-MPJPE std": ok["p_mpjpe_mm_std"], "MPJVE": ok["mpjve_mm"],
        "ΔMPJPE": ok["mpjpe_mm"] - ok["base_mpjpe_mm"], "seeds": ok["n_seeds"],
        "noisy timing": ok["noisy_timings"] > 0,
    })
    # seq2frame frames/s counts one output frame per clip: no speed-up across pipelines
    out.loc[out["pipeline"] != "seq2seq", "speed-up"] = np.nan
    out["pruned"] = out["pruner"] != "none"  # baseline first, then by method and schedule
    out = out.sort_values(BLOCK + ["pruned", "method", "stages", "schedule (tokens@layer)"], kind="stable")
    return out.drop(columns="pruned").reset_index(drop=True)


TIMED = ("frames/s", "speed-up", "hw eff.", "ms (b=1)")  # the columns a noisy timing makes unclean
NOISY_NOTE = ("† a noisy timing: its repeats disagreed (or its speed-up exceeded what its FLOPs cut allows) and "
              "still did after re-measuring for speed.remeasure_s; the record's speed_noisy says why. Not a clean "
              "number: rerun it on a quiet machine (rerun=true metrics=[speed]).")


def _table(name, title, frame, note="", whole=False, best=None) -> Table:
    frame = frame.reset_index(drop=True)
    flagged = frame.pop("noisy timing").astype(bool) if "noisy timing" in frame else pd.Series(False, index=frame.index)
    frame = frame.dropna(axis=1, how="all")
    if "seeds" in frame and frame["seeds"].max() <= 1:
        frame = frame.drop(columns="seeds")
    timed = [c for c in TIMED if c in frame]
    noisy = pd.DataFrame({c: flagged for c in timed}) if flagged.any() else None
    clean = frame.copy()
    clean.loc[flagged, timed] = np.nan  # a noisy number never competes for bold
    directions = best if best is not None else BEST
    return Table(name, title, frame, fmt={c: FMT.get(c, "{:.1f}") for c in frame if pd.api.types.is_numeric_dtype(frame[c])},
                 std={c: s for c, s in STD.items() if c in frame and s in frame},
                 best=best_mask(clean, {c: d for c, d in directions.items() if c in frame}, whole),
                 note="\n\n".join(n for n in (note, NOISY_NOTE if noisy is not None else "") if n), noisy=noisy)


def _efficiency(t: pd.DataFrame) -> List[Table]:
    cols = ["backbone", "method", "pipeline", "schedule (tokens@layer)", "frames", "params (M)", "GFLOPs",
            "ΔFLOPs %", "frames/s", "speed-up", "hw eff.", "ms (b=1)", "MPJPE", "MPJPE std", "P-MPJPE", "P-MPJPE std", "ΔMPJPE", "seeds",
            "noisy timing"]
    out = []
    for (preset, data, device), part in t.groupby(["preset", "data", "device"], sort=False):
        part = part if part["pipeline"].nunique() > 1 else part.drop(columns="pipeline")
        on = "" if device == "cpu" else f", on {device}"
        out.append(_table("efficiency", f"Efficiency ({preset} preset, {data} data{on})",
                          part[[c for c in cols if c in part]], note=_tra_note(part)))
    return out


def _tra_note(part: pd.DataFrame) -> str:
    """Why learnable recovery trails where it does, said next to the numbers (a newcomer reads +40 mm as
    "TRA is broken")."""
    tra = part[part["recoverer"].str.startswith("attention") & part["MPJPE"].notna()] if "MPJPE" in part else part.iloc[:0]
    free = part[part["recoverer"].isin(["interpolation", "nearest"]) & part["MPJPE"].notna()] if "MPJPE" in part else tra
    if tra.empty or free.empty or tra["MPJPE"].min() <= free["MPJPE"].max():
        return ""
    return ("TRA (recoverer attention) learns to restore the frames from zero-initialised queries, and the "
            "parameter-free recoverers (interpolation, nearest) need no training: at a short training budget "
            "like this grid's, TRA's ΔMPJPE measures the budget more than the method (the papers train for "
            "hundreds of epochs). The finetune_vs_zeroshot study compares recoverers at equal budgets, with "
            "position-aware queries (recoverer.args.query_init=pos) too.")


def _label(key, names=BLOCK) -> str:
    """A table's block as its title names it; the CPU, where most cells run, and vptbench's own trained
    weights go unsaid."""
    parts = key if isinstance(key, tuple) else (key,)
    shown = {"weights_id": lambda v: f"weights {v[:8]}", "eval_protocol": lambda v: f"{v} protocol"}
    return ", ".join(shown.get(name, str)(v) for name, v in zip(names, parts) if v not in ("cpu", ""))


def _pivots(t: pd.DataFrame, rows: str, cols: str, value: str, name: str, title: str, keys) -> List[Table]:
    out = []
    for key, part in t.groupby(keys, sort=False):
        if part[rows].nunique() < 2 or part[cols].nunique() < 2 or part[value].isna().all():
            continue
        grid = part.pivot_table(index=rows, columns=cols, values=value, aggfunc="first")
        frame = grid.reset_index()
        frame.columns = [str(c) for c in frame.columns]
        frame[rows] = frame[rows].astype(str)
        label = _label(key, keys)
        direction = {c: LOWER for c in frame.columns[1:]}
        tab = Table(name, f"{title} ({label})", frame, fmt={c: FMT.get(value, "{:.3f}") for c in frame.columns[1:]},
                    best=best_mask(frame, direction, whole_table=True))
        out.append(tab)
    return out


def _keeps_all(schedule: str, frames) -> bool:
    stages = json.loads(schedule)
    return bool(stages) and all(k == frames for _, k in stages)


def _paired_delta(df: pd.DataFrame) -> pd.DataFrame:
    """ΔMPJPE of each pruned record against the same seed's baseline (which finetune/zeroshot cells start
    from), and "Δ ctrl" against the same seed's control of its mode: a pruned cell that keeps every frame
    (e.g. uniform at T of T), so it had the same training but prunes nothing. Mean and std over seeds:
    the baseline's own seed spread cancels out."""
    keys = BLOCK + ["pruner", "recoverer", "schedule (tokens@layer)", "mode"]
    cols = ["Δ", "Δ std", "Δ ctrl", "Δ ctrl std"]
    if "mpjpe_mm" not in df:
        return pd.DataFrame(columns=cols, index=pd.MultiIndex.from_tuples([], names=keys))
    ok = df[(df["status"] == "ok") & df["mpjpe_mm"].notna()]
    base = ok[ok["pruner"] == "none"].groupby(BLOCK + ["seed"])["mpjpe_mm"].first().rename("base")
    pruned = ok[ok["pruner"] != "none"]
    keeps_all = pd.Series([_keeps_all(s, f) for s, f in zip(pruned["schedule"], pruned["frames"])],
                          index=pruned.index, dtype=bool)
    control = pruned[keeps_all]
    control = control.groupby(BLOCK + ["mode", "seed"])["mpjpe_mm"].first().rename("ctrl")
    pruned = pruned.join(base, on=BLOCK + ["seed"]).join(control, on=BLOCK + ["mode", "seed"])
    pruned = pruned.assign(delta=pruned["mpjpe_mm"] - pruned["base"], delta_ctrl=pruned["mpjpe_mm"] - pruned["ctrl"],
                           **{"schedule (tokens@layer)": pruned["schedule"].map(stages_label)})
    g = pruned.groupby(keys)
    out = pd.concat([g["delta"].mean(), g["delta"].std(ddof=1), g["delta_ctrl"].mean(), g["delta_ctrl"].std(ddof=1)], axis=1)
    out.columns = cols
    return out


def _modes(t: pd.DataFrame, df: pd.DataFrame) -> List[Table]:
    """Each pruned method in every mode the store holds (e.g. finetune vs zeroshot), side by side:
    MPJPE mean ± std over seeds, the paired Δ against the same seed's baseline (mean ± std), the paired
    Δ against a same-mode control where a trained mode has one, and the number of seeds, per mode."""
    t = t.join(_paired_delta(df), on=BLOCK + ["pruner", "recoverer", "schedule (tokens@layer)", "mode"])
    out = []
    for key, part in t.groupby(BLOCK, sort=False):
        pruned = part[(part["pruner"] != "none") & part["MPJPE"].notna()]
        modes = [m for m in MODES if m in set(pruned["mode"])]
        if len(modes) < 2:
            continue
        rows = ["pruner", "recoverer", "schedule (tokens@layer)"]
        values = ["MPJPE", "MPJPE std", "Δ", "Δ std", "Δ ctrl", "Δ ctrl std", "seeds"]
        grid = pruned.pivot_table(index=rows + ["stages"], columns="mode", values=values, aggfunc="first", dropna=False)
        frame = pruned.groupby(rows + ["stages"], sort=False)["GFLOPs"].first().rename("GFLOPs").to_frame()
        std = {}
        for m in modes:
            col = lambda v: grid[(v, m)] if (v, m) in grid else np.nan  # noqa: E731
            frame[m], frame[f"{m} std"] = col("MPJPE"), col("MPJPE std")
            frame[f"Δ {m}"], frame[f"Δ {m} std"] = col("Δ"), col("Δ std")
            std.update({m: f"{m} std", f"Δ {m}": f"Δ {m} std"})
            # a zeroshot control is the baseline itself: only trained modes get the column
            if m != "zeroshot" and pd.Series(col("Δ ctrl")).notna().any():
                frame[f"Δ ctrl {m}"], frame[f"Δ ctrl {m} std"] = col("Δ ctrl"), col("Δ ctrl std")
                std[f"Δ ctrl {m}"] = f"Δ ctrl {m} std"
            frame[f"n {m}"] = col("seeds")
        frame = frame.reset_index().sort_values(["pruner", "recoverer", "stages", "schedule (tokens@layer)"])
        frame = frame.drop(columns="stages").reset_index(drop=True)
        note = ("Δ: paired difference to the baseline trained with the same seed, mean ± std over seeds (the "
                "baseline's own seed spread cancels out).")
        if any(c.startswith("Δ ctrl") for c in frame):
            note += (" Δ ctrl: the same against the same seed's control of that mode, a cell that keeps every "
                     "frame (trained the same way, prunes nothing).")
        base = part[part["pruner"] == "none"]
        if not base.empty and pd.notna(base["MPJPE"].iloc[0]):
            b = base.iloc[0]
            spread = f" ± {b['MPJPE std']:.1f}" if pd.notna(b["MPJPE std"]) else ""
            note = (f"Baseline (unpruned, trained once per seed): {b['GFLOPs']:.4f} GFLOPs, MPJPE {b['MPJPE']:.1f}{spread} mm "
                    f"(n={b['seeds']:.0f}). " + note)
        tab = Table("modes", f"MPJPE (mm) by evaluation mode ({_label(key)})", frame,
                    fmt={c: ("{:.4f}" if c == "GFLOPs" else "{:+.1f}" if c.startswith("Δ") else "{:.0f}" if c.startswith("n ")
                             else "{:.1f}") for c in frame.columns if c not in rows},
                    std=std, best=best_mask(frame, {m: LOWER for m in modes}), note=note)
        out.append(tab)
    return out


# record field -> column of the flops_conventions table (per clip; the unit is in the name)
CONVENTION_COLUMNS = {"gflops": "vptbench GFLOPs", "gflops_total": "vptbench total GFLOPs",
                      "fvcore_gmacs": "fvcore GMACs", "thop_gmacs": "thop GMACs", "torchprofile_gmacs": "torchprofile GMACs",
                      "ptflops_gmacs": "ptflops GMACs", "flopcounter_gflops": "FlopCounterMode GFLOPs"}


def _flops_conventions(df: pd.DataFrame) -> List[Table]:
    """Each model under every counter users meet, per clip at batch 1 (divide by `frames out` for per frame)."""
    counted = [c for c in CONVENTION_COLUMNS if c not in ("gflops", "gflops_total")]
    if not any(c in df and df[c].notna().any() for c in counted):
        return []
    ok = df[(df["status"] == "ok") & df["gflops"].notna()].drop_duplicates(
        ["backbone", "preset", "pipeline", "pruner", "recoverer", "schedule"])
    out = []
    for (backbone, preset), part in ok.groupby(["backbone", "preset"], sort=False):
        frame = pd.DataFrame({"method": part.apply(method_name, axis=1).str.replace(r" \[\w+\]$", "", regex=True),
                              "schedule (tokens@layer)": part["schedule"].map(stages_label),
                              "frames out": part.get("frames_out", part["frames"])})
        for col, name in CONVENTION_COLUMNS.items():
            frame[name] = part[col].to_numpy() if col in part else np.nan
        frame = frame.sort_values(["method", "schedule (tokens@layer)"]).reset_index(drop=True)
        fmt = {c: "{:.3f}" for c in CONVENTION_COLUMNS.values()} | {"frames out": "{:.0f}"}
        out.append(Table("flops_conventions", f"Computation under every counter ({backbone}, {preset} preset)", frame,
                         fmt=fmt, note="Per clip at batch 1. MACs = multiply-accumulates, FLOPs = 2 x MACs; "
                                       "vptbench GFLOPs counts Linear/Conv layers only (the HoT tables), total every "
                                       "op; thop and ptflops see modules, fvcore, torchprofile and FlopCounterMode "
                                       "traced ops. Per output frame: divide by `frames out`."))
    return out


def build_tables(df: pd.DataFrame) -> List[Table]:
    t = efficiency_table(df)
    if t.empty:
        return []
    tables = _efficiency(t) + _flops_conventions(df)
    pruned = t[(t["pruner"] != "none") & (t["pipeline"] == "seq2seq")]
    # pruner x recoverer: MPJPE at each schedule
    tables += _pivots(pruned.assign(**{"pruner / recoverer": pruned["pruner"]}), "pruner / recoverer", "recoverer",
                      "MPJPE", "pruner_recoverer", "MPJPE (mm), pruner × recoverer",
                      BLOCK + ["mode", "schedule (tokens@layer)"])
    tables += _modes(t, df)
    # layer x tokens, single-stage schedules
    one = pruned[pruned["stages"] == 1].copy()
    one["layer / tokens"] = one["schedule"].map(lambda s: json.loads(s)[0][0])
    one["tokens"] = one["schedule"].map(lambda s: json.loads(s)[0][1])
    for value, label in (("GFLOPs", "GFLOPs"), ("MPJPE", "MPJPE (mm)")):
        tables += _pivots(one, "layer / tokens", "tokens", value, f"layer_tokens_{value.lower()}",
                          f"{label}, pruning layer × tokens kept", BLOCK + ["method"])
    # hierarchical schedules: every schedule of a method that has a multi-stage one, with its baseline
    cols = ["method", "schedule (tokens@layer)", "stages", "GFLOPs", "ΔFLOPs %", "frames/s", "speed-up", "MPJPE",
            "MPJPE std", "ΔMPJPE", "seeds", "noisy timing"]
    for key, part in t.groupby(BLOCK, sort=False):
        hier = part[part["stages"] > 1]["method"].unique()
        if len(hier) == 0:
            continue
        rows = part[part["method"].isin(hier) | (part["pruner"] == "none")].sort_values(["method", "stages"])
        tables.append(_table("hierarchical", f"Hierarchical schedules ({_label(key)})",
                             rows[[c for c in cols if c in rows]]))
    return tables


def _emulated_speed_cells(df: pd.DataFrame) -> int:
    if "speed_path" not in df:
        return 0
    return int(((df["status"] == "ok") & df["speed_path"].fillna("").str.contains(", emulated (", regex=False)).sum())


def markdown_report(df: pd.DataFrame, tables: List[Table] | None = None) -> str:
    tables = build_tables(df) if tables is None else tables
    lines = ["# vptbench results", ""]
    labels = sorted(set(df.get("data_label", pd.Series(dtype=str)).dropna()) - {""})
    if labels:
        lines += [f"Accuracy on: {', '.join(labels)}. MPJPE / P-MPJPE in mm, mean over actions "
                  "(mean ± std over seeds where several exist). Best value per column in **bold**.", ""]
    mixed = mixed_variants(df)
    if mixed:
        lines += [f"**Warning:** {mixed} cell(s) appear with more than one configuration (settings the tables do not "
                  "show, e.g. train.steps or train.loss, differ); they are separate rows, never averaged together. "
                  "Keep each study in its own store (`store=`).", ""]
    emulated = _emulated_speed_cells(df)
    if emulated:
        lines += [f"**Note:** {emulated} cell(s) were timed in an emulated precision (their CPU has no arithmetic of "
                  "that dtype, so torch's own kernels widened it to fp32; `speed_path` says so): their frames/s "
                  "say little about deployment.", ""]
    lines += [t.markdown() for t in tables]
    lines += ["GFLOPs: paper convention, 2 × MACs of Linear/Conv layers for one clip at batch 1. "
              "ΔFLOPs / ΔMPJPE / speed-up against the unpruned baseline of the same backbone, preset and data. "
              "frames/s: output frames per second (T per clip for seq2seq, 1 for seq2frame), median of repeats, "
              "measured within one run; speed-up = frames/s ratio (seq2seq only), of the cell and its unpruned "
              "baseline timed alternately in the cell's own run where the record has it (speedup_paired), else of "
              "the two records. hw eff.: the forward's "
              "Linear/Conv products alone (timed in the same run, fastest GEMM path) / the whole forward: how much "
              "of a cell's time its FLOPs account for. ms (b=1): one clip's latency.", ""]
    failed = df[df["status"] != "ok"]
    if not failed.empty:
        lines += ["## Failed cells", ""]
        lines += [f"- `{r.key}` {r.backbone} {r.pruner}+{r.recoverer} {r.schedule}: {r.error}" for r in failed.itertuples()]
        lines.append("")
    return "\n".join(lines)
