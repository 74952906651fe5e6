"""The two data structures of the data layer.

`MotionSet` is what a VideoPose3D-format dataset holds on disk (world-frame 3D, per-camera pixel
2D, cameras). `Sequence` is what models train and evaluate on: one (subject, action, camera)
clip, already in network coordinates. `dataset.sequences_from_motion` turns the first into the
second; every source (real files, the embedded mocap, the synthetic generator) goes through it,
so they share one preprocessing path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["Sequence", "MotionSet"]


@dataclass(frozen=True)
class Sequence:
    """One camera view of one action.

    Attributes:
        subject: e.g. 'S9', 'climbA', 'synthetic'.
        action: e.g. 'Walking 1', 'climb_3'. Metrics average per action, then over actions.
        camera: index of the camera within its action's camera list (0..3 for H36M layouts).
        pos2d: float32 (T, 17, 2) keypoints in normalised screen coordinates (X / w * 2 - [1, h/w]).
        pos3d: float32 (T, 17, 3) camera-frame metres, root-relative; joint 0 is exactly 0.
        fps: frames per second of both arrays.
        root_m: float32 (T, 3) camera-frame position of the root joint in metres (where pos3d is relative to),
            and `intrinsics` the camera's (`focal`, `center`, `res_w`, `res_h`): what MotionBERT's 2.5D
            evaluation protocol needs (`image25d`); None where a source has no camera.
    """
    subject: str
    action: str
    camera: int
    pos2d: np.ndarray
    pos3d: np.ndarray
    fps: float
    root_m: Optional[np.ndarray] = field(default=None, repr=False)
    intrinsics: Optional[Dict[str, Any]] = field(default=None, repr=False)

    def __post_init__(self):
        # Internal invariant: loaders validate user data before building a Sequence.
        assert self.pos2d.shape[:2] == self.pos3d.shape[:2], (self.pos2d.shape, self.pos3d.shape)

    def __len__(self) -> int:
        return int(self.pos2d.shape[0])


@dataclass
class MotionSet:
    """VideoPose3D-style dataset contents.

    Attributes:
        positions_3d: subject -> action -> (T, J, 3) world positions in metres (J = 17, or 32 for
            raw Human3.6M files).
        positions_2d: subject -> action -> list (one per camera) of (T2, 17, 2) pixel keypoints;
            T2 >= T (longer 2D tracks are truncated to the 3D length).
        cameras: subject -> action -> list of camera dicts (see `camera.make_camera`), same order
            as the 2D list.
        fps: frame rate of the 3D and 2D arrays.
        metadata: free-form notes of the source (file loaders leave it empty: see `h36m.read_metadata`).
        source: the files the set was read from (e.g. 'data_3d_h36m.npz + data_2d_h36m_gt.npz'),
            prefixed to validation errors so they name the file to fix; empty for generated data.
    """
    positions_3d: Dict[str, Dict[str, np.ndarray]]
    positions_2d: Dict[str, Dict[str, List[np.ndarray]]]
    cameras: Dict[str, Dict[str, List[dict]]]
    fps: float
    metadata: Dict = field(default_factory=dict)
    source: str = ""
