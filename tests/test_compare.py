"""`vptbench compare`: a store against itself passes; a changed FLOPs count, a worse MPJPE or a slower
cell fails and is named; bad input is one line with exit 2."""
import subprocess
import sys

import pytest

from bench.cli import main
from bench.report import write_report
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
    assert rc == 0 and "no regression" in out and "9 cell(s) compared" in out
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
