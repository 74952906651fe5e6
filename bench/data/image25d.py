"""MotionBERT's "2.5D" image space, in which its and MotionAGFormer's published Human3.6M models predict.

Those models do not predict camera-frame metres (VideoPose3D's target): they predict every joint's pixel
position and its depth relative to the root in pixel units, normalised like the 2D input (x / w * 2 -
[1, h / w], depth / w * 2). Their test (MotionBERT `train.py::evaluate`, copied by MotionAGFormer) turns a
prediction back into pixels and multiplies it by a per-frame `2.5d_factor` (millimetres per pixel), then
scores it against the ground truth brought into the same space. Their preprocessed data file is not
public code; its header credits LCN-pose's `tools/data.py`, whose construction is the one here:

- each joint's pixel position: the undistorted pinhole projection f * X / Z + c;
- a 2000 mm square at the root's depth, projected, is `w_box` = 2000 mm * fx / Z_root pixels wide;
- the factor is 2000 / (w_box + 1) mm per pixel (LCN's ratio (w_box + 1) / 2000, inverted);
- the ground truth is (pixel x, pixel y) * factor and (Z - Z_root) in mm, root-relative.

So the protocol is close to, but not the same as, camera-frame MPJPE: x and y are a perspective projection
rescaled at the root's depth.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["image25d_target", "image25d_from_prediction", "BOX_MM"]

BOX_MM = 2000.0  # LCN-pose's rectangle_3d_size: the square whose projected width sets the factor


def image25d_target(pos3d: np.ndarray, root_m: np.ndarray, intrinsics) -> Tuple[np.ndarray, np.ndarray]:
    """Root-relative camera-frame metres (T, J, 3) and the root's camera position (T, 3) -> the ground
    truth in 2.5D, root-relative, in metres (T, J, 3), and the factor, mm per pixel (T,)."""
    X = np.asarray(pos3d, np.float64) + np.asarray(root_m, np.float64)[:, None]
    if np.any(X[..., 2] <= 0):
        raise ValueError("2.5D protocol: a joint lies behind the camera (z <= 0); check the camera of the 3D file")
    f = np.asarray(intrinsics["focal"], np.float64)
    c = np.asarray(intrinsics["center"], np.float64)
    pixels = X[..., :2] / X[..., 2:] * f + c
    box_px = BOX_MM * f[0] / (X[:, 0, 2] * 1000.0)
    factor = BOX_MM / (box_px + 1.0)
    gt = np.concatenate([pixels * factor[:, None, None], 1000.0 * X[..., 2:]], axis=-1)
    return (gt - gt[:, :1]) / 1000.0, factor


def image25d_from_prediction(pred: np.ndarray, factor: np.ndarray, res_w: float) -> np.ndarray:
    """A 2.5D model's normalised output (..., T, J, 3) and the per-frame factor (..., T) -> root-relative
    2.5D in metres: back to pixels (the offset [1, h / w] cancels once root-relative), times the factor."""
    pred = np.asarray(pred, np.float64)
    rel = (pred - pred[..., :1, :]) * (res_w / 2.0)
    return rel * np.asarray(factor, np.float64)[..., None, None] / 1000.0
