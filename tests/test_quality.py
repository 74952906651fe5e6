"""Measurement quality: a timing whose repeats disagree, or whose speed-up is more than its FLOPs cut can buy,
is re-measured up to a budget and, still noisy, flagged in the record, marked † in the tables, NOISY in compare
and left out of the history; never shown as a clean number."""
from __future__ import annotations

import json
import subprocess

import pytest

from bench.measure.quality import measure_until_clean, timing_problem
from test_cli import last_json, vptbench

LIMITS = dict(max_cv=0.05, max_realised=1.3)


def test_what_makes_a_timing_noisy():
    clean = dict(speed_cv=0.02, clips_per_s=100.0)
    assert timing_problem(clean, **LIMITS) is None
    assert "repeats disagree (CV 9.0 % > 5 %)" in timing_problem(dict(clean, speed_cv=0.09), **LIMITS)
    paired = dict(clean, paired_clips_per_s=50.0, paired_ratio_cv=0.01)      # a 2x speed-up
    assert timing_problem(paired, flops_ratio=1.8, **LIMITS) is None          # 1.11x its FLOPs ratio: caches
    why = timing_problem(paired, flops_ratio=1.2, **LIMITS)                   # 1.67x: not what fewer FLOPs buy
    assert "speed-up x2.00 is 1.67 x its FLOPs ratio x1.20" in why
    assert timing_problem(dict(paired, paired_clips_per_s=400.0), flops_ratio=2.0, **LIMITS) is None  # no lower bound
    assert "paired time ratio varies" in timing_problem(dict(paired, paired_ratio_cv=0.2), flops_ratio=2, **LIMITS)


class _Clock:
    def __init__(self, step):
        self.t, self.step = 0.0, step

    def __call__(self):
        self.t += self.step
        return self.t


def test_remeasuring_keeps_the_first_clean_attempt_or_flags_the_least_noisy():
    rows = iter([dict(speed_cv=0.3), dict(speed_cv=0.01, n=2), dict(speed_cv=0.2)])
    check = lambda r: None if r["speed_cv"] < 0.05 else "noisy"  # noqa: E731
    got = measure_until_clean(lambda: next(rows), check, budget_s=100, clock=_Clock(1))
    assert got["n"] == 2 and got["speed_attempts"] == 2 and got["speed_noisy"] is None
    cvs = iter([0.3, 0.1, 0.2, 0.4, 0.5, 0.6])
    got = measure_until_clean(lambda: dict(speed_cv=next(cvs)), check, budget_s=3.5, clock=_Clock(1))
    assert got["speed_cv"] == 0.1 and got["speed_attempts"] == 4  # stopped by the budget, least noisy kept
    assert got["speed_noisy"].startswith("noisy after 4 attempt(s)")
    got = measure_until_clean(lambda: dict(speed_cv=0.3), check, budget_s=0, clock=_Clock(1))
    assert got["speed_attempts"] == 1 and got["speed_noisy"]  # budget 0: flag without re-measuring


@pytest.mark.slow
def test_a_noisy_timing_is_flagged_through_report_compare_and_history(tmp_path):
    store = tmp_path / "store"
    # bounds no timing meets, no re-measuring: the flag's path end to end (a baseline and a pruned cell)
    common = ["backbone=mixste", "preset=tiny", "metrics=[params,flops,speed]", f"store={store}", "speed.repeats=3",
              "speed.iters=1", "speed.max_cv=1e-9", "speed.max_realised=0.01", "speed.remeasure_s=0"]
    base = last_json(vptbench("run", *common).stdout)
    pruned = vptbench("run", *common, "pruner=uniform", "recoverer=interpolation", "schedule=[[1,9]]")
    rec = last_json(pruned.stdout)
    assert base["speed_attempts"] == 1 and "repeats disagree" in base["speed_noisy"]
    assert "is not what fewer FLOPs buy" in rec["speed_noisy"] and "noisy timing, flagged" in pruned.stderr
    assert base["key"] == last_json(vptbench("run", "backbone=mixste", "preset=tiny", "metrics=[params]", "speed.repeats=3", "speed.iters=1",
                                             f"store={tmp_path / 'other'}").stdout)["key"]  # options outside the key
    out = tmp_path / "report"
    vptbench("report", "--store", str(store), "--out", str(out))
    md = (out / "results.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| mixste") and "uniform" in line)
    marked = [c for c in row.split("|") if "†" in c]
    assert len(marked) >= 2 and not any("**" in c for c in marked)  # frames/s and speed-up marked, never bold
    assert "† a noisy timing" in md
    cmp = vptbench("compare", str(store), str(store), check=False)
    assert cmp.returncode == 0 and "NOISY" in cmp.stdout and "2 noisy timing(s) not judged" in cmp.stderr
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
                    "-m", "x"], check=True)
    csv = out / "results.csv"
    import pandas as pd

    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df["env_git_commit"] = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                          text=True).stdout.strip()
    df.to_csv(csv, index=False)
    add = vptbench("history", "add", str(csv), "--db", str(tmp_path / "h.sqlite"), "--repo", str(repo))
    assert "left out the timings of 2 record(s) that stayed noisy" in add.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "h.sqlite") as con:
        metrics = {m for (m,) in con.execute("SELECT DISTINCT metric FROM points")}
    assert "gflops" in metrics and "frames_per_s" not in metrics
    assert json.loads(json.dumps(rec))["speed_attempts"] == 1
