"""A table (numbers + best-value mask) rendered as GitHub markdown or a booktabs LaTeX table.

Best values are marked as papers do: **bold** in markdown, \\textbf{} in LaTeX; a value with a spread
over seeds reads `mean ± std`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

__all__ = ["Table", "best_mask", "LOWER", "HIGHER"]

LOWER, HIGHER = "min", "max"
# LaTeX specials and the unicode in our labels, replaced character by character
_TEX = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
        ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"),
        ("±", r"$\pm$"), ("→", r"$\rightarrow$"), ("×", r"$\times$"), ("Δ", r"$\Delta$"), ("–", "--"),
        ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("†", r"\dag{}")]


_TEX_MAP = dict(_TEX)


def tex_escape(text: str) -> str:
    return "".join(_TEX_MAP.get(ch, ch) for ch in text)


def best_mask(frame: pd.DataFrame, directions: Dict[str, str], whole_table: bool = False) -> pd.DataFrame:
    """True where a column (or, with whole_table, the whole table) reaches its best; ties all marked.
    Only finite values compete: records are validated on reading, but an infinite value must never be
    the bold "best" (nor a NaN hide one)."""
    mask = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    finite = {c: pd.to_numeric(frame[c], errors="coerce").astype(float).where(lambda v: np.isfinite(v))
              for c in directions if c in frame}
    cols = [c for c, v in finite.items() if v.notna().sum() > 1]
    if whole_table and cols:
        vals = pd.concat([finite[c] for c in cols], axis=1).values
        best = np.nanmin(vals) if directions[cols[0]] == LOWER else np.nanmax(vals)
        mask[cols] = np.isclose(vals, best, rtol=1e-9, atol=0)
        return mask
    for c in cols:
        v = finite[c]
        best = v.min() if directions[c] == LOWER else v.max()
        mask[c] = np.isclose(v, best, rtol=1e-9, atol=0)
    return mask


@dataclass
class Table:
    """`frame` holds numbers (and label strings); `fmt` formats a column's numbers; `std` names the
    column holding a column's spread; `best` marks cells (see best_mask)."""
    name: str                         # file stem, e.g. "efficiency"
    title: str
    frame: pd.DataFrame
    fmt: Dict[str, str] = field(default_factory=dict)
    std: Dict[str, str] = field(default_factory=dict)
    best: Optional[pd.DataFrame] = None
    note: str = ""
    # cells whose timing stayed noisy after re-measuring (bench.measure.quality): marked †, never bold
    noisy: Optional[pd.DataFrame] = None

    @property
    def columns(self) -> List[str]:
        hidden = set(self.std.values())
        return [c for c in self.frame.columns if c not in hidden]

    def _text(self, bold) -> pd.DataFrame:
        out = pd.DataFrame(index=self.frame.index)
        for c in self.columns:
            cells = []
            for i, v in self.frame[c].items():
                if isinstance(v, str) or c not in self.fmt:
                    t = "–" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)
                elif pd.isna(v):
                    t = "–"
                else:
                    t = self.fmt[c].format(v)
                    s = self.frame.at[i, self.std[c]] if c in self.std else np.nan
                    if pd.notna(s):
                        t += " ± " + self.fmt[c].format(s).lstrip("+")
                if self.noisy is not None and c in self.noisy and bool(self.noisy.at[i, c]) and t != "–":
                    cells.append(t + " †")
                    continue
                marked = self.best is not None and c in self.best and bool(self.best.at[i, c])
                cells.append(bold(t) if marked and t != "–" else t)
            out[c] = cells
        return out

    def markdown(self) -> str:
        text = self._text(lambda t: f"**{t}**")
        lines = [f"### {self.title}", "", text.to_markdown(index=False, disable_numparse=True), ""]
        return "\n".join(lines + ([self.note, ""] if self.note else []))

    def latex(self) -> str:
        # mark with control characters, escape, then turn the marks into \textbf{...}
        text = self._text(lambda t: "\x00" + t + "\x01").map(tex_escape)
        text = text.map(lambda t: t.replace("\x00", "\\textbf{").replace("\x01", "}"))
        text.columns = [tex_escape(c) for c in text.columns]
        align = "".join("r" if pd.api.types.is_numeric_dtype(self.frame[c]) else "l" for c in self.columns)
        body = text.to_latex(index=False, escape=False, column_format=align)
        return "\n".join(["\\begin{table}[t]", "\\centering", "\\small",
                          f"\\caption{{{tex_escape(self.title)}}}", body.rstrip(), "\\end{table}", ""])
