"""Data layer: H36M skeleton and cameras, datasets as `Sequence` lists, and clip windows.

    from bench.data import load_split
    train, test = load_split("realmocap")      # real climbing + DeepMimic mocap (NOT Human3.6M), 50 Hz
    train, test = load_split("synthetic")      # tests only
    train, test = load_split("h36m", paths={"3d": "data_3d_h36m.npz", "2d": "data_2d_h36m_gt.npz"})
    action_class("Walking 1")                   # -> "Walking", one of the 15 H36M_ACTIONS

Modules: skeleton (constants), camera (projection), structures (Sequence, MotionSet),
h36m (VideoPose3D npz I/O, action classes), realmocap (the embedded dataset and its `prepare`),
deepmimic (forward kinematics of the DeepMimic clips in realmocap),
synthetic (generated motion), dataset (loading and splits), windows (clip indices).
"""
from .dataset import (DATASETS, DEFAULT_SPLITS, H36M_SPLIT, check_data, load_dataset, load_split, sequences_from_motion,
                      split_sequences)
from .h36m import H36M_ACTIONS, action_class
from .structures import MotionSet, Sequence
from .synthetic import make_synthetic_dataset
from .windows import fetch_windows, seq2frame_eval_windows, seq2seq_eval_clips, train_windows

__all__ = [
    "DATASETS", "DEFAULT_SPLITS", "H36M_ACTIONS", "H36M_SPLIT", "MotionSet", "Sequence", "action_class", "check_data",
    "fetch_windows", "load_dataset", "load_split", "make_synthetic_dataset", "seq2frame_eval_windows",
    "seq2seq_eval_clips", "sequences_from_motion", "split_sequences", "train_windows",
]
