"""DeepMimic humanoid clips (shipped in the pybullet 3.2.7 wheel) as 17-joint Human3.6M motion.

Source: `pybullet_data/data/motions/humanoid3d_*.txt` of the PyPI wheel `pybullet==3.2.7`
(zlib licence per the wheel metadata; the clips come from the DeepMimic project, Peng et al. 2018,
retargeted from public mocap). Nothing here imports pybullet: only those JSON files are read.
Frame layout as read by pybullet_envs/deep_mimic/env/humanoid_pose_interpolator.py.

A clip is JSON {"Loop": ..., "Frames": [[44 floats], ...]}; each frame is
    [0] duration (s, time to the next frame) | [1:4] root position (m) | [4:8] root rotation
    | [8:12] chest | [12:16] neck | [16:20] right hip | [20] right knee angle | [21:25] right ankle
    | [25:29] right shoulder | [29] right elbow angle | [30:34] left hip | [34] left knee
    | [35:39] left ankle | [39:43] left shoulder | [43] left elbow
with quaternions (w, x, y, z) local to the parent and knees/elbows rotating about their local z.
The DeepMimic world is Y up; the character faces +x and its right side is +z.

Conversion (`clip_to_h36m`):
1. resample to 50 Hz from the per-frame durations (source rates 60, 30, 24 or 16 Hz, see
   CLIPS): root position and joint angles linearly, joint quaternions by normalised linear
   interpolation on the same hemisphere (nlerp; within 1e-3 rad of slerp at these frame steps),
   so bone lengths stay exact;
2. forward kinematics with the link offsets of `pybullet_data/humanoid/humanoid.urdf` times 0.25
   (the scale pybullet loads the DeepMimic humanoid with);
3. 17 H36M joints: pelvis = root; hips, knees, ankles, shoulders, elbows, wrists = the joints;
   spine = chest joint (0.24 m above the root); thorax = neck joint (base of the neck);
   neck/nose and head top are APPROXIMATED as fixed points in the neck frame (NOSE_OFFSET,
   HEAD_TOP_OFFSET, the model has no head joints). The hips are narrower than in Human3.6M
   (0.17 m apart vs about 0.26 m); they are left as the model has them;
4. Y up -> Z up (x, y, z) -> (x, -z, y), a proper rotation, so the world matches realmocap's.
"""
from __future__ import annotations

import json
from typing import Dict, Tuple

import numpy as np

from .camera import quat_to_matrix

__all__ = [
    "PACKAGE", "WHEEL_FILENAME", "WHEEL_SHA256", "PIP_ARGS", "CLIPS", "MOTION_MEMBER", "SUBJECT",
    "FRAME_SIZE", "TARGET_FPS", "NOSE_OFFSET", "HEAD_TOP_OFFSET", "parse_clip", "resample_poses",
    "forward_kinematics", "y_up_to_z_up", "clip_to_h36m",
]

PACKAGE = "pybullet==3.2.7"
WHEEL_FILENAME = "pybullet-3.2.7-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
# sha256 of WHEEL_FILENAME as served by PyPI
WHEEL_SHA256 = "5d858abf7c12a21ef3ed351cf81dac1b5e486ec25c9ab59bfc84beb89034edff"
# pin the platform wheel whatever interpreter runs `prepare` (only its data files are read)
PIP_ARGS = ("--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311")
MOTION_MEMBER = "pybullet_data/data/motions/humanoid3d_{}.txt"
SUBJECT = "deepmimic"

# The 15 humanoid clips and their source rates (from the per-frame durations). Not used:
# laikago_walk.txt (a quadruped, 20 floats per frame) and walker/*.txt (edited copies of one
# walk cycle, provenance unclear).
CLIPS: Dict[str, int] = {
    "backflip": 16, "cartwheel": 60, "crawl": 60, "dance_a": 60, "dance_b": 60, "getup_facedown": 60,
    "getup_faceup": 60, "jump": 60, "kick": 30, "punch": 30, "roll": 60, "run": 30, "spin": 24,
    "spinkick": 60, "walk": 30,
}
FRAME_SIZE = 44
TARGET_FPS = 50

# Layout of the pose vector (a frame without its duration): name -> (start, size).
_POSE = {"root_pos": (0, 3), "root": (3, 4), "chest": (7, 4), "neck": (11, 4), "right_hip": (15, 4),
         "right_knee": (19, 1), "right_ankle": (20, 4), "right_shoulder": (24, 4), "right_elbow": (28, 1),
         "left_hip": (29, 4), "left_knee": (33, 1), "left_ankle": (34, 4), "left_shoulder": (38, 4),
         "left_elbow": (42, 1)}
_QUATS = tuple(k for k, (_, n) in _POSE.items() if n == 4)

_S = 0.25  # humanoid.urdf joint origins are in model units; pybullet loads it with globalScaling 0.25
_CHEST = np.array([0.0, 0.944604, 0.0]) * _S            # from root
_NECK = np.array([0.0, 0.895576, 0.0]) * _S             # from chest
_HIP = np.array([0.0, 0.0, 0.339548]) * _S              # from root, right (+z); left mirrors z
_KNEE = np.array([0.0, -1.686184, 0.0]) * _S            # from hip
_ANKLE = np.array([0.0, -1.639480, 0.0]) * _S           # from knee
_SHOULDER = np.array([-0.0962, 0.974, 0.73244]) * _S    # from chest, right (+z); left mirrors z
_ELBOW = np.array([0.0, -1.099152, 0.0]) * _S           # from shoulder
_WRIST = np.array([0.0, -1.035788, 0.0]) * _S           # from elbow (fixed joint)
# Virtual head points in the neck frame (x forward, y up), chosen for Human3.6M proportions
# (thorax -> neck/nose about 0.12 m, thorax -> head top about 0.23 m). APPROXIMATIONS.
NOSE_OFFSET = np.array([0.06, 0.11, 0.0])
HEAD_TOP_OFFSET = np.array([0.0, 0.23, 0.0])


def parse_clip(text: str, name: str = "clip") -> np.ndarray:
    """(N, 44) float64 frames of a DeepMimic motion file's JSON text."""
    try:
        frames = np.asarray(json.loads(text)["Frames"], dtype=np.float64)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{name}: not a DeepMimic motion file ({err}); pass a humanoid3d_*.txt clip") from None
    if frames.ndim != 2 or frames.shape[1] != FRAME_SIZE or len(frames) < 2:
        raise ValueError(f"{name}: frames have shape {frames.shape}, expected (N>=2, {FRAME_SIZE}); "
                         "only the humanoid3d clips have this layout")
    if not np.isfinite(frames).all() or (frames[:, 0] < 0).any() or frames[:-1, 0].sum() <= 0:
        raise ValueError(f"{name}: non-finite values or non-positive durations; use an unmodified clip")
    norms = np.stack([np.linalg.norm(frames[:, 1 + s:5 + s], axis=1) for s, _ in (_POSE[k] for k in _QUATS)])
    if np.abs(norms - 1).max() > 0.05:
        raise ValueError(f"{name}: joint quaternions are not unit length (norms {norms.min():.3f}..{norms.max():.3f}); "
                         "the file is not in the DeepMimic (w, x, y, z) layout")
    return frames


def resample_poses(frames: np.ndarray, fps: int = TARGET_FPS) -> np.ndarray:
    """(N, 44) frames with durations -> (M, 43) poses at times k / fps, k = 0 .. floor(span * fps)."""
    times = np.concatenate([[0.0], np.cumsum(frames[:-1, 0])])      # frame i starts at sum of earlier durations
    t = np.arange(int(np.floor(times[-1] * fps + 1e-6)) + 1) / fps
    i0 = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    step = np.maximum(times[i0 + 1] - times[i0], 1e-12)
    w = np.clip((t - times[i0]) / step, 0.0, 1.0)[:, None]
    a, b = frames[i0, 1:], frames[i0 + 1, 1:]
    out = (1 - w) * a + w * b
    for key in _QUATS:
        s, n = _POSE[key]
        qa, qb = a[:, s:s + n], b[:, s:s + n]
        qb = np.where(np.sum(qa * qb, axis=1, keepdims=True) < 0, -qb, qb)   # shortest way round
        q = (1 - w) * qa + w * qb
        out[:, s:s + n] = q / np.linalg.norm(q, axis=1, keepdims=True)
    return out


def _rot(poses: np.ndarray, key: str) -> np.ndarray:
    s, n = _POSE[key]
    if n == 4:
        return quat_to_matrix(poses[:, s:s + 4])
    half = poses[:, s] / 2                                       # revolute joint about local z
    return quat_to_matrix(np.stack([np.cos(half), 0 * half, 0 * half, np.sin(half)], axis=1))


def _apply(R: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("nij,j->ni", R, v)


def forward_kinematics(poses: np.ndarray) -> np.ndarray:
    """(M, 43) poses -> (M, 17, 3) H36M joints in the DeepMimic world (metres, Y up)."""
    root = poses[:, 0:3]
    R_root = _rot(poses, "root")
    chest = root + _apply(R_root, _CHEST)
    R_chest = R_root @ _rot(poses, "chest")
    neck = chest + _apply(R_chest, _NECK)
    R_neck = R_chest @ _rot(poses, "neck")
    flip = np.array([1.0, 1.0, -1.0])                            # left = right mirrored in z
    limbs = {}
    for side, sign in (("right", np.ones(3)), ("left", flip)):
        hip = root + _apply(R_root, _HIP * sign)
        R_hip = R_root @ _rot(poses, f"{side}_hip")
        knee = hip + _apply(R_hip, _KNEE)
        ankle = knee + _apply(R_hip @ _rot(poses, f"{side}_knee"), _ANKLE)
        shoulder = chest + _apply(R_chest, _SHOULDER * sign)
        R_shoulder = R_chest @ _rot(poses, f"{side}_shoulder")
        elbow = shoulder + _apply(R_shoulder, _ELBOW)
        wrist = elbow + _apply(R_shoulder @ _rot(poses, f"{side}_elbow"), _WRIST)
        limbs[side] = (hip, knee, ankle, shoulder, elbow, wrist)
    r, l = limbs["right"], limbs["left"]
    joints = [root, r[0], r[1], r[2], l[0], l[1], l[2], chest, neck,
              neck + _apply(R_neck, NOSE_OFFSET), neck + _apply(R_neck, HEAD_TOP_OFFSET),
              l[3], l[4], l[5], r[3], r[4], r[5]]
    return np.stack(joints, axis=1)


def y_up_to_z_up(X: np.ndarray) -> np.ndarray:
    """DeepMimic (x forward, y up, z right) -> world Z up: (x, y, z) -> (x, -z, y)."""
    X = np.asarray(X, dtype=np.float64)
    return np.stack([X[..., 0], -X[..., 2], X[..., 1]], axis=-1)


def clip_to_h36m(text: str, name: str = "clip", fps: int = TARGET_FPS) -> Tuple[np.ndarray, int]:
    """(T, 17, 3) world Z-up metres at `fps`, and the number of source frames, of one clip's JSON text."""
    frames = parse_clip(text, name)
    return y_up_to_z_up(forward_kinematics(resample_poses(frames, fps))), len(frames)
