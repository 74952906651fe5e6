"""Pose-error metrics on arrays of shape (..., J, 3) in metres, returned in millimetres.

Protocol (VideoPose3D / official HoT evaluation): root-relative poses with the root joint set to 0 in both prediction and
target; MPJPE is the mean L2 over all 17 joints (the zeroed root included); results are averaged per
action first, then as an unweighted mean over actions.
"""
from __future__ import annotations

from collections import defaultdict
import math
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np

from .data.skeleton import LEFT, NUM_JOINTS, RIGHT

__all__ = ["mpjpe", "p_mpjpe", "mpjve", "zero_root", "mean_over_actions", "flip_poses", "aggregate_seeds",
           "H36M_LEFT", "H36M_RIGHT", "ACCURACY_FIELDS"]

H36M_LEFT, H36M_RIGHT = LEFT, RIGHT  # left/right joints of the 17-joint VideoPose3D skeleton
ACCURACY_FIELDS = ("mpjpe_mm", "p_mpjpe_mm", "mpjve_mm")


def flip_poses(poses, joints_axis: int = -2):
    """Mirror x (channel 0; the other channels, e.g. y, z, confidence, unchanged) and swap the H36M
    left/right joints. Works on numpy arrays and torch tensors (..., J, C); it is its own inverse, so it
    flips a 2D input and un-flips a 3D prediction alike."""
    perm = list(range(poses.shape[joints_axis]))
    if len(perm) != NUM_JOINTS:
        raise ValueError(f"flip augmentation needs the 17-joint H36M skeleton, got {len(perm)} joints; set eval.flip=false")
    for l, r in zip(H36M_LEFT, H36M_RIGHT):
        perm[l], perm[r] = r, l
    out = poses[..., perm, :] * 1.0  # a copy in either library
    out[..., 0] = -out[..., 0]
    return out


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


def aggregate_seeds(records, keys: Sequence[str], metrics: Sequence[str] = ACCURACY_FIELDS) -> List[Dict[str, Any]]:
    """Records (list of dicts or a pandas DataFrame; one per cell and seed) -> one row per distinct value
    of `keys` (which must not include the seed) with `<metric>_mean`, `<metric>_std` (sample std, ddof=1;
    NaN for a single seed) and `n_seeds` (distinct seeds with every metric present). Failed records
    (status other than 'ok') and missing metric values are left out; row order follows first appearance."""
    rows = records.to_dict("records") if hasattr(records, "to_dict") else list(records)
    if "seed" in keys:
        raise ValueError("aggregate_seeds groups over seeds; remove 'seed' from keys")
    groups: Dict[Tuple, Dict[str, Any]] = {}
    for r in rows:
        if r.get("status", "ok") != "ok":
            continue
        missing = [k for k in keys if k not in r]
        if missing:
            raise ValueError(f"record lacks key(s) {', '.join(missing)}; group by columns every record has")
        vals = [r.get(m) for m in metrics]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals):
            continue
        g = groups.setdefault(tuple(_hashable(r[k]) for k in keys), {"row": {k: r[k] for k in keys}, "seeds": {}})
        g["seeds"][r.get("seed")] = vals  # a repeated seed counts once (the last record wins)
    out = []
    for g in groups.values():
        vals = np.array(list(g["seeds"].values()), dtype=np.float64)   # (n_seeds, n_metrics)
        n = len(vals)
        row = dict(g["row"], n_seeds=n)
        for j, m in enumerate(metrics):
            row[f"{m}_mean"] = float(vals[:, j].mean())
            row[f"{m}_std"] = float(vals[:, j].std(ddof=1)) if n > 1 else float("nan")
        out.append(row)
    return out


def _hashable(v):
    return tuple(map(_hashable, v)) if isinstance(v, (list, tuple)) else v


def _check(pred, target):
    if np.shape(pred) != np.shape(target) or np.shape(pred)[-1] != 3:
        raise ValueError(f"pred {np.shape(pred)} and target {np.shape(target)} must have the same (..., J, 3) shape")
