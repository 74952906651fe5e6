"""The embedded real-motion dataset 'realmocap': climbing and DeepMimic mocap seen by 4 virtual H36M cameras.

Source: the 5 climbing sequences shipped in the PyPI wheel `holosoma-retargeting==0.1.0`
(Apache-2.0, Amazon FAR), `holosoma_retargeting/demo_data/climb/*/*.npy`: float32 (T, 53, 3)
global joint positions, metres, Z up, skeleton-solved (bone lengths constant to < 1 mm).
Provenance and frame rate are not documented in the package. This is NOT Human3.6M: numbers on it are not
comparable with published Human3.6M results.

`prepare()` (also `python -m bench.data.realmocap prepare`) rebuilds the committed files in
bench/data/files from the wheel, reproducibly:
1. `pip download --no-deps` the wheel, check its sha256 against WHEEL_SHA256;
2. read only the 5 climb .npy files from it;
3. map 53 -> 17 H36M joints (MOCAP_TO_H36M); head top = Head + 0.8 * (Head - Neck), because
   the mocap skeleton has no head-end joint;
4. resample from SOURCE_FPS (assumed 120 Hz, undocumented upstream) to 50 Hz (the Human3.6M rate)
   by linear interpolation in time;
5. add the 15 DeepMimic humanoid clips of `pybullet==3.2.7` (subject 'deepmimic', one action per
   clip; forward kinematics, joint approximations and resampling in `deepmimic.py`);
6. film each sequence with 4 virtual cameras (H36M intrinsics, studio layout re-centred on the
   sequence's mean root) and write VideoPose3D-format npz files plus a cameras JSON.

The files hold noise-free 2D projections; `load_realmocap_motion(noise_px=...)` adds Gaussian
detector-like jitter on load (off by default).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import deepmimic
from .camera import STUDIO_AZIMUTHS_DEG, STUDIO_DISTANCE_M, STUDIO_HEIGHT_M, project_world, ring_cameras
from .h36m import (H36M_2D_METADATA, read_cameras_json, read_positions_2d, read_positions_3d,
                   write_cameras_json, write_positions_2d, write_positions_3d)
from .structures import MotionSet

__all__ = [
    "PACKAGE", "WHEEL_FILENAME", "WHEEL_SHA256", "SOURCE_FPS", "TARGET_FPS", "HEAD_TOP_FACTOR",
    "MOCAP_TO_H36M", "FILES_DIR", "mocap_to_h36m", "resample_linear", "place_cameras", "prepare",
    "load_realmocap_motion", "add_detector_noise", "main",
]

PACKAGE = "holosoma-retargeting==0.1.0"
WHEEL_FILENAME = "holosoma_retargeting-0.1.0-py3-none-any.whl"
# Computed once from the PyPI wheel (102,351,546 bytes) and pinned: the data must not change under us.
WHEEL_SHA256 = "3dcdcc06c6705c091478808024298dfcc684d9eb49e890cc6b11fc03fa246cb4"

# ASSUMPTION: upstream does not document the capture rate. Wrist displacements of at most
# 15-19 mm per frame are implausibly slow for 30 fps, so we take the common mocap rate 120 Hz.
SOURCE_FPS = 120
TARGET_FPS = 50  # the Human3.6M / VideoPose3D rate

HEAD_TOP_FACTOR = 0.8  # head top = Head + 0.8 * (Head - Neck): no head-end joint in the source

# Index into the 53 MOCAP_DEMO_JOINTS (holosoma_retargeting/config_types/data_type.py) for each
# H36M joint; None = head top, extrapolated. Spine uses Spine1 (0.33 m above the hips; the
# `Spine` joint is only 0.08 m up), Thorax the mocap Neck (shoulder height), Neck/Nose the Head.
MOCAP_TO_H36M: Tuple[Optional[int], ...] = (
    0,   # pelvis      <- Hips
    47,  # right hip   <- RightUpLeg
    48,  # right knee  <- RightLeg
    49,  # right ankle <- RightFoot
    43,  # left hip    <- LeftUpLeg
    44,  # left knee   <- LeftLeg
    45,  # left ankle  <- LeftFoot
    2,   # spine       <- Spine1
    3,   # thorax      <- Neck
    4,   # neck/nose   <- Head (head base)
    None,  # head top  <- Head + 0.8 * (Head - Neck)
    6,   # left shoulder  <- LeftArm
    7,   # left elbow     <- LeftForeArm
    8,   # left wrist     <- LeftHand
    25,  # right shoulder <- RightArm
    26,  # right elbow    <- RightForeArm
    27,  # right wrist    <- RightHand
)
_MOCAP_NECK, _MOCAP_HEAD, _MOCAP_JOINTS = 3, 4, 53

# Sequences 0-3 share one skeleton (identical bone lengths); 4 differs (another subject or a
# re-calibration), so it gets its own subject name.
SUBJECTS = {0: "climbA", 1: "climbA", 2: "climbA", 3: "climbA", 4: "climbB"}
_MEMBER = re.compile(r"holosoma_retargeting/demo_data/climb/mocap_climb_seq_(\d+)/"
                     r"mocap_climb_seq_\1_joint_positions_f\d+-\d+\.npy")

FILES_DIR = Path(__file__).resolve().parent / "files"
FILE_3D, FILE_2D, FILE_CAMERAS, FILE_SOURCES = (
    "realmocap_3d.npz", "realmocap_2d_gt.npz", "realmocap_cameras.json", "SOURCES.txt")
_HOW_TO_CREATE = "create it with `python -m bench.data.realmocap prepare`"

IMAGE_MARGIN_PX = 10         # every joint must land at least this far inside the image
_DISTANCE_STEP_M = 0.5       # camera distance grows by this until the whole sequence is in view
_MAX_DISTANCE_M = 10.0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_wheel(cache_dir: Path, package: str, filename: str, sha256: str, pip_args=()) -> Path:
    """The pinned wheel `filename` in cache_dir (downloaded with pip if absent), sha256-checked."""
    wheel = cache_dir / filename
    if not wheel.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *pip_args, package,
               "-d", str(cache_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({last}); check network access to PyPI")
    digest = _sha256(wheel)
    if digest != sha256:
        raise RuntimeError(f"{wheel} has sha256 {digest}, expected {sha256}; delete it and rerun prepare")
    return wheel


def _read_deepmimic_clips(wheel: Path) -> Dict[str, Tuple[str, str]]:
    """clip name -> (member name, JSON text), reading only the humanoid3d motion files."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [c for c in deepmimic.CLIPS if deepmimic.MOTION_MEMBER.format(c) not in names]
        if missing:
            raise RuntimeError(f"{wheel.name} lacks the DeepMimic clips {missing}; is it {deepmimic.WHEEL_FILENAME}?")
        return {c: (deepmimic.MOTION_MEMBER.format(c), zf.read(deepmimic.MOTION_MEMBER.format(c)).decode())
                for c in deepmimic.CLIPS}


def _read_climb_arrays(wheel: Path) -> Dict[int, Tuple[str, np.ndarray]]:
    """seq index -> (member name, (T, 53, 3) float32), reading only the climb .npy members."""
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            m = _MEMBER.fullmatch(name)
            if m:
                arr = np.load(io.BytesIO(zf.read(name)), allow_pickle=False)
                if arr.ndim != 3 or arr.shape[1:] != (_MOCAP_JOINTS, 3) or not np.isfinite(arr).all():
                    raise RuntimeError(f"{name}: unexpected shape {arr.shape} or non-finite values")
                out[int(m.group(1))] = (name, arr)
    if sorted(out) != sorted(SUBJECTS):
        raise RuntimeError(f"expected climb sequences {sorted(SUBJECTS)} in {wheel.name}, found {sorted(out)}")
    return out


def mocap_to_h36m(joints: np.ndarray) -> np.ndarray:
    """(T, 53, 3) mocap joints -> (T, 17, 3) H36M joints (float64), head top extrapolated."""
    joints = np.asarray(joints, dtype=np.float64)
    out = np.empty((joints.shape[0], len(MOCAP_TO_H36M), 3))
    for j, src in enumerate(MOCAP_TO_H36M):
        if src is None:
            head, neck = joints[:, _MOCAP_HEAD], joints[:, _MOCAP_NECK]
            out[:, j] = head + HEAD_TOP_FACTOR * (head - neck)
        else:
            out[:, j] = joints[:, src]
    return out


def resample_linear(x: np.ndarray, src_fps: int, dst_fps: int) -> np.ndarray:
    """Linear interpolation in time from src_fps to dst_fps; output frame k is at time k / dst_fps.

    Keeps every output time within the source span, so there are floor((T-1) * dst / src) + 1
    frames. Integer arithmetic for the source positions avoids float drift (k * 2.4 etc.).
    """
    n_out = (len(x) - 1) * dst_fps // src_fps + 1
    num = np.arange(n_out) * src_fps                       # source position = num / dst_fps
    i0 = num // dst_fps
    frac = ((num % dst_fps) / dst_fps).reshape((-1,) + (1,) * (x.ndim - 1))
    i1 = np.minimum(i0 + 1, len(x) - 1)
    return (1 - frac) * x[i0] + frac * x[i1]


def _inside(px: np.ndarray, cam: Dict, margin: float) -> bool:
    return bool((px[..., 0] >= margin).all() and (px[..., 0] <= cam["res_w"] - margin).all()
                and (px[..., 1] >= margin).all() and (px[..., 1] <= cam["res_h"] - margin).all())


def place_cameras(world: np.ndarray) -> Tuple[List[Dict], List[np.ndarray], float]:
    """Virtual H36M-like cameras for one (T, 17, 3) sequence: (cameras, pixels per camera, distance).

    Cameras look at the sequence's mean root from STUDIO_DISTANCE_M (horizontal), STUDIO_HEIGHT_M
    and STUDIO_AZIMUTHS_DEG. If some joint would leave an image, all 4 cameras move back in
    0.5 m steps: climbing sequences wander a few metres, and out-of-image keypoints are not
    something a real 2D detector would give.
    """
    target = world[:, 0].mean(axis=0)
    distance = STUDIO_DISTANCE_M
    while distance <= _MAX_DISTANCE_M:
        cams = ring_cameras(target, distance=distance, height=STUDIO_HEIGHT_M, azimuths_deg=STUDIO_AZIMUTHS_DEG)
        pix = [project_world(world, c) for c in cams]
        if all(_inside(p, c, IMAGE_MARGIN_PX) for p, c in zip(pix, cams)):
            return cams, pix, distance
        distance += _DISTANCE_STEP_M
    raise RuntimeError(f"no camera distance up to {_MAX_DISTANCE_M} m keeps every joint inside the images")


def _sources_text(summary: Dict) -> str:
    lines = [
        "realmocap: embedded real-motion dataset of vptbench. NOT Human3.6M.",
        "",
        f"Source: PyPI package {PACKAGE} (Amazon FAR), licence Apache-2.0",
        "(https://www.apache.org/licenses/LICENSE-2.0), per the package metadata.",
        f"Wheel: {WHEEL_FILENAME}, sha256 {WHEEL_SHA256}",
        "Files used: holosoma_retargeting/demo_data/climb/mocap_climb_seq_{0..4}/*_joint_positions_*.npy",
        "(global joint positions, metres, Z up, 53 joints). Capture provenance is not documented upstream.",
        "",
        "Changes made by vptbench (bench/data/realmocap.py, `python -m bench.data.realmocap prepare`):",
        "- 53 -> 17 Human3.6M joints; head top extrapolated as Head + 0.8 * (Head - Neck);",
        f"- ASSUMED source frame rate {SOURCE_FPS} Hz (undocumented upstream), linearly resampled to {TARGET_FPS} Hz;",
        "- 2D = projection through 4 virtual cameras with the Human3.6M intrinsics (incl. distortion),",
        "  placed around each sequence's mean root (realmocap_cameras.json).",
        "",
        f"Source 2: PyPI package {deepmimic.PACKAGE}, licence zlib (per the wheel metadata; LICENSE.txt in",
        "the wheel: Bullet Physics Library, zlib licence: use, alteration and redistribution allowed provided",
        "the origin is not misrepresented and altered versions are plainly marked as such).",
        "The clips are DeepMimic reference motions (Peng et al. 2018, https://github.com/xbpeng/DeepMimic, MIT).",
        f"Wheel: {deepmimic.WHEEL_FILENAME}, sha256 {deepmimic.WHEEL_SHA256}",
        "Files used: pybullet_data/data/motions/humanoid3d_*.txt (15 clips; per-frame durations, root position,",
        "joint quaternions). pybullet itself is not imported.",
        "",
        "Changes made to the DeepMimic clips (bench/data/deepmimic.py): resampled from the per-frame durations",
        "(source 16-60 Hz) to 50 Hz (nlerp of joint rotations); forward kinematics with the humanoid.urdf",
        "offsets x 0.25; 17 Human3.6M joints with spine = chest joint, thorax = neck joint, and neck/nose and",
        "head top APPROXIMATED as fixed points in the neck frame; Y up -> Z up; same virtual cameras as above.",
        "Altered versions: these are altered versions of the original motion files.",
        "",
        "Sequences (subject / action / source file / frames at 50 Hz):",
    ]
    for row in summary["sequences"]:
        lines.append(f"- {row['subject']} / {row['action']} / {row['source']} / {row['frames']} "
                     f"(source {row['source_frames']} frames, cameras at {row['camera_distance_m']} m)")
    lines += ["", "Sequences 0-3 share one skeleton; sequence 4 has slightly different bone lengths (climbB).",
              "Results on this data are not comparable with published Human3.6M numbers."]
    return "\n".join(lines) + "\n"


def _film(world: np.ndarray, subject: str, action: str, out: Tuple[Dict, Dict, Dict]) -> float:
    """Place cameras around one (T, 17, 3) sequence, store 3D, pixels and cameras; the camera distance."""
    cam_list, pix, distance = place_cameras(world)
    p3d, p2d, cams = out
    p3d.setdefault(subject, {})[action] = world.astype(np.float32)
    p2d.setdefault(subject, {})[action] = [p.astype(np.float32) for p in pix]
    cams.setdefault(subject, {})[action] = cam_list
    return distance


def prepare(out_dir=FILES_DIR, cache_dir=None) -> Dict:
    """Download the pinned wheels, convert climb and DeepMimic mocap, write the dataset files to out_dir.

    Returns a summary dict (per-sequence frame counts, camera distances, written file sizes).
    """
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "vptbench"
    arrays = _read_climb_arrays(_fetch_wheel(cache_dir, PACKAGE, WHEEL_FILENAME, WHEEL_SHA256))
    clips = _read_deepmimic_clips(_fetch_wheel(cache_dir, deepmimic.PACKAGE, deepmimic.WHEEL_FILENAME,
                                               deepmimic.WHEEL_SHA256, deepmimic.PIP_ARGS))
    p3d: Dict[str, Dict] = {}
    p2d: Dict[str, Dict] = {}
    cams: Dict[str, Dict] = {}
    rows = []
    for seq in sorted(arrays):
        member, raw = arrays[seq]
        subject, action = SUBJECTS[seq], f"climb_{seq}"
        world = resample_linear(mocap_to_h36m(raw), SOURCE_FPS, TARGET_FPS)
        distance = _film(world, subject, action, (p3d, p2d, cams))
        rows.append({"subject": subject, "action": action, "source": member.rsplit("/", 1)[-1],
                     "source_frames": len(raw), "frames": len(world), "camera_distance_m": distance})
    for clip, (member, text) in clips.items():
        world, n_src = deepmimic.clip_to_h36m(text, member, TARGET_FPS)
        distance = _film(world, deepmimic.SUBJECT, clip, (p3d, p2d, cams))
        rows.append({"subject": deepmimic.SUBJECT, "action": clip, "source": member.rsplit("/", 1)[-1],
                     "source_frames": n_src, "frames": len(world), "camera_distance_m": distance})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_positions_3d(out_dir / FILE_3D, p3d)
    write_positions_2d(out_dir / FILE_2D, p2d, H36M_2D_METADATA)
    write_cameras_json(out_dir / FILE_CAMERAS, cams,
                       note=f"virtual cameras of the realmocap set (H36M intrinsics), from {PACKAGE} and "
                            f"{deepmimic.PACKAGE}; "
                            "orientation = (w,x,y,z) camera->world, translation_m = camera centre, world metres Z-up")
    summary = {"sequences": rows, "wheel_sha256": WHEEL_SHA256, "deepmimic_wheel_sha256": deepmimic.WHEEL_SHA256}
    (out_dir / FILE_SOURCES).write_text(_sources_text(summary))
    summary["files"] = {f: (out_dir / f).stat().st_size for f in (FILE_3D, FILE_2D, FILE_CAMERAS, FILE_SOURCES)}
    return summary


def add_detector_noise(positions_2d: Dict, noise_px: float, seed: int = 0) -> Dict:
    """A copy of subject -> action -> [pixels] with i.i.d. Gaussian jitter of `noise_px` pixels (std).

    A crude stand-in for a 2D detector's error (CPN on Human3.6M is off by several pixels); it has
    no outliers or temporal correlation. The same seed gives the same noise.
    """
    if not np.isfinite(noise_px) or noise_px < 0:
        raise ValueError(f"noise_px={noise_px} must be a finite number >= 0 (pixels of 2D jitter; 0 = off)")
    rng = np.random.default_rng(seed)
    return {s: {a: [(np.asarray(v) + rng.normal(0.0, noise_px, np.shape(v))).astype(np.float32) for v in views]
                for a, views in sorted(acts.items())} for s, acts in sorted(positions_2d.items())}


def load_realmocap_motion(files_dir=None, noise_px: float = 0.0, seed: int = 0) -> MotionSet:
    """The committed realmocap files as a MotionSet (50 Hz); `noise_px` > 0 jitters the 2D (see add_detector_noise)."""
    d = Path(files_dir) if files_dir is not None else FILES_DIR
    positions_3d = read_positions_3d(d / FILE_3D, _HOW_TO_CREATE)
    positions_2d = read_positions_2d(d / FILE_2D, _HOW_TO_CREATE)
    if noise_px:
        positions_2d = add_detector_noise(positions_2d, noise_px, seed)
    cameras = read_cameras_json(d / FILE_CAMERAS, _HOW_TO_CREATE)
    source = " + ".join(str(d / f) for f in (FILE_3D, FILE_2D, FILE_CAMERAS))
    return MotionSet(positions_3d, positions_2d, cameras, float(TARGET_FPS), source=source)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data.realmocap",
                                     description="Rebuild the embedded realmocap dataset files.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="download holosoma-retargeting 0.1.0 and pybullet 3.2.7, convert their mocap")
    p.add_argument("--out", default=str(FILES_DIR), help="output folder (default: bench/data/files)")
    p.add_argument("--cache", default=None, help="where the wheels are downloaded (default: ~/.cache/vptbench)")
    args = parser.parse_args(argv)
    summary = prepare(args.out, args.cache)
    for row in summary["sequences"]:
        print(f"{row['subject']}/{row['action']}: {row['source_frames']} -> {row['frames']} frames, "
              f"cameras at {row['camera_distance_m']} m")
    for name, size in summary["files"].items():
        print(f"{Path(args.out) / name}: {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
