"""End-to-end CLI: parity cells (one JSON record on the last stdout line), bad input, a small grid + report."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

PARITY = [  # (overrides, params M, paper GFLOPs) — counted on the official HoT code, one clip at batch 1
    (["pruner=cluster", "recoverer=attention", "schedule=[[3,81]]"], 35.000, 167.512),
    ([], 33.784, 277.248),
    (["pruner=cluster", "pipeline=seq2frame", "schedule=[[7,61]]"], 33.784, 251.284),
]


def vptbench(*args, check=True, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("overrides,params_m,gflops", PARITY, ids=["hot_mixste", "mixste", "tpc_mixste"])
def test_parity_cell_prints_record(tmp_path, overrides, params_m, gflops):
    proc = vptbench("run", "backbone=mixste", *overrides, "metrics=[params,flops]", f"store={tmp_path}")
    rec = last_json(proc.stdout)
    assert rec["status"] == "ok"
    assert rec["params_m"] == pytest.approx(params_m, abs=0.001)
    assert rec["gflops"] == pytest.approx(gflops, rel=1e-3)
    assert rec["gflops_total"] > rec["gflops"]  # attention matmuls and norms come on top
    assert "mpjpe_mm" not in rec  # accuracy was not asked: no data needed
    assert len(list(tmp_path.glob("*.json"))) == 1


BAD = [
    (["backbone=mixstee"], "mixste"),
    (["pruner=clusterr"], "cluster"),
    (["recoverer=attn"], "interpolation"),
    (["preset=huge"], "tiny"),
    (["pruner=cluster", "recoverer=attention", "schedule=[[3,300]]"], "stage 1"),
    (["pruner=cluster", "recoverer=attention", "schedule=[[3,81],[2,40]]"], "stage 2"),
    (["pruner=cluster", "recoverer=attention", "schedule=[[8,81]]"], "stage 1"),
    (["pruner=cluster", "recoverer=attention", "schedule=[[3,81],[5,81]]"], "stage 2"),
    (["pruner=cluster", "schedule=[[3,81]]"], "recoverer"),
    (["metrics=[params,flop]"], "valid metrics"),
    (["-m", "pruner=cluster,foo", "recoverer=attention", "schedule=[[3,81]]"], "cluster"),
]


@pytest.mark.parametrize("overrides,needle", BAD)
def test_bad_input_is_one_line_before_compute(tmp_path, overrides, needle):
    extra = [] if any(o.startswith("metrics=") for o in overrides) else ["metrics=[params]"]
    proc = vptbench("run", *overrides, *extra, f"store={tmp_path}", check=False, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and "Traceback" not in err
    assert not tmp_path.exists() or not list(tmp_path.iterdir())  # nothing ran, nothing written


@pytest.mark.slow
def test_grid_and_report(tmp_path):
    store, out = tmp_path / "store", tmp_path / "report"
    args = ["run", "-m", "backbone=mixste", "preset=tiny", "data=synthetic", "pruner=none,cluster,uniform",
            "recoverer=interpolation,attention", "schedule=[[1,9]],[[1,18],[2,9]]",
            "metrics=[params,flops,speed,accuracy]", "train.steps=2", "train.batch_size=4", "train.progress=false",
            "speed.warmup=1", "speed.iters=1", "speed.repeats=2", f"store={store}"]
    vptbench(*args)
    recs = [json.loads(p.read_text()) for p in store.glob("*.json")]
    # 1 baseline (its recoverer/schedule duplicates collapse) + 2 pruners x 2 recoverers x 2 schedules
    assert len(recs) == 9
    assert all(r["status"] == "ok" for r in recs)
    for r in recs:
        assert r["mpjpe_mm"] > 0 and r["gflops"] > 0 and r["frames_per_s"] > 0
        assert r["env"]["torch_version"]
    base = next(r for r in recs if r["pruner"] == "none")
    assert all(r["gflops"] < base["gflops"] for r in recs if r["pruner"] != "none")
    # a second run finds every cell in the store and does no work (one line per distinct cell)
    again = vptbench(*args)
    assert again.stdout.count('"skipped": true') == 9 and "already in the store" in again.stderr
    files = vptbench("report", "--store", str(store), "--out", str(out)).stdout.split()
    assert {"results.csv", "results.md", "efficiency.tex", "pareto_flops_mpjpe.png"} <= {p.split("/")[-1] for p in files}
    md = (out / "results.md").read_text()
    assert "SYNTHETIC" in md and "baseline" in md


def test_list_and_unknown_command():
    out = vptbench("list").stdout
    for name in ("mixste", "cluster", "attention", "uniform", "motion", "interpolation", "nearest", "quickstart",
                 "hot_fig1", "pruner_x_recoverer", "layer_x_tokens", "hierarchical", "backbones", "hot_motionbert", "recipes:    mhformer, mixste"):
        assert name in out
    proc = vptbench("frobnicate", check=False)
    assert proc.returncode == 2 and "valid commands" in proc.stderr


def test_fixed_override_pins_a_key_the_experiment_sweeps():
    """`-m experiment=X key=v` runs the experiment's grid at key=v only (hydra's BasicSweeper does the
    same), a sweep on the command line replaces the experiment's values, the rest stays swept."""
    from bench.compose import compose_cells as _compose_all

    cells = _compose_all(["experiment=finetune_vs_zeroshot", "schedule=[[1,9]]", "seed=1", "pruner=cluster"],
                         multirun=True)
    assert len(cells) == 3                                          # the three recoverers
    assert {(c.pruner.name, str(c.schedule.as_list()), c.seed) for c in cells} == {("cluster", "[[1, 9]]", 1)}
    assert sorted(c.recoverer.name for c in cells) == ["attention", "interpolation", "nearest"]
    swept = _compose_all(["experiment=finetune_vs_zeroshot", "seed=0,2", "pruner=uniform", "recoverer=nearest"],
                         multirun=True)
    assert sorted({c.seed for c in swept}) == [0, 2] and len(swept) == 2 * 3  # seeds x the experiment's schedules


def test_the_main_job_writes_only_where_git_ignores():
    """`vptbench quickstart` on a fresh clone must leave `git status` clean: its store and report are ignored
    paths, and the committed example reports/quickstart/ is not its default output."""
    from pathlib import Path

    from bench.cli import QUICKSTART_OUT, QUICKSTART_STORE

    root = Path(__file__).resolve().parent.parent
    for path in (f"{QUICKSTART_STORE}/some-record.json", f"{QUICKSTART_OUT}/results.md"):
        assert subprocess.run(["git", "-C", str(root), "check-ignore", "-q", path]).returncode == 0, path
    assert not QUICKSTART_OUT.startswith("reports/")
