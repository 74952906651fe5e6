"""bench.data.windows: training windows and the seq2seq / seq2frame evaluation grids, checked by hand."""
import numpy as np
import pytest

from bench.data import Sequence
from bench.data.windows import fetch_windows, seq2frame_eval_windows, seq2seq_eval_clips, train_windows


def _seq(T, action="a"):
    """A sequence whose values encode the frame index, so gathered windows can be read back."""
    t = np.arange(T, dtype=np.float32)[:, None, None]
    return Sequence("s", action, 0, np.broadcast_to(t, (T, 17, 2)).copy(),
                    np.broadcast_to(-t, (T, 17, 3)).copy(), 50.0)


@pytest.mark.parametrize("T,F,expected", [
    (8, 4, [[0, 1, 2, 3], [4, 5, 6, 7]]),                          # exact fit, no padding
    (7, 4, [[0, 1, 2, 3], [4, 5, 6, 6]]),                          # 1 pad frame: goes after (floor half before)
    (10, 4, [[0, 0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 9]]),           # 2 pad frames: 1 before, 1 after
    (9, 4, [[0, 0, 1, 2], [3, 4, 5, 6], [7, 8, 8, 8]]),            # 3 pad frames: 1 before, 2 after
    (2, 5, [[0, 0, 1, 1, 1]]),                                     # shorter than one clip
    (1, 3, [[0, 0, 0]]),
])
def test_seq2seq_eval_clips_by_hand(T, F, expected):
    np.testing.assert_array_equal(seq2seq_eval_clips(T, F), expected)


def test_seq2seq_clips_cover_every_frame_once_plus_replicated_edges():
    for T in (1, 5, 26, 27, 28, 243, 1001):
        clips = seq2seq_eval_clips(T, 27)
        assert clips.shape == (-(-T // 27), 27)
        flat = clips.ravel()
        assert np.all(np.diff(flat) >= 0)                           # in order, no overlap
        assert set(flat.tolist()) == set(range(T))                  # covers the sequence
        # every duplicate is a replicated first or last frame
        values, counts = np.unique(flat, return_counts=True)
        assert set(values[counts > 1].tolist()) <= {0, T - 1}


@pytest.mark.parametrize("T,F,expected", [
    (4, 3, [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]),
    (2, 5, [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]),
    (3, 1, [[0], [1], [2]]),
])
def test_seq2frame_eval_windows_by_hand(T, F, expected):
    win = seq2frame_eval_windows(T, F)
    np.testing.assert_array_equal(win, expected)
    np.testing.assert_array_equal(win[:, (F - 1) // 2], np.arange(T))   # the scored centre is frame t


def test_seq2frame_needs_odd_frames_and_nonempty():
    with pytest.raises(ValueError, match="odd frame count.*use 27 or 29"):
        seq2frame_eval_windows(10, 28)
    with pytest.raises(ValueError, match="empty sequence"):
        seq2frame_eval_windows(0, 3)
    with pytest.raises(ValueError, match=">= 1 frame"):
        seq2seq_eval_clips(5, 0)


def test_train_windows_by_hand():
    seqs = [_seq(10), _seq(3), _seq(0)]
    assert train_windows(seqs, frames=4, stride=3) == [(0, 0), (0, 3), (0, 6), (1, 0)]
    assert train_windows(seqs, frames=6, stride=5) == [(0, 0), (1, -1)]       # short sequence: centred, padded
    assert train_windows(seqs, frames=10, stride=1) == [(0, 0), (1, -3)]
    with pytest.raises(ValueError, match="stride must be >= 1"):
        train_windows(seqs, frames=4, stride=0)


def test_fetch_windows_gathers_and_edge_pads():
    seqs = [_seq(10), _seq(3)]
    x, y = fetch_windows(seqs, [(0, 6), (1, -1)], frames=6)
    assert x.shape == (2, 6, 17, 2) and y.shape == (2, 6, 17, 3)
    assert x.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_array_equal(x[0, :, 0, 0], [6, 7, 8, 9, 9, 9])   # past the end: last frame repeated
    np.testing.assert_array_equal(x[1, :, 5, 1], [0, 0, 1, 2, 2, 2])   # both ends padded
    np.testing.assert_array_equal(y[1, :, 3, 2], -x[1, :, 0, 0])       # target gathered from the same frames
