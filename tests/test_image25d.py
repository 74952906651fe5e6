"""MotionBERT's evaluation protocol (`eval.protocol=motionbert`): the 2.5D image space its and MotionAGFormer's
published files predict, its clip split, which files it is chosen for, and its exclusions."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import backbones
from bench.config import BackboneCfg, Config, EvalCfg, MOTIONBERT_EXCLUDED, PresetCfg
from bench.data.image25d import image25d_from_prediction, image25d_target
from bench.data.skeleton import H36M_INTRINSICS
from bench.data.synthetic import synthetic_world_motion
from bench.data.windows import motionbert_eval_clips
from bench.evaluate import evaluate_model

CAMERA = {k: H36M_INTRINSICS[0][k] for k in ("focal", "center", "res_w", "res_h")}


def _pose(T=5, depth=5.0, seed=0):
    """Root-relative camera-frame poses (T, 17, 3) and the root's camera position (T, 3), metres."""
    world = synthetic_world_motion(T, np.random.default_rng(seed))[:, :, [0, 2, 1]] * [1, -1, 1]  # y down
    rel = world - world[:, :1]
    root = np.stack([np.linspace(-0.3, 0.3, T), np.full(T, 0.2), np.full(T, depth)], axis=1)
    return rel, root


def _lcn_target(rel, root, cam):
    """LCN-pose's construction, written out: project a 2000 mm square at the root's depth to set the ratio
    (pixels per mm), project every joint, depth = ratio * (Z - Z_root) mm; MotionBERT's ground truth is that
    times 2.5d_factor = 1 / ratio, root-relative."""
    fx, fy = cam["focal"]
    cx, cy = cam["center"]
    out, factors = [], []
    for frame_rel, frame_root in zip(rel, root):
        X = (frame_rel + frame_root) * 1000.0                        # mm
        r = X[0]
        tl, br = r - [1000.0, 1000.0, 0.0], r + [1000.0, 1000.0, 0.0]
        box_w = (fx * br[0] / br[2] + cx) - (fx * tl[0] / tl[2] + cx)
        ratio = (box_w + 1) / 2000.0
        img = np.stack([fx * X[:, 0] / X[:, 2] + cx, fy * X[:, 1] / X[:, 2] + cy, ratio * (X[:, 2] - r[2])], axis=1)
        gt = img / ratio
        out.append(gt - gt[:1])
        factors.append(1 / ratio)
    return np.array(out) / 1000.0, np.array(factors)


def test_the_ground_truth_is_lcn_poses_construction():
    rel, root = _pose()
    gt, factor = image25d_target(rel, root, CAMERA)
    ref_gt, ref_factor = _lcn_target(rel, root, CAMERA)
    np.testing.assert_allclose(factor, ref_factor, rtol=1e-12)
    np.testing.assert_allclose(gt, ref_gt, atol=1e-9)
    assert np.all(gt[:, 0] == 0)
    # close to camera-frame metres (weak perspective at the root's depth), but not the same space
    err = np.linalg.norm(gt - rel, axis=-1).mean()
    assert 1e-4 < err < 0.03


def test_a_model_predicting_the_normalised_truth_scores_zero():
    """A prediction in the models' normalised output space (pixels / w * 2 - [1, h / w], depth / w * 2) of the
    exact 2.5D truth comes back as that truth: the conversion is the inverse of what the models were trained on."""
    rel, root = _pose(depth=4.0)
    gt, factor = image25d_target(rel, root, CAMERA)
    w, h = CAMERA["res_w"], CAMERA["res_h"]
    X = rel + root[:, None]
    pixels = X[..., :2] / X[..., 2:] * np.asarray(CAMERA["focal"]) + np.asarray(CAMERA["center"])
    depth_px = (X[..., 2] - X[:, :1, 2]) * 1000.0 / factor[:, None]
    normalised = np.concatenate([pixels / w * 2 - [1, h / w], depth_px[..., None] / w * 2], axis=-1)
    np.testing.assert_allclose(image25d_from_prediction(normalised, factor, w), gt, atol=1e-9)


def test_clips_are_motionberts_split():
    np.testing.assert_array_equal(motionbert_eval_clips(100, 27), np.arange(81).reshape(3, 27))  # tail unscored
    np.testing.assert_array_equal(motionbert_eval_clips(54, 27), np.arange(54).reshape(2, 27))
    short = motionbert_eval_clips(10, 27)                       # shorter than a clip: resampled to one
    assert short.shape == (1, 27) and short.min() == 0 and short.max() == 9 and np.all(np.diff(short) >= 0)
    with pytest.raises(ValueError, match="empty sequence"):
        motionbert_eval_clips(0, 27)


def _official(path, family):
    model = backbones.create(family, preset="tiny")
    torch.save({"model_pos": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return str(path)


def test_the_protocol_follows_what_the_file_predicts(tmp_path):
    mb = _official(tmp_path / "best_epoch.bin", "motionbert")
    agf = _official(tmp_path / "agf.pth.tr", "motionagformer")
    mix = _official(tmp_path / "mixste.pth", "mixste")
    ours = tmp_path / "vptbench_motionbert.pt"  # a vptbench checkpoint: an Hourglass, trained on metres
    torch.save(backbones.create_hourglass("motionbert", "tiny", "none", "none", []).state_dict(), ours)

    def resolved(family, weights, mode="eval", **eval_kw):
        return Config(backbone=BackboneCfg(family), preset=PresetCfg("tiny"), metrics=["accuracy"], weights=str(weights),
                      mode=mode, eval=EvalCfg(**eval_kw)).eval

    for family, weights in (("motionbert", mb), ("motionagformer", agf)):
        e = resolved(family, weights)
        assert e.protocol == "motionbert" and e.exclude == sorted(MOTIONBERT_EXCLUDED)
        assert resolved(family, weights, "finetune").protocol == "hot"   # fine-tuned on metres
    assert resolved("mixste", mix).protocol == "hot" and resolved("mixste", mix).exclude == []
    assert resolved("motionbert", ours).protocol == "hot"
    assert resolved("motionbert", mb, exclude=["S11/Walking"]).exclude == ["S11/Walking"]
    assert resolved("motionbert", mb, protocol="hot").protocol == "hot"     # asked for: camera-frame scoring
    # the default protocol stays out of a cell's identity: records from before the option keep their keys
    ident = Config(backbone=BackboneCfg("mixste"), preset=PresetCfg("tiny")).cell_identity()["eval"]
    assert "protocol" not in ident and "exclude" not in ident
    assert Config(backbone=BackboneCfg("motionbert"), preset=PresetCfg("tiny"), weights=mb,
                  mode="eval").cell_identity()["eval"]["protocol"] == "motionbert"
    for kw, needle in [(dict(protocol="motionbert"), "eval.protocol=motionbert scores MotionBERT's 2.5D"),
                       (dict(protocol="mpii"), "unknown eval.protocol 'mpii'; valid: auto, hot, motionbert"),
                       (dict(exclude=["Waiting"]), "eval.exclude entries are SUBJECT/ACTION, e.g. 'S9/Waiting 1'")]:
        with pytest.raises(ValueError, match=needle.replace(".", r"\.").replace("(", r"\(")):
            resolved("motionbert", ours, **kw)


def test_excluded_sequences_are_not_scored():
    from bench.data import load_split

    _, test = load_split("synthetic")
    model = backbones.create_hourglass("mixste", "tiny", "none", "none", []).eval()
    keep = f"{test[0].subject}/{test[0].action}"
    drop = sorted({f"{s.subject}/{s.action}" for s in test} - {keep})
    full = evaluate_model(model, test, EvalCfg(progress=False), frames=27)
    only = evaluate_model(model, test, EvalCfg(progress=False, exclude=drop), frames=27)
    ref = evaluate_model(model, [s for s in test if f"{s.subject}/{s.action}" == keep], EvalCfg(progress=False),
                         frames=27)
    assert only["mpjpe_mm"] == pytest.approx(ref["mpjpe_mm"], abs=1e-9) and only["eval_frames"] < full["eval_frames"]
    with pytest.raises(ValueError, match="leaves no test sequence"):
        evaluate_model(model, test, EvalCfg(progress=False, exclude=drop + [keep]), frames=27)
    bare = [dataclasses.replace(s, root_m=None) for s in test]
    with pytest.raises(ValueError, match="needs each test sequence's camera"):
        evaluate_model(model, bare, EvalCfg(progress=False, protocol="motionbert"), frames=27)


def test_evaluating_and_training_cells_share_one_read_of_the_data(monkeypatch):
    """A grid mixing mode=eval cells (no train split needed) and training cells reads its files once."""
    import bench.data
    from bench.cell import _load_dataset_cached, load_cell_data
    from bench.config import DataCfg

    reads = []
    real = bench.data.load_dataset
    monkeypatch.setattr(bench.data, "load_dataset", lambda *a, **k: reads.append(a) or real(*a, **k))
    _load_dataset_cached.cache_clear()
    data = DataCfg(name="synthetic")
    train_a, test_a = load_cell_data(data, need_train=False)
    train_b, test_b = load_cell_data(data, need_train=True)
    assert len(reads) == 1 and test_a == test_b and train_a and len(train_a) == len(train_b)
    # every Sequence keeps what MotionBERT's protocol needs: its root's camera position and the intrinsics
    assert all(s.root_m is not None and s.root_m.shape == (len(s), 3) and s.intrinsics["res_w"] > 0 for s in test_a)
    _load_dataset_cached.cache_clear()
