"""Plots (seaborn; PNG and PDF each): FLOPs-vs-MPJPE Pareto fronts, layer × tokens heatmaps,
throughput vs batch size, realised speed-up vs FLOPs ratio. Each is drawn only when the store has its data."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import matplotlib

matplotlib.use("Agg")  # headless: reports are written by CI and remote jobs
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..config import MODES  # noqa: E402
from .frame import method_name  # noqa: E402
from .tables import efficiency_table  # noqa: E402

__all__ = ["write_plots", "pareto_front"]

MARKERS = {"cluster": "o", "attention": "s", "uniform": "^", "motion": "D"}
OFF_SCALE = 2.5  # the Pareto plot's MPJPE axis stops at this multiple of the baseline's


def _theme():
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.15,
                  rc={"font.family": "serif", "axes.edgecolor": "0.3", "grid.linestyle": ":"})


def _save(fig, out: Path, stem: str, tight: bool = True) -> List[Path]:
    if tight:
        fig.tight_layout()
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    # bbox_inches="tight" grows the canvas to hold a legend placed outside the axes
    fig.savefig(paths[0], dpi=200, bbox_inches="tight")
    fig.savefig(paths[1], metadata={"CreationDate": None}, bbox_inches="tight")  # reproducible bytes
    plt.close(fig)
    return paths


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both x and y (lower is better), by increasing x."""
    order = np.lexsort((y, x))
    front, best = [], np.inf
    for i in order:
        if y[i] < best:
            front.append(i)
            best = y[i]
    return np.array(front, dtype=int)


def _model_label(d: pd.DataFrame) -> pd.Series:
    """'mixste (paper)', 'mixste (paper, cuda)' or 'mixste (paper, weights 1a2b3c4d)': a GPU's points are never
    one series with the CPU's, nor a supplied checkpoint's with the models vptbench trained."""
    device = d["device"] if "device" in d else pd.Series("cpu", index=d.index)
    weights = d["weights_id"] if "weights_id" in d else pd.Series("", index=d.index)
    return (d["backbone"] + " (" + d["preset"] + device.map(lambda v: "" if v == "cpu" else f", {v}")
            + weights.map(lambda v: f", weights {v[:8]}" if v else "") + ")")


FILLED = ("o", "s", "^", "D", "v", "P", "X", "p", "h", "<", ">", "*")


def _markers(names) -> dict:
    """A marker per pruner: the papers' four keep their usual shapes, the others get the next free ones."""
    out = {p: MARKERS[p] for p in names if p in MARKERS}
    free = [m for m in FILLED if m not in out.values() and m != "*"]
    out.update({p: free[i % len(free)] for i, p in enumerate(sorted(set(names) - set(out)))})
    return out


def _pareto(t: pd.DataFrame, out: Path) -> List[Path]:
    """One panel per model and mode (scratch / finetune / zeroshot / eval: weights obtained differently, never
    one cloud);
    colour = recoverer, marker = pruner, open = hierarchical, star = the unpruned baseline, line and rings =
    the panel's Pareto front."""
    t = t[t["MPJPE"].notna() & t["GFLOPs"].notna()] if "MPJPE" in t else t.iloc[:0]
    if t.empty or (t["pruner"] != "none").sum() == 0:
        return []
    t = t.assign(model=_model_label(t))
    models = list(dict.fromkeys(t["model"]))
    modes = [m for m in MODES if m in set(t.loc[t["pruner"] != "none", "mode"])]
    recoverers = sorted(set(t.loc[t["pruner"] != "none", "recoverer"]))
    colours = dict(zip(recoverers, sns.color_palette("deep", len(recoverers))))
    markers = _markers(t.loc[t["pruner"] != "none", "pruner"].unique())
    fig, axes = plt.subplots(len(models), len(modes), figsize=(4.6 * len(modes), 4.0 * len(models)),
                             squeeze=False, sharey="row")
    for r, model in enumerate(models):
        base = t[(t["model"] == model) & (t["pruner"] == "none")]
        # one broken cell (e.g. a zero-shot strategy 4x worse) would flatten every other point of the row:
        # the axis stops at OFF_SCALE x the baseline and points above it sit on the top edge, labelled
        top = OFF_SCALE * base["MPJPE"].max() if len(base) else np.inf
        for c, mode in enumerate(modes):
            ax = axes[r][c]
            part = pd.concat([base, t[(t["model"] == model) & (t["pruner"] != "none") & (t["mode"] == mode)]])
            front = part.iloc[pareto_front(part["GFLOPs"].to_numpy(float), part["MPJPE"].to_numpy(float))]
            ax.plot(front["GFLOPs"], front["MPJPE"], "-", color="0.35", lw=1.2, zorder=2)
            ax.scatter(front["GFLOPs"], front["MPJPE"], s=190, facecolors="none", edgecolors="0.35", linewidths=0.9,
                       zorder=2)
            for (pruner, rec), grp in part[part["pruner"] != "none"].groupby(["pruner", "recoverer"]):
                hier = grp["stages"] > 1
                for filled, sub in ((True, grp[~hier]), (False, grp[hier])):
                    ax.scatter(sub["GFLOPs"], sub["MPJPE"].clip(upper=top), marker=markers[pruner], s=46, zorder=3,
                               facecolors=colours[rec] if filled else "white", edgecolors=colours[rec], linewidths=1.2,
                               clip_on=False)
                for x, y in grp.loc[grp["MPJPE"] > top, ["GFLOPs", "MPJPE"]].itertuples(index=False):
                    ax.annotate(f"{y:.0f} mm ↑", (x, top), xytext=(6, -4), textcoords="offset points", fontsize=7,
                                color=colours[rec], va="top")
            ax.scatter(base["GFLOPs"], base["MPJPE"], marker="*", s=260, color="0.2", edgecolors="black", zorder=4)
            ax.set_title(f"{model}, {mode}" if len(models) > 1 else mode)
            ax.set_xlabel("GFLOPs per clip")
            if c == 0:
                ax.set_ylabel("MPJPE (mm) ↓")
            if t["GFLOPs"].max() / t["GFLOPs"].min() > 20:
                ax.set_xscale("log")
            if (part["MPJPE"] > top).any():
                ax.set_ylim(top=top)
    handles = [plt.Line2D([], [], ls="", marker="o", ms=8, color=colours[rc], label=f"recoverer: {rc}") for rc in recoverers]
    handles += [plt.Line2D([], [], ls="", marker=markers[p], color="0.5", label=f"pruner: {p}") for p in sorted(markers)]
    handles += [plt.Line2D([], [], ls="", marker="*", ms=13, color="0.2", mec="black", label="unpruned baseline"),
                plt.Line2D([], [], ls="-", marker="o", ms=12, mfc="none", color="0.35", label="Pareto front")]
    if (t["stages"] > 1).any():
        handles += [plt.Line2D([], [], ls="", marker="o", mfc="white", mec="0.5", label="hierarchical (open)")]
    fig.suptitle("Accuracy vs computation")
    fig.tight_layout()
    fig.legend(handles=handles, fontsize=8, frameon=True, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, out, "pareto_flops_mpjpe", tight=False)


def _heatmaps(t: pd.DataFrame, out: Path) -> List[Path]:
    one = t[(t["stages"] == 1) & (t["pipeline"] == "seq2seq")].copy()
    if one.empty:
        return []
    one["layer"] = one["schedule"].map(lambda s: json.loads(s)[0][0])
    one["tokens"] = one["schedule"].map(lambda s: json.loads(s)[0][1])
    paths = []
    for (backbone, preset, method), part in one.groupby(["backbone", "preset", "method"], sort=False):
        if part["layer"].nunique() < 2 or part["tokens"].nunique() < 2:
            continue
        values = [(v, lab, cmap) for v, lab, cmap in (("GFLOPs", "GFLOPs", "crest"), ("MPJPE", "MPJPE (mm)", "rocket_r"))
                  if v in part and part[v].notna().any()]
        fig, axes = plt.subplots(1, len(values), figsize=(4.4 * len(values), 3.6), squeeze=False)
        for ax, (v, lab, cmap) in zip(axes[0], values):
            grid = part.pivot_table(index="layer", columns="tokens", values=v, aggfunc="first")
            sns.heatmap(grid, annot=True, fmt=".3g", cmap=cmap, linewidths=0.5, cbar_kws={"label": lab}, ax=ax)
            ax.set_xlabel("tokens kept")
            ax.set_ylabel("pruning before layer")
            ax.set_title(lab)
        fig.suptitle(f"{backbone} ({preset}), {method}")
        paths += _save(fig, out, f"heatmap_layer_tokens_{backbone}_{preset}_{method.replace(' + ', '_')}")
    return paths


def _throughput(df: pd.DataFrame, out: Path) -> List[Path]:
    if "speed_batch" not in df or "frames_per_s" not in df:
        return []
    d = df[(df["status"] == "ok") & df["frames_per_s"].notna() & df["speed_batch"].notna()].copy()
    if d.empty:
        return []
    d["method"] = d.apply(method_name, axis=1) + " " + d["schedule"]
    d["model"] = _model_label(d)
    d = d[d.groupby(["model", "method"])["speed_batch"].transform("nunique") >= 2]  # a curve needs 2 batches
    if d.empty:
        return []
    g = sns.relplot(data=d, x="speed_batch", y="frames_per_s", hue="method", col="model", kind="line", marker="o",
                    facet_kws={"sharey": False}, height=3.8, aspect=1.2)
    g.set(xscale="log", yscale="log")
    g.set_axis_labels("batch size (clips)", "frames/s ↑")
    g.figure.suptitle("Throughput vs batch size", y=1.02)
    return _save(g.figure, out, "throughput_vs_batch")


def _speedup(t: pd.DataFrame, out: Path) -> List[Path]:
    if "speed-up" not in t:
        return []
    # a store without FLOPs (metrics=[speed]) has no ratio to plot against
    d = t[t["speed-up"].notna() & t["FLOPs ratio"].notna() & (t["pruner"] != "none")]
    if d.empty:
        return []
    d = d.assign(model=_model_label(d))
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    sns.scatterplot(data=d, x="FLOPs ratio", y="speed-up", hue="model", style="pruner", s=70, ax=ax,
                    markers=_markers(d["pruner"].unique()))
    hi = max(d["FLOPs ratio"].max(), d["speed-up"].max()) * 1.08
    lo = min(1.0, d["speed-up"].min()) * 0.95
    ax.plot([lo, hi], [lo, hi], ls="--", color="0.4", lw=1, label="y = x (speed-up = FLOPs saved)")
    noisy = d[d["noisy timing"]] if "noisy timing" in d else d.iloc[:0]
    if len(noisy):  # never shown as a clean number: ringed, and said in the legend
        ax.scatter(noisy["FLOPs ratio"], noisy["speed-up"], s=260, facecolors="none", edgecolors="#d62728",
                   linewidths=1.2, label="noisy timing (†)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("FLOPs ratio (baseline / pruned)")
    ax.set_ylabel("measured speed-up (frames/s ratio)")
    ax.set_title("Realised speed-up vs FLOPs saved")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, out, "speedup_vs_flops_ratio")


def _efficiency(t: pd.DataFrame, out: Path) -> List[Path]:
    """Realised speed-up against the FLOPs ratio, coloured by hardware efficiency (GEMM floor / forward):
    a pruned cell far below y = x with low efficiency spends its time outside the products FLOPs count."""
    if "hw eff." not in t or "speed-up" not in t:
        return []
    d = t[t["speed-up"].notna() & t["FLOPs ratio"].notna() & t["hw eff."].notna() & (t["pruner"] != "none")]
    if d.empty:
        return []
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    pts = ax.scatter(d["FLOPs ratio"], d["speed-up"], c=d["hw eff."], cmap="viridis", vmin=0, vmax=1, s=60,
                     edgecolors="black", linewidths=0.5)
    fig.colorbar(pts, ax=ax, label="hardware efficiency (GEMM floor / forward)")
    hi = max(d["FLOPs ratio"].max(), d["speed-up"].max()) * 1.08
    lo = min(1.0, d["speed-up"].min()) * 0.95
    ax.plot([lo, hi], [lo, hi], ls="--", color="0.4", lw=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("FLOPs ratio (baseline / pruned)")
    ax.set_ylabel("measured speed-up (frames/s ratio)")
    ax.set_title("Speed-up vs FLOPs saved, by hardware efficiency")
    return _save(fig, out, "hw_efficiency")


def write_plots(df: pd.DataFrame, out: Path) -> List[Path]:
    t = efficiency_table(df)
    if t.empty:
        return []
    _theme()
    return _pareto(t, out) + _heatmaps(t, out) + _throughput(df, out) + _speedup(t, out) + _efficiency(t, out)
