"""vptbench's own checkpoints in a store: never executed, never sticky when bad, never kept after a
diverged run. A bad file is moved aside with one warning naming it, and the cell trains afresh."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import checkpoint as checkpoint_module
from bench import cli, compose
from bench.store import ResultStore, cell_key

pytestmark = pytest.mark.usefixtures("one_thread")

CELL = ["preset=tiny", "data=synthetic", "metrics=[accuracy]", "pruner=uniform", "recoverer=interpolation",
        "schedule=[[1,9]]", "mode=finetune", "train.steps=4", "train.finetune_steps=2", "train.checkpoint_every=1",
        "train.progress=false", "eval.flip=false"]


class Payload:
    """Unpickling this writes a marker file: proof that a checkpoint ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "code ran")


def _keys(store):
    (cfg,) = compose.compose_cells([*CELL, f"store={store}"], multirun=False)
    return cell_key(cfg.baseline_identity()), cell_key(cfg.cell_identity())


@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(checkpoint_module.log, "warning", lambda fmt, *a: seen.append(fmt % a))
    return seen


def _run(store, *extra):
    rc = cli.main(["run", *CELL, *extra, f"store={store}"])
    return rc, list(ResultStore(store).records())


def test_planted_payloads_never_run_and_the_cell_retrains(tmp_path, warnings):
    store, marker = tmp_path / "store", tmp_path / "MARKER"
    base_key, key = _keys(store)
    planted = [store / "checkpoints" / f"{base_key}.pt", store / "checkpoints" / f"run-{key}.pt"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": {}, "train": {}, "step": 1, "evil": Payload(marker)}, path)
    rc, (rec,) = _run(store)
    assert not marker.exists()
    assert rc == 0 and rec["status"] == "ok" and rec["train_steps"] == 2 and rec["baseline_train_steps"] == 4
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    for path, warning in zip(planted, warnings):
        assert str(path) in warning and "unusable" in warning
        assert path.with_name(path.name + ".rejected").exists()  # kept for a look, never loaded again


def test_truncated_baseline_is_reported_by_path_and_retrained(tmp_path, warnings):
    store = tmp_path / "store"
    rc, _ = _run(store)
    assert rc == 0 and warnings == []
    base_key, _ = _keys(store)
    path = store / "checkpoints" / f"{base_key}.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a full disk, a killed copy
    rc, (rec,) = _run(store, "rerun=true")
    assert rc == 0 and rec["status"] == "ok" and rec["baseline_train_steps"] == 4
    assert len(warnings) == 1 and str(path) in warnings[0]
    torch.load(path, weights_only=True)  # retrained and rewritten whole


def test_baseline_of_another_model_is_rejected(tmp_path, warnings):
    store = tmp_path / "store"
    base_key, _ = _keys(store)
    path = store / "checkpoints" / f"{base_key}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": {"weight": torch.zeros(3)}, "train": {}}, path)
    rc, (rec,) = _run(store)
    assert rc == 0 and rec["status"] == "ok"
    assert len(warnings) == 1 and str(path) in warnings[0] and "weight" in warnings[0]


def test_nan_baseline_is_never_reused(tmp_path, warnings):
    store = tmp_path / "store"
    assert _run(store)[0] == 0
    base_key, _ = _keys(store)
    path = store / "checkpoints" / f"{base_key}.pt"
    saved = torch.load(path, weights_only=True)
    name = next(iter(saved["model"]))
    saved["model"][name] = torch.full_like(saved["model"][name], float("nan"))
    torch.save(saved, path)
    rc, (rec,) = _run(store, "rerun=true")
    assert rc == 0 and rec["status"] == "ok"
    assert len(warnings) == 1 and "NaN or inf" in warnings[0] and name in warnings[0]


def test_divergence_fails_the_cell_in_one_line_and_keeps_no_checkpoint(tmp_path, capsys):
    store = tmp_path / "store"
    rc = cli.main(["run", "preset=tiny", "data=synthetic", "metrics=[accuracy]", "train.lr=1e9", "train.steps=20",
                   "train.checkpoint_every=1", "train.progress=false", f"store={store}"])
    (rec,) = ResultStore(store).records()
    assert rc == 1 and rec["status"] == "failed"
    assert rec["error"].startswith("TrainingDiverged: training diverged at step ")
    assert "(loss nan); lower train.lr (now 1e+09)" in rec["error"] or "(loss inf)" in rec["error"]
    assert not list((store / "checkpoints").glob("*.pt"))  # neither the run's nor a baseline
    assert "SVD" not in capsys.readouterr().err
