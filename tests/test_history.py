"""The benchmark history: change points on series with known steps (and none on flat noise), a history
imported out of commit order, machines kept apart, the accepted-steps file, and the CLI's exit codes."""
from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest

from bench.changepoint import fit_segments
from bench.fingerprint import machine_fingerprint
from bench.history import add_records, check_history
from test_cli import vptbench


def test_steps_are_found_where_the_level_moves():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.full(12, 1.0), np.full(10, 1.1), np.full(12, 0.95)]) * (1 + 0.01 * rng.standard_normal(34))
    assert [s.start for s in fit_segments(x)] == [0, 12, 22]
    # a deterministic metric (params, FLOPs): every change of value is a step, however small
    assert [s.start for s in fit_segments([10.0, 10.0, 10.0, 10.001, 10.001, 12.0])] == [0, 3, 5]
    assert [s.level for s in fit_segments([5.0] * 7)] == [5.0]
    # one wild run inside a noisy series is an outlier, not a level, once a level needs 2 commits; the newest
    # commit alone may still start one (a caller calls it pending)
    y = 1 + 0.02 * rng.standard_normal(30)
    y[14] = 1.6
    assert len(fit_segments(y)) == 3 and len(fit_segments(y, min_size=2)) == 1
    y[-1] = 1.6
    assert [s.start for s in fit_segments(y, min_size=2)] == [0, 29]


def test_false_steps_on_flat_noise_and_detection_rate_are_as_documented():
    """The calibration bench.changepoint states: heavy-tailed flat noise rarely shows a step, a 2.5-sigma step in a
    60-commit series is nearly always found (seeded, so the rates are exact)."""
    rng = np.random.default_rng(42)
    false = np.mean([len(fit_segments(1 + 0.05 * rng.standard_t(3, size=20))) > 1 for _ in range(300)])
    assert false <= 0.03
    found = 0
    for _ in range(100):
        x = 1 + 0.02 * rng.standard_normal(60)
        x[30:] *= 1.05
        found += any(abs(s.start - 30) <= 2 for s in fit_segments(x)[1:])
    assert found >= 90


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git repository of 6 commits and a real results.csv (one tiny cell's params and FLOPs)."""
    root = tmp_path_factory.mktemp("history")
    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    commits = []
    for i in range(6):
        _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", f"change {i}")
        commits.append(_git(repo, "rev-parse", "HEAD"))
    store = root / "store"
    vptbench("run", "backbone=mixste", "preset=tiny", "metrics=[params,flops]", f"store={store}")
    vptbench("report", "--store", str(store), "--out", str(root / "report"))
    return dict(root=root, repo=repo, commits=commits, csv=root / "report" / "results.csv", store=store)


def _measured(project, i, fps, gflops=None, cpu=None, tag=""):
    """The cell's results.csv as commit i would have produced it: frames/s `fps`, FLOPs as given."""
    df = pd.read_csv(project["csv"], dtype=str, keep_default_na=False)
    df["env_git_commit"] = project["commits"][i][:12]
    df["env_timestamp"] = f"2026-12-0{i + 1}T00:00:00{tag}"
    df["frames_per_s"] = str(fps)
    if gflops is not None:
        df["gflops"] = str(gflops)
    if cpu is not None:
        df["env_cpu_name"] = cpu
    path = project["root"] / f"c{i}{tag}{cpu or ''}.csv"
    df.to_csv(path, index=False)
    return path


SPEED = [100.0, 101.0, 99.5, 100.5, 80.0, 80.5]  # 20 % slower from commit 4 on


def _steps(db, accepted="none.csv"):
    return {(s.metric, s.verdict): s for s in check_history(str(db), accepted)}


def test_a_history_imported_out_of_order_names_the_commit_that_slowed_it(project, tmp_path):
    gflops0 = float(pd.read_csv(project["csv"])["gflops"].iloc[0])
    flops = [gflops0] * 5 + [gflops0 * 1.2]          # the model grows at the last commit
    files = [_measured(project, i, SPEED[i], flops[i]) for i in range(6)]
    db = tmp_path / "h.sqlite"
    for i in (3, 0, 5, 1, 4, 2):                    # any order: git's history orders them
        assert add_records(str(files[i]), str(db), repo=str(project["repo"]))["points"] >= 3
    assert add_records(str(files[2]), str(db), repo=str(project["repo"]))["points"] == 0  # once is enough
    steps = _steps(db, tmp_path / "none.csv")
    c = project["commits"]
    speed = steps[("frames_per_s", "regression")]
    assert (speed.first, speed.previous, speed.points) == (c[4], c[3], 2)
    assert speed.after < 0.85 * speed.before
    flop = steps[("gflops", "regression")]
    assert (flop.first, flop.previous, flop.points) == (c[5], c[4], 1)  # exact metric: one commit is enough
    assert all(s.metric in ("frames_per_s", "gflops") for s in steps.values())  # params never moved

    # the accepted-steps file silences exactly the steps it names
    accepted = tmp_path / "accepted.csv"
    accepted.write_text("commit,cell,metric,reason\n"
                        f"{c[4][:10]},{speed.cell[:12]},frames_per_s,the new default schedule costs speed\n")
    after = _steps(db, accepted)
    assert ("frames_per_s", "accepted") in after and ("gflops", "regression") in after
    proc = vptbench("history", "check", "--db", str(db), "--accepted", str(accepted), check=False)
    assert proc.returncode == 1 and "REGRESSED" in proc.stderr and "gflops" in proc.stderr
    assert "frames_per_s" not in proc.stderr.split("REGRESSED", 1)[1]
    with accepted.open("a") as f:
        f.write(f"{c[5][:10]},{flop.cell[:12]},gflops,the recoverer gained a projection\n")
    proc = vptbench("history", "check", "--db", str(db), "--accepted", str(accepted), "--out", str(tmp_path / "s.md"),
                    check=False)
    assert proc.returncode == 0, proc.stderr
    assert "✅ no regression" in (tmp_path / "s.md").read_text() and "| accepted |" in proc.stdout


def test_a_single_slow_commit_is_pending_and_machines_are_separate_series(project, tmp_path):
    db = tmp_path / "h.sqlite"
    for i, fps in enumerate([100.0, 100.5, 99.5, 100.0, 101.0, 70.0]):  # only the newest commit is slow
        add_records(str(_measured(project, i, fps)), str(db), repo=str(project["repo"]))
    assert [s.verdict for s in check_history(str(db), "none.csv") if s.metric == "frames_per_s"] == ["pending"]
    assert vptbench("history", "check", "--db", str(db), check=False).returncode == 0
    # another CPU at half the speed, same commits: its own series, never a step against the first machine
    db2 = tmp_path / "h2.sqlite"
    for i in range(6):
        add_records(str(_measured(project, i, 100.0)), str(db2), repo=str(project["repo"]))
        add_records(str(_measured(project, i, 50.0, cpu="Other CPU")), str(db2), repo=str(project["repo"]))
    assert check_history(str(db2), "none.csv") == []
    a = machine_fingerprint({"cpu_name": "AMD EPYC", "cpu_count": 2, "torch_version": "2.13.0+cpu", "host": "a"})
    b = machine_fingerprint({"cpu_name": "AMD EPYC", "cpu_count": 2.0, "torch_version": "2.13.0+cpu", "host": "b"})
    c = machine_fingerprint({"cpu_name": "AMD EPYC", "cpu_count": 2, "torch_version": "2.14.0+cpu"})
    assert a == b and a[0] != c[0]  # not the host name; a new torch is a new series


def test_history_input_problems_are_one_line(project, tmp_path):
    db = tmp_path / "h.sqlite"
    proc = vptbench("history", "add", str(project["store"]), "--db", str(db), "--repo", str(project["repo"]), check=False)
    assert proc.returncode == 0 and "whose commit" in proc.stderr  # measured in another checkout: skipped, said
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database, just bytes" * 100)
    for args, needle in [
        (["check", "--db", str(tmp_path / "none.sqlite")], "no history at"),
        (["check", "--db", str(junk)], "is not a vptbench history file"),
        (["add", str(project["csv"]), "--db", str(junk), "--repo", str(project["repo"])], "is not a vptbench history file"),
        (["add", str(project["csv"]), "--db", str(db), "--repo", str(tmp_path)], "is not a git checkout"),
    ]:
        proc = vptbench("history", *args, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    add_records(str(_measured(project, 0, 100.0)), str(db), repo=str(project["repo"]))
    bad = tmp_path / "accepted.csv"
    bad.write_text("commit,cell,metric,reason\nabcdef1234,deadbeef,gflops,\n")
    proc = vptbench("history", "check", "--db", str(db), "--accepted", str(bad), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "needs commit, cell, metric, reason" in lines[0], proc.stderr


def test_a_commit_hash_that_looks_like_a_number_stays_a_commit(project, tmp_path):
    """results.csv is text: a short hash of digits and one 'e' ("4739e1234567") is a float to pandas, one of
    digits with a leading zero an int without it; either made `history add` skip every record (flaky: it
    depends on the hashes git draws)."""
    from bench.report.frame import read_results

    for fake in ("4739e1234567", "012345678901"):
        path = _measured(project, 0, 100.0, tag=fake)
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df["env_git_commit"] = fake
        df.to_csv(path, index=False)
        assert read_results(str(path))["env_git_commit"].tolist() == [fake]
