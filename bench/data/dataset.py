"""Loading datasets as lists of `Sequence`, and splitting them by whole sequences.

Every source goes through one preprocessing path, `preprocess.sequences_from_motion`.

Names: 'realmocap' (the committed files in bench/data/files, real climbing and DeepMimic mocap
seen by 4 virtual Human3.6M cameras), 'synthetic' (generated, tests only) and 'h36m' (the user's
VideoPose3D Human3.6M files, given as `paths={'3d': ..., '2d': ...}`). Instead of a name one may
pass a pair (path_3d, path_2d) or triple (path_3d, path_2d, cameras_json) of VideoPose3D files.
"""
from __future__ import annotations

import math

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence as Seq, Tuple, Union


from .h36m import load_h36m_motion
from .preprocess import sequences_from_motion
from .structures import Sequence

__all__ = [
    "DATASETS", "PATH_KEYS", "check_data", "DEFAULT_SPLITS", "H36M_SPLIT", "sequences_from_motion", "load_dataset",
    "split_sequences", "load_split",
]

DATASETS = ("realmocap", "synthetic", "h36m")
# keys of the `paths` mapping that name Human3.6M files (what a data config's `paths:` holds)
PATH_KEYS = ("3d", "2d", "cameras")

# Split by whole sequences, never by frame: neighbouring frames are nearly identical, so a
# frame-level split would leak the test set into training.
DEFAULT_SPLITS: Dict[str, Dict] = {
    # whole clips held out: 2 climbing sequences and 5 DeepMimic clips (walk, run, kick, punch, jump)
    "realmocap": {"by": "action",
                  "train": ("climb_0", "climb_1", "climb_2", "backflip", "cartwheel", "crawl", "dance_a", "dance_b",
                            "getup_facedown", "getup_faceup", "roll", "spin", "spinkick"),
                  "test": ("climb_3", "climb_4", "walk", "run", "kick", "punch", "jump")},
    "synthetic": {"by": "action", "train": ("synthetic_0", "synthetic_1", "synthetic_2", "synthetic_3"),
                  "test": ("synthetic_4", "synthetic_5")},
}
# The standard Human3.6M protocol, used by default for file paths.
H36M_SPLIT = {"by": "subject", "train": ("S1", "S5", "S6", "S7", "S8"), "test": ("S9", "S11")}

PathsArg = Union[str, Path, Seq[Union[str, Path]]]


def _paths_from_mapping(paths: Optional[Mapping]) -> List:
    """[path_3d, path_2d(, cameras)] from a data config's `paths: {3d: ..., 2d: ..., cameras: ...}`."""
    if not paths or not isinstance(paths, Mapping):
        raise ValueError("dataset 'h36m' needs paths={'3d': 'data_3d_h36m.npz', '2d': 'data_2d_h36m_gt.npz'} "
                         "(or data_2d_h36m_cpn_ft_h36m_dbb.npz); set `paths:` in the data config")
    unknown = sorted(set(paths) - set(PATH_KEYS))
    if unknown:
        raise ValueError(f"unknown paths keys {unknown}; use {list(PATH_KEYS)}")
    missing = [k for k in ("3d", "2d") if not paths.get(k)]
    if missing:
        raise ValueError(f"paths has no {missing}; give both '3d' and '2d' VideoPose3D files")
    return [paths["3d"], paths["2d"]] + ([paths["cameras"]] if paths.get("cameras") else [])


def check_data(name: str, paths: Optional[Mapping] = None, noise_px: float = 0.0) -> None:
    """Validate a data config without loading it (one-line ValueErrors, before any compute)."""
    from .h36m import H36M_HOW_TO_GET, require_file

    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; choose one of {list(DATASETS)}")
    if noise_px and name != "realmocap":
        raise ValueError(f"noise_px is only for dataset 'realmocap', not {name!r}; drop it or set data=realmocap")
    if not math.isfinite(noise_px) or noise_px < 0:
        raise ValueError(f"noise_px={noise_px} must be a finite number >= 0 (pixels of 2D jitter; 0 = off)")
    if name == "h36m":
        for path in _paths_from_mapping(paths):
            require_file(path, H36M_HOW_TO_GET)
    elif paths:
        raise ValueError(f"paths is only for dataset 'h36m', not {name!r}; drop it or set data=h36m")


def load_dataset(name_or_paths: PathsArg, *, cameras: Optional[Seq[int]] = None,
                 files_dir: Optional[Union[str, Path]] = None, paths: Optional[Mapping] = None,
                 noise_px: float = 0.0) -> List[Sequence]:
    """Load a dataset as a list of `Sequence` (one per subject, action and camera).

    Args:
        name_or_paths: 'realmocap', 'synthetic', or (path_3d, path_2d[, cameras_json]) of
            VideoPose3D-format files (Human3.6M: data_3d_h36m.npz, data_2d_h36m_gt.npz).
        cameras: camera indices to keep; default all.
        files_dir: where the 'realmocap' files live (default: the committed bench/data/files).
        paths: for 'h36m', {'3d': path, '2d': path[, 'cameras': json]}.
        noise_px: for 'realmocap', std of Gaussian detector-like 2D jitter in pixels (0 = off).
    """
    if isinstance(name_or_paths, str) and name_or_paths in DATASETS:
        check_data(name_or_paths, paths, noise_px)  # the same one-line errors as a config gets
        if name_or_paths == "h36m":
            return sequences_from_motion(load_h36m_motion(*_paths_from_mapping(paths)), cameras)
        if name_or_paths == "realmocap":
            # lazy: importing it with the package would make `python -m bench.data.realmocap` warn
            from .realmocap import load_realmocap_motion
            motion = load_realmocap_motion(files_dir, noise_px=noise_px)
        else:
            from .synthetic import synthetic_motion  # lazy: synthetic builds on this module
            motion = synthetic_motion()
        return sequences_from_motion(motion, cameras)
    if isinstance(name_or_paths, (str, Path)):
        raise ValueError(f"unknown dataset '{name_or_paths}'; choose one of {list(DATASETS)} "
                         "or pass (path_3d, path_2d[, cameras_json]) of VideoPose3D-format files")
    if noise_px or paths is not None:
        raise ValueError("noise_px and paths= are for named datasets ('realmocap', 'h36m'); drop them when "
                         "passing VideoPose3D file paths directly")
    paths = list(name_or_paths)
    if len(paths) not in (2, 3):
        raise ValueError(f"expected (path_3d, path_2d[, cameras_json]), got {len(paths)} paths")
    return sequences_from_motion(load_h36m_motion(*paths), cameras)


def split_sequences(seqs: Seq[Sequence], train: Seq[str], test: Seq[str], by: str = "action",
                    strict: bool = True, need_train: bool = True) -> Tuple[List[Sequence], List[Sequence]]:
    """Split whole sequences into (train, test) by their action or subject name.

    Sequences named in neither list are dropped. No name may be in both lists, and neither split
    may come out empty (the train split may where `need_train` is false: evaluating given weights).
    With `strict` (the default) every name must occur in `seqs`, so a typo cannot silently drop data;
    `strict=False` lets a standard protocol run on a partial copy of a dataset (e.g. Human3.6M files
    holding only some subjects).
    """
    if by not in ("action", "subject"):
        raise ValueError(f"split by '{by}' is not supported; use by='action' or by='subject'")
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise ValueError(f"{overlap} in both train and test; a sequence may only be in one split")
    present = {getattr(s, by) for s in seqs}
    missing = sorted((set(train) | set(test)) - present)
    if missing and strict:
        raise ValueError(f"split names {missing} not found among the {by}s {sorted(present)}; fix the split")
    train_set, test_set = set(train), set(test)
    out = ([s for s in seqs if getattr(s, by) in train_set], [s for s in seqs if getattr(s, by) in test_set])
    for name, part, names in (("train", out[0], train), ("test", out[1], test)):
        if not part and (name == "test" or need_train):
            raise ValueError(f"the {name} split is empty (no {by} among {sorted(names)} in the data "
                             f"{sorted(present)}); fix the split")
    return out


def load_split(name_or_paths: PathsArg, split: Optional[Mapping] = None, need_train: bool = True, **kwargs
               ) -> Tuple[List[Sequence], List[Sequence]]:
    """(train, test) sequences of a dataset.

    `split` = {'by': 'action'|'subject', 'train': names, 'test': names}; default
    `DEFAULT_SPLITS[name]` for a named dataset and the Human3.6M subject protocol (S1, S5-S8 /
    S9, S11; subjects absent from the files are skipped) for file paths.
    `need_train=False` accepts files without training subjects (evaluation of given weights).
    Extra keyword arguments go to `load_dataset`.
    """
    return split_loaded(name_or_paths, load_dataset(name_or_paths, **kwargs), split, need_train)


def split_loaded(name_or_paths: PathsArg, seqs: Seq[Sequence], split: Optional[Mapping] = None,
                 need_train: bool = True) -> Tuple[List[Sequence], List[Sequence]]:
    """`load_split` on sequences already loaded from `name_or_paths` (its split rules, without reading the
    files again)."""
    strict = True
    if split is None:
        is_name = isinstance(name_or_paths, str) and name_or_paths in DEFAULT_SPLITS
        split = DEFAULT_SPLITS[name_or_paths] if is_name else H36M_SPLIT
        strict = is_name  # user files may hold only some of the protocol's subjects
    return split_sequences(seqs, split["train"], split["test"], by=split.get("by", "action"), strict=strict,
                           need_train=need_train)
