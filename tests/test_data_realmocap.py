"""bench.data.realmocap: the committed files, the conversion steps, and prepare() on a fake wheel."""
import hashlib
import io
import json
import zipfile

import numpy as np
import pytest

from bench.data import load_dataset
from bench.data import deepmimic as dm
from bench.data import realmocap as rm
from bench.data.camera import project_world, world_to_camera
from bench.data.h36m import read_metadata, read_positions_2d, read_positions_3d
from bench.data.skeleton import H36M_INTRINSICS, KEYPOINTS_SYMMETRY
from bench.data.synthetic import synthetic_world_motion

FRAMES_50HZ = {"climb_0": 1167, "climb_1": 1010, "climb_2": 1255, "climb_3": 1001, "climb_4": 960}
# DeepMimic clips: span of the per-frame durations (s) * 50 + 1 frames
DEEPMIMIC_50HZ = {"backflip": 88, "cartwheel": 136, "crawl": 147, "dance_a": 81, "dance_b": 127, "getup_facedown": 152,
                  "getup_faceup": 189, "jump": 89, "kick": 77, "punch": 107, "roll": 101, "run": 40, "spin": 221,
                  "spinkick": 65, "walk": 64}


# ---------------------------------------------------------------- the committed files


def test_committed_files_layout():
    p3d = read_positions_3d(rm.FILES_DIR / rm.FILE_3D)
    p2d = read_positions_2d(rm.FILES_DIR / rm.FILE_2D)
    meta = read_metadata(rm.FILES_DIR / rm.FILE_2D)
    assert {s: sorted(a) for s, a in p3d.items()} == {"climbA": ["climb_0", "climb_1", "climb_2", "climb_3"],
                                                       "climbB": ["climb_4"], "deepmimic": sorted(DEEPMIMIC_50HZ)}
    assert meta == {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": KEYPOINTS_SYMMETRY}
    for subject, actions in p3d.items():
        for action, X in actions.items():
            assert X.dtype == np.float32 and X.shape == ({**FRAMES_50HZ, **DEEPMIMIC_50HZ}[action], 17, 3)
            assert 0.25 < X[:, 0, 2].mean() < 1.5                             # metres, Z up (root height)
            assert -0.1 < X[..., 2].min() < 0.15                              # ankles near the floor
            views = p2d[subject][action]
            assert len(views) == 4 and all(v.dtype == np.float32 and v.shape == X.shape[:2] + (2,) for v in views)
    total = sum(f.stat().st_size for f in rm.FILES_DIR.iterdir())
    assert total < 5_000_000


def test_committed_cameras_are_h36m_intrinsics_around_the_subject():
    cams = json.loads((rm.FILES_DIR / rm.FILE_CAMERAS).read_text())["cameras"]
    p3d = read_positions_3d(rm.FILES_DIR / rm.FILE_3D)
    p2d = read_positions_2d(rm.FILES_DIR / rm.FILE_2D)
    for subject, actions in p3d.items():
        for action, X in actions.items():
            root = X[:, 0].astype(np.float64).mean(axis=0)
            for i, cam in enumerate(cams[subject][action]):
                assert cam["id"] == H36M_INTRINSICS[i]["id"]
                assert cam["focal"] == list(H36M_INTRINSICS[i]["focal"])
                t = np.array(cam["translation_m"])
                assert t[2] == pytest.approx(1.6) and 4.99 < np.hypot(*(t[:2] - root[:2])) < 6.01
                np.testing.assert_allclose(project_world(root, cam), cam["center"], atol=1e-6)  # looks at the mean root
                px = p2d[subject][action][i]
                assert px.min() > 0 and px[..., 0].max() < cam["res_w"] and px[..., 1].max() < cam["res_h"]
                assert np.all(world_to_camera(X, cam["orientation"], t)[..., 2] > 1.0)
                np.testing.assert_allclose(px, project_world(X, cam), atol=1e-3)  # 2D = projection of 3D


def test_sources_notice():
    text = (rm.FILES_DIR / rm.FILE_SOURCES).read_text()
    for needle in ("NOT Human3.6M", "Apache-2.0", "holosoma-retargeting==0.1.0", rm.WHEEL_SHA256, "120 Hz",
                   "pybullet==3.2.7", "zlib", dm.WHEEL_SHA256, "DeepMimic", "APPROXIMATED", "altered versions"):
        assert needle in text


def test_loaded_sequences():
    seqs = load_dataset("realmocap")
    assert len(seqs) == 80 and {s.fps for s in seqs} == {50.0}
    assert sum(len(s) for s in seqs if s.camera == 0) == sum(FRAMES_50HZ.values()) + sum(DEEPMIMIC_50HZ.values())
    bones = np.linalg.norm(seqs[0].pos3d[:, 2] - seqs[0].pos3d[:, 1], axis=-1)    # right thigh
    assert abs(bones.mean() - 0.373) < 0.01 and bones.std() < 0.01


# ---------------------------------------------------------------- conversion steps


def test_resample_120_to_50_by_hand():
    x = np.arange(13, dtype=np.float64)                    # value = source frame index
    np.testing.assert_allclose(rm.resample_linear(x, 120, 50), [0, 2.4, 4.8, 7.2, 9.6, 12.0], atol=1e-12)
    y = rm.resample_linear(np.arange(2801 * 2.0).reshape(2801, 2), 120, 50)
    assert y.shape == (1167, 2)


def test_mocap_to_h36m_mapping():
    joints = np.random.default_rng(0).normal(size=(4, 53, 3))
    out = rm.mocap_to_h36m(joints)
    assert out.shape == (4, 17, 3)
    pairs = {0: 0, 1: 47, 2: 48, 3: 49, 4: 43, 5: 44, 6: 45, 7: 2, 8: 3, 9: 4, 11: 6, 12: 7, 13: 8,
             14: 25, 15: 26, 16: 27}
    for h36m, mocap in pairs.items():
        np.testing.assert_array_equal(out[:, h36m], joints[:, mocap])
    np.testing.assert_allclose(out[:, 10], joints[:, 4] + 0.8 * (joints[:, 4] - joints[:, 3]))


# ---------------------------------------------------------------- prepare(), offline on a fake wheel


def _fake_mocap(rng, T):
    """(T, 53, 3) mocap-layout array carrying a synthetic motion on the 16 mapped joints."""
    world = synthetic_world_motion(T, rng, fps=120.0)
    arr = np.repeat(world[:, :1], 53, axis=1)               # unused joints (fingers, toes) sit on the root
    for j, src in enumerate(rm.MOCAP_TO_H36M):
        if src is not None:
            arr[:, src] = world[:, j]
    return arr.astype(np.float32)


def _fake_wheel(path, lengths):
    rng = np.random.default_rng(0)
    arrays = {}
    with zipfile.ZipFile(path, "w") as zf:
        for seq, T in enumerate(lengths):
            arrays[seq] = _fake_mocap(rng, T)
            buf = io.BytesIO()
            np.save(buf, arrays[seq])
            zf.writestr(f"holosoma_retargeting/demo_data/climb/mocap_climb_seq_{seq}/"
                        f"mocap_climb_seq_{seq}_joint_positions_f0-{T - 1}.npy", buf.getvalue())
        zf.writestr("holosoma_retargeting/demo_data/climb/mocap_climb_seq_0/box_models/box1.obj", "v 0 0 0\n")
    return arrays


def _fake_clip(T, dt):
    """DeepMimic JSON text: a T-pose sliding along +x with the right knee bending."""
    frames = np.zeros((T, dm.FRAME_SIZE))
    frames[:, 0] = dt
    frames[:, 2] = 0.9                                               # root height (Y up)
    frames[:, 1] = np.linspace(0, 0.5, T)
    for start in (4, 8, 12, 16, 21, 25, 30, 35, 39):                 # identity quaternions
        frames[:, start] = 1.0
    frames[:, 20] = np.linspace(0, 1.2, T)
    return json.dumps({"Loop": "none", "Frames": frames.tolist()})


def _fake_pybullet_wheel(path, clips):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in clips.items():
            zf.writestr(dm.MOTION_MEMBER.format(name), text)
        zf.writestr("pybullet_data/data/motions/laikago_walk.txt", "{}")


def test_prepare_on_a_fake_wheel(tmp_path, monkeypatch):
    cache, out = tmp_path / "cache", tmp_path / "out"
    cache.mkdir()
    wheel = cache / rm.WHEEL_FILENAME
    arrays = _fake_wheel(wheel, [121, 61, 97, 50, 73])
    clips = {"walk": _fake_clip(16, 1 / 30), "spin": _fake_clip(9, 1 / 24)}
    _fake_pybullet_wheel(cache / dm.WHEEL_FILENAME, clips)
    monkeypatch.setattr(rm, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(dm, "WHEEL_SHA256", hashlib.sha256((cache / dm.WHEEL_FILENAME).read_bytes()).hexdigest())
    monkeypatch.setattr(dm, "CLIPS", {"walk": 30, "spin": 24})
    summary = rm.prepare(out, cache)                           # wheels present: no download
    # climb: floor((T-1)*5/12)+1; walk: 15/30 s -> 26 frames; spin: 8/24 s -> 17 frames
    assert [r["frames"] for r in summary["sequences"]] == [51, 26, 41, 21, 31, 26, 17]
    assert [r["subject"] for r in summary["sequences"]] == ["climbA"] * 4 + ["climbB"] + ["deepmimic"] * 2
    p3d = read_positions_3d(out / rm.FILE_3D)
    expected = rm.resample_linear(rm.mocap_to_h36m(arrays[4]), 120, 50)
    np.testing.assert_allclose(p3d["climbB"]["climb_4"], expected, atol=1e-6)
    np.testing.assert_allclose(p3d["deepmimic"]["walk"], dm.clip_to_h36m(clips["walk"])[0], atol=1e-6)
    seqs = load_dataset("realmocap", files_dir=out)
    assert len(seqs) == 28 and all(np.all(s.pos3d[:, 0] == 0) for s in seqs)
    first = {f: (out / f).read_bytes() for f in (rm.FILE_3D, rm.FILE_2D, rm.FILE_CAMERAS, rm.FILE_SOURCES)}
    rm.prepare(out, cache)
    assert all((out / f).read_bytes() == b for f, b in first.items())    # reproducible byte for byte


def test_detector_noise_is_seeded_sized_and_off_by_default(tmp_path):
    clean = load_dataset("realmocap")
    noisy = load_dataset("realmocap", noise_px=3.0)
    again = load_dataset("realmocap", noise_px=3.0)
    diff = np.concatenate([(n.pos2d - c.pos2d).ravel() for n, c in zip(noisy, clean)])
    assert abs(diff.std() * 500 - 3.0) < 0.05                 # pixels -> x / 1000 * 2: 1 px = 1/500
    assert all(np.array_equal(a.pos2d, b.pos2d) for a, b in zip(noisy, again))
    assert all(np.array_equal(a.pos3d, b.pos3d) for a, b in zip(noisy, clean))
    with pytest.raises(ValueError, match="noise_px=-1 must be a finite number >= 0"):
        load_dataset("realmocap", noise_px=-1)
    with pytest.raises(ValueError, match="noise_px is only for dataset 'realmocap'"):
        load_dataset("synthetic", noise_px=1.0)


def test_prepare_rejects_a_wheel_with_the_wrong_hash(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / rm.WHEEL_FILENAME).write_bytes(b"not the wheel")
    with pytest.raises(RuntimeError, match="expected " + rm.WHEEL_SHA256):
        rm.prepare(tmp_path / "out", cache)
    assert not (tmp_path / "out").exists()
