"""Benchmark history over commits: `vptbench history add STORE` and `vptbench history check`.

`add` appends a store's (or results.csv's) measurements to one SQLite file (stdlib `sqlite3`, default
`results/history.sqlite`): one point per cell (its identity key), metric, commit and machine, plus each
commit's place in git's history (`git rev-list --count`, the number of its ancestors, so importing stores in
any order gives the same series) and each machine's fingerprint. The fingerprint is what changes speed and
results: CPU model, CPU features, core count, GPU, torch and CUDA versions; not the host name, which
changes on every CI runner. A series is one cell x metric x machine, so a new torch or another CPU starts a
new series instead of a step in an old one.

`check` orders each series by commit (the median where a commit was measured several times), fits a
piecewise-constant level to it (`bench.changepoint`), and reports every step: the first commit at the new
level (and the last one before it), the change, and a verdict from the metric's direction (lower is better
for params, FLOPs, latency and errors; higher for frames/s) and threshold. A step in the bad direction,
at least the threshold, whose new level holds for `CONFIRM` commits (speed: 2, since one slow run is a
shared machine's habit; exact and seeded metrics: 1), and that is not in the accepted-steps file (a
reviewed CSV in the repository: commit, cell, metric, reason) is a regression: exit 1.
"""
from __future__ import annotations

import csv
import math
import sqlite3
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from .changepoint import Segment, fit_segments
from .fingerprint import machine_fingerprint

__all__ = ["add_records", "check_history", "read_history", "series_steps", "machine_fingerprint", "read_accepted",
           "Series", "History", "Step", "DEFAULT_DB",
           "DEFAULT_ACCEPTED", "DIRECTIONS"]

DEFAULT_DB = "results/history.sqlite"
DEFAULT_ACCEPTED = "results/baselines/accepted_steps.csv"
# metric -> 1 if higher is better, -1 if lower is better
DIRECTIONS = {"params_m": -1, "gflops": -1, "gflops_total": -1, "frames_per_s": 1, "latency_b1_ms": -1,
              "mpjpe_mm": -1, "p_mpjpe_mm": -1, "mpjve_mm": -1}
# the smallest step that counts: ("rel", fraction of the old level) or ("abs", in the metric's unit).
# Params and FLOPs are exact, so any change counts; MPJPE as `vptbench compare` (0.5 mm); speed 5 %
THRESHOLDS = {"params_m": ("rel", 0.0), "gflops": ("rel", 0.0), "gflops_total": ("rel", 0.0),
              "frames_per_s": ("rel", 0.05), "latency_b1_ms": ("rel", 0.05),
              "mpjpe_mm": ("abs", 0.5), "p_mpjpe_mm": ("abs", 0.5), "mpjve_mm": ("abs", 0.5)}
CONFIRM = {"frames_per_s": 2, "latency_b1_ms": 2}  # commits the new level must hold; others 1
TIMED = ("frames_per_s", "latency_b1_ms")
SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (id TEXT PRIMARY KEY, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commits (hash TEXT PRIMARY KEY, depth INTEGER NOT NULL, time INTEGER NOT NULL,
                                    subject TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS points (cell TEXT NOT NULL, label TEXT NOT NULL, metric TEXT NOT NULL,
                                   machine TEXT NOT NULL, commit_hash TEXT NOT NULL, value REAL NOT NULL,
                                   measured_at TEXT NOT NULL,
                                   PRIMARY KEY (cell, metric, machine, commit_hash, measured_at));
"""


def _git(repo: str, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _commit_info(repo: str, commit: str) -> Optional[Tuple[str, int, int, str]]:
    """(full hash, ancestors, commit time, subject) of `commit` in `repo`, or None if it has no such commit."""
    full = _git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if not full:
        return None
    depth = _git(repo, "rev-list", "--count", full)
    meta = _git(repo, "log", "-1", "--format=%ct%x00%s", full)
    if depth is None or meta is None:
        return None
    when, subject = meta.split("\x00", 1)
    return full, int(depth), int(when), subject


def add_records(source: str, db: str = DEFAULT_DB, repo: str = ".") -> Dict[str, int]:
    """Append the ok records of a store (or results.csv) to the history file; returns counts (points added,
    records skipped for want of a commit `repo` knows). A point already there (same cell, metric, machine,
    commit and measurement time) is kept once, so adding a store twice changes nothing."""
    from .report.compare import cell_name, metric_value
    from .report.frame import noisy_timing, read_results

    df = read_results(source)
    df = df[df["status"] == "ok"]
    if not _git(repo, "rev-parse", "--git-dir"):
        raise ValueError(f"--repo {repo} is not a git checkout; pass the repository the records were measured in "
                         "(its history orders the commits)")
    commits: Dict[str, Optional[Tuple]] = {}
    machines: Dict[str, str] = {}
    points, skipped = [], {"no commit": 0, "unknown commit": 0, "noisy": 0}
    for _, row in df.iterrows():
        env = {k[len("env_"):]: row[k] for k in row.index if k.startswith("env_")}
        commit = env.get("git_commit")
        if not isinstance(commit, str) or not commit.strip():
            skipped["no commit"] += 1
            continue
        if commit not in commits:
            commits[commit] = _commit_info(repo, commit)
        info = commits[commit]
        if info is None:
            skipped["unknown commit"] += 1
            continue
        mid, desc = machine_fingerprint(env)
        mid = mid or "unknown"
        machines[mid] = desc
        when = str(env.get("timestamp") or "")
        label = cell_name(row)
        noisy = noisy_timing(row)  # a timing that stayed noisy is not a point of a series (bench.measure.quality)
        skipped["noisy"] += noisy
        points += [(str(row["key"]), label, metric, mid, info[0], v, when) for metric in DIRECTIONS
                   if (v := metric_value(row, metric)) is not None and not (noisy and metric in TIMED)]
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    with _open(db) as con, con:
        con.executescript(SCHEMA)
        con.executemany("INSERT OR REPLACE INTO machines VALUES (?, ?)", machines.items())
        con.executemany("INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?)", [i for i in commits.values() if i])
        before = con.total_changes
        con.executemany("INSERT OR IGNORE INTO points VALUES (?, ?, ?, ?, ?, ?, ?)", points)
        added = con.total_changes - before
    return {"points": added, "skipped_no_commit": skipped["no commit"], "skipped_unknown_commit": skipped["unknown commit"],
            "skipped_noisy": skipped["noisy"]}


@contextmanager
def _open(db: str):
    """The history file as a connection; a file that is not one is one line, not a traceback."""
    con = sqlite3.connect(db)
    try:
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        yield con
    except sqlite3.DatabaseError as e:
        raise ValueError(f"{db} is not a vptbench history file ({e}); pass --db a history file or a new path") from None
    finally:
        con.close()


@dataclass(frozen=True)
class Step:
    cell: str           # identity key
    label: str          # readable cell name
    metric: str
    machine: str        # fingerprint id
    first: str          # first commit at the new level
    previous: str       # last commit at the old level
    before: float       # old level
    after: float        # new level
    points: int         # commits at the new level
    verdict: str        # regression | improvement | below threshold | pending | accepted

    @property
    def change(self) -> str:
        rel = (self.after / self.before - 1) if self.before else math.inf
        unit = " mm" if self.metric.endswith("_mm") else ""
        return f"{self.after - self.before:+.4g}{unit} ({100 * rel:+.1f} %)"


def read_accepted(path: str) -> List[Dict[str, str]]:
    """The reviewed accepted steps (CSV: commit, cell, metric, reason); none when the file does not exist."""
    p = Path(path)
    if not p.exists():
        return []
    with p.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = ("commit", "cell", "metric", "reason")
    for i, r in enumerate(rows, start=2):
        if any(not (r.get(k) or "").strip() for k in need):
            raise ValueError(f"{path} line {i}: every accepted step needs {', '.join(need)} (the reason too); "
                             f"got {dict(r)}")
        if len(r["commit"].strip()) < 7:
            raise ValueError(f"{path} line {i}: commit {r['commit']!r} is too short to name one commit (7+ hex digits)")
    return rows


def _accepted(step_commit: str, cell: str, metric: str, accepted: Iterable[Dict[str, str]]) -> bool:
    return any(step_commit.startswith(a["commit"].strip()) and cell.startswith(a["cell"].strip())
               and a["metric"].strip() == metric for a in accepted)


def _verdict(metric: str, before: float, after: float, points: int, closed: bool, accepted: bool) -> str:
    worse = (after - before) * DIRECTIONS[metric] < 0
    kind, size = THRESHOLDS[metric]
    delta = abs(after - before) / (abs(before) if kind == "rel" and before else 1.0)
    if delta < size or (size == 0 and after == before):
        return "below threshold"
    if not worse:
        return "improvement"
    if accepted:
        return "accepted"
    if not closed and points < CONFIRM.get(metric, 1):
        return "pending"
    return "regression"


@dataclass
class Series:
    """One cell x metric x machine over commits: every measurement of each commit, in commit order."""
    cell: str
    label: str
    metric: str
    machine: str
    by_commit: Dict[str, List[float]]   # commit -> its values, in git's order (ancestors first)

    @property
    def commits(self) -> List[str]:
        return list(self.by_commit)

    @property
    def levels(self) -> List[float]:
        """The value of each commit: the median where it was measured several times."""
        return [float(np.median(v)) for v in self.by_commit.values()]


@dataclass
class History:
    series: List[Series]
    commits: Dict[str, Tuple[int, int, str]]   # hash -> (ancestors, commit time, subject)
    machines: Dict[str, str]                   # fingerprint id -> description


def read_history(db: str = DEFAULT_DB) -> History:
    """Every series of the history file, with the commits and machines it names."""
    if not Path(db).exists():
        raise ValueError(f"no history at {db}; add stores first (vptbench history add STORE --db {db})")
    with _open(db) as con:
        rows = con.execute(
            "SELECT p.cell, p.label, p.metric, p.machine, p.commit_hash, p.value FROM points p "
            "JOIN commits c ON c.hash = p.commit_hash ORDER BY p.cell, p.metric, p.machine, c.depth, c.time, c.hash"
        ).fetchall()
        commits = {h: (d, t, s) for h, d, t, s in con.execute("SELECT hash, depth, time, subject FROM commits")}
        machines = dict(con.execute("SELECT id, description FROM machines").fetchall())
    series: Dict[Tuple[str, str, str], Series] = {}
    for cell, label, metric, machine, commit, value in rows:
        key = (cell, metric, machine)
        if key not in series:
            series[key] = Series(cell, label, metric, machine, {})
        series[key].by_commit.setdefault(commit, []).append(value)
    return History(list(series.values()), commits, machines)


def series_steps(s: Series, accepted: Iterable[Dict[str, str]] = ()) -> Tuple[List[Segment], List[Step]]:
    """The fitted levels of one series and every step between them, each with its verdict."""
    commits, x = s.commits, s.levels
    segments = fit_segments(x, min_size=CONFIRM.get(s.metric, 1))
    steps = []
    for prev, cur in zip(segments, segments[1:]):
        first, n = commits[cur.start], cur.stop - cur.start
        verdict = _verdict(s.metric, prev.level, cur.level, n, closed=cur.stop < len(x),
                           accepted=_accepted(first, s.cell, s.metric, accepted))
        steps.append(Step(s.cell, s.label, s.metric, s.machine, first, commits[prev.stop - 1], prev.level,
                          cur.level, n, verdict))
    return segments, steps


def check_history(db: str = DEFAULT_DB, accepted_path: str = DEFAULT_ACCEPTED) -> List[Step]:
    """Every step of every series in the history file (see the module docstring)."""
    history = read_history(db)
    accepted = read_accepted(accepted_path)
    return [step for s in history.series for step in series_steps(s, accepted)[1]]


def steps_markdown(steps: List[Step], db: str) -> str:
    bad = [s for s in steps if s.verdict == "regression"]
    head = "❌ regression" if bad else "✅ no regression"
    lines = [f"## vptbench history check: {head}", "", f"`{db}`: {len(steps)} step(s), {len(bad)} regression(s).", ""]
    if steps:
        lines += ["| cell | metric | machine | first commit at the new level | last before | change | commits | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {s.label} `{s.cell[:12]}` | {s.metric} | {s.machine} | {s.first[:12]} | {s.previous[:12]} | "
                  f"{s.change} | {s.points} | {s.verdict} |" for s in steps]
        lines.append("")
    return "\n".join(lines)
