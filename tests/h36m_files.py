"""Small Human3.6M files written exactly as VideoPose3D's `prepare_data_h36m.py` writes them.

3D: `np.savez_compressed(path, positions_3d=d)`, d[subject][action] = float32 (T, 32, 3) world metres.
GT 2D: `np.savez_compressed(path, positions_2d=d, metadata={num_joints, keypoints_symmetry})`, d[subject][action] =
one float32 (T, 17, 2) pixel array per camera (the 17 joints left after removing the static ones).
CPN 2D (`data_2d_h36m_cpn_ft_h36m_dbb.npz`): the same layout with `layout_name` in the metadata, detector noise,
and tracks a few frames longer than the mocap (the loader truncates them, as VideoPose3D does).
The motion is the synthetic generator's (tests only), placed in the Human3.6M studio and filmed by the
published calibration of each subject.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Sequence, Union

import numpy as np

from bench.data.camera import project_world
from bench.data.h36m import h36m_cameras
from bench.data.skeleton import H36M_32_TO_17, KEYPOINTS_SYMMETRY
from bench.data.synthetic import synthetic_world_motion

SUBJECTS = ("S1", "S5", "S9", "S11")
ACTIONS = ("Walking 1", "Directions", "TakingPhoto")
GT_METADATA = {"num_joints": 17, "keypoints_symmetry": KEYPOINTS_SYMMETRY}
CPN_METADATA = {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": KEYPOINTS_SYMMETRY}


def write_h36m_files(root: Path, frames: Union[int, Mapping[str, int]] = 64, seed: int = 0,
                     subjects: Sequence[str] = SUBJECTS, actions: Sequence[str] = ACTIONS) -> Dict[str, Path]:
    """Write the 3D, GT 2D and CPN 2D files under `root`; returns their paths by kind. `frames`: one length
    for every sequence, or one per action name."""
    rng = np.random.default_rng(seed)
    p3d, gt, cpn = {}, {}, {}
    for subject in subjects:
        p3d[subject], gt[subject], cpn[subject] = {}, {}, {}
        for action in actions:
            length = frames[action] if isinstance(frames, Mapping) else frames
            world17 = synthetic_world_motion(length, rng)                        # (T, 17, 3) metres, Z up
            world32 = np.repeat(world17[:, :1], 32, axis=1)                      # static joints sit on the root
            world32[:, list(H36M_32_TO_17)] = world17
            p3d[subject][action] = world32.astype(np.float32)
            views = [project_world(world17, cam).astype(np.float32) for cam in h36m_cameras(subject)]
            gt[subject][action] = views
            cpn[subject][action] = [np.concatenate([v, v[-3:]]) + rng.normal(scale=2.0, size=(length + 3, 17, 2))
                                    .astype(np.float32) for v in views]
    paths = {"3d": root / "data_3d_h36m.npz", "gt": root / "data_2d_h36m_gt.npz",
             "cpn": root / "data_2d_h36m_cpn_ft_h36m_dbb.npz"}
    np.savez_compressed(paths["3d"], positions_3d=p3d)
    np.savez_compressed(paths["gt"], positions_2d=gt, metadata=GT_METADATA)
    np.savez_compressed(paths["cpn"], positions_2d=cpn, metadata=CPN_METADATA)
    return paths
