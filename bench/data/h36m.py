"""Reading and writing VideoPose3D-format files (the Human3.6M npz layout).

- `*_3d.npz`: key `positions_3d` = pickled dict subject -> action -> (T, J, 3) world metres.
- `*_2d*.npz`: key `positions_2d` = dict subject -> action -> list of (T, 17, 2) pixel arrays (one
  per camera), key `metadata` = {layout_name, num_joints, keypoints_symmetry} (only `read_metadata` reads it).
- cameras: Human3.6M keeps them as code constants (`skeleton.py`); the embedded real-motion set
  stores its virtual cameras in a JSON file {"cameras": subject -> action -> [camera dict]}.

The npz files hold pickled dicts (that is the format); `npz.read_npz_dict` reads them without ever
running code (see that module), and the loaded dicts are type-checked here, so errors name the file,
subject and action at fault.

Human3.6M files (`data_3d_h36m.npz`, `data_2d_h36m_gt.npz`, `data_2d_h36m_cpn_ft_h36m_dbb.npz`) are
not redistributable; build them as VideoPose3D's DATASETS.md describes (H36M_HOW_TO_GET). Loading
reduces 32 -> 17 joints; `preprocess.sequences_from_motion` then truncates 2D to the 3D length,
moves 3D into each camera frame and normalises 2D. `action_class` maps file action names
('Walking 1', 'WalkDog', 'TakingPhoto') to the 15 protocol actions for per-action means.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .camera import make_camera
from .npz import read_npz_dict
from .skeleton import H36M_32_TO_17, H36M_EXTRINSICS, H36M_FPS, H36M_INTRINSICS, KEYPOINTS_SYMMETRY, NUM_JOINTS
from .structures import MotionSet

__all__ = [
    "read_positions_3d", "read_positions_2d", "read_metadata", "write_positions_3d", "write_positions_2d",
    "read_cameras_json", "write_cameras_json", "h36m_cameras", "load_h36m_motion", "H36M_2D_METADATA",
    "H36M_ACTIONS", "H36M_HOW_TO_GET", "action_class", "require_file",
]

H36M_2D_METADATA = {"layout_name": "h36m", "num_joints": NUM_JOINTS, "keypoints_symmetry": KEYPOINTS_SYMMETRY}


H36M_HOW_TO_GET = ("get it by following https://github.com/facebookresearch/VideoPose3D/blob/main/DATASETS.md "
                   "(Human3.6M licence required), then pass its path")

# The 15 Human3.6M actions of the protocol; per-action means average over these.
H36M_ACTIONS: Tuple[str, ...] = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases",
    "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether",
)
# Spellings of the original Human3.6M release that VideoPose3D's conversion renames.
_ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}


def action_class(name: str) -> str:
    """The action class of a file action name, as VideoPose3D groups them for per-action means.

    The class is the name up to the first space ('Walking 1' -> 'Walking', 'Directions' ->
    'Directions'), with the original release's 'TakingPhoto' and 'WalkingDog' renamed to 'Photo'
    and 'WalkDog'. 'WalkTogether' and 'SittingDown' stay their own classes. Names of other
    datasets (no space, e.g. 'climb_3') are their own class.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"action name {name!r} is not a non-empty string; pass the action key from the data file")
    head = name.strip().split(" ")[0]
    return _ACTION_ALIASES.get(head, head)


def require_file(path, how_to_create: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {path} not found; {how_to_create}")
    return path


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype}"
    if isinstance(value, np.generic):
        return f"a numpy {value.dtype} scalar"
    return f"a {type(value).__name__}"


def _is_numeric_array(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in "fiu"


def _check_actions(path: Path, data: Dict, check_value: Callable, how_to_create: str) -> None:
    """subject (str) -> action (str) -> value; `check_value(where, value)` raises for a bad value.

    Checked right after loading so that a malformed file fails here, naming the file and the
    subject/action, instead of deep inside preprocessing.
    """
    for subject, actions in data.items():
        if not isinstance(subject, str) or not isinstance(actions, dict):
            raise ValueError(f"{path}: subject {subject!r} maps to {_describe(actions)}, expected a str -> dict of "
                             f"actions; {how_to_create}")
        for action, value in actions.items():
            if not isinstance(action, str):
                raise ValueError(f"{path}: subject '{subject}' has action key {action!r}, expected a str; "
                                 f"{how_to_create}")
            check_value(f"{path}: subject '{subject}' action '{action}'", value)


def _check_3d(path: Path, data: Dict, how_to_create: str) -> None:
    def check(where, value):
        if not _is_numeric_array(value):
            raise ValueError(f"{where} is {_describe(value)}, expected a (T, 32 or 17, 3) array; {how_to_create}")
    _check_actions(path, data, check, how_to_create)


def _check_2d(path: Path, data: Dict, how_to_create: str) -> None:
    def check(where, views):
        if not isinstance(views, (list, tuple)):
            raise ValueError(f"{where} is {_describe(views)}, expected a list of per-camera (T, 17, 2) arrays; "
                             f"{how_to_create}")
        for c, view in enumerate(views):
            if not _is_numeric_array(view):
                raise ValueError(f"{where} camera {c} is {_describe(view)}, expected a (T, 17, 2) array; "
                                 f"{how_to_create}")
    _check_actions(path, data, check, how_to_create)


def read_positions_3d(path, how_to_create: str = "pass the path of a VideoPose3D data_3d_*.npz") -> Dict:
    """subject -> action -> (T, J, 3) array, as stored (restricted unpickling, type-checked)."""
    path = require_file(path, how_to_create)
    positions = read_npz_dict(path, "positions_3d", how_to_create)
    _check_3d(path, positions, how_to_create)
    return positions


def read_positions_2d(path, how_to_create: str = "pass the path of a VideoPose3D data_2d_*.npz") -> Dict:
    """subject -> action -> [per-camera (T, 17, 2) array]; the file's `metadata` is not read."""
    path = require_file(path, how_to_create)
    positions = read_npz_dict(path, "positions_2d", how_to_create)
    _check_2d(path, positions, how_to_create)
    return positions


def read_metadata(path, how_to_create: str = "pass the path of a VideoPose3D data_2d_*.npz") -> Dict:
    """The `metadata` dict of a 2D file (layout_name, num_joints, keypoints_symmetry), restricted unpickling.

    Separate from read_positions_2d because loading never needs it: a key nobody reads cannot hurt.
    """
    return read_npz_dict(require_file(path, how_to_create), "metadata", how_to_create)


def write_positions_3d(path, positions_3d: Dict) -> None:
    """Compressed npz with the pickled dict under `positions_3d` (what VideoPose3D loads)."""
    np.savez_compressed(path, positions_3d=positions_3d)


def write_positions_2d(path, positions_2d: Dict, metadata: Optional[Dict] = None) -> None:
    np.savez_compressed(path, positions_2d=positions_2d, metadata=metadata or H36M_2D_METADATA)


def read_cameras_json(path, how_to_create: str) -> Dict[str, Dict[str, List[dict]]]:
    """subject -> action -> [camera dict] from a cameras JSON file."""
    path = require_file(path, how_to_create)
    data = json.loads(path.read_text())
    if "cameras" not in data:
        raise ValueError(f"{path} has no 'cameras' entry; regenerate it with `python -m bench.data.realmocap prepare`")
    return data["cameras"]


def write_cameras_json(path, cameras: Dict, note: str = "") -> None:
    payload = {"note": note, "cameras": cameras}
    Path(path).write_text(json.dumps(payload, indent=1) + "\n")


def h36m_cameras(subject: str) -> List[dict]:
    """The 4 calibrated Human3.6M cameras of `subject` as camera dicts (translation in metres)."""
    if subject not in H36M_EXTRINSICS:
        raise ValueError(f"no Human3.6M camera calibration for subject '{subject}' "
                         f"(known: {sorted(H36M_EXTRINSICS)}); pass a cameras JSON file for other subjects")
    return [make_camera(intr, ext["orientation"], np.asarray(ext["translation_mm"]) / 1000.0)
            for intr, ext in zip(H36M_INTRINSICS, H36M_EXTRINSICS[subject])]


def load_h36m_motion(path_3d, path_2d, cameras_json=None, fps: float = H36M_FPS) -> MotionSet:
    """A MotionSet from VideoPose3D files.

    3D arrays with 32 joints are reduced to the 17 used by every model; other joint counts are
    left to the validation in `sequences_from_motion`. Without `cameras_json` the published
    Human3.6M calibration of each subject is used. 2D is truncated to the 3D length later.
    """
    positions_3d = read_positions_3d(path_3d, H36M_HOW_TO_GET)
    positions_2d = read_positions_2d(path_2d, H36M_HOW_TO_GET)  # never its `metadata`: nothing here needs it
    reduced = {}
    for subject, actions in positions_3d.items():
        reduced[subject] = {}
        for action, X in actions.items():
            X = np.asarray(X)
            if X.ndim == 3 and X.shape[1] == 32:
                X = X[:, list(H36M_32_TO_17)]
            reduced[subject][action] = X
    if cameras_json is not None:
        cameras = read_cameras_json(cameras_json, "pass an existing cameras JSON file")
    else:
        cameras = {s: {a: h36m_cameras(s) for a in acts} for s, acts in reduced.items()}
    source = " + ".join(str(p) for p in (path_3d, path_2d, cameras_json) if p is not None)
    return MotionSet(reduced, positions_2d, cameras, float(fps), source=source)
