"""The one preprocessing path from a `MotionSet` (what a VideoPose3D-format dataset holds) to the
`Sequence`s models train and evaluate on, the one used by VideoPose3D and its successors (PoseFormer,
MixSTE, MotionAGFormer, HoT): world 3D -> camera frame -> root-relative with joint 0 set to 0; pixel 2D
-> `X / w * 2 - [1, h / w]`; 2D tracks longer than the mocap truncated to it. Every source (user files,
the embedded mocap, the synthetic generator) goes through it, after validation naming the file,
subject, action and camera at fault."""
from __future__ import annotations

from typing import List, Optional, Sequence as Seq

import numpy as np

from .camera import normalize_screen, world_to_camera
from .skeleton import NUM_JOINTS
from .structures import MotionSet, Sequence

__all__ = ["sequences_from_motion"]


def _check_finite(arr: np.ndarray, where: str, what: str) -> None:
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: {what} contain NaN or inf values; clean or drop this action from the file")


def sequences_from_motion(motion: MotionSet, cameras: Optional[Seq[int]] = None) -> List[Sequence]:
    """Validate a MotionSet and convert every (subject, action, camera) into a `Sequence`.

    Args:
        motion: world-frame 3D, per-camera pixel 2D and cameras.
        cameras: camera indices to keep (default: all cameras of each action).
    """
    out: List[Sequence] = []
    prefix = f"{motion.source}: " if motion.source else ""  # errors name the files to fix
    for subject, actions in motion.positions_3d.items():
        for action, world in actions.items():
            where = f"{prefix}subject '{subject}' action '{action}'"
            world = np.asarray(world)
            if world.ndim != 3 or world.shape[1:] != (NUM_JOINTS, 3) or len(world) == 0:
                raise ValueError(f"{where}: 3D positions have shape {world.shape}, expected (T>0, 17, 3) "
                                 "(32-joint Human3.6M arrays are reduced automatically)")
            _check_finite(world, where, "3D positions")
            views = motion.positions_2d.get(subject, {}).get(action)
            cams = motion.cameras.get(subject, {}).get(action)
            if views is None or cams is None:
                raise ValueError(f"{where}: missing {'2D keypoints' if views is None else 'cameras'}; "
                                 "the 2D file and cameras must cover every action of the 3D file")
            if len(views) != len(cams):
                raise ValueError(f"{where}: {len(views)} 2D views but {len(cams)} cameras; they must match one-to-one")
            wanted = range(len(cams)) if cameras is None else cameras
            for c in wanted:
                if not 0 <= c < len(cams):
                    raise ValueError(f"{where}: camera index {c} out of range; choose from 0..{len(cams) - 1}")
                kp = np.asarray(views[c])
                if kp.ndim != 3 or kp.shape[1:] != (NUM_JOINTS, 2) or len(kp) < len(world):
                    raise ValueError(f"{where} camera {c}: 2D keypoints have shape {kp.shape}, expected "
                                     f"(T2, 17, 2) with T2 >= {len(world)} (the 3D length)")
                kp = kp[:len(world)]  # 2D tracks may be longer than the mocap; VideoPose3D truncates
                _check_finite(kp, f"{where} camera {c}", "2D keypoints")
                cam = cams[c]
                X = world_to_camera(world, cam["orientation"], cam["translation_m"])  # (T, 17, 3)
                pos3d = X - X[:, :1]                                                   # root-relative, root = 0
                pos2d = normalize_screen(kp.astype(np.float64), cam["res_w"], cam["res_h"])
                intrinsics = {k: cam[k] for k in ("focal", "center", "res_w", "res_h")}
                out.append(Sequence(subject, action, int(c), pos2d.astype(np.float32),
                                    pos3d.astype(np.float32), float(motion.fps),
                                    root_m=X[:, 0].astype(np.float32), intrinsics=intrinsics))
    return out
