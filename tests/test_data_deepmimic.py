"""bench.data.deepmimic: clip parsing, resampling, forward kinematics by hand, axes, committed clips."""
import json

import numpy as np
import pytest

from bench.data import deepmimic as dm
from bench.data.h36m import read_positions_3d
from bench.data.realmocap import FILE_3D, FILES_DIR
from bench.data.skeleton import PARENTS


def _rest_poses(n=1, root_height=0.9):
    """(n, 43) poses: identity rotations, zero knee/elbow angles, root at (0, root_height, 0)."""
    poses = np.zeros((n, 43))
    poses[:, 1] = root_height
    for key in ("root", "chest", "neck", "right_hip", "right_ankle", "right_shoulder", "left_hip", "left_ankle",
                "left_shoulder"):
        poses[:, dm._POSE[key][0]] = 1.0
    return poses


def test_rest_pose_by_hand():
    X = dm.y_up_to_z_up(dm.forward_kinematics(_rest_poses()))[0]
    # urdf offsets x 0.25, then (x, y, z) -> (x, -z, y): right (+z in DeepMimic) becomes -y
    np.testing.assert_allclose(X[0], [0, 0, 0.9])
    np.testing.assert_allclose(X[1], [0, -0.339548 * 0.25, 0.9])                          # right hip
    np.testing.assert_allclose(X[3], [0, -0.339548 * 0.25, 0.9 - (1.686184 + 1.639480) * 0.25])  # right ankle
    np.testing.assert_allclose(X[4], [0, 0.339548 * 0.25, 0.9])                           # left hip
    np.testing.assert_allclose(X[7], [0, 0, 0.9 + 0.944604 * 0.25])                      # spine = chest joint
    np.testing.assert_allclose(X[8], [0, 0, 0.9 + (0.944604 + 0.895576) * 0.25])         # thorax = neck joint
    np.testing.assert_allclose(X[10], X[8] + [0, 0, 0.23])                                # head top (approx.)
    np.testing.assert_allclose(X[9], X[8] + [0.06, 0, 0.11])                              # nose, forward = +x
    np.testing.assert_allclose(X[16], [-0.0962 * 0.25, -0.73244 * 0.25,                  # right wrist
                                       0.9 + (0.944604 + 0.974 - 1.099152 - 1.035788) * 0.25])
    np.testing.assert_allclose(X[13], X[16] * [1, -1, 1])                                  # left wrist mirrors it


def test_knee_and_root_rotations_by_hand():
    poses = _rest_poses(2)
    poses[0, dm._POSE["right_knee"][0]] = np.pi / 2          # knee about local z: shin points forward (+x)
    a = np.sqrt(0.5)
    poses[1, 3:7] = [a, 0, a, 0]                             # root yaw 90 deg about Y up: +z -> +x
    X = dm.forward_kinematics(poses)                         # DeepMimic frame, Y up
    np.testing.assert_allclose(X[0, 3] - X[0, 2], [1.639480 * 0.25, 0, 0], atol=1e-12)
    np.testing.assert_allclose(X[1, 1] - X[1, 0], [0.339548 * 0.25, 0, 0], atol=1e-12)    # right hip now at +x
    np.testing.assert_allclose(X[1, 4] - X[1, 0], [-0.339548 * 0.25, 0, 0], atol=1e-12)


def test_z_up_is_a_proper_rotation():
    e = np.eye(3)
    x, y, z = dm.y_up_to_z_up(e)
    np.testing.assert_allclose(np.cross(x, y), z)          # right-handed stays right-handed (no mirror)
    np.testing.assert_allclose(y, [0, 0, 1])               # up becomes +z


def test_resample_from_durations_by_hand():
    frames = np.zeros((4, dm.FRAME_SIZE))
    frames[:, 0] = 1 / 30
    frames[:, 1:] = _rest_poses(4)                           # identity rotations ...
    frames[:, 1] = [0.0, 3.0, 6.0, 9.0]                      # root x advances 3 per source frame = 90 / s
    frames[1:, 8:12] = [[-np.sqrt(0.5), 0, 0, -np.sqrt(0.5)]] * 3   # ... chest turns 90 deg about z from frame 1,
    poses = dm.resample_poses(frames, 50)                   # stored as -q (the same rotation)
    assert len(poses) == 6                                   # span 0.1 s -> t = 0, 0.02, ..., 0.1
    np.testing.assert_allclose(poses[:, 0], [0.0, 1.8, 3.6, 5.4, 7.2, 9.0])
    # t = 0.02 s is 0.6 of the way from frame 0 to 1: nlerp on the same hemisphere as frame 0
    q = 0.4 * np.array([1, 0, 0, 0]) + 0.6 * np.array([np.sqrt(0.5), 0, 0, np.sqrt(0.5)])
    np.testing.assert_allclose(poses[1, 7:11], q / np.linalg.norm(q))
    np.testing.assert_allclose(np.linalg.norm(poses[:, 7:11], axis=1), 1.0)


@pytest.mark.parametrize("text, needle", [
    ("not json", "not a DeepMimic motion file"),
    (json.dumps({"Frames": [[0.1] * 20] * 3}), r"shape \(3, 20\), expected \(N>=2, 44\)"),
    (json.dumps({"Frames": [[-0.1] + [0.0] * 43] * 3}), "non-positive durations"),
    (json.dumps({"Frames": [[0.1] + [0.0] * 43] * 3}), "quaternions are not unit length"),
])
def test_bad_clips_raise_one_line(text, needle):
    with pytest.raises(ValueError, match=needle):
        dm.parse_clip(text, "bad.txt")


def test_committed_clips_are_plausible_human_motion():
    clips = read_positions_3d(FILES_DIR / FILE_3D)["deepmimic"]
    assert sorted(clips) == sorted(dm.CLIPS)
    for name, X in clips.items():
        bones = np.linalg.norm(X[:, 1:] - X[:, list(PARENTS[1:])], axis=-1)
        assert bones.std(axis=0).max() < 1e-4, name                        # rigid skeleton
        np.testing.assert_allclose(bones[0, 1], 0.4215, atol=1e-4)          # thigh, urdf x 0.25
    walk = clips["walk"]
    assert 1.0 < walk[-1, 0, 0] - walk[0, 0, 0] < 1.5                      # walks ~1.2 m forward (+x) in 1.3 s
    assert 1.45 < walk[:, 10, 2].mean() < 1.65 and walk[:, [3, 6], 2].min() < 0.1   # head high, feet down
    assert (walk[:, 1, 1] < walk[:, 4, 1]).all()                           # right hip on the right (-y facing +x)
