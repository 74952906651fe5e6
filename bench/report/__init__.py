"""Reports from a results store: results.csv (every record, flattened), paper-style tables in markdown
(results.md and one file per kind) and LaTeX (booktabs), and plots (PNG + PDF)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from .frame import load_frame, read_results
from .plots import write_plots
from .tables import build_tables, efficiency_table, markdown_report

__all__ = ["write_report", "load_frame", "read_results", "efficiency_table", "build_tables"]


def write_report(store: str, out: str) -> List[Path]:
    """`store` is a results store directory or a results.csv (e.g. a committed report's)."""
    df = read_results(store)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / "results.csv"
    df.to_csv(csv, index=False)
    tables = build_tables(df)
    md = out_dir / "results.md"
    md.write_text(markdown_report(df, tables))
    written = [csv, md]
    kinds: Dict[str, list] = {}
    for t in tables:
        kinds.setdefault(t.name, []).append(t)
    for name, group in kinds.items():
        for ext, render in (("md", lambda t: t.markdown()), ("tex", lambda t: t.latex())):
            path = out_dir / f"{name}.{ext}"
            path.write_text("\n".join(render(t) for t in group))
            written.append(path)
    return written + write_plots(df, out_dir)
