"""Frame-index windows for training, for the two evaluation protocols of the official HoT code and for
MotionBERT's.

Every helper returns integer frame indices into a sequence; edge padding is done by clamping
indices to [0, T-1], i.e. the first/last frame is replicated, exactly like np.pad(..., 'edge').
Indexing `seq.pos2d[idx]` then gives the padded clip, and `seq.pos3d[idx]` the target padded the
same way (the HoT evaluation pads the ground truth too and scores the duplicates).

`WindowBank` does the same gathering for training batches on the training device: the sequences are
copied there once, and each batch is one indexing operation instead of a Python loop over clips.
"""
from __future__ import annotations

import math
from typing import List, Sequence as Seq, Tuple, Union

import numpy as np
import torch

from .structures import Sequence

__all__ = ["window_indices", "train_windows", "fetch_windows", "WindowBank", "seq2seq_eval_clips",
           "seq2frame_eval_windows", "motionbert_eval_clips"]


def _check_frames(frames: int) -> None:
    if frames < 1:
        raise ValueError(f"clip length must be >= 1 frame, got {frames}")


def window_indices(T: int, start: int, frames: int) -> np.ndarray:
    """Indices start .. start+frames-1, clamped to [0, T-1] (edge padding)."""
    return np.clip(np.arange(start, start + frames), 0, T - 1)


def train_windows(seqs: Seq[Sequence], frames: int, stride: int) -> List[Tuple[int, int]]:
    """(sequence index, start frame) of every training window.

    Windows start at 0, stride, 2*stride, ... while they fit in the sequence. A sequence shorter
    than `frames` still gives one window, centred, whose missing frames are edge-padded, so short
    sequences are not silently dropped.
    """
    _check_frames(frames)
    if stride < 1:
        raise ValueError(f"window stride must be >= 1 frame, got {stride}")
    index = []
    for i, seq in enumerate(seqs):
        T = len(seq)
        if T >= frames:
            index.extend((i, s) for s in range(0, T - frames + 1, stride))
        elif T > 0:
            index.append((i, -((frames - T) // 2)))
    return index


def fetch_windows(seqs: Seq[Sequence], index: Seq[Tuple[int, int]], frames: int) -> Tuple[np.ndarray, np.ndarray]:
    """Batch of windows: 2D input (B, frames, 17, 2) and 3D target (B, frames, 17, 3), float32."""
    x, y = [], []
    for i, start in index:
        idx = window_indices(len(seqs[i]), start, frames)
        x.append(seqs[i].pos2d[idx])
        y.append(seqs[i].pos3d[idx])
    return np.stack(x).astype(np.float32, copy=False), np.stack(y).astype(np.float32, copy=False)


class WindowBank:
    """Training windows resident on one device, gathered a batch at a time without leaving it.

    All sequences' pos2d (T, 17, 2) and pos3d (T, 17, 3) are concatenated once into two float32
    tensors on `device` (staged through pinned memory for a GPU, so the one copy is a fast DMA), and
    each window of `index` (from `train_windows`) becomes an (offset, length, start) triple. A batch of
    window ids then indexes frame offset + clamp(start + arange(frames), 0, length - 1): the same edge
    padding as `window_indices`, so `gather` returns exactly what `fetch_windows` does, as tensors.
    Per step that is one index computation and two gathers on the device, where the Python loop over
    clips plus a host-to-device copy of the stacked batch would otherwise starve a GPU.
    """

    def __init__(self, seqs: Seq[Sequence], index: Seq[Tuple[int, int]], frames: int,
                 device: Union[str, torch.device] = "cpu"):
        _check_frames(frames)
        if len(index) == 0:
            raise ValueError("a WindowBank needs at least one window; pass the output of train_windows")
        self.device, self.frames = torch.device(device), frames
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        seq_of, start = (np.array(col, dtype=np.int64) for col in zip(*index))
        self.pos2d = self._to_device(np.concatenate([s.pos2d for s in seqs]))
        self.pos3d = self._to_device(np.concatenate([s.pos3d for s in seqs]))
        self.offset = self._to_device(offsets[seq_of])
        self.length = self._to_device(lengths[seq_of])
        self.start = self._to_device(start)
        self.steps = torch.arange(frames, device=self.device)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """float arrays as float32 (what fetch_windows returns), through pinned memory for CUDA."""
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32 if array.dtype.kind == "f" else None))
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.start)

    def frame_indices(self, ids: torch.Tensor) -> torch.Tensor:
        """(B,) window ids -> (B, frames) rows of the concatenated arrays, edge-padded per sequence."""
        local = (self.start[ids, None] + self.steps).clamp(min=0)
        return self.offset[ids, None] + torch.minimum(local, self.length[ids, None] - 1)

    def gather(self, ids: Union[np.ndarray, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Window ids -> 2D input (B, frames, 17, 2) and 3D target (B, frames, 17, 3) on the device."""
        ids = torch.as_tensor(ids, dtype=torch.int64).to(self.device, non_blocking=True)
        rows = self.frame_indices(ids)
        return self.pos2d[rows], self.pos3d[rows]


def seq2seq_eval_clips(T_seq: int, frames: int) -> np.ndarray:
    """(n_clips, frames) indices of non-overlapping clips covering a T_seq-frame sequence.

    n_clips = ceil(T_seq / frames). The clip grid is centred on the sequence: the
    n_clips * frames - T_seq padding frames go floor(half) before the first frame and the rest
    after the last one (as in the HoT stride-243 generator), filled by edge replication.
    """
    _check_frames(frames)
    if T_seq < 1:
        raise ValueError(f"cannot evaluate an empty sequence (T = {T_seq})")
    n = math.ceil(T_seq / frames)
    offset = (n * frames - T_seq) // 2
    starts = np.arange(n) * frames - offset
    return np.clip(starts[:, None] + np.arange(frames), 0, T_seq - 1)


def motionbert_eval_clips(T_seq: int, frames: int) -> np.ndarray:
    """(n_clips, frames) indices of MotionBERT's test clips (`lib/utils/utils_data.py::split_clips` with
    `data_stride_test` = `n_frames`, as its H36M configs set): non-overlapping clips from the first frame;
    the frames after the last whole clip are not scored. A sequence shorter than one clip is resampled to
    it: indices floor(linspace(0, T, frames)), where MotionBERT picks floor or ceil at random per index."""
    _check_frames(frames)
    if T_seq < 1:
        raise ValueError(f"cannot evaluate an empty sequence (T = {T_seq})")
    if T_seq < frames:
        return np.floor(np.linspace(0, T_seq, frames, endpoint=False)).astype(np.int64)[None]
    starts = np.arange(T_seq // frames) * frames
    return starts[:, None] + np.arange(frames)


def seq2frame_eval_windows(T_seq: int, frames: int) -> np.ndarray:
    """(T_seq, frames) indices: row t is the window centred on frame t, edge-padded.

    `frames` must be odd so that each window has a true centre frame (index (frames - 1) // 2),
    the only output that seq2frame evaluation scores.
    """
    _check_frames(frames)
    if frames % 2 == 0:
        raise ValueError(f"seq2frame windows need an odd frame count (a centre frame), got {frames}; "
                         f"use {frames - 1} or {frames + 1}")
    if T_seq < 1:
        raise ValueError(f"cannot evaluate an empty sequence (T = {T_seq})")
    pad = (frames - 1) // 2
    return np.clip(np.arange(T_seq)[:, None] + np.arange(-pad, pad + 1), 0, T_seq - 1)
