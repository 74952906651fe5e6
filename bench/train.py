"""Short training runs and evaluation for grid cells (tiny presets on a CPU, paper presets on a GPU).

Training: AdamW on an MPJPE loss (root zeroed in prediction and target), linear warm-up then cosine
learning-rate decay over a fixed step budget, seeded window sampling. seq2frame models train against ground truth at
the frames they kept (reference A.6), seq2seq models on every output frame.

Evaluation (reference E): seq2seq on non-overlapping clips covering each sequence, the edge clips
padded with replicated frames and the padded outputs counted; seq2frame on one centred, edge-padded
window per frame, scoring the centre. MPJPE / P-MPJPE / MPJVE averaged per action, then over actions.
"""
from __future__ import annotations

import math
import time
from typing import Dict, List, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from backbones.hourglass import gather_frames

from .data.windows import fetch_windows, seq2frame_eval_windows, seq2seq_eval_clips, train_windows
from .metrics import mean_over_actions, mpjpe, mpjve, p_mpjpe

__all__ = ["train_model", "evaluate_model", "mpjpe_loss", "model_input"]


def mpjpe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L2 over joints and frames, root joint zeroed in both (metres)."""
    pred = torch.cat([torch.zeros_like(pred[..., :1, :]), pred[..., 1:, :]], dim=-2)
    target = torch.cat([torch.zeros_like(target[..., :1, :]), target[..., 1:, :]], dim=-2)
    return (pred - target).norm(dim=-1).mean()


def model_input(pos2d: np.ndarray, in_chans: int) -> np.ndarray:
    """2D keypoints (..., J, 2) -> the model's input channels: (x, y) or (x, y, confidence). Ground-truth
    2D has no detector confidence, so it is 1 everywhere."""
    if in_chans == pos2d.shape[-1]:
        return pos2d
    if in_chans == 3 and pos2d.shape[-1] == 2:
        return np.concatenate([pos2d, np.ones_like(pos2d[..., :1])], axis=-1)
    raise ValueError(f"the model takes {in_chans} input channels but the data has {pos2d.shape[-1]}")


def train_model(model, sequences: Sequence, *, frames: int, stride: int, steps: int, batch_size: int,
                lr: float, weight_decay: float, seed: int, warmup_steps: int = 0, progress: bool = True,
                desc: str = "train") -> Dict:
    """Train in place; returns {train_steps, train_loss_mm (mean of the last 10% of steps), train_s}."""
    if steps == 0:
        return {"train_steps": 0, "train_loss_mm": None, "train_s": 0.0}
    index = train_windows(sequences, frames, stride)
    if len(index) == 0:
        raise ValueError(f"no training windows of {frames} frames in the training split; use shorter clips")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # linear warm-up, then cosine decay to 0 over the budget; the warm-up gets small transformers
    # off the mean-pose plateau sooner at a higher peak rate
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    seq2frame = getattr(model, "pipeline", "seq2seq") == "seq2frame"
    in_chans = model.backbone.in_chans
    model.train()
    losses: List[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for _ in bar:
        pick = rng.integers(0, len(index), size=batch_size)
        x, y = fetch_windows(sequences, [index[i] for i in pick], frames)
        x, y = torch.from_numpy(model_input(x, in_chans)), torch.from_numpy(y)
        if seq2frame:
            pred, stage_idx = model.forward_with_index(x, kept_only=True)
            if stage_idx:
                y = gather_frames(y, stage_idx[-1])
        else:
            pred = model(x)
        loss = mpjpe_loss(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item() * 1000.0)
        bar.set_postfix(mpjpe_mm=f"{losses[-1]:.1f}")
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return {"train_steps": steps, "train_loss_mm": float(np.mean(tail)), "train_s": time.perf_counter() - t0}


@torch.no_grad()
def _predict(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    out = [model(torch.from_numpy(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out, axis=0)


@torch.no_grad()
def evaluate_model(model, sequences: Sequence, *, frames: int, batch_size: int = 64) -> Dict:
    """Returns mpjpe_mm, p_mpjpe_mm, mpjve_mm (means over actions), per_action_mpjpe_mm, eval_frames."""
    model.eval()
    seq2frame = getattr(model, "pipeline", "seq2seq") == "seq2frame"
    pos2d_of = lambda seq: model_input(seq.pos2d, model.backbone.in_chans)  # noqa: E731
    rows_p1, rows_p2, rows_vel = [], [], []
    n_frames = 0
    for seq in sequences:
        T = len(seq.pos2d)
        if seq2frame:
            win = seq2frame_eval_windows(T, frames)                    # (T, frames) indices
            pred = _predict(model, pos2d_of(seq)[win], batch_size)[:, 0]   # (T, J, 3) centre frames
            target = seq.pos3d
            vel_pred, vel_target = pred[None], target[None]
        else:
            clips = seq2seq_eval_clips(T, frames)                       # (n_clips, frames) indices
            pred = _predict(model, pos2d_of(seq)[clips], batch_size)       # (n_clips, frames, J, 3)
            target = seq.pos3d[clips]
            vel_pred, vel_target = pred, target
        pred = pred.copy()
        pred[..., 0, :] = 0.0                                            # root zeroed (reference E)
        vel_pred = vel_pred.copy()
        vel_pred[..., 0, :] = 0.0
        n = int(np.prod(pred.shape[:-2]))
        rows_p1.append((seq.action, mpjpe(pred, target), n))
        rows_p2.append((seq.action, p_mpjpe(pred, target), n))
        rows_vel.append((seq.action, mpjve(vel_pred, vel_target), n))
        n_frames += n
    p1, per_action = mean_over_actions(rows_p1)
    return {
        "mpjpe_mm": p1,
        "p_mpjpe_mm": mean_over_actions(rows_p2)[0],
        "mpjve_mm": mean_over_actions(rows_vel)[0],
        "per_action_mpjpe_mm": per_action,
        "eval_frames": n_frames,
    }
