"""Human3.6M end to end from the command line, on small files written exactly as VideoPose3D's
prepare_data_h36m.py writes them: GT and CPN 2D, every mode, and the paper recipes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.data import H36M_ACTIONS
from h36m_files import write_h36m_files
from test_cli import vptbench

pytestmark = pytest.mark.slow

FAST = ["preset=tiny", "metrics=[accuracy]", "train.progress=false", "eval.batch_size=256"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_h36m_files(tmp_path_factory.mktemp("h36m"))


def _paths(files, kind):
    return f"data.paths={{3d: {files['3d']}, 2d: {files[kind]}}}"


def _records(store):
    return [json.loads(p.read_text()) for p in sorted(store.glob("*.json"))]


@pytest.mark.parametrize("kind,data", [("gt", "h36m"), ("cpn", "h36m_cpn")])
def test_h36m_every_mode_from_the_cli(tmp_path, files, kind, data):
    store = tmp_path / "store"
    proc = vptbench("run", "-m", *FAST, f"data={data}", _paths(files, kind), "pruner=cluster",
                    "recoverer=interpolation", "schedule=[[1,9]]", "mode=scratch,finetune,zeroshot",
                    "train.steps=3", "train.finetune_steps=2", f"store={store}")
    recs = _records(store)
    assert sorted(r["mode"] for r in recs) == ["finetune", "scratch", "zeroshot"], proc.stderr[-2000:]
    for r in recs:
        assert r["status"] == "ok" and r["data"] == "h36m"
        assert np.isfinite([r["mpjpe_mm"], r["p_mpjpe_mm"], r["mpjve_mm"]]).all()
        assert r["data_label"].endswith("GT 2D" if kind == "gt" else "CPN 2D")
        # test subjects S9 and S11; 'Walking 1' and 'TakingPhoto' count as the protocol's Walking and Photo
        assert sorted(r["per_action_mpjpe_mm"]) == ["Directions", "Photo", "Walking"]
        assert set(r["per_action_mpjpe_mm"]) <= set(H36M_ACTIONS)
        # subjects x actions x cameras x 3 clips of 27 frames covering the 64 (CPN tracks truncated to 64)
        assert r["eval_frames"] == 2 * 3 * 4 * 3 * 27
    # finetune and zeroshot share one cached baseline, trained on the training subjects
    assert len(list((store / "checkpoints").glob("*.pt"))) == 1
    assert len({r["baseline_key"] for r in recs if r["mode"] != "scratch"}) == 1


@pytest.mark.parametrize("recipe,extra", [
    ("mixste", ["backbone=mixste"]),                               # stride 243: one window per sequence
    ("mhformer", ["model=tpc_mhformer", "train.epochs=0.1"]),       # batch 128, stride 1, seq2frame
])
def test_h36m_paper_recipes_from_the_cli(tmp_path, files, recipe, extra):
    store = tmp_path / "store"
    args = ["run", *FAST, "data=h36m_cpn", _paths(files, "cpn"), f"recipe={recipe}", *extra, f"store={store}"]
    if recipe == "mixste":
        args.append("train.epochs=1")
    rec = json.loads(vptbench(*args).stdout.strip().splitlines()[-1])
    assert rec["status"] == "ok" and np.isfinite(rec["mpjpe_mm"])
    assert rec["config"]["train"]["lr_schedule"] == "epoch"
    # an epoch is one pass over the training windows of S1 and S5 (3 actions, 4 cameras, 64 frames):
    # mixste: one 27-frame window per sequence at stride 243, batch 4; mhformer: 38 per sequence, batch 128
    assert rec["train_steps"] == (24 // 4 if recipe == "mixste" else math.ceil(0.1 * math.ceil(24 * 38 / 128)))
