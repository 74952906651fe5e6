"""Camera geometry in numpy, following the VideoPose3D conventions used by every HoT/H2OT pipeline.

- A camera is a plain dict (JSON-friendly): the intrinsics of `skeleton.H36M_INTRINSICS`
  (`center`, `focal`, `radial` k1..k3, `tangential` p1 p2, `res_w`, `res_h`) plus the extrinsics
  `orientation` (w, x, y, z quaternion, camera axes -> world) and `translation_m` (camera centre
  in world metres).
- world -> camera: X_cam = rotate(conj(q), X - t); camera axes x right, y down, z forward.
- pixels -> network input: X / w * 2 - [1, h / w] (x in [-1, 1], aspect ratio kept).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np

from .skeleton import H36M_INTRINSICS

__all__ = [
    "quat_to_matrix", "matrix_to_quat", "quat_rotate", "world_to_camera", "camera_to_world",
    "project_to_2d", "normalize_screen", "look_at_camera", "ring_cameras", "make_camera", "project_world",
    "STUDIO_AZIMUTHS_DEG", "STUDIO_HEIGHT_M", "STUDIO_DISTANCE_M",
]

# A virtual studio shaped like the Human3.6M one (its 4 cameras sit ~5 m from the capture centre,
# ~1.5-1.6 m high, at azimuths of about +70, -70, +110 and -110 degrees in the order of
# H36M_INTRINSICS), re-centred on whatever motion is being filmed.
STUDIO_AZIMUTHS_DEG = (70.0, -70.0, 110.0, -110.0)
STUDIO_HEIGHT_M = 1.6
STUDIO_DISTANCE_M = 5.0


def quat_to_matrix(q) -> np.ndarray:
    """(..., 4) unit quaternions (w, x, y, z) -> (..., 3, 3) rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)  # tolerate float32-rounded constants
    w, x, y, z = np.moveaxis(q, -1, 0)
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return R.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(R) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) quaternion (w, x, y, z) with w >= 0.

    Picks the largest of w, x, y, z to divide by (Shepperd's method), so the result stays
    accurate for rotations near 180 degrees where w is close to 0.
    """
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    candidates = np.array([tr, R[0, 0], R[1, 1], R[2, 2]])
    i = int(np.argmax(candidates))
    if i == 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif i == 1:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif i == 2:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4]
    q = np.asarray(q)
    return q if q[0] >= 0 else -q  # q and -q are the same rotation; pick one canonically


def quat_rotate(q, v) -> np.ndarray:
    """Rotate vectors v (..., 3) by one quaternion q (4,)."""
    return np.asarray(v, dtype=np.float64) @ quat_to_matrix(q).T


def world_to_camera(X, R_quat_wxyz, t_metres) -> np.ndarray:
    """World points (..., 3) metres -> camera frame: rotate(conj(q), X - t).

    `R_quat_wxyz` is the camera orientation (camera axes expressed in the world), `t_metres` the
    camera centre in the world. Returns float64; callers cast once at the end.
    """
    R_cw = quat_to_matrix(R_quat_wxyz)                   # camera -> world
    # rotate(conj(q), v) = R_cw^T v; for row vectors that is v @ R_cw.
    return (np.asarray(X, dtype=np.float64) - np.asarray(t_metres, dtype=np.float64)) @ R_cw


def camera_to_world(X_cam, R_quat_wxyz, t_metres) -> np.ndarray:
    """Inverse of `world_to_camera`: rotate(q, X_cam) + t."""
    return quat_rotate(R_quat_wxyz, X_cam) + np.asarray(t_metres, dtype=np.float64)


def project_to_2d(X_cam, intrinsics: Mapping, distort: bool = True) -> np.ndarray:
    """Camera-frame points (..., 3) -> pixels (..., 2) with the VideoPose3D projection model.

    x/z, y/z are clamped to [-1, 1] as VideoPose3D does (only matters beyond 45 degrees off-axis).
    Distortion, with r2 = x^2 + y^2 and p = (p1, p2):
        radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3
        xy' = xy * (radial + p1 x + p2 y) + p * r2
    This tangential term is VideoPose3D's own form, not OpenCV's Brown-Conrady one; we match
    VideoPose3D because its 2D files were produced (and are consumed) with it.
    """
    X_cam = np.asarray(X_cam, dtype=np.float64)
    if np.any(X_cam[..., 2] <= 0):
        raise ValueError("project_to_2d: some points are behind the camera (z <= 0); "
                         "place the camera so it looks at the subject")
    xy = np.clip(X_cam[..., :2] / X_cam[..., 2:], -1.0, 1.0)
    if distort:
        k = np.asarray(intrinsics["radial"], dtype=np.float64)
        p = np.asarray(intrinsics["tangential"], dtype=np.float64)
        r2 = np.sum(xy ** 2, axis=-1, keepdims=True)
        radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
        tan = np.sum(p * xy, axis=-1, keepdims=True)
        xy = xy * (radial + tan) + p * r2
    return xy * np.asarray(intrinsics["focal"]) + np.asarray(intrinsics["center"])


def normalize_screen(X_px, w: float, h: float) -> np.ndarray:
    """Pixels -> VideoPose3D network coordinates: X / w * 2 - [1, h / w].

    x maps [0, w] to [-1, 1]; y is scaled by the same factor (aspect ratio kept), so it maps
    [0, h] to [-h/w, h/w].
    """
    X_px = np.asarray(X_px)
    if X_px.shape[-1] != 2:
        raise ValueError(f"normalize_screen expects (..., 2) pixel coordinates, got shape {X_px.shape}")
    return X_px / w * 2 - np.array([1.0, h / w], dtype=X_px.dtype)


def look_at_camera(position, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Orientation quaternion (w, x, y, z) of a camera at `position` looking at `target`.

    The camera has z forward (towards target), y down (towards -up), x right, so the result plugs
    straight into `world_to_camera(X, q, position)`: the target lands on the optical axis and the
    world's up direction points to the top of the image.
    """
    position, target, up = (np.asarray(a, dtype=np.float64) for a in (position, target, up))
    forward = target - position
    if np.linalg.norm(forward) < 1e-9:
        raise ValueError("look_at_camera: position and target coincide; move the camera away from the target")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at_camera: viewing direction is parallel to `up`; pass another up vector")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)                       # right x down = forward (right-handed)
    R_cw = np.stack([right, down, forward], axis=1)       # columns = camera axes in world coords
    return matrix_to_quat(R_cw)


def project_world(X, camera: Mapping, distort: bool = True) -> np.ndarray:
    """World points (..., 3) metres -> pixels (..., 2) through a full camera dict."""
    return project_to_2d(world_to_camera(X, camera["orientation"], camera["translation_m"]), camera, distort)


def make_camera(intrinsics: Mapping, orientation, translation_m) -> Dict:
    """A full camera dict: the intrinsics plus extrinsics, as plain lists (JSON-serialisable)."""
    cam = {k: (list(v) if isinstance(v, (tuple, list, np.ndarray)) else v) for k, v in intrinsics.items()}
    cam["orientation"] = [float(v) for v in orientation]
    cam["translation_m"] = [float(v) for v in translation_m]
    return cam


def ring_cameras(target, *, distance: float, height: float, azimuths_deg: Iterable[float],
                 intrinsics: Sequence[Mapping] = H36M_INTRINSICS) -> List[Dict]:
    """Virtual cameras on a horizontal circle around `target`, all looking at it.

    Camera i sits `distance` metres (horizontally) from `target` at azimuth `azimuths_deg[i]`
    (degrees from the world +x axis, counter-clockwise seen from above) and at world height
    `height`, and uses `intrinsics[i]`. Mirrors the Human3.6M studio layout, where the 4 cameras
    sit ~5 m from the centre, ~1.5 m high, at azimuths ~ +-70 and +-110 degrees.
    """
    target = np.asarray(target, dtype=np.float64)
    azimuths = list(azimuths_deg)
    if len(azimuths) != len(intrinsics):
        raise ValueError(f"ring_cameras: {len(azimuths)} azimuths for {len(intrinsics)} intrinsics; "
                         "pass one per camera")
    cams = []
    for az, intr in zip(azimuths, intrinsics):
        a = np.deg2rad(az)
        pos = np.array([target[0] + distance * np.cos(a), target[1] + distance * np.sin(a), height])
        cams.append(make_camera(intr, look_at_camera(pos, target), pos))
    return cams
