"""Reliability of the orchestrator: bad input is one line before any compute, a grid killed with
SIGKILL resumes to exactly one ok record per cell, concurrent writers never tear a record."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bench import cli
from bench import store as store_module
from bench.store import ResultStore

TINY = ["preset=tiny", "metrics=[params]"]
CLUSTER = ["pruner=cluster", "recoverer=attention"]

BAD = [  # (overrides, text the one-line error must contain)
    (["backbone=mixstee"], "mixste"),
    (["backbone=", "pruner=none"], "backbone"),
    (["pruner=clusterr"], "cluster"),
    (["recoverer=attn", *CLUSTER[:1], "schedule=[[1,9]]"], "interpolation"),
    (["preset=huge"], "tiny"),
    (["pipeline=seq2many"], "seq2frame"),
    (["data=h37m"], "realmocap"),
    (["data=h36m", "metrics=[accuracy]"], "data file data/data_3d_h36m.npz not found"),
    (["data=h36m", "data.paths={3d: a.npz}", "metrics=[accuracy]"], "data file a.npz not found"),
    (["data.noise_px=-2", "metrics=[accuracy]"], "noise_px=-2.0 must be a finite number >= 0"),
    (["mode=zeroshot", *CLUSTER, "schedule=[[1,9]]"], "learnable parameters"),
    (["mode=sometimes"], "valid: scratch, finetune, zeroshot"),
    (["speed.precision=int4"], "valid: fp32, bf16, fp16"),
    (["experiment=nope"], "hot_fig1"),
    (["model=hot_mixstee"], "hot_mixste"),
    (["model=hot_motionagformer", "preset.name=base"], "no value for preset 'base'"),
    (["-m", "experiment=layer_x_tokens", "preset.name=base"], "no value for preset 'base'"),
    ([*CLUSTER, "schedule=[[1,300]]"], "stage 1"),
    ([*CLUSTER, "schedule=[[1,9],[0,3]]"], "stage 2"),
    ([*CLUSTER, "schedule=[[9,9]]"], "stage 1"),
    ([*CLUSTER, "schedule=[[1,9],[2,18]]"], "stage 2"),
    ([*CLUSTER, "schedule=[[1]]"], "schedule"),
    ([*CLUSTER, "schedule=[[1,-3]]"], "stage 1"),
    ([*CLUSTER, "schedule=oops"], "schedule"),
    ([*CLUSTER, "schedule=[]"], "needs a schedule"),
    (["pruner=cluster", "schedule=[[1,9]]"], "recoverer"),
    (["backbone=poseformer", "pipeline=seq2seq"], "seq2frame"),
    (["metrics=[params,flop]"], "valid metrics"),
    (["metrics=[]"], "valid metrics"),
    (["seed=abc"], "seed"),
    (["train.steps=many"], "train.steps"),
    (["train.steps=-1"], "train.steps must be >= 0"),
    (["speed.batch_size=0"], "speed.batch_size must be >= 1"),
    (["rerun=maybe"], "rerun"),
    (["+foo=1"], "unknown config key 'foo'"),
    (["foo=1"], "foo"),
    (["++bar=2"], "unknown config key 'bar'"),
    (["+train.foo=2"], "unknown config key 'train.foo'"),
    (["+speed.turbo=true"], "unknown config key 'speed.turbo'"),
    (["backbone.overrides.depth=2"], "+backbone.overrides.depth"),
    (["+backbone.overrides.dim=30"], "valid options"),
    (["+backbone.overrides.depth=x"], "mixste option depth must be int (like "),
    (["-m", "pruner=cluster,foo", "recoverer=attention", "schedule=[[1,9]]"], "cluster"),
    (["pruner=cluster,uniform"], "add -m"),
    (["schedule=[[1,9]"], "'[[1,9]'"),
    (["--frobnicate"], "unknown flag"),
    # numbers in range before any compute (they used to fail inside the cell, or succeed wrongly)
    (["speed.iters=0"], "speed.iters must be >= 1, got 0"),
    (["speed.repeats=0"], "speed.repeats must be >= 1, got 0"),
    (["speed.threads=0"], "speed.threads must be >= 1, got 0"),
    (["speed.warmup=-1"], "speed.warmup must be >= 0"),
    (["train.lr=nan"], "train.lr must be a finite number > 0, got nan"),
    (["train.lr=0"], "train.lr must be a finite number > 0"),
    (["train.weight_decay=-0.1"], "train.weight_decay must be a finite number >= 0"),
    (["train.minutes=inf"], "train.minutes"),
    (["train.epochs=nan"], "train.epochs"),
    (["data.train_stride=0"], "data.train_stride must be >= 1"),
    (["eval.batch_size=0"], "eval.batch_size must be >= 1"),
    (["seed=-1"], "seed must be >= 0, got -1"),
    (["+backbone.overrides.depth=0"], "mixste option depth must be >= 1, got 0"),
    (["+backbone.overrides.drop_path_rate=1.5"], "drop_path_rate must be in [0, 1)"),
    (["-m", "experiment=backbones", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs=0"),
    (["-m", "experiment=backbones", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=0"],
     "cpus_per_task=0 must be >= 1"),
    # a group option is a file name in its folder, never a path out of ablations/
    (["experiment=../model/hot_mixste"], "experiment=../model/hot_mixste is not an option name"),
    (["experiment=/etc/passwd"], "is not an option name"),
    (["-m", "recipe=mixste,../../x"], "recipe=../../x is not an option name"),
    (["hydra/launcher=../x"], "is not an option name"),
    # strategy options are typed: a typo is one line listing the valid options (it used to fail in the cell)
    ([*CLUSTER, "schedule=[[1,9]]", "+pruner.args.foo=1"], "unknown pruner option(s) foo for pruner 'cluster'"),
    ([*CLUSTER, "schedule=[[1,9]]", "+recoverer.args.quer_init=pos"],
     "unknown recoverer option(s) quer_init for recoverer 'attention'; valid options: query_init"),
    (["pruner=dct", "recoverer=interpolation", "schedule=[[1,9]]"], "pick recoverer=attention | idct"),
    # the unpruned baseline and seq2frame drop the recoverer; a typo in its options is still named
    (["pruner=none", "recoverer=attention", "+recoverer.args.quer_init=pos"], "unknown recoverer option(s) quer_init"),
    ([*CLUSTER[:1], "pipeline=seq2frame", "schedule=[[1,9]]", "+recoverer.args.x=1"], "unknown recoverer option(s) x"),
]


def run_main(capsys, *args):
    rc = cli.main(["run", *args])
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize("overrides,needle", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_override_is_one_line(tmp_path, capsys, overrides, needle):
    extra = [t for t in TINY if not any(o.startswith(t.split("=")[0] + "=") for o in overrides)]
    rc, err = run_main(capsys, *overrides, *extra, f"store={tmp_path / 's'}")
    assert rc != 0
    assert len(err.splitlines()) == 1, err
    assert needle in err and "Traceback" not in err, err
    assert not (tmp_path / "s").exists()  # nothing ran, nothing written


@pytest.mark.parametrize("store,needle", [("", "store= is empty"), ("/", "is the filesystem root"),
                                           ("/tmp/..", "is the filesystem root")])
def test_store_must_be_a_directory_of_its_own(tmp_path, capsys, monkeypatch, store, needle):
    monkeypatch.chdir(tmp_path)  # an empty store would have written here
    rc, err = run_main(capsys, *TINY, f"store={store}")
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert list(tmp_path.iterdir()) == []


def test_slurm_without_slurm_is_one_line(tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda tool, *a, **k: None)  # whatever this machine has
    rc, err = run_main(capsys, "-m", *TINY, "experiment=backbones", "hydra/launcher=submitit_slurm",
                       f"store={tmp_path / 's'}")
    assert rc == 2 and len(err.splitlines()) == 1 and "sbatch and srun are not on PATH" in err, err
    assert not (tmp_path / "s").exists()


def _bad_store(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    return tmp_path / "file"


def _readonly_store(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return d


@pytest.mark.parametrize("make,needle", [(_bad_store, "cannot write results store"),
                                          (_readonly_store, "cannot write results store")],
                         ids=["store-is-a-file", "store-read-only"])
def test_bad_store_is_one_line(tmp_path, capsys, make, needle):
    if make is _readonly_store and os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    rc, err = run_main(capsys, *TINY, f"store={make(tmp_path)}")
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def _write_bad_realmocap(d, how):
    from bench.data import h36m, realmocap

    src = realmocap.FILES_DIR
    d.mkdir()
    if how == "missing":
        return
    p3 = h36m.read_positions_3d(src / realmocap.FILE_3D)
    p2, meta = h36m.read_positions_2d(src / realmocap.FILE_2D), h36m.read_metadata(src / realmocap.FILE_2D)
    subject = next(iter(p3))
    action = next(iter(p3[subject]))
    if how == "shape":
        p3[subject][action] = p3[subject][action][:, :5]
    elif how == "nan":
        p2[subject][action][0][3, 4] = np.nan
    h36m.write_positions_3d(d / realmocap.FILE_3D, p3)
    h36m.write_positions_2d(d / realmocap.FILE_2D, p2, meta)
    (d / realmocap.FILE_CAMERAS).write_bytes((src / realmocap.FILE_CAMERAS).read_bytes())


@pytest.mark.parametrize("how,needle", [("missing", "not found"), ("shape", "expected (T>0, 17, 3)"),
                                         ("nan", "NaN")])
def test_bad_data_file_is_one_line_before_compute(tmp_path, capsys, monkeypatch, how, needle):
    from bench.data import realmocap

    _write_bad_realmocap(tmp_path / "files", how)
    monkeypatch.setattr(realmocap, "FILES_DIR", tmp_path / "files")
    rc, err = run_main(capsys, "preset=tiny", "metrics=[params,accuracy]", f"store={tmp_path / 's'}")
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err
    assert not list((tmp_path / "s").glob("*.json"))


def test_cell_exception_is_recorded_and_grid_goes_on(tmp_path, capsys, monkeypatch):
    """A TypeError deep in a builder (a bug, not a validation error) fails that cell only."""
    from backbones.hourglass import pruning

    def broken(self, options=None):
        raise TypeError("ClusterPruner.__init__() got an unexpected keyword argument 'foo'")

    monkeypatch.setattr(pruning.ClusterPruner, "__init__", broken)
    rc, err = run_main(capsys, "-m", *CLUSTER, "preset=tiny", "metrics=[params]", "schedule=[[1,9]],[[2,9]]",
                       f"store={tmp_path / 'bad'}")
    assert rc == 1
    assert err.count("TypeError") >= 2 and "2 of 2 cell(s) failed" in err and "Traceback" not in err
    recs = list(ResultStore(tmp_path / "bad").records())
    assert len(recs) == 2 and {r["status"] for r in recs} == {"failed"}
    assert all("unexpected keyword argument 'foo'" in r["error"] for r in recs)


def test_corrupt_and_foreign_store_files_are_reported_and_skipped(tmp_path, capsys, monkeypatch):
    warnings = []
    monkeypatch.setattr(store_module.log, "warning", lambda fmt, *a: warnings.append(fmt % a))
    args = ("preset=tiny", "metrics=[params]", f"store={tmp_path}")
    assert run_main(capsys, *args)[0] == 0
    (key_file,) = tmp_path.glob("*.json")
    key_file.write_text('{"key": "x", "sta')  # torn by something else
    (tmp_path / "notes.json").write_text("[1, 2]")
    (tmp_path / ".tmp-otherhost-1-abc.json").write_text('{"key": "x", "status": "ok"}')
    rc, err = run_main(capsys, *args)
    assert rc == 0 and "Traceback" not in err
    assert [r["status"] for r in ResultStore(tmp_path).records()] == ["ok"]  # the cell was re-run
    assert len(warnings) == 2, warnings  # one line per bad file, however often it is read
    assert f"skipping unreadable store file {key_file}" in warnings[0] and "foreign file" in warnings[1]


# --- SIGKILL at several points, then resume ----------------------------------------------------

GRID = ["-m", "backbone=mixste", "preset=tiny", *CLUSTER, "metrics=[params,flops]",
        "schedule=[[1,3]],[[1,9]],[[2,9]],[[3,9]],[[1,18],[2,9]]"]


def _vptbench(store, timeout=120):
    return subprocess.run([sys.executable, "-m", "bench.cli", "run", *GRID, f"store={store}"],
                          capture_output=True, text=True, timeout=timeout)


def _records(store):
    return [p for p in store.glob("*.json") if not p.name.startswith(".")]


def _kill_when(store, records, timeout=60.0):
    """Start the grid and SIGKILL its process group once the store holds `records` records (0: one
    second after start-up); returns how many records there were when it died."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", *GRID, f"store={store}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    start, count = time.monotonic(), lambda: len(_records(store))
    time.sleep(1.0 if records == 0 else 0.0)
    while proc.poll() is None and count() < records and time.monotonic() - start < timeout:
        time.sleep(0.005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return count()


def test_sigkill_then_resume_gives_one_ok_record_per_cell(tmp_path):
    store = tmp_path / "store"
    seen = []
    for records in (0, 1, 3):  # during start-up, after the first cell, mid-grid
        seen.append(_kill_when(store, records))
        for p in _records(store):  # whatever survived a kill is a whole record (hidden: a writer's temp file)
            json.loads(p.read_text())
    assert any(0 < n < 5 for n in seen), seen  # at least one kill landed between cells of the grid
    proc = _vptbench(store)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(p.name for p in store.iterdir())
    assert len(files) == 5 and not [f for f in files if f.startswith(".")], files
    recs = [json.loads((store / f).read_text()) for f in files]
    assert {r["status"] for r in recs} == {"ok"} and len({r["key"] for r in recs}) == 5
    assert all(r["gflops"] > 0 and r["params_m"] > 0 for r in recs)
    again = _vptbench(store)  # a finished grid does no work
    assert again.returncode == 0 and "already in the store" in again.stderr
    assert sorted(p.stat().st_mtime_ns for p in store.iterdir()) == sorted(
        (store / f).stat().st_mtime_ns for f in files)


# --- concurrent writers -----------------------------------------------------------------------

def _writer(root, wid, n):
    store = ResultStore(root)
    for i in range(n):
        store.put({"key": f"k{i % 5}", "status": "ok", "writer": wid, "i": i, "pad": "x" * (20000 + 97 * wid)})


def test_concurrent_writers_leave_every_record_parseable(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs):  # readers never see a torn record meanwhile
        for p in tmp_path.glob("k*.json"):
            try:
                rec = json.loads(p.read_text())
            except FileNotFoundError:
                continue
            assert rec["key"] == p.stem
            reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"k{i}.json" for i in range(5)]
    for p in tmp_path.iterdir():
        rec = json.loads(p.read_text())
        assert rec["key"] == p.stem and len(rec["pad"]) >= 20000


def test_prepare_cleans_dead_writers_temp_files(tmp_path):
    store = ResultStore(tmp_path)
    store.put({"key": "k", "status": "ok"})
    dead = tmp_path / f"{ResultStore._temp_prefix().rsplit('-', 2)[0]}-999999999-abc.json"
    dead.write_text('{"key": "k", "status": "ok", "torn')
    mine = tmp_path / f"{ResultStore._temp_prefix()}live.json"
    mine.write_text("{}")
    assert [r["key"] for r in store.records()] == ["k"]  # temp files are never records
    store.prepare()
    assert not dead.exists() and mine.exists()
