"""`vptbench compare`: a store against itself passes; a changed FLOPs count, a worse MPJPE or a slower
cell fails and is named; so does a metric or a cell the baseline has and the current run lacks (unless
--partial); a comparison that compares nothing and bad input are one line with exit 2."""
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.report import write_report
from bench.report.compare import Comparison, _compare_cell, metric_value as _value
from tests.report_records import grid_records, record, write_store


def _run(capsys, *args):
    rc = main(["compare", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def stores(tmp_path):
    recs = grid_records()
    return tmp_path, write_store(tmp_path / "base", recs), recs


def test_store_against_itself_and_its_csv(capsys, stores):
    tmp, base, _ = stores
    rc, out, _ = _run(capsys, base.root, base.root)
    assert rc == 0 and "no regression" in out
    assert "9 cell(s), 54 metric(s) compared, 0 regression(s), 0 missing, 0 new, 0 not compared" in out
    write_report(str(base.root), str(tmp / "rep"))
    rc, out, _ = _run(capsys, tmp / "rep" / "results.csv", base.root, "--out", tmp / "summary.md")
    assert rc == 0, out
    assert "no regression" in (tmp / "summary.md").read_text()


def test_changed_flops_fails_and_names_the_cell(capsys, stores):
    tmp, _, recs = stores
    recs[1]["gflops"] *= 1 + 1e-6  # cluster+attention 9@1
    cur = write_store(tmp / "cur", recs)
    rc, out, err = _run(capsys, tmp / "base", cur.root)
    assert rc == 1
    assert "mixste[tiny]/cluster+attention/9@1" in err and "gflops" in err and "params_m" not in err
    assert "regression" in out and err.count("REGRESSED") == 1


def test_mpjpe_tolerance(capsys, stores):
    tmp, _, recs = stores
    recs[3]["mpjpe_mm"] += 0.4  # uniform+attention 9@1, within the default 0.5 mm
    write_store(tmp / "cur", recs)
    assert _run(capsys, tmp / "base", tmp / "cur")[0] == 0
    rc, _, err = _run(capsys, tmp / "base", tmp / "cur", "--mpjpe-tol", "0.3")
    assert rc == 1 and "uniform+attention/9@1 mpjpe_mm" in err


def test_speed_drop_against_its_noise(capsys, stores):
    tmp, _, recs = stores
    recs[0]["frames_per_s"] *= 0.85  # baseline 15 % slower; cv 0.02 each -> allowed max(10 %, 8.5 %)
    write_store(tmp / "cur", recs)
    rc, _, err = _run(capsys, tmp / "base", tmp / "cur")
    assert rc == 1 and "mixste[tiny]/baseline/– frames_per_s" in err
    assert _run(capsys, tmp / "base", tmp / "cur", "--speed-tol", "0.2")[0] == 0
    for r in recs:  # noisy measurements widen the allowance: 3 * hypot(0.05, 0.05) = 21 %
        r["speed_cv"] = 0.05
    write_store(tmp / "noisy", recs)
    assert _run(capsys, tmp / "base", tmp / "noisy")[0] == 0


def test_missing_new_and_failed_cells(capsys, stores):
    tmp, _, recs = stores
    failed = dict(recs[2], status="failed", error="RuntimeError: boom")
    extra = record(pruner="motion", recoverer="attention", schedule=[(1, 9)])
    write_store(tmp / "cur", [r for r in recs if r is not recs[4] and r is not recs[2]] + [failed, extra])
    rc, out, err = _run(capsys, tmp / "base", tmp / "cur")
    assert rc == 1 and "cluster+interpolation/9@1 status" in err
    assert "Missing cells" in out and "uniform+interpolation/9@1" in out.split("Missing cells")[1]
    assert "New cells" in out and "motion+attention/9@1" in out.split("New cells")[1]
    assert "REGRESSED mixste[tiny]/uniform+interpolation/9@1: in BASELINE, missing from CURRENT" in err
    assert "8 cell(s), 43 metric(s) compared, 2 regression(s), 1 missing, 1 new, 0 not compared" in out


def test_disjoint_stores_compare_nothing_exit_2(capsys, stores):
    tmp, _, recs = stores
    write_store(tmp / "other", [dict(r, key=f"{r['key']}s7", seed=7) for r in recs])
    rc, out, err = _run(capsys, tmp / "base", tmp / "other")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("vptbench: error: nothing to compare: ") and "have no cell in common (9 baseline cells, " \
        "9 current); compare stores of the same grid" in err


def test_no_metric_in_both_exit_2(capsys, stores):
    """Cells in common, but CURRENT measured none of the baseline's metrics: nothing was compared."""
    tmp, _, recs = stores
    bare = [{k: v for k, v in r.items() if k not in ("params_m", "gflops", "gflops_total", "mpjpe_mm", "p_mpjpe_mm",
                                                       "frames_per_s")} for r in recs]
    write_store(tmp / "bare", bare)
    for extra in ([], ["--partial"]):
        rc, out, err = _run(capsys, tmp / "base", tmp / "bare", *extra)
        assert rc == 2 and out == "", (extra, out)
        assert "nothing to compare" in err and "9 cell(s) in common but no metric measured in both" in err
        assert "current: none" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("lack", ["nan", "null", "absent"])
def test_current_without_a_baseline_metric_regresses(capsys, stores, lack):
    tmp, _, recs = stores
    cur = [dict(r) for r in recs]
    if lack == "absent":
        del cur[2]["mpjpe_mm"]
    else:
        cur[2]["mpjpe_mm"] = math.nan if lack == "nan" else None
    write_store(tmp / "cur", cur)
    rc, out, err = _run(capsys, tmp / "base", tmp / "cur")
    assert rc == 1, out
    assert "REGRESSED mixste[tiny]/cluster+interpolation/9@1 mpjpe_mm: 168 -> – (must be measured)" in err
    assert err.count("REGRESSED") == 1 and "no current value" in out
    assert "9 cell(s), 53 metric(s) compared, 1 regression(s), 0 missing, 0 new, 0 not compared" in out
    rc, out, err = _run(capsys, tmp / "base", tmp / "cur", "--partial")
    assert rc == 0 and "REGRESSED" not in err
    assert "53 metric(s) compared, 0 regression(s), 0 missing, 0 new, 1 not compared" in out
    assert "cluster+interpolation/9@1 mpjpe_mm (baseline 168, no current value)" in out.split("Not compared")[1]


def test_current_csv_without_a_metric_column_regresses(capsys, stores):
    tmp, base, _ = stores
    write_report(str(base.root), str(tmp / "rep"))
    pd.read_csv(tmp / "rep" / "results.csv").drop(columns=["p_mpjpe_mm"]).to_csv(tmp / "cur.csv", index=False)
    rc, out, err = _run(capsys, base.root, tmp / "cur.csv")
    assert rc == 1 and err.count("REGRESSED") == 9 and err.count("p_mpjpe_mm: ") == 9


def test_missing_cell_regresses_unless_partial(capsys, stores):
    tmp, _, recs = stores
    write_store(tmp / "cur", recs[:4] + recs[5:])
    rc, out, err = _run(capsys, tmp / "base", tmp / "cur")
    assert rc == 1 and "❌ regression" in out
    assert "REGRESSED mixste[tiny]/uniform+interpolation/9@1: in BASELINE, missing from CURRENT" in err
    assert "8 cell(s), 48 metric(s) compared, 1 regression(s), 1 missing, 0 new, 0 not compared" in out
    rc, out, err = _run(capsys, tmp / "base", tmp / "cur", "--partial", "--out", tmp / "summary.md")
    assert rc == 0 and "REGRESSED" not in err and "✅ no regression" in out
    assert "8 cell(s), 48 metric(s) compared, 0 regression(s), 1 missing, 0 new, 0 not compared" in out
    assert "- mixste[tiny]/uniform+interpolation/9@1 (cell not in CURRENT)" in out.split("Not compared")[1]
    assert (tmp / "summary.md").read_text().strip() == out.strip()


def test_baseline_metrics_it_lacks_are_not_required(capsys, stores):
    """The committed CI baseline holds params and FLOPs only: MPJPE and frames/s of CURRENT are extra."""
    tmp, base, _ = stores
    write_report(str(base.root), str(tmp / "rep"))
    full = pd.read_csv(tmp / "rep" / "results.csv")
    full.drop(columns=["mpjpe_mm", "frames_per_s"]).assign(p_mpjpe_mm=float("nan")).to_csv(tmp / "b.csv", index=False)
    rc, out, _ = _run(capsys, tmp / "b.csv", base.root)
    assert rc == 0 and "9 cell(s), 27 metric(s) compared, 0 regression(s)" in out


def test_committed_ci_baseline_against_itself(capsys):
    csv = Path(__file__).resolve().parent.parent / "results" / "baselines" / "quickstart_params_flops.csv"
    rc, out, _ = _run(capsys, csv, csv)
    n = len(pd.read_csv(csv))
    assert rc == 0 and f"{n} cell(s), {3 * n} metric(s) compared, 0 regression(s)" in out


@pytest.mark.parametrize("speed", [0.0, -5.0, math.inf, math.nan])
def test_speed_rule_needs_a_positive_baseline_speed(speed):
    """Stores never hold such a value (the schema rejects it); a hand-built row still gets no division by 0."""
    cell = dict(backbone="mixste", preset="tiny", pipeline="seq2seq", pruner="none", recoverer="none",
                schedule="[]", data="realmocap", mode="scratch", seed=0, status="ok")
    out = Comparison()
    _compare_cell(out, pd.Series(dict(cell, frames_per_s=speed)), pd.Series(dict(cell, frames_per_s=100.0)), 0.5, 0.1)
    assert out.rows == [] and _value(pd.Series({"frames_per_s": speed}), "frames_per_s") is None
    _compare_cell(out, pd.Series(dict(cell, frames_per_s=100.0)), pd.Series(dict(cell, frames_per_s=0.0)), 0.5, 0.1)
    assert [r["verdict"] for r in out.rows] == ["REGRESSED"]  # a current speed of 0 is measured, and regressed


@pytest.mark.parametrize("case", ["nothing", "empty", "garbage", "columns", "tol"])
def test_bad_input_is_one_line_exit_2(tmp_path, stores, case):
    base = stores[1].root
    other = {"nothing": tmp_path / "nope", "empty": tmp_path / "empty", "garbage": tmp_path / "g.csv",
             "columns": tmp_path / "c.csv", "tol": base}[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "g.csv").write_bytes(b"\x00\xff\xfe garbage")
    (tmp_path / "c.csv").write_text("a,b\n1,2\n")
    extra = ["--speed-tol", "1.5"] if case == "tol" else []
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "compare", str(base), str(other), *extra],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("vptbench: error:"), err


def test_speed_is_not_compared_across_machines(capsys, stores):
    """The same code on another CPU: its ~2x speed is not a regression, and its MPJPE gets the measured
    cross-machine spread as tolerance (the issue: 21 "regressions" and no word of the two CPUs)."""
    import copy

    from bench.report.compare import CROSS_MACHINE_MPJPE_MM

    tmp, _, recs = stores
    other = copy.deepcopy(recs)
    for r in other:
        r["env"] = dict(r["env"], cpu_name="Other CPU")
        r["frames_per_s"] *= 0.5
    other[3]["mpjpe_mm"] += CROSS_MACHINE_MPJPE_MM - 0.5  # within the cross-machine spread
    write_store(tmp / "other", other)
    rc, out, err = _run(capsys, tmp / "base", tmp / "other")
    assert rc == 0, err
    assert "Speed not compared: measured on different machines" in out and "cpu_name=Other CPU" in out
    assert "frames/s of 9 cell(s) not compared" in err and "--across-machines" in err
    assert "speed on another machine" in out and "(across machines)" in out
    rc, _, err = _run(capsys, tmp / "base", tmp / "other", "--across-machines")
    assert rc == 1 and err.count("frames_per_s") >= 9  # asked for: the other CPU's speed is compared, and fails
    other[3]["mpjpe_mm"] += 1.0                        # past the spread: a regression on any machine
    write_store(tmp / "other2", other)
    rc, _, err = _run(capsys, tmp / "base", tmp / "other2")
    assert rc == 1 and "uniform+attention/9@1 mpjpe_mm" in err
    # a comparison of speed alone across machines compares nothing: one line, exit 2
    speed_only = [{k: v for k, v in r.items() if k not in ("params_m", "gflops", "gflops_total", "mpjpe_mm",
                                                                 "p_mpjpe_mm")} for r in other]
    base_speed = [{k: v for k, v in r.items() if k not in ("params_m", "gflops", "gflops_total", "mpjpe_mm",
                                                                "p_mpjpe_mm")} for r in recs]
    write_store(tmp / "so_cur", speed_only)
    write_store(tmp / "so_base", base_speed)
    rc, _, err = _run(capsys, tmp / "so_base", tmp / "so_cur")
    lines = err.strip().splitlines()
    assert rc == 2 and "measured speed only, on different machines" in lines[-1], err
