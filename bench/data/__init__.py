"""Data layer: H36M skeleton and cameras, datasets as `Sequence` lists, and clip windows.

    from bench.data import load_split
    train, test = load_split("realmocap")      # real climbing mocap (NOT Human3.6M), 50 Hz
    train, test = load_split("synthetic")      # tests only
    seqs = load_dataset(("data_3d_h36m.npz", "data_2d_h36m_gt.npz"))   # VideoPose3D files

Modules: skeleton (constants), camera (projection), structures (Sequence, MotionSet),
h36m (VideoPose3D npz I/O), realmocap (the embedded dataset and its `prepare`),
synthetic (generated motion), dataset (loading and splits), windows (clip indices).
"""
from .dataset import (DATASETS, DEFAULT_SPLITS, H36M_SPLIT, load_dataset, load_split, sequences_from_motion,
                      split_sequences)
from .structures import MotionSet, Sequence
from .synthetic import make_synthetic_dataset
from .windows import fetch_windows, seq2frame_eval_windows, seq2seq_eval_clips, train_windows

__all__ = [
    "DATASETS", "DEFAULT_SPLITS", "H36M_SPLIT", "MotionSet", "Sequence", "fetch_windows", "load_dataset",
    "load_split", "make_synthetic_dataset", "seq2frame_eval_windows", "seq2seq_eval_clips",
    "sequences_from_motion", "split_sequences", "train_windows",
]
