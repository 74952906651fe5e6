"""The trend page: `vptbench history report [--db FILE] --out DIR`.

One self-contained HTML page, `DIR/index.html` (plotly.js inlined: nothing is fetched when it is opened,
so it works from a CI artifact or an air-gapped laptop), with a plot per cell x metric over commits: each
machine its own series (a fingerprint is a machine and software stack, see `bench.history`), the levels
`history check` fitted as dotted steps, each step a vertical line coloured by its verdict, and a hover
giving the commit, its subject and date, and every value measured there. Above the plots: the steps
table (regressions first) and the machines. Beside it, `DIR/png/` holds the same plots as PNGs
(matplotlib) for papers and issues. Every file is written atomically.
"""
from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Dict, List, Tuple

from .atomic import write_atomic
from .history import (DEFAULT_ACCEPTED, DEFAULT_DB, DIRECTIONS, History, Series, Step, read_accepted, read_history,
                      series_steps)

__all__ = ["write_trend_page", "VERDICT_COLOURS"]

VERDICT_COLOURS = {"regression": "#d62728", "pending": "#ff7f0e", "accepted": "#1f77b4", "improvement": "#2ca02c",
                   "below threshold": "#9a9a9a"}
MACHINE_COLOURS = ["#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
UNITS = {"params_m": "M params", "gflops": "GFLOPs per clip", "gflops_total": "GFLOPs per clip (with recovery)",
         "frames_per_s": "frames/s", "latency_b1_ms": "ms per clip (batch 1)", "mpjpe_mm": "MPJPE (mm)",
         "p_mpjpe_mm": "P-MPJPE (mm)", "mpjve_mm": "MPJVE (mm)"}
VERDICT_ORDER = ["regression", "pending", "accepted", "improvement", "below threshold"]


def _commit_order(history: History) -> Dict[str, int]:
    """Each commit's place on the shared x axis: git's order (ancestors, then commit time)."""
    ranked = sorted(history.commits, key=lambda h: (history.commits[h][0], history.commits[h][1], h))
    return {h: i for i, h in enumerate(ranked)}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "cell"


def _axis_title(metric: str) -> str:
    better = "higher" if DIRECTIONS[metric] > 0 else "lower"
    return f"{UNITS.get(metric, metric)}, {better} is better"


def _when(history: History, commit: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(history.commits[commit][1]))


class _Plot:
    """One cell x metric: its series (one per machine) with their levels and steps."""

    def __init__(self, cell: str, label: str, metric: str):
        self.cell, self.label, self.metric = cell, label, metric
        self.lines: List[Tuple[Series, list, List[Step]]] = []

    @property
    def steps(self) -> List[Step]:
        return [st for _, _, steps in self.lines for st in steps]

    @property
    def stem(self) -> str:
        return _slug(f"{self.label}-{self.cell[:8]}-{self.metric}")  # a file name, whatever the history holds


def _plots(history: History, accepted) -> List[_Plot]:
    plots: Dict[Tuple[str, str], _Plot] = {}
    for s in history.series:
        p = plots.setdefault((s.cell, s.metric), _Plot(s.cell, s.label, s.metric))
        p.lines.append((s, *series_steps(s, accepted)))
    metric_rank = {m: i for i, m in enumerate(DIRECTIONS)}
    return sorted(plots.values(), key=lambda p: (p.label, p.cell, metric_rank.get(p.metric, 99)))


def _figure(p: _Plot, history: History, x_of: Dict[str, int], colour: Dict[str, str]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for s, segments, steps in p.lines:
        commits = s.commits
        xs = [x_of[c] for c in commits]
        hover = [[c[:12], history.commits[c][2][:90], _when(history, c), len(v), ", ".join(f"{y:.5g}" for y in v)]
                 for c, v in s.by_commit.items()]
        c = colour[s.machine]
        fig.add_trace(go.Scatter(
            x=xs, y=s.levels, mode="lines+markers", name=s.machine, legendgroup=s.machine, customdata=hover,
            line=dict(color=c, width=1.5), marker=dict(size=7, color=c),
            hovertemplate=("<b>%{customdata[0]}</b> %{customdata[1]}<br>%{customdata[2]} UTC<br>"
                           f"{p.metric}: " + "%{y:.5g} (%{customdata[3]} run(s): %{customdata[4]})"
                           f"<extra>machine {s.machine}</extra>")))
        lx, ly = [], []
        for seg in segments:
            lx += [xs[seg.start] - 0.4, xs[seg.stop - 1] + 0.4, None]
            ly += [seg.level, seg.level, None]
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", legendgroup=s.machine, showlegend=False, hoverinfo="skip",
                                 line=dict(color=c, width=1, dash="dot"), name=f"{s.machine} levels"))
        for st in steps:
            fig.add_vline(x=x_of[st.first] - 0.5, line=dict(color=VERDICT_COLOURS[st.verdict], dash="dash", width=1.5),
                          annotation=dict(text=f"{st.verdict} {st.change}", font=dict(size=10,
                                          color=VERDICT_COLOURS[st.verdict])), annotation_position="top left")
    ticks = sorted({x_of[c] for s, _, _ in p.lines for c in s.commits})
    every = max(1, len(ticks) // 16)
    order = sorted(x_of, key=x_of.get)
    fig.update_layout(
        title=dict(text=f"{html.escape(p.label)} · {p.metric}", font=dict(size=14)), template="plotly_white",
        height=330, margin=dict(l=60, r=20, t=50, b=60), hovermode="closest",
        legend=dict(title="machine", orientation="h", y=-0.25),
        xaxis=dict(title="commit", tickmode="array", tickvals=ticks[::every],
                   ticktext=[order[t][:7] for t in ticks[::every]]),
        yaxis=dict(title=_axis_title(p.metric)))
    return fig


def _png(p: _Plot, x_of: Dict[str, int], colour: Dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    order = sorted(x_of, key=x_of.get)
    for s, segments, steps in p.lines:
        xs = [x_of[c] for c in s.commits]
        c = colour[s.machine]
        ax.plot(xs, s.levels, "o-", color=c, lw=1.2, ms=4, label=f"machine {s.machine}")
        for seg in segments:
            ax.plot([xs[seg.start] - 0.4, xs[seg.stop - 1] + 0.4], [seg.level] * 2, ":", color=c, lw=1)
        for st in steps:
            ax.axvline(x_of[st.first] - 0.5, color=VERDICT_COLOURS[st.verdict], ls="--", lw=1.2)
            ax.annotate(f"{st.verdict} {st.change}", (x_of[st.first] - 0.5, 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, color=VERDICT_COLOURS[st.verdict], ha="right", va="top", rotation=90)
    ticks = sorted({x_of[c] for s, _, _ in p.lines for c in s.commits})
    ticks = ticks[::max(1, len(ticks) // 12)]
    ax.set_xticks(ticks, [order[t][:7] for t in ticks], rotation=45, fontsize=7, ha="right")
    ax.set_xlabel("commit")
    ax.set_ylabel(_axis_title(p.metric), fontsize=8)
    ax.set_title(f"{p.label} · {p.metric}", fontsize=9)
    ax.grid(ls=":", alpha=0.6)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=150))
    plt.close(fig)


def _table(head: List[str], rows: List[List[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; padding: 0 16px; }
table { border-collapse: collapse; margin: 8px 0 20px; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
code { font-size: 12px; } .verdict { font-weight: 600; } section { margin-top: 28px; }
.plot { border: 1px solid #eee; margin: 6px 0; }
"""


def write_trend_page(out: str, db: str = DEFAULT_DB, accepted_path: str = DEFAULT_ACCEPTED,
                     pngs: bool = True) -> Dict[str, int]:
    """Write DIR/index.html (and DIR/png/*.png); returns counts (plots, steps, regressions, pngs)."""
    history = read_history(db)
    if not history.series:
        raise ValueError(f"{db} holds no measurements yet; add stores first (vptbench history add STORE --db {db})")
    accepted = read_accepted(accepted_path)
    from plotly.offline import get_plotlyjs

    out_dir = Path(out)
    (out_dir / "png").mkdir(parents=True, exist_ok=True)
    x_of = _commit_order(history)
    machines = sorted({s.machine for s in history.series})
    colour = {m: MACHINE_COLOURS[i % len(MACHINE_COLOURS)] for i, m in enumerate(machines)}
    plots = _plots(history, accepted)
    steps = sorted((st for p in plots for st in p.steps), key=lambda st: (VERDICT_ORDER.index(st.verdict), st.label))
    bad = sum(st.verdict == "regression" for st in steps)

    sections, by_cell = [], {}
    for p in plots:
        by_cell.setdefault((p.label, p.cell), []).append(p)
    n = 0
    for (label, cell), group in by_cell.items():
        divs = []
        for p in group:
            fig = _figure(p, history, x_of, colour)
            divs.append(f'<div class="plot">{fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{n}", config={"displaylogo": False, "responsive": True})}'
                        f'<a href="png/{html.escape(p.stem)}.png">PNG</a></div>')
            n += 1
            if pngs:
                _png(p, x_of, colour, out_dir / "png" / f"{p.stem}.png")
        sections.append(f'<section id="cell-{_slug(cell[:12])}"><h2>{html.escape(label)} <code>{html.escape(cell[:12])}</code></h2>'
                        + "".join(divs) + "</section>")

    step_rows = [[f'<span class="verdict" style="color:{VERDICT_COLOURS[st.verdict]}">{st.verdict}</span>',
                  f'<a href="#cell-{_slug(st.cell[:12])}">{html.escape(st.label)}</a>', html.escape(st.metric),
                  html.escape(st.machine), f"<code>{html.escape(st.first[:12])}</code> "
                  f"{html.escape(history.commits[st.first][2][:70])}", f"<code>{html.escape(st.previous[:12])}</code>",
                  html.escape(st.change), str(st.points)] for st in steps]
    # every text on the page comes from a history file someone else may have written: escaped, never markup
    machine_rows = [[f'<span style="color:{colour[m]}">■</span> <code>{html.escape(m)}</code>',
                     html.escape(history.machines.get(m, ""))] for m in machines]
    headline = f"{bad} regression(s)" if bad else "no regression"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vptbench history: {headline}</title>
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>vptbench history: {headline}</h1>
<p><code>{html.escape(str(db))}</code>: {len(history.series)} series over {len(history.commits)} commit(s) on
{len(machines)} machine(s); {len(steps)} step(s) found by <code>vptbench history check</code>'s piecewise-constant fit,
accepted steps from <code>{html.escape(str(accepted_path))}</code>. Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.</p>
<h2>Steps</h2>
{_table(["verdict", "cell", "metric", "machine", "first commit at the new level", "last before", "change", "commits"], step_rows)
 if step_rows else "<p>No step in any series.</p>"}
<h2>Machines</h2>
{_table(["machine", "fingerprint"], machine_rows)}
{"".join(sections)}
<script type="application/json" id="vptbench-summary">{json.dumps(dict(plots=n, steps=len(steps), regressions=bad))}</script>
</body></html>
"""
    write_atomic(out_dir / "index.html", lambda f: f.write(page.encode()))
    return dict(plots=n, steps=len(steps), regressions=bad, pngs=n if pngs else 0)
