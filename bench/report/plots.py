"""Plots (seaborn): FLOPs vs MPJPE per backbone, pruned variants against the baseline."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # headless: reports are written by CI and remote jobs
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .tables import efficiency_table  # noqa: E402

__all__ = ["plot_flops_vs_mpjpe"]


def plot_flops_vs_mpjpe(df: pd.DataFrame, path: Path) -> Optional[Path]:
    """One panel per backbone/preset: x = GFLOPs per clip, y = MPJPE; hue = method, style = schedule."""
    t = efficiency_table(df)
    if t.empty or "MPJPE" not in t or t["MPJPE"].isna().all():
        return None
    t = t[t["MPJPE"].notna()].copy()
    t["panel"] = t["backbone"] + " (" + t["preset"] + ")"
    t["stages"] = t["schedule (tokens@layer)"].map(lambda s: "none" if s == "–" else f"{s.count('→') + 1} stage(s)")
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    panels = list(dict.fromkeys(t["panel"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        part = t[t["panel"] == panel]
        sns.scatterplot(data=part, x="GFLOPs", y="MPJPE", hue="method", style="stages", s=110, ax=ax,
                        style_order=sorted(part["stages"].unique()))
        base = part[part["method"] == "baseline"]
        for row in base.itertuples():
            ax.axhline(row.MPJPE, color="grey", ls="--", lw=0.8)
            ax.annotate("baseline", (row.GFLOPs, row.MPJPE), textcoords="offset points", xytext=(-8, 6),
                        ha="right", fontsize=9, color="grey")
        ax.set_title(panel)
        ax.set_xlabel("GFLOPs per clip (2 × Linear MACs)")
        ax.set_ylabel("MPJPE (mm)  ↓")
        ax.legend(fontsize=8, loc="best", frameon=True)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
