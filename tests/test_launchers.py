"""`vptbench run -m` under hydra's joblib and submitit launchers: every job writes its own record,
the command's summary reads them back from the store (failures included), workers get a share of
the cores, and speed is timed alone after the parallel part."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.store import ResultStore

CELLS = ["-m", "backbone=mixste", "preset=tiny", "recoverer=attention", "schedule=[[1,9]]"]


def vptbench(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "bench.cli", "run", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_joblib_failed_cell_is_summarised_and_speed_runs_alone(tmp_path):
    # a learning rate of 1e9 passes every check but diverges inside its joblib worker (TrainingDiverged)
    proc = vptbench(*CELLS, "pruner=cluster", "train.lr=0.004,1e9", "metrics=[params,speed,accuracy]", "data=synthetic",
                    "train.steps=3", "train.progress=false", "speed.warmup=1", "speed.iters=1", "speed.repeats=2",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"store={tmp_path}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert "vptbench: 1 of 2 cell(s) failed:" in err[-2]
    assert "TrainingDiverged: training diverged at step" in err[-1]
    assert "Traceback" not in proc.stderr
    recs = {r["config"]["train"]["lr"]: r for r in ResultStore(tmp_path).records()}
    assert recs[1e9]["status"] == "failed" and "lower train.lr" in recs[1e9]["error"]
    ok = recs[0.004]
    assert ok["status"] == "ok" and ok["params_m"] > 0 and ok["clips_per_s"] > 0 and ok["mpjpe_mm"] > 0
    assert "done=1" in proc.stderr and "failed=1" in proc.stderr  # the progress bar


@pytest.mark.slow
def test_joblib_workers_share_the_cores_and_a_rerun_does_no_work(tmp_path):
    args = [*CELLS, "pruner=cluster,uniform,attention", "metrics=[params]", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", f"store={tmp_path}"]
    proc = vptbench(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = list(ResultStore(tmp_path).records())
    assert len(recs) == 3 and {r["status"] for r in recs} == {"ok"}
    assert {r["env"]["threads"] for r in recs} == {max(1, os.cpu_count() // 2)}
    again = vptbench(*args)
    assert again.returncode == 0 and "Joblib" not in again.stdout + again.stderr  # nothing launched
    assert [json.loads(l)["skipped"] for l in again.stdout.splitlines()] == [True] * 3


@pytest.mark.slow
def test_submitit_local(tmp_path):
    proc = vptbench(*CELLS, "pruner=cluster,uniform", "metrics=[params,flops]", "hydra/launcher=submitit_local",
                    "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={tmp_path / 'multirun'}",
                    f"store={tmp_path / 'store'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = list(ResultStore(tmp_path / "store").records())
    assert len(recs) == 2 and {r["status"] for r in recs} == {"ok"}
    assert {r["env"]["threads"] for r in recs} == {1}  # cpus_per_task
