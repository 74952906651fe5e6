"""vptbench's `eval.protocol=motionbert` equals MotionBERT's own test function, run beside it.

MotionBERT's test (`train.py::evaluate`, which MotionAGFormer's train.py copies) scores its and MotionAGFormer's
published files: non-overlapping clips from each take's first frame (`split_clips`, the tail after the last
whole clip unscored), flip test-time augmentation, predictions turned from the normalised 2.5D output back
into pixels (`DataReaderH36M.denormalize`) and multiplied by each frame's `2.5d_factor`, root-relative MPJPE
and P-MPJPE per frame, the mean over an action's frames, then over actions, three S9 takes left out
(`block_list`). Its input is a preprocessed pickle that is not produced by public code; this test writes
that pickle from small Human3.6M files in VideoPose3D's format (S9 and S11, the three blocked takes among
them, lengths of exactly one clip and longer), building the 2.5D ground truth the way LCN-pose's
`tools/data.py` does (credited in MotionBERT's datareader), and runs the official reader, model
(`DSTformer`, random weights saved as MotionBERT saves them) and `evaluate` on it; vptbench evaluates the
same weights file on the VideoPose3D files through `vptbench run ... weights=FILE mode=eval`. Per-action
MPJPE and the mean P-MPJPE must agree to 0.01 mm. Takes shorter than a clip are not used: MotionBERT
resamples them with random rounding.

Skipped unless VPTBENCH_OFFICIAL_MOTIONBERT points to a checkout of Walter0807/MotionBERT with `easydict`
and `prettytable` importable (e.g. `pip install --target /tmp/offdeps easydict prettytable` and
PYTHONPATH=/tmp/offdeps).
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bench.data.camera import world_to_camera
from bench.data.h36m import action_class, h36m_cameras
from bench.data.skeleton import H36M_32_TO_17, H36M_INTRINSICS
from h36m_files import write_h36m_files
from test_cli import vptbench

MOTIONBERT = os.environ.get("VPTBENCH_OFFICIAL_MOTIONBERT")
pytestmark = pytest.mark.skipif(not MOTIONBERT, reason="set VPTBENCH_OFFICIAL_MOTIONBERT to a checkout of "
                                                       "the official MotionBERT repo")
FRAMES = 27
MODEL = dict(dim_feat=32, dim_rep=64, depth=2, num_heads=4, mlp_ratio=2.0)
CELL = ["backbone=motionbert", "preset=lite", f"+backbone.overrides.num_frames={FRAMES}",
        "+backbone.overrides.embed_dim=32", "+backbone.overrides.dim_rep=64", "+backbone.overrides.depth=2",
        "+backbone.overrides.num_heads=4", "+backbone.overrides.mlp_ratio=2.0"]
# the three blocked S9 takes (as vptbench names them, bench.config.MOTIONBERT_EXCLUDED) and their S11 namesakes
ACTIONS = ("Greeting", "Greeting 1", "SittingDown", "SittingDown 1", "Waiting", "Waiting 1", "Walking",
           "Walking 1", "Directions", "TakingPhoto", "Eating 2")
LENGTHS = dict(zip(ACTIONS, [27, 40, 54, 61, 33, 29, 45, 58, 36, 50, 30]))
ACTION_IDS = {"Directions": 2, "Discussion": 3, "Eating": 4, "Greeting": 5, "Phoning": 6, "Posing": 7,
              "Purchases": 8, "Sitting": 9, "SittingDown": 10, "Smoking": 11, "Photo": 12, "Waiting": 13,
              "Walking": 14, "WalkDog": 15, "WalkTogether": 16}


def _lcn_image_frame(X_mm, cam):
    """One frame (17, 3) camera-frame mm -> LCN-pose's image frame (pixel x, pixel y, ratio * depth) and ratio."""
    fx, fy = cam["focal"]
    cx, cy = cam["center"]
    project = lambda P: np.stack([fx * P[..., 0] / P[..., 2] + cx, fy * P[..., 1] / P[..., 2] + cy], -1)  # noqa: E731
    root = X_mm[0]
    tl, br = project(root - [1000.0, 1000.0, 0.0]), project(root + [1000.0, 1000.0, 0.0])
    ratio = (br[0] - tl[0] + 1) / 2000.0
    return np.concatenate([project(X_mm), ratio * (X_mm[:, 2:] - root[2])], -1), ratio


def _motionbert_pickle(files, path):
    """MotionBERT's preprocessed H36M layout, per frame, from the VideoPose3D files."""
    p3d = np.load(files["3d"], allow_pickle=True)["positions_3d"].item()
    p2d = np.load(files["gt"], allow_pickle=True)["positions_2d"].item()
    cols = {k: [] for k in ("joint_2d", "joint3d_image", "joints_2.5d_image", "2.5d_factor", "camera_name",
                            "source", "action")}
    for subject in sorted(p3d):
        for action in sorted(p3d[subject]):
            world = p3d[subject][action][:, list(H36M_32_TO_17)].astype(np.float64)
            cls = action_class(action)
            sub = 2 if " " in action else 1
            for c, cam in enumerate(h36m_cameras(subject)):
                X = world_to_camera(world, cam["orientation"], cam["translation_m"]) * 1000.0
                for t in range(len(world)):
                    img, ratio = _lcn_image_frame(X[t], cam)
                    cols["joint3d_image"].append(img)
                    cols["joints_2.5d_image"].append(img / ratio)
                    cols["2.5d_factor"].append(1.0 / ratio)
                    cols["joint_2d"].append(p2d[subject][action][c][t])
                    cols["camera_name"].append(H36M_INTRINSICS[c]["id"])
                    cols["source"].append(f"s_{int(subject[1:]):02d}_act_{ACTION_IDS[cls]:02d}_subact_{sub:02d}"
                                          f"_ca_{c + 1:02d}")
                    cols["action"].append(cls)
    split = {k: (np.asarray(v, np.float32) if k in ("joint_2d", "joint3d_image", "joints_2.5d_image")
                 else np.asarray(v)) for k, v in cols.items()}
    split["camera_name"] = list(cols["camera_name"])
    split["source"], split["action"] = list(cols["source"]), list(cols["action"])
    with open(path, "wb") as f:
        pickle.dump({"train": split, "test": split}, f)


# The official reader, model and evaluate(); evaluate() is taken out of train.py by its syntax tree (train.py
# imports training-only packages) and its printed table captured at full precision.
RUNNER = textwrap.dedent("""
    import ast, json, sys
    from functools import partial
    from types import SimpleNamespace
    import numpy as np, prettytable, torch, tqdm
    mb, data_dir, frames, model_json, weights, out = sys.argv[1:7]
    sys.path.insert(0, mb)
    from lib.data.datareader_h36m import DataReaderH36M
    from lib.model.DSTformer import DSTformer
    from lib.model.loss import mpjpe, p_mpjpe
    from lib.utils.utils_data import flip_data
    frames = int(frames)
    rows = []
    class Table(prettytable.PrettyTable):
        def add_row(self, row, *a, **k):
            rows.append([float(x) for x in row[1:]])
            return super().add_row(row, *a, **k)
    tree = ast.parse(open(mb + "/train.py").read())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "evaluate")
    ns = dict(np=np, torch=torch, tqdm=tqdm.tqdm, prettytable=SimpleNamespace(PrettyTable=Table),
              flip_data=flip_data, mpjpe=mpjpe, p_mpjpe=p_mpjpe)
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "train.py", "exec"), ns)
    torch.manual_seed(0)
    model = DSTformer(dim_in=3, dim_out=3, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), maxlen=frames,
                      num_joints=17, **json.loads(model_json))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))   # zero-initialised embeddings too: every weight matters
    torch.save({"epoch": 1, "min_loss": 0.0, "model_pos": {"module." + k: v for k, v in model.state_dict().items()}},
               weights)
    reader = DataReaderH36M(n_frames=frames, sample_stride=1, data_stride_train=frames, data_stride_test=frames,
                            dt_root=data_dir, dt_file="h36m_motionbert.pkl")
    _, test_data, _, test_labels = reader.get_sliced_data()
    loader = [(torch.from_numpy(test_data[i:i + 4]).float(), torch.from_numpy(test_labels[i:i + 4]).float())
              for i in range(0, len(test_data), 4)]
    args = SimpleNamespace(flip=True, rootrel=False, no_conf=False, gt_2d=False)
    e1, e2, _ = ns["evaluate"](args, model, loader, reader)
    names = sorted(set(reader.dt_dataset["test"]["action"]))
    json.dump({"p1": float(e1), "p2": float(e2), "per_action": dict(zip(names, rows[0]))}, open(out, "w"))
""")


@pytest.mark.slow
def test_per_action_errors_equal_motionberts_test_function(tmp_path):
    files = write_h36m_files(tmp_path, frames=LENGTHS, subjects=("S9", "S11"), actions=ACTIONS, seed=5)
    _motionbert_pickle(files, tmp_path / "h36m_motionbert.pkl")
    runner, weights, out = tmp_path / "run_official.py", tmp_path / "best_epoch.bin", tmp_path / "official.json"
    runner.write_text(RUNNER)
    proc = subprocess.run([sys.executable, str(runner), MOTIONBERT, str(tmp_path), str(FRAMES), json.dumps(MODEL),
                           str(weights), str(out)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    official = json.loads(out.read_text())

    store = tmp_path / "store"
    vptbench("run", *CELL, "data=h36m", f"data.paths={{3d: {files['3d']}, 2d: {files['gt']}}}", f"weights={weights}",
             "mode=eval", "metrics=[accuracy]", "eval.batch_size=4", "eval.progress=false", f"store={store}",
             timeout=1800)
    (rec,) = [json.loads(p.read_text()) for p in store.glob("*.json")]
    assert rec["status"] == "ok", rec.get("error")
    assert rec["eval_protocol"] == "motionbert"                      # chosen by the file: MotionBERT's layout

    ours = rec["per_action_mpjpe_mm"]
    assert sorted(ours) == sorted(official["per_action"])
    print("\nmotionbert: action, official MPJPE, ours, |difference| (mm)")
    for a in sorted(ours):
        print(f"  {a:<13} {official['per_action'][a]:10.4f} {ours[a]:10.4f} {abs(official['per_action'][a] - ours[a]):.2e}")
    print(f"  mean MPJPE official {official['p1']:.4f} ours {rec['mpjpe_mm']:.4f}; "
          f"P-MPJPE official {official['p2']:.4f} ours {rec['p_mpjpe_mm']:.4f}")
    for a in ours:
        assert ours[a] == pytest.approx(official["per_action"][a], abs=0.01), a
    assert rec["mpjpe_mm"] == pytest.approx(official["p1"], abs=0.01)
    assert rec["p_mpjpe_mm"] == pytest.approx(official["p2"], abs=0.01)
    # the blocked takes were left out on both sides: scored with them, vptbench's number moves
    store2 = tmp_path / "store2"
    vptbench("run", *CELL, "data=h36m", f"data.paths={{3d: {files['3d']}, 2d: {files['gt']}}}", f"weights={weights}",
             "mode=eval", "metrics=[accuracy]", "eval.batch_size=4", "eval.progress=false", "eval.exclude=[]",
             f"store={store2}", timeout=1800)
    (rec2,) = [json.loads(p.read_text()) for p in store2.glob("*.json")]
    assert rec2["eval_frames"] > rec["eval_frames"]
    assert abs(rec2["mpjpe_mm"] - rec["mpjpe_mm"]) > 0.01
