"""Short training runs and evaluation for grid cells (tiny presets on a CPU, paper presets on a GPU).

Training: AdamW (or Adam, optionally amsgrad, as the MHFormer recipe); loss `mixste` (reference A.7:
joint-weighted MPJPE + 0.5 x temporal consistency + 2.0 x velocity error) or `mpjpe` (root zeroed in
prediction and target); learning rate either linear
warm-up then cosine decay over the step budget (`cosine`), or the reference's per-epoch decay (`epoch`:
after the same warm-up, lr x `lr_decay` after each epoch, except that every `lr_decay_large_every`-th
epoch multiplies by `lr_decay_large` instead, as MHFormer's recipe does). An epoch is `epoch_steps`
optimiser steps, or one pass over the training windows (windows / batch size) when that is 0; `epochs`
> 0 sets the budget in epochs instead of `steps`. Seeded window sampling; the same seed gives the
same loss curve. With a checkpoint path, model, optimiser, scheduler, RNG states and step are saved
atomically every `checkpoint_every` steps and a rerun resumes there, ending with the same weights as an
uninterrupted run. seq2frame models train against ground truth at the frames they kept (reference A.6),
seq2seq models on every output frame. Flip augmentation (`flip_augment`, the reference's
`data_augmentation=1`): each training clip is mirrored (x negated, left/right joints swapped, in the 2D
input and the 3D target alike) with probability 1/2, drawn from the seeded sampler.

Evaluation (reference E): seq2seq on non-overlapping clips covering each sequence, the edge clips
padded with replicated frames and the padded outputs counted; seq2frame on one centred, edge-padded
window per frame, scoring the centre. Flip test-time augmentation (on by default, as in the papers)
averages with the un-flipped prediction of the mirrored input; a pruned model's flip pass reuses the
frames the plain pass kept. MPJPE / P-MPJPE / MPJVE averaged per action, then over actions.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from backbones.hourglass import gather_frames

from .checkpoint import read_checkpoint, save_checkpoint
from .data.h36m import action_class
from .data.skeleton import NUM_JOINTS
from .data.windows import fetch_windows, seq2frame_eval_windows, seq2seq_eval_clips, train_windows
from .metrics import flip_poses, mean_over_actions, mpjpe, mpjve, p_mpjpe

__all__ = ["TrainingDiverged", "train_model", "evaluate_model", "mpjpe_loss", "mixste_loss", "model_input", "LOSSES", "LR_SCHEDULES",
           "OPTIMIZERS", "MIXSTE_JOINT_WEIGHTS"]

LOSSES = ("mpjpe", "mixste")
LR_SCHEDULES = ("cosine", "epoch")
OPTIMIZERS = ("adamw", "adam")
# per-joint weights of the MixSTE loss (reference A.7), H36M joint order
MIXSTE_JOINT_WEIGHTS = (1, 1, 2.5, 2.5, 1, 2.5, 2.5, 1, 1, 1, 1.5, 1.5, 4, 4, 1.5, 4, 4)


def _zero_root(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(x[..., :1, :]), x[..., 1:, :]], dim=-2)


def mpjpe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L2 over joints and frames, root joint zeroed in both (metres)."""
    return (_zero_root(pred) - _zero_root(target)).norm(dim=-1).mean()


def mixste_loss(pred: torch.Tensor, target: torch.Tensor, tc_weight: float = 0.5,
                vel_weight: float = 2.0) -> torch.Tensor:
    """MixSTE objective on (B, T, J, 3), root zeroed in both (reference A.7): per-joint weighted MPJPE
    + tc_weight x mean of the joint-weighted squared first differences of the *prediction* + vel_weight x
    mean velocity error. One-frame outputs (seq2frame heads that pool to the centre) get the weighted
    MPJPE only."""
    pred, target = _zero_root(pred), _zero_root(target)
    w = pred.new_tensor(MIXSTE_JOINT_WEIGHTS)
    if pred.shape[-2] != len(w):
        raise ValueError(f"the mixste loss weights 17 H36M joints, the model predicts {pred.shape[-2]}; "
                         "use train.loss=mpjpe")
    loss = (w * (pred - target).norm(dim=-1)).mean()
    if pred.shape[1] < 2:
        return loss
    dp, dt = pred.diff(dim=1), target.diff(dim=1)                     # (B, T-1, J, 3)
    tc = (w[:, None] * dp.square()).mean()
    vel = (dp - dt).norm(dim=-1).mean()
    return loss + tc_weight * tc + vel_weight * vel


def model_input(pos2d: np.ndarray, in_chans: int) -> np.ndarray:
    """2D keypoints (..., J, 2) -> the model's input channels: (x, y) or (x, y, confidence). Ground-truth
    2D has no detector confidence, so it is 1 everywhere."""
    if in_chans == pos2d.shape[-1]:
        return pos2d
    if in_chans == 3 and pos2d.shape[-1] == 2:
        return np.concatenate([pos2d, np.ones_like(pos2d[..., :1])], axis=-1)
    raise ValueError(f"the model takes {in_chans} input channels but the data has {pos2d.shape[-1]}")


def _lr_lambda(schedule: str, steps: int, warmup_steps: int, epoch_steps: int, lr_decay: float,
               lr_decay_large: float = 1.0, lr_decay_large_every: int = 0):
    warm = lambda s: min(1.0, (s + 1) / max(1, warmup_steps))  # noqa: E731
    if schedule == "cosine":
        # cosine decay to 0 over the budget; the warm-up gets small transformers off the mean-pose
        # plateau sooner at a higher peak rate
        return lambda s: warm(s) * 0.5 * (1 + math.cos(math.pi * s / steps))
    if schedule == "epoch":
        def factor(s):
            done = s // epoch_steps                                      # epochs completed
            large = done // lr_decay_large_every if lr_decay_large_every else 0
            return warm(s) * lr_decay ** (done - large) * lr_decay_large ** large
        return factor
    raise ValueError(f"unknown train.lr_schedule {schedule!r}; valid: {', '.join(LR_SCHEDULES)}")


class TrainingDiverged(ValueError):
    """The loss (or a weight) became NaN or inf: the cell fails with the step and the fix."""


RESUME_KEYS = ("model", "optimizer", "scheduler", "numpy_rng", "torch_rng", "step", "losses")


def train_model(model, sequences: Sequence, *, frames: int, stride: int, steps: int, batch_size: int,
                lr: float, weight_decay: float, seed: int, warmup_steps: int = 0, loss: str = "mpjpe",
                tc_weight: float = 0.5, vel_weight: float = 2.0, lr_schedule: str = "cosine",
                epoch_steps: int = 100, lr_decay: float = 0.99, minutes: float = 0.0,
                checkpoint: Optional[Path] = None, checkpoint_every: int = 0, progress: bool = True,
                desc: str = "train", flip_augment: bool = True, optimizer: str = "adamw", amsgrad: bool = False,
                epochs: float = 0.0, lr_decay_large: float = 1.0, lr_decay_large_every: int = 0) -> Dict:
    """Train in place; returns {train_steps, train_loss_mm (mean of the last 10% of steps), train_s,
    train_stop ('steps' | 'minutes')}. `minutes` > 0 stops early once that much wall time has passed in
    this run (checked after each step). `checkpoint` (a file) is resumed from when it exists and written every `checkpoint_every`
    steps; the caller deletes it once the result is safe elsewhere."""
    if loss not in LOSSES:
        raise ValueError(f"unknown train.loss {loss!r}; valid: {', '.join(LOSSES)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown train.optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if flip_augment and model.backbone.num_joints != NUM_JOINTS:
        raise ValueError(f"training flip augmentation needs the 17-joint H36M skeleton, the model has "
                         f"{model.backbone.num_joints} joints; set train.flip_augment=false")
    index = train_windows(sequences, frames, stride) if steps or epochs else []
    epoch_steps = epoch_steps or math.ceil(len(index) / batch_size)  # 0: one pass over the windows
    if epochs > 0:
        steps = math.ceil(epochs * epoch_steps)
    if steps == 0:
        return {"train_steps": 0, "train_loss_mm": None, "train_s": 0.0, "train_stop": "steps"}
    if len(index) == 0:
        raise ValueError(f"no training windows of {frames} frames in the training split; use shorter clips")
    make_opt = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam  # Adam: L2 decay, MHFormer's

    def fresh():
        """Optimiser, scheduler and samplers of a run that starts at step 0."""
        torch.manual_seed(seed)
        o = make_opt(model.parameters(), lr=lr, weight_decay=weight_decay, amsgrad=amsgrad)
        return o, torch.optim.lr_scheduler.LambdaLR(o, _lr_lambda(lr_schedule, steps, warmup_steps, epoch_steps,
                                                                  lr_decay, lr_decay_large, lr_decay_large_every)), \
            np.random.default_rng(seed)

    opt, sched, rng = fresh()
    losses: List[float] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        initial = {k: v.clone() for k, v in model.state_dict().items()}

        def resume(state) -> None:
            try:
                if not isinstance(state["step"], int) or not 0 < state["step"] <= steps:
                    raise ValueError(f"step {state['step']!r} is not within this run's 1..{steps}")
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                rng.bit_generator.state = state["numpy_rng"]
                torch.set_rng_state(state["torch_rng"])
            except BaseException:
                model.load_state_dict(initial)  # a half-applied file must not leak into the fresh run
                raise

        state = read_checkpoint(Path(checkpoint), required=RESUME_KEYS, apply=resume)
        if state is None:
            opt, sched, rng = fresh()
        else:
            start, losses = state["step"], [float(v) for v in state["losses"]]
    seq2frame = getattr(model, "pipeline", "seq2seq") == "seq2frame"
    in_chans = model.backbone.in_chans
    objective = mpjpe_loss if loss == "mpjpe" else lambda p, y: mixste_loss(p, y, tc_weight, vel_weight)
    model.train()
    t0 = time.perf_counter()
    stop = "steps"
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        pick = rng.integers(0, len(index), size=batch_size)
        x, y = fetch_windows(sequences, [index[i] for i in pick], frames)
        x, y = torch.from_numpy(model_input(x, in_chans)), torch.from_numpy(y)
        if flip_augment:
            mirror = torch.from_numpy(rng.random(batch_size) < 0.5)[:, None, None, None]
            x, y = torch.where(mirror, flip_poses(x), x), torch.where(mirror, flip_poses(y), y)
        if seq2frame:
            pred, stage_idx = model.forward_with_index(x, kept_only=True)
            if stage_idx:
                y = gather_frames(y, stage_idx[-1])
        else:
            pred = model(x)
        value = objective(pred, y)
        if not torch.isfinite(value):
            _diverged(step + 1, value.item(), lr, checkpoint)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        losses.append(mpjpe_loss(pred.detach(), y).item() * 1000.0)
        bar.set_postfix(mpjpe_mm=f"{losses[-1]:.1f}")
        if checkpoint is not None and checkpoint_every > 0 and (step + 1) % checkpoint_every == 0:
            save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                          "step": step + 1, "losses": losses}, Path(checkpoint))
        if minutes > 0 and time.perf_counter() - t0 > 60.0 * minutes:
            stop = "minutes"
            break
    model.eval()
    if not all(torch.isfinite(p).all() for p in model.parameters()):  # the last step blew the weights up
        _diverged(len(losses), float("nan"), lr, checkpoint)
    tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
    return {"train_steps": len(losses), "train_loss_mm": float(np.mean(tail)), "train_s": time.perf_counter() - t0,
            "train_stop": stop, "train_losses_mm": losses}


def _diverged(step: int, loss: float, lr: float, checkpoint: Optional[Path]) -> None:
    """Stop a run whose loss left the finite numbers; its checkpoint goes too, so nothing reuses it."""
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    raise TrainingDiverged(f"training diverged at step {step} (loss {loss:g}); lower train.lr (now {lr:g})")


@torch.inference_mode()  # not just no_grad: float32 CPU linears then run on oneDNN (backbones.layers.Linear)
def _predict(model, x: np.ndarray, batch_size: int, flip: bool = False) -> np.ndarray:
    """Batched forward; with `flip`, the average with the un-flipped prediction of the mirrored input,
    the mirrored pass replaying the frames the plain pass kept."""
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i:i + batch_size])
        pred, idx = model.forward_with_index(xb)
        if flip:
            pred_f, _ = model.forward_with_index(flip_poses(xb), indices=idx)
            pred = 0.5 * (pred + flip_poses(pred_f))
        out.append(pred.numpy())
    return np.concatenate(out, axis=0)


@torch.no_grad()
def evaluate_model(model, sequences: Sequence, *, frames: int, batch_size: int = 64, flip: bool = True) -> Dict:
    """`flip`: test-time flip averaging (reference E). Returns mpjpe_mm, p_mpjpe_mm, mpjve_mm (means over
    actions), per_action_mpjpe_mm, eval_frames."""
    model.eval()
    seq2frame = getattr(model, "pipeline", "seq2seq") == "seq2frame"
    pos2d_of = lambda seq: model_input(seq.pos2d, model.backbone.in_chans)  # noqa: E731
    rows_p1, rows_p2, rows_vel = [], [], []
    n_frames = 0
    for seq in sequences:
        T = len(seq.pos2d)
        if seq2frame:
            win = seq2frame_eval_windows(T, frames)                    # (T, frames) indices
            pred = _predict(model, pos2d_of(seq)[win], batch_size, flip)[:, 0]   # (T, J, 3) centre frames
            target = seq.pos3d
            vel_pred, vel_target = pred[None], target[None]
        else:
            clips = seq2seq_eval_clips(T, frames)                       # (n_clips, frames) indices
            pred = _predict(model, pos2d_of(seq)[clips], batch_size, flip)       # (n_clips, frames, J, 3)
            target = seq.pos3d[clips]
            vel_pred, vel_target = pred, target
        if not np.isfinite(pred).all():
            raise ValueError(f"the model predicts NaN or inf for {seq.subject} {seq.action}: its weights are not "
                             "usable (a diverged or corrupt training run); lower train.lr or retrain")
        pred = pred.copy()
        pred[..., 0, :] = 0.0                                            # root zeroed (reference E)
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
