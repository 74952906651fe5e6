"""SYNTHETIC skeleton motion, for unit tests and smoke runs only (never for reported results).

A template H36M-like skeleton (fixed bone lengths) is posed by forward kinematics with joint
angles that are sums of sinusoids, while the root walks around a circle and faces its direction
of travel. The motion is then filmed by the same virtual 4-camera studio as the real-mocap set,
so tests exercise exactly the preprocessing path of real data. Subjects are labelled
'synthetic' and actions 'synthetic_<i>', so results can never be mistaken for real ones.
"""
from __future__ import annotations

from typing import List

import numpy as np

from .camera import STUDIO_AZIMUTHS_DEG, STUDIO_DISTANCE_M, STUDIO_HEIGHT_M, project_world, ring_cameras
from .preprocess import sequences_from_motion
from .skeleton import KEYPOINTS_SYMMETRY, NUM_JOINTS, PARENTS
from .structures import MotionSet, Sequence

__all__ = ["TEMPLATE_OFFSETS", "SYNTHETIC_FPS", "synthetic_world_motion", "synthetic_motion",
           "make_synthetic_dataset"]

SYNTHETIC_FPS = 50.0

# Rest pose (metres, Z up, facing +y, so the subject's right is +x): offset of each joint from
# its parent, roughly Human3.6M proportions.
TEMPLATE_OFFSETS = np.array([
    [0.0, 0.0, 0.0],       # 0 pelvis (root)
    [0.13, 0.0, 0.0],      # 1 right hip
    [0.0, 0.0, -0.45],     # 2 right knee
    [0.0, 0.0, -0.44],     # 3 right ankle
    [-0.13, 0.0, 0.0],     # 4 left hip
    [0.0, 0.0, -0.45],     # 5 left knee
    [0.0, 0.0, -0.44],     # 6 left ankle
    [0.0, 0.0, 0.23],      # 7 spine
    [0.0, 0.0, 0.25],      # 8 thorax
    [0.0, 0.04, 0.11],     # 9 neck/nose
    [0.0, -0.02, 0.115],   # 10 head
    [-0.15, 0.0, 0.0],     # 11 left shoulder
    [0.0, 0.0, -0.28],     # 12 left elbow
    [0.0, 0.0, -0.25],     # 13 left wrist
    [0.15, 0.0, 0.0],      # 14 right shoulder
    [0.0, 0.0, -0.28],     # 15 right elbow
    [0.0, 0.0, -0.25],     # 16 right wrist
])
PELVIS_HEIGHT_M = 0.92  # ankles end up ~3 cm above the floor in the rest pose

# (mean, amplitude) in radians of the local rotation about the joint's x (right), y (forward)
# and z (up) axes. Positive x-rotation swings a hanging limb forward (knees bend the other way);
# positive y-rotation swings it to the subject's left (-x), so left and right get opposite signs.
_ANGLES = {
    1: ((0.1, 0.6), (-0.05, 0.1), (0.0, 0.1)),    # right hip
    2: ((-0.5, 0.4), (0.0, 0.0), (0.0, 0.0)),     # right knee (only bends backwards)
    4: ((0.1, 0.6), (0.05, 0.1), (0.0, 0.1)),     # left hip
    5: ((-0.5, 0.4), (0.0, 0.0), (0.0, 0.0)),     # left knee
    7: ((0.05, 0.1), (0.0, 0.1), (0.0, 0.15)),    # spine
    8: ((0.0, 0.1), (0.0, 0.1), (0.0, 0.15)),     # thorax
    9: ((0.0, 0.25), (0.0, 0.15), (0.0, 0.3)),    # neck
    11: ((0.2, 0.8), (0.4, 0.3), (0.0, 0.2)),     # left shoulder (positive y-roll = outwards)
    12: ((0.8, 0.6), (0.0, 0.0), (0.0, 0.0)),     # left elbow (only bends forwards)
    14: ((0.2, 0.8), (-0.4, 0.3), (0.0, 0.2)),    # right shoulder (negative y-roll = outwards)
    15: ((0.8, 0.6), (0.0, 0.0), (0.0, 0.0)),     # right elbow
}


def _rot_xyz(angles: np.ndarray) -> np.ndarray:
    """(T, 3) angles about x, y, z -> (T, 3, 3) rotations Rz @ Ry @ Rx."""
    cx, cy, cz = np.cos(angles).T
    sx, sy, sz = np.sin(angles).T
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    Rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(-1, 3, 3)
    Ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    Rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return Rz @ Ry @ Rx


def _oscillation(rng: np.random.Generator, t: np.ndarray, mean: float, amplitude: float) -> np.ndarray:
    """mean + a sum of 3 sinusoids (0.2-1.5 Hz) whose amplitudes add up to `amplitude`."""
    weights = rng.dirichlet(np.ones(3)) * amplitude
    freqs = rng.uniform(0.2, 1.5, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    return mean + (weights * np.sin(2 * np.pi * freqs * t[:, None] + phases)).sum(axis=1)


def synthetic_world_motion(frames: int, rng: np.random.Generator, fps: float = SYNTHETIC_FPS) -> np.ndarray:
    """One (frames, 17, 3) world-frame motion in metres (float64), bone lengths = the template's."""
    t = np.arange(frames) / fps
    local = np.tile(np.eye(3), (NUM_JOINTS, frames, 1, 1))           # (J, T, 3, 3)
    for j, axes in _ANGLES.items():
        local[j] = _rot_xyz(np.stack([_oscillation(rng, t, m, a) for m, a in axes], axis=1))

    # Root walks a circle of radius r at angular speed w, facing its direction of travel
    # (the template faces +y; yaw psi turns +y into (-sin psi, cos psi), the circle's tangent).
    radius, speed = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.8)
    w = speed / radius * rng.choice([-1.0, 1.0])
    phase = rng.uniform(0, 2 * np.pi)
    psi = w * t + phase + (np.pi if w < 0 else 0.0)
    bounce = 0.03 * np.sin(2 * np.pi * 1.8 * t)
    root = np.stack([radius * np.cos(w * t + phase), radius * np.sin(w * t + phase),
                     PELVIS_HEIGHT_M + bounce], axis=1)
    tilt = np.stack([_oscillation(rng, t, 0.0, 0.08), _oscillation(rng, t, 0.0, 0.05), psi], axis=1)
    local[0] = _rot_xyz(tilt)

    glob = np.empty_like(local)                                      # world rotation of each joint
    pos = np.empty((NUM_JOINTS, frames, 3))
    glob[0], pos[0] = local[0], root
    for j in range(1, NUM_JOINTS):                                   # parents precede children
        p = PARENTS[j]
        pos[j] = pos[p] + glob[p] @ TEMPLATE_OFFSETS[j]
        glob[j] = glob[p] @ local[j]
    return pos.transpose(1, 0, 2)


def synthetic_motion(num_sequences: int = 6, frames: int = 240, seed: int = 0) -> MotionSet:
    """A SYNTHETIC MotionSet: subject 'synthetic', actions 'synthetic_0'..; 4 virtual cameras each."""
    if num_sequences < 1 or frames < 1:
        raise ValueError(f"synthetic data needs num_sequences >= 1 and frames >= 1, got {num_sequences}, {frames}")
    rng = np.random.default_rng(seed)
    p3d, p2d, cams = {}, {}, {}
    for i in range(num_sequences):
        world = synthetic_world_motion(frames, rng)
        action = f"synthetic_{i}"
        cams[action] = ring_cameras(world[:, 0].mean(axis=0), distance=STUDIO_DISTANCE_M,
                                    height=STUDIO_HEIGHT_M, azimuths_deg=STUDIO_AZIMUTHS_DEG)
        p3d[action] = world.astype(np.float32)
        p2d[action] = [project_world(world, c).astype(np.float32) for c in cams[action]]
    meta = {"layout_name": "h36m", "num_joints": NUM_JOINTS, "keypoints_symmetry": KEYPOINTS_SYMMETRY}
    return MotionSet({"synthetic": p3d}, {"synthetic": p2d}, {"synthetic": cams}, SYNTHETIC_FPS, meta)


def make_synthetic_dataset(num_sequences: int = 6, frames: int = 240, seed: int = 0) -> List[Sequence]:
    """SYNTHETIC sequences (one per action and camera), shaped exactly like `load_dataset`'s output."""
    return sequences_from_motion(synthetic_motion(num_sequences, frames, seed))
