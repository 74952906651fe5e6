"""Pose-error metrics on arrays of shape (..., J, 3) in metres, returned in millimetres.

Protocol (reference E): root-relative poses with the root joint set to 0 in both prediction and
target; MPJPE is the mean L2 over all 17 joints (the zeroed root included); results are averaged per
action first, then as an unweighted mean over actions.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, Tuple

import numpy as np

__all__ = ["mpjpe", "p_mpjpe", "mpjve", "zero_root", "mean_over_actions"]


def zero_root(poses: np.ndarray) -> np.ndarray:
    out = np.array(poses, dtype=np.float64, copy=True)
    out[..., 0, :] = 0.0
    return out


def mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean per-joint position error (mm)."""
    _check(pred, target)
    return float(np.linalg.norm(np.asarray(pred, np.float64) - target, axis=-1).mean() * 1000.0)


def p_mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """MPJPE after a per-pose similarity Procrustes alignment (rotation, translation, scale;
    reflections are corrected through the sign of det(R))."""
    _check(pred, target)
    X = np.asarray(pred, np.float64).reshape(-1, *pred.shape[-2:])
    Y = np.asarray(target, np.float64).reshape(-1, *target.shape[-2:])
    mx, my = X.mean(axis=1, keepdims=True), Y.mean(axis=1, keepdims=True)
    X0, Y0 = X - mx, Y - my
    nx = np.linalg.norm(X0, axis=(1, 2), keepdims=True) + 1e-12
    ny = np.linalg.norm(Y0, axis=(1, 2), keepdims=True) + 1e-12
    X0, Y0 = X0 / nx, Y0 / ny
    U, s, Vt = np.linalg.svd(np.einsum("nji,njk->nik", Y0, X0))      # H = Y0^T X0, (N, 3, 3)
    V = Vt.transpose(0, 2, 1)
    R = V @ U.transpose(0, 2, 1)
    # reflection: flip the last singular direction where det(R) < 0
    sign = np.sign(np.linalg.det(R))[:, None]
    V[:, :, -1] *= sign
    s[:, -1] *= sign[:, 0]
    R = V @ U.transpose(0, 2, 1)
    scale = (s.sum(axis=1)[:, None, None]) * ny / nx
    aligned = scale * (X - mx) @ R + my
    return float(np.linalg.norm(aligned - Y, axis=-1).mean() * 1000.0)


def mpjve(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean per-joint velocity error (mm per frame) over the frame axis (-3)."""
    _check(pred, target)
    if pred.shape[-3] < 2:
        raise ValueError("mpjve needs at least 2 frames on axis -3")
    return mpjpe(np.diff(pred, axis=-3), np.diff(target, axis=-3))


def mean_over_actions(per_sequence: Iterable[Tuple[str, float, int]]) -> Tuple[float, Dict[str, float]]:
    """(action, error, n_frames) per sequence/camera -> (mean over actions, {action: frame-weighted mean})."""
    sums, counts = defaultdict(float), defaultdict(int)
    for action, err, n in per_sequence:
        sums[action] += err * n
        counts[action] += n
    per_action = {a: sums[a] / counts[a] for a in sums}
    return float(np.mean(list(per_action.values()))), per_action


def _check(pred, target):
    if np.shape(pred) != np.shape(target) or np.shape(pred)[-1] != 3:
        raise ValueError(f"pred {np.shape(pred)} and target {np.shape(target)} must have the same (..., J, 3) shape")
