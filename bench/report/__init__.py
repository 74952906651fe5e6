"""Reports from a results store: results.csv, a markdown table and a FLOPs-vs-MPJPE plot."""
from __future__ import annotations

from pathlib import Path
from typing import List

from ..store import ResultStore
from .plots import plot_flops_vs_mpjpe
from .tables import efficiency_table, load_frame, markdown_report

__all__ = ["write_report", "load_frame", "efficiency_table"]


def write_report(store: str, out: str) -> List[Path]:
    if not Path(store).is_dir():
        raise ValueError(f"results store {store!r} does not exist; run `vptbench run ... store={store}` first")
    df = load_frame(ResultStore(store).records())
    if df.empty:
        raise ValueError(f"results store {store!r} holds no records; run some cells first")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    csv = out_dir / "results.csv"
    df.to_csv(csv, index=False)
    written.append(csv)
    md = out_dir / "results.md"
    md.write_text(markdown_report(df))
    written.append(md)
    png = plot_flops_vs_mpjpe(df, out_dir / "flops_vs_mpjpe.png")
    if png is not None:
        written.append(png)
    return written
