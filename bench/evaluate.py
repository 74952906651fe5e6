"""Evaluation of a trained model on whole test sequences: the accuracy protocol of VideoPose3D and its
successors (MixSTE, MotionBERT, HoT).

seq2seq models are run on non-overlapping clips covering each sequence, the edge clips padded with
replicated frames and the padded outputs counted (HoT's stride-243 test generator); seq2frame models on
one centred, edge-padded window per frame, scoring the centre. Flip test-time augmentation (on by
default, as in the papers) averages with the un-flipped prediction of the mirrored input; a pruned
model's flip pass prunes the mirrored clip afresh in seq2seq (the official HoT test, main_mixste.py) and
reuses the frames the plain pass kept in seq2frame (main_mixste_tpc.py), `eval.flip_selection` to choose. The root joint is zeroed; MPJPE / P-MPJPE /
MPJVE are averaged per action (file actions grouped into the protocol's classes, `action_class`), then
over actions. Always fp32, on the device named; metrics are computed on the CPU.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from .data.h36m import action_class
from .data.windows import seq2frame_eval_windows, seq2seq_eval_clips
from .devices import OutOfMemoryAsOneLine, torch_device
from .metrics import flip_poses, mean_over_actions, mpjpe, mpjve, p_mpjpe

__all__ = ["evaluate_model", "model_input"]


def model_input(pos2d, in_chans: int):
    """2D keypoints (..., J, 2) -> the model's input channels: (x, y) or (x, y, confidence). Ground-truth
    2D has no detector confidence, so it is 1 everywhere. A numpy array gives an array, a tensor a tensor
    on its own device (training batches never leave the device for this)."""
    if in_chans == pos2d.shape[-1]:
        return pos2d
    if in_chans == 3 and pos2d.shape[-1] == 2:
        if isinstance(pos2d, torch.Tensor):
            return torch.cat([pos2d, torch.ones_like(pos2d[..., :1])], dim=-1)
        return np.concatenate([pos2d, np.ones_like(pos2d[..., :1])], axis=-1)
    raise ValueError(f"the model takes {in_chans} input channels but the data has {pos2d.shape[-1]}")




@torch.inference_mode()  # not just no_grad: no autograd bookkeeping on any tensor of the forward
def _predict(model, x, batch_size: int, flip: bool = False, rows=None,
             oom: Optional[OutOfMemoryAsOneLine] = None, reuse: bool = True) -> np.ndarray:
    """Batched fp32 forward on the model's device, predictions back as CPU numpy. `x`: clips (N, F, J, C),
    or with `rows` (N, F) frame indices one sequence (T, J, C) whose clips x[rows] are gathered on the
    device batch by batch (a seq2frame grid repeats every frame F times: copying the sequence once
    instead keeps that off the host-to-device link). With `flip`, the average with the un-flipped
    prediction of the mirrored input, the mirrored pass replaying the frames the plain pass kept (`reuse`)
    or pruning the mirrored clip afresh.
    `oom.batch` counts the batches, for an out-of-memory message."""
    device = next(model.parameters()).device
    x = torch.as_tensor(x).to(device)
    rows = None if rows is None else torch.as_tensor(rows).to(device)
    n = len(x) if rows is None else len(rows)
    out = []
    for i in range(0, n, batch_size):
        if oom is not None:
            oom.batch += 1
        xb = x[i:i + batch_size] if rows is None else x[rows[i:i + batch_size]]
        pred, idx = model.forward_with_index(xb)
        if flip:
            pred_f, _ = model.forward_with_index(flip_poses(xb), indices=idx if reuse else None)
            pred = 0.5 * (pred + flip_poses(pred_f))
        out.append(pred.cpu().numpy())
    return np.concatenate(out, axis=0)


@torch.no_grad()
def evaluate_model(model, sequences: Sequence, *, frames: int, batch_size: int = 64, flip: bool = True,
                   flip_reuses_selection: bool = True, device: Union[str, torch.device] = "cpu") -> Dict:
    """`flip`: test-time flip averaging (as the papers evaluate); `flip_reuses_selection`: its mirrored pass
    replays the plain pass's pruning (the official TPC scripts) or prunes afresh (the official HoT seq2seq
    script, main_mixste.py; `Config.flip_reuses_selection`). Runs in fp32 on `device` (the model is moved
    there); the metrics are computed on the CPU. Returns mpjpe_mm, p_mpjpe_mm, mpjve_mm (means over
    actions), per_action_mpjpe_mm, eval_frames."""
    device = torch_device(device)
    model.to(device).eval()
    seq2frame = getattr(model, "pipeline", "seq2seq") == "seq2frame"
    in_chans = model.backbone.in_chans
    rows_p1, rows_p2, rows_vel = [], [], []
    n_frames = 0
    with OutOfMemoryAsOneLine(device, "evaluating", "eval.batch_size") as oom:
        for seq in sequences:
            T = len(seq.pos2d)
            pos2d = model_input(torch.as_tensor(seq.pos2d, dtype=torch.float32), in_chans).to(device)
            if seq2frame:
                win = seq2frame_eval_windows(T, frames)                    # (T, frames) indices
                pred = _predict(model, pos2d, batch_size, flip, rows=win, oom=oom, reuse=flip_reuses_selection)[:, 0]  # (T, J, 3) centres
                target = seq.pos3d
                vel_pred, vel_target = pred[None], target[None]
            else:
                clips = seq2seq_eval_clips(T, frames)                       # (n_clips, frames) indices
                pred = _predict(model, pos2d, batch_size, flip, rows=clips, oom=oom,
                                reuse=flip_reuses_selection)  # (n_clips, frames, J, 3)
                target = seq.pos3d[clips]
                vel_pred, vel_target = pred, target
            if not np.isfinite(pred).all():
                raise ValueError(f"the model predicts NaN or inf for {seq.subject} {seq.action}: its weights are not "
                                 "usable (a diverged or corrupt training run); lower train.lr or retrain")
            pred = pred.copy()
            pred[..., 0, :] = 0.0                                            # root zeroed (H36M protocol)
            vel_pred = vel_pred.copy()
            vel_pred[..., 0, :] = 0.0
            n = int(np.prod(pred.shape[:-2]))
            action = action_class(seq.action)  # 'Walking 1' and 'Walking' are one protocol action (VideoPose3D)
            rows_p1.append((action, mpjpe(pred, target), n))
            rows_p2.append((action, p_mpjpe(pred, target), n))
            rows_vel.append((action, mpjve(vel_pred, vel_target), n))
            n_frames += n
    p1, per_action = mean_over_actions(rows_p1)
    return {
        "mpjpe_mm": p1,
        "p_mpjpe_mm": mean_over_actions(rows_p2)[0],
        "mpjve_mm": mean_over_actions(rows_vel)[0],
        "per_action_mpjpe_mm": per_action,
        "eval_frames": n_frames,
    }
