"""`weights=PATH` end to end: each family's published checkpoint layout evaluated as loaded (mode=eval),
pruned zero-shot, fine-tuned from (mode=finetune), a HoT checkpoint as its published pruned model, and
every bad file or option as one line before compute. Fixture checkpoints are tiny random models saved
in each official repository's container (wrapper keys, DataParallel's `module.` prefix), on small
Human3.6M files in VideoPose3D's format."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch

import backbones
from backbones.pretrained import IMAGE25D_FAMILIES
from bench.data import load_split
from bench.digest import file_sha256
from bench.config import EvalCfg
from bench.evaluate import evaluate_model
from h36m_files import write_h36m_files
from test_cli import vptbench

FAST = ["preset=tiny", "metrics=[accuracy]", "train.progress=false", "eval.batch_size=256", "data=h36m"]
# the container each official repository saves (see backbones/pretrained.py)
LAYOUTS = {
    "mixste": lambda sd: {"epoch": 80, "lr": 1e-5, "model_pos": {f"module.{k}": v for k, v in sd.items()}},
    "motionbert": lambda sd: {"epoch": 60, "min_loss": 0.03, "model_pos": {f"module.{k}": v for k, v in sd.items()}},
    "motionagformer": lambda sd: {"epoch": 90, "wandb_id": "x", "model": {f"module.{k}": v for k, v in sd.items()}},
    "mhformer": lambda sd: dict(sd),                                   # HoT / MHFormer: a flat state dict
    "poseformer": lambda sd: {"model_pos": {f"module.{k}": v for k, v in sd.items()}},
}
PIPELINE = {"mhformer": "seq2frame", "poseformer": "seq2frame"}  # the families' published pipelines
# PoseFormer's head averages frames with one learned weight per input frame (weighted_mean, (1, T, 1)): a pruned
# PoseFormer has one per kept frame, which an unpruned file cannot fill; its file is evaluated unpruned only
ZERO_SHOT = {"poseformer": "none"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_h36m_files(tmp_path_factory.mktemp("h36m"), frames=27)  # one clip of the tiny presets


def _paths(files):
    return f"data.paths={{3d: {files['3d']}, 2d: {files['gt']}}}"


def _official_file(path, family, seed=0):
    torch.manual_seed(seed)
    model = backbones.create(family, preset="tiny")
    torch.save(LAYOUTS[family](model.state_dict()), path)
    return path


def _records(store):
    return {(r["pruner"], r["mode"]): r for r in (json.loads(p.read_text()) for p in store.glob("*.json"))}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_each_familys_official_file_is_evaluated_as_loaded_and_pruned_zero_shot(tmp_path, files, family):
    weights = _official_file(tmp_path / "best_epoch.bin", family)
    pipeline = PIPELINE.get(family, "seq2seq")
    recoverer = "none" if pipeline == "seq2frame" else "interpolation"
    store = tmp_path / "store"
    vptbench("run", "-m", *FAST, _paths(files), f"backbone={family}", f"pipeline={pipeline}", f"weights={weights}",
             "mode=eval", f"pruner={ZERO_SHOT.get(family, 'none,uniform')}", f"recoverer={recoverer}", "schedule=[[1,9]]",
             f"store={store}")
    recs = _records(store)
    assert set(recs) == {("none", "eval")} | ({("uniform", "eval")} if family not in ZERO_SHOT else set())
    # MotionBERT's and MotionAGFormer's files predict 2.5D image coordinates: scored by MotionBERT's protocol
    protocol = "motionbert" if family in IMAGE25D_FAMILIES else "hot"
    for r in recs.values():
        assert r["status"] == "ok" and r["train_steps"] == 0 and r["train_stop"] == "eval"
        assert r["eval_protocol"] == protocol
        assert r["weights_sha256"] == file_sha256(weights) and r["weights"] == str(weights)
        assert sorted(r["per_action_mpjpe_mm"]) == ["Directions", "Photo", "Walking"]
    # the unpruned cell's number is the file's model evaluated here: the weights were used, not trained
    model = backbones.create_hourglass(family, "tiny", "none", "none", [], pipeline=pipeline)
    backbones.load_pretrained(model, weights)
    _, test = load_split("h36m", paths={"3d": str(files["3d"]), "2d": str(files["gt"])})
    ref = evaluate_model(model, test, EvalCfg(batch_size=256, protocol=protocol), frames=model.num_frames)
    assert recs[("none", "eval")]["mpjpe_mm"] == pytest.approx(ref["mpjpe_mm"], abs=1e-6)
    if ("uniform", "eval") in recs:
        assert recs[("uniform", "eval")]["mpjpe_mm"] != pytest.approx(ref["mpjpe_mm"], abs=1e-6)  # it pruned


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_finetune_from_a_file_trains_the_recoverer_it_lacks(tmp_path, files, family):
    weights = _official_file(tmp_path / "best_epoch.bin", family)
    pipeline = PIPELINE.get(family, "seq2seq")
    cell = {"seq2seq": ["pruner=cluster", "recoverer=attention"], "seq2frame": ["pruner=cluster"]}[pipeline]
    if family in ZERO_SHOT:
        cell = ["pruner=none"]  # its head's per-frame weights fit the unpruned model only (see ZERO_SHOT)
    store = tmp_path / "store"
    vptbench("run", *FAST, _paths(files), f"backbone={family}", f"pipeline={pipeline}", f"weights={weights}",
             "mode=finetune", *cell, "schedule=[[1,9]]", "train.steps=50", "train.finetune_steps=2", f"store={store}")
    (r,) = _records(store).values()
    assert r["status"] == "ok" and r["mode"] == "finetune" and r["train_steps"] == 2
    assert r["eval_protocol"] == "hot"  # trained on camera-frame metres, whatever the file predicted before
    assert r["weights_sha256"] == file_sha256(weights) and "baseline_key" not in r  # no baseline was trained
    assert not (store / "checkpoints").exists() or not list((store / "checkpoints").glob("*.pt"))


@pytest.mark.slow
def test_a_hot_checkpoint_runs_as_its_published_pruned_model(tmp_path, files):
    """HoT's files are flat: the backbone's keys plus pos_embed_token, x_token and cross_attention.*."""
    torch.manual_seed(1)
    hot = backbones.create_hourglass("mixste", "tiny", "cluster", "attention", [[1, 9]])
    official = {k.split(".", 1)[1] if k.startswith(("backbone.", "recoverer.")) else k.replace(".0", ""): v
                for k, v in hot.state_dict().items()}
    assert {"pos_embed_token", "x_token", "cross_attention.proj.weight"} <= set(official)
    weights = tmp_path / "model_160_4097.pth"
    torch.save(official, weights)
    store = tmp_path / "store"
    vptbench("run", *FAST, _paths(files), "model=hot_mixste", f"weights={weights}", "mode=eval", f"store={store}")
    (r,) = _records(store).values()
    assert r["status"] == "ok" and (r["pruner"], r["recoverer"], r["schedule"]) == ("cluster", "attention", [[1, 9]])
    # a folder holding the file is the same cell (HoT's loader takes the first *.pth of --previous_dir)
    again = vptbench("run", *FAST, _paths(files), "model=hot_mixste", f"weights={tmp_path}", "mode=eval",
                     f"store={store}")
    assert json.loads(again.stdout.splitlines()[-1])["skipped"] is True


class _Planted:
    def __reduce__(self):
        return os.system, ("touch planted-code-ran",)


def _bad_file(tmp_path, case):
    path = tmp_path / f"{case}.pth"
    if case == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif case == "code":
        torch.save({"model_pos": _Planted()}, path)
    elif case == "no_state":
        torch.save({"epoch": 3, "lr": 0.1}, path)
    else:
        _official_file(path, "mixste")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case, extra, expected", [
    ("missing", [], "weights={w}: no such file; pass the path of a checkpoint file"),
    ("garbage", [], "cannot read checkpoint '{w}' with weights_only=True (not a torch checkpoint?)"),
    ("code", [], "carries pickled code or objects (posix.system), which vptbench never runs"),
    ("no_state", [], "holds no state dict of tensors"),
    ("mixste", ["backbone=motionbert"], "holds mixste weights (preset tiny: 27 frames, dim 32, depth 4) but the cell is "
                                        "motionbert[tiny] none+none - (27 frames, dim 64, depth 4); use backbone=mixste "
                                        "preset=tiny"),
    ("mixste", ["preset=paper"], "but the cell is mixste[paper] none+none - (243 frames, dim 512, depth 8); use "
                                 "backbone=mixste preset=tiny"),
    ("mixste", ["pruner=cluster", "recoverer=attention", "schedule=[[1,9]]"],
     "without the parameters of the cell mixste[tiny] cluster+attention 1:9 (27 frames, dim 32, depth 4)'s learnable "
     "strategy"),
    ("mixste", ["eval.protocol=motionbert"], "eval.protocol=motionbert scores MotionBERT's 2.5D image-space output, "
                                             "which only its and MotionAGFormer's official files predict"),
    ("mixste", ["eval.exclude=[Waiting]"], "eval.exclude entries are SUBJECT/ACTION, e.g. 'S9/Waiting 1'; got 'Waiting'"),
    ("mixste", ["mode=scratch"], "weights= needs mode=eval (evaluate it as loaded, pruned zero-shot if the cell "
                                 "prunes) or mode=finetune (train from it); mode=scratch trains from random weights"),
])
def test_bad_weights_are_one_line_before_compute(tmp_path, case, extra, expected):
    weights = tmp_path / "nope.pth" if case == "missing" else _bad_file(tmp_path, case)
    proc = vptbench("run", "backbone=mixste", "preset=tiny", "metrics=[accuracy]", "mode=eval", f"weights={weights}",
                    *extra, f"store={tmp_path / 'store'}", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("vptbench: error: "), proc.stderr[-2000:]
    assert expected.format(w=weights) in lines[0]
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").glob("*.json"))
    assert not os.path.exists("planted-code-ran")


def test_files_with_only_the_test_subjects_evaluate_but_do_not_finetune(tmp_path):
    """Evaluating published weights needs S9/S11 only; anything that trains says its train split is empty."""
    (tmp_path / "h36m").mkdir()
    files = write_h36m_files(tmp_path / "h36m", frames=27, subjects=("S9", "S11"))
    weights = _official_file(tmp_path / "mixste.bin", "mixste")
    store = tmp_path / "store"
    vptbench("run", *FAST, _paths(files), "backbone=mixste", f"weights={weights}", "mode=eval", f"store={store}")
    (r,) = _records(store).values()
    assert r["status"] == "ok" and r["train_steps"] == 0 and r["mpjpe_mm"] > 0
    proc = vptbench("run", *FAST, _paths(files), "backbone=mixste", f"weights={weights}", "mode=finetune",
                    "train.finetune_steps=1", f"store={tmp_path / 'store2'}", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "the train split is empty" in lines[0] and "fix the split" in lines[0]
    assert not (tmp_path / "store2").exists() or not list((tmp_path / "store2").glob("*.json"))


def test_eval_needs_a_file():
    from bench.config import BackboneCfg, Config, PresetCfg

    with pytest.raises(ValueError, match="^mode=eval evaluates a weights file; pass weights=PATH"):
        Config(backbone=BackboneCfg("mixste"), preset=PresetCfg("tiny"), mode="eval")


def test_a_cells_identity_has_the_files_content_and_the_flip_selection_where_it_matters(tmp_path):
    from bench.config import BackboneCfg, Config, EvalCfg, PresetCfg, PrunerCfg, RecovererCfg

    def cell(**kw):
        return Config(backbone=BackboneCfg("mixste"), preset=PresetCfg("tiny"), **kw)

    a, b = _official_file(tmp_path / "a.bin", "mixste"), tmp_path / "moved" / "a.bin"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    assert cell(weights=str(a), mode="eval").cell_identity() == cell(weights=str(b), mode="eval").cell_identity()
    assert cell(weights=str(a), mode="eval").cell_identity()["weights"] == file_sha256(a)
    assert cell(weights=str(a), mode="zeroshot").mode == "eval"
    assert "weights" not in cell().cell_identity()
    pruned = dict(pruner=PrunerCfg("cluster"), recoverer=RecovererCfg("interpolation"), schedule=[[1, 9]])
    # the official HoT test prunes the mirrored clip afresh in seq2seq: such cells get keys of their own
    assert cell(**pruned).cell_identity()["eval"]["flip_selection"] == "afresh"
    assert "flip_selection" not in cell(**pruned, eval=EvalCfg(flip_selection="reuse")).cell_identity()["eval"]
    assert "flip_selection" not in cell().cell_identity()["eval"]  # nothing is selected: the key it always had
    assert not cell(**pruned).flip_reuses_selection()
    with pytest.raises(ValueError, match="unknown eval.flip_selection 'both'; valid: official, afresh, reuse"):
        cell(eval=EvalCfg(flip_selection="both"))


def test_the_flip_pass_prunes_afresh_or_replays():
    model = backbones.create_hourglass("mixste", "tiny", "cluster", "interpolation", [[1, 9]])
    seen = []
    plain = model.forward_with_index

    def spy(x, indices=None):
        seen.append(indices is None)
        return plain(x, indices=indices)

    model.forward_with_index = spy
    _, test = load_split("synthetic")
    for reuse in (True, False):
        seen.clear()
        evaluate_model(model, test[:1], EvalCfg(batch_size=256), frames=27, flip_reuses_selection=reuse)
        assert seen[0] and seen[1] is (not reuse)  # the plain pass selects; the mirrored one replays or not


def test_position_aware_tra_queries_differ_between_frames_at_initialisation():
    """MixSTE's temporal embedding starts at zero, so queries taken from it alone would all be the zero
    query: position-aware recovery adds sinusoidal positions, distinct per frame from step 0."""
    torch.manual_seed(0)
    x = torch.randn(2, 27, 17, 2)
    recovered = {}
    for init in ("zeros", "pos"):
        model = backbones.create_hourglass("mixste", "tiny", "cluster", "attention", [[1, 9]],
                                           recoverer_args={"query_init": init}).eval()
        captured = {}
        model.backbone.regress = lambda tokens, _c=captured: _c.setdefault("tokens", tokens) * 0  # noqa: B023
        with torch.no_grad():
            model(x)
        recovered[init] = captured["tokens"]  # (B, T, J, C) after recovery
    assert torch.allclose(recovered["zeros"][:, 0], recovered["zeros"][:, 26], atol=1e-6)  # zero queries: all frames alike (to rounding)
    assert not torch.allclose(recovered["pos"][:, 0], recovered["pos"][:, 26], atol=1e-3)
    assert not torch.allclose(recovered["pos"][:, 3], recovered["pos"][:, 4], atol=1e-3)


def _weights_dir(root):
    """Tiny random models saved under the names and in the containers their publishers use."""
    from backbones.pretrained import PUBLISHED_WEIGHTS

    for family, entry in PUBLISHED_WEIGHTS.items():
        path = root / entry.path
        if "." not in path.name:  # a HoT folder holding one model_<epoch>_<p1>.pth
            path = path / "model_80_4120.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        _official_file(path, family)
    return root


@pytest.mark.slow
def test_the_pretrained_zeroshot_experiment_pairs_each_pruned_cell_with_its_own_files_evaluation(tmp_path, files):
    weights_dir = _weights_dir(tmp_path / "pretrained")
    store, out = tmp_path / "store", tmp_path / "report"
    vptbench("run", "-m", "experiment=pretrained_zeroshot", f"weights_dir={weights_dir}", "preset=tiny",
             "eval.batch_size=256", "eval.progress=false", _paths(files), "model=mixste,motionbert",
             "pruner=none,uniform,cluster", "recoverer=interpolation,nearest", "schedule=[[1,9]]", f"store={store}")
    recs = [json.loads(p.read_text()) for p in store.glob("*.json")]
    assert len(recs) == 2 * (1 + 2 * 2) and all(r["status"] == "ok" and r["mode"] == "eval" for r in recs)
    for r in recs:  # each family's file by its published name, evaluated untrained
        assert r["train_steps"] == 0 and r["weights_sha256"] == file_sha256(r["weights"])
        assert ("FT_MB_lite" in r["weights"]) == (r["backbone"] == "motionbert")
    # a trained baseline of the same backbone in the same store is another block, never the one paired with
    vptbench("run", *FAST, _paths(files), "backbone=mixste", "train.steps=2", f"store={store}")
    vptbench("report", "--store", str(store), "--out", str(out))
    df = pd.read_csv(out / "results.csv", dtype={"weights_id": str})
    table = (out / "results.md").read_text()
    assert "baseline [eval]" in table and "uniform + interpolation [eval]" in table
    from bench.report import efficiency_table, read_results

    eff = efficiency_table(read_results(str(store)))
    for _, row in eff[eff["pruner"] != "none"].iterrows():
        (base,) = df.loc[(df["pruner"] == "none") & (df["backbone"] == row["backbone"]) & (df["mode"] == "eval"),
                         "mpjpe_mm"]
        assert row["ΔMPJPE"] == pytest.approx(row["MPJPE"] - base, abs=1e-9)
    assert (out / "pareto_flops_mpjpe.png").stat().st_size > 0


def test_a_weights_dir_without_the_file_or_the_family_is_one_line(tmp_path):
    (tmp_path / "w").mkdir()
    for cell, expected in [
        ("backbone=mixste", f"weights_dir={tmp_path / 'w'} has no mixste (mixste: HoT README, checkpoint/pretrained/mixste/"),
        ("model=poseformer", "weights_dir= knows no published checkpoint of poseformer (published: mhformer, mixste, "
                       "motionagformer, motionbert); pass weights=PATH"),
    ]:
        proc = vptbench("run", cell, "preset=tiny", "metrics=[accuracy]", "mode=eval",
                        f"weights_dir={tmp_path / 'w'}", f"store={tmp_path / 'store'}", check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
