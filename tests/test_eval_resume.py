"""A long evaluation on a CPU: a progress bar over the test frames with an ETA, bf16/fp16 autocast
(emulated and said so where the CPU lacks the arithmetic), and a resume per sequence after a kill that
gives the same numbers as an uninterrupted run."""
from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import backbones
import bench.evaluate as evaluate
from bench.config import BackboneCfg, Config, EvalCfg, PresetCfg
from bench.data import load_split
from bench.evaluate import evaluate_model
from h36m_files import write_h36m_files
from test_cli import vptbench


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_h36m_files(tmp_path_factory.mktemp("h36m"), frames=60)


@pytest.fixture(scope="module")
def test_seqs(files):
    return load_split("h36m", paths={"3d": str(files["3d"]), "2d": str(files["gt"])})[1]


def _model(seed=0):
    torch.manual_seed(seed)
    return backbones.create_hourglass("mixste", "tiny", "uniform", "interpolation", [[1, 9]])


QUIET = EvalCfg(progress=False)


def test_a_killed_evaluation_resumes_where_it_stopped_with_the_same_numbers(tmp_path, test_seqs, monkeypatch):
    reference = evaluate_model(_model(), test_seqs, QUIET, frames=27)
    partial = tmp_path / "eval.json"
    real, calls = evaluate._score, []

    def dies_on_the_fourth(*args, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # a kill between sequences; what was scored is on disk
        return real(*args, **kw)

    monkeypatch.setattr(evaluate, "_score", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(_model(), test_seqs, QUIET, frames=27, resume=partial)
    assert len(json.loads(partial.read_text())["rows"]) == 3
    calls.clear()
    monkeypatch.setattr(evaluate, "_score", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = evaluate_model(_model(), test_seqs, QUIET, frames=27, resume=partial)
    assert resumed["eval_resumed_sequences"] == 3 and len(calls) == len(test_seqs) - 3
    for k in ("mpjpe_mm", "p_mpjpe_mm", "mpjve_mm", "per_action_mpjpe_mm", "eval_frames"):
        assert resumed[k] == reference[k], k
    # other weights (or settings) behind the same file start afresh instead of mixing two models' errors
    calls.clear()
    other = evaluate_model(_model(seed=1), test_seqs, QUIET, frames=27, resume=partial)
    assert other["eval_resumed_sequences"] == 0 and len(calls) == len(test_seqs)
    assert other["mpjpe_mm"] != reference["mpjpe_mm"]
    calls.clear()
    no_flip = evaluate_model(_model(seed=1), test_seqs, EvalCfg(progress=False, flip=False), frames=27, resume=partial)
    assert no_flip["eval_resumed_sequences"] == 0 and len(calls) == len(test_seqs)


def test_an_unreadable_partial_file_is_ignored_not_executed(tmp_path, test_seqs):
    partial = tmp_path / "eval.json"
    partial.write_bytes(b"\x80\x04cos\nsystem\n.")  # a pickle, not JSON: read as data, it is just unreadable
    res = evaluate_model(_model(), test_seqs[:2], QUIET, frames=27, resume=partial)
    assert res["eval_resumed_sequences"] == 0 and len(json.loads(partial.read_text())["rows"]) == 2


def test_the_progress_bar_counts_test_frames_with_an_eta(test_seqs, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "tqdm", functools.partial(evaluate.tqdm, mininterval=0))  # draw every update
    evaluate_model(_model(), test_seqs[:3], EvalCfg(), frames=27, desc="mixste[tiny]")
    err = capsys.readouterr().err
    assert "mixste[tiny]" in err and "120/180" in err and "frame" in err and "MPJPE so far" in err
    assert "<00:0" in err  # tqdm's [elapsed<remaining]: the ETA


def test_bf16_evaluation_stays_within_bf16s_error_of_fp32(test_seqs):
    fp32 = evaluate_model(_model(), test_seqs, QUIET, frames=27)
    bf16 = evaluate_model(_model(), test_seqs, EvalCfg(progress=False, precision="bf16"), frames=27)
    assert fp32["eval_precision"] == "fp32" and bf16["eval_precision"] == "bf16"
    assert bf16["mpjpe_mm"] != fp32["mpjpe_mm"]  # it did run in bf16
    assert bf16["mpjpe_mm"] == pytest.approx(fp32["mpjpe_mm"], rel=2e-2)  # bf16 keeps 8 bits of mantissa


def test_the_eval_precision_joins_the_identity_only_when_reduced():
    def cell(**kw):
        return Config(backbone=BackboneCfg("mixste"), preset=PresetCfg("tiny"), eval=EvalCfg(**kw)).cell_identity()

    assert "precision" not in cell()["eval"] and "progress" not in cell()["eval"]
    assert cell(progress=False) == cell()  # how it runs, not what it computes
    assert cell(precision="bf16")["eval"]["precision"] == "bf16"
    with pytest.raises(ValueError, match="unknown eval.precision 'int8'"):
        cell(precision="int8")


def _weights(path):
    torch.manual_seed(0)
    torch.save({"model_pos": backbones.create("mixste", preset="tiny").state_dict()}, path)
    return path


def _cell(files, weights, store, *extra):
    return ["run", "preset=tiny", "metrics=[accuracy]", "data=h36m", "backbone=mixste", "mode=eval",
            f"data.paths={{3d: {files['3d']}, 2d: {files['gt']}}}", f"weights={weights}", f"store={store}", *extra]


@pytest.mark.slow
def test_vptbench_run_resumes_a_killed_evaluation_and_runs_bf16(tmp_path, files):
    weights = _weights(tmp_path / "model.bin")
    # batch 1 keeps each sequence long enough that the kill lands between the first and the last
    slow = ["eval.batch_size=1", "train.progress=false"]
    reference = tmp_path / "reference"
    vptbench(*_cell(files, weights, reference, *slow))
    ref = json.loads(next(reference.glob("*.json")).read_text())
    assert ref["eval_resumed_sequences"] == 0 and not list((reference / "checkpoints").glob("eval-*.json"))

    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *_cell(files, weights, store, *slow)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list((store / "checkpoints").glob("eval-*.json")) if (store / "checkpoints").is_dir() else []
        if found and json.loads(found[0].read_text() or "{}").get("rows"):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the evaluation ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(store.glob("*.json"))  # no record yet
    vptbench(*_cell(files, weights, store, *slow))
    rec = json.loads(next(store.glob("*.json")).read_text())
    assert 1 <= rec["eval_resumed_sequences"] < 24
    for k in ("mpjpe_mm", "p_mpjpe_mm", "mpjve_mm", "per_action_mpjpe_mm", "eval_frames"):
        assert rec[k] == ref[k], k
    assert not list((store / "checkpoints").glob("eval-*.json"))  # removed once the record is safe

    bf16 = vptbench(*_cell(files, weights, tmp_path / "bf16", "eval.precision=bf16", "train.progress=false"))
    rec16 = json.loads(next((tmp_path / "bf16").glob("*.json")).read_text())
    assert rec16["status"] == "ok" and rec16["eval_precision"] == "bf16" and ref["eval_precision_emulated"] is None
    assert isinstance(rec16["eval_precision_emulated"], bool)  # what this CPU's probe found
    assert rec16["mpjpe_mm"] == pytest.approx(ref["mpjpe_mm"], rel=2e-2) and rec16["key"] != ref["key"]
    if rec16["eval_precision_emulated"]:
        assert "eval.precision=bf16 is emulated" in bf16.stderr
