"""Evaluation of a trained model on whole test sequences: the accuracy protocol of VideoPose3D and its
successors (MixSTE, MotionBERT, HoT).

seq2seq models are run on non-overlapping clips covering each sequence, the edge clips padded with
replicated frames and the padded outputs counted (HoT's stride-243 test generator); seq2frame models on
one centred, edge-padded window per frame, scoring the centre. Flip test-time augmentation (on by
default, as in the papers) averages with the un-flipped prediction of the mirrored input; a pruned
model's flip pass prunes the mirrored clip afresh in seq2seq (the official HoT test, main_mixste.py) and
reuses the frames the plain pass kept in seq2frame (main_mixste_tpc.py), `eval.flip_selection` to choose. The root joint is zeroed; MPJPE / P-MPJPE /
MPJVE are averaged per action (file actions grouped into the protocol's classes, `action_class`), then
over actions. fp32 unless `eval.precision` asks for bf16/fp16 autocast (emulated and warned about
where the CPU lacks that arithmetic, `bench.cell` checks which); metrics are computed on the CPU, in float64.

`eval.protocol=motionbert` is MotionBERT's own test instead (`train.py::evaluate`, which MotionAGFormer
copies), for the published files of those two families, which predict 2.5D image coordinates
(`bench.data.image25d`): non-overlapping clips from each sequence's first frame, the frames after the last
whole clip unscored, predictions and ground truth compared in the 2.5D space, frame-weighted per action,
three S9 takes left out (`eval.exclude`).

A long evaluation (paper presets on the full S9+S11 on a CPU take hours) shows a progress bar over the
test frames with an ETA, and resumes after a kill: each finished sequence's errors are appended to a
small JSON file keyed by a digest of the model's weights and the evaluation settings, so a rerun of the
same weights on the same data skips the sequences already scored and anything else starts afresh.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import write_atomic
from .config import EvalCfg
from .data.h36m import action_class
from .data.image25d import image25d_from_prediction, image25d_target
from .data.windows import motionbert_eval_clips, seq2frame_eval_windows, seq2seq_eval_clips
from .devices import OutOfMemoryAsOneLine, torch_device
from .metrics import flip_poses, mean_over_actions, mpjpe, mpjve, p_mpjpe
from .precision import autocast

__all__ = ["evaluate_model", "model_input", "weights_digest"]

log = logging.getLogger(__name__)


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
             oom: Optional[OutOfMemoryAsOneLine] = None, reuse: bool = True, precision: str = "fp32") -> np.ndarray:
    """Batched forward on the model's device, predictions back as float32 CPU numpy. `x`: clips
    (N, F, J, C), or with `rows` (N, F) frame indices one sequence (T, J, C) whose clips x[rows] are
    gathered on the device batch by batch (a seq2frame grid repeats every frame F times: copying the
    sequence once instead keeps that off the host-to-device link). With `flip`, the average with the
    un-flipped prediction of the mirrored input, the mirrored pass replaying the frames the plain pass
    kept (`reuse`) or pruning the mirrored clip afresh. `precision` other than fp32 autocasts the forward.
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
        with autocast(device.type, precision, "eval.precision"):
            pred, idx = model.forward_with_index(xb)
            if flip:
                pred_f, _ = model.forward_with_index(flip_poses(xb), indices=idx if reuse else None)
        pred = pred.float()
        if flip:
            pred = 0.5 * (pred + flip_poses(pred_f.float()))
        out.append(pred.cpu().numpy())
    return np.concatenate(out, axis=0)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the model's state (names, dtypes, shapes, bytes): what a resumed evaluation must share
    with the one it continues (about 0.2 s for a 33 M-parameter model)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)  # 0-d tensors (BatchNorm counters) cannot be viewed as bytes
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class _Partial:
    """Per-sequence errors of an evaluation in progress, in a JSON file (data only: reading it runs
    nothing). A file written for other weights, settings or data is ignored and replaced."""

    def __init__(self, path: Optional[Path], stamp: Dict[str, Any]):
        self.path, self.stamp, self.rows = (Path(path) if path else None), stamp, []
        if self.path is None or not self.path.exists():
            return
        try:
            saved = json.loads(self.path.read_text())
            if saved.get("stamp") == stamp and isinstance(saved.get("rows"), list):
                self.rows = saved["rows"]
        except (OSError, ValueError, AttributeError):
            log.warning("ignoring an unreadable partial evaluation %s", self.path)
        if self.rows:
            log.info("resuming the evaluation: %d sequence(s) already scored (%s)", len(self.rows), self.path)

    def done(self, index: int, seq) -> Optional[Dict[str, Any]]:
        """The saved row of sequence `index`, when it is the same sequence."""
        if index < len(self.rows):
            row = self.rows[index]
            if row.get("subject") == seq.subject and row.get("action") == seq.action and \
                    row.get("camera") == seq.camera and row.get("frames") == len(seq.pos2d):
                return row
            del self.rows[index:]  # another data set behind the same settings: score the rest afresh
        return None

    def add(self, row: Dict[str, Any]) -> None:
        self.rows.append(row)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            body = json.dumps({"stamp": self.stamp, "rows": self.rows}).encode()
            write_atomic(self.path, lambda f: f.write(body))


def _score(model, seq, frames: int, cfg: EvalCfg, reuse: bool, oom, device) -> Dict[str, Any]:
    """One sequence's errors: {subject, action, camera, frames, n, p1, p2, vel} (n: counted frames)."""
    T = len(seq.pos2d)
    pos2d = model_input(torch.as_tensor(seq.pos2d, dtype=torch.float32), model.backbone.in_chans).to(device)
    run = dict(oom=oom, reuse=reuse, precision=cfg.precision)
    if cfg.protocol == "motionbert":
        clips = motionbert_eval_clips(T, frames)
        pred = _predict(model, pos2d, cfg.batch_size, cfg.flip, rows=clips, **run)
        target, factor = image25d_target(seq.pos3d, seq.root_m, seq.intrinsics)
        pred = image25d_from_prediction(pred, factor[clips], seq.intrinsics["res_w"])
        target = target[clips]
        vel_pred, vel_target = pred, target
    elif getattr(model, "pipeline", "seq2seq") == "seq2frame":
        win = seq2frame_eval_windows(T, frames)                                   # (T, frames) indices
        pred = _predict(model, pos2d, cfg.batch_size, cfg.flip, rows=win, **run)[:, 0]  # (T, J, 3) centres
        target = seq.pos3d
        vel_pred, vel_target = pred[None], target[None]
    else:
        clips = seq2seq_eval_clips(T, frames)                                    # (n_clips, frames) indices
        pred = _predict(model, pos2d, cfg.batch_size, cfg.flip, rows=clips, **run)  # (n_clips, frames, J, 3)
        target = seq.pos3d[clips]
        vel_pred, vel_target = pred, target
    if not np.isfinite(pred).all():
        raise ValueError(f"the model predicts NaN or inf for {seq.subject} {seq.action}: its weights are not "
                         "usable (a diverged or corrupt training run); lower train.lr or retrain")
    pred = pred.copy()
    pred[..., 0, :] = 0.0                                                        # root zeroed (H36M protocol)
    vel_pred = vel_pred.copy()
    vel_pred[..., 0, :] = 0.0
    return dict(subject=seq.subject, action=seq.action, camera=seq.camera, frames=T,
                n=int(np.prod(pred.shape[:-2])), p1=mpjpe(pred, target), p2=p_mpjpe(pred, target),
                vel=mpjve(vel_pred, vel_target))


def _scored(sequences, cfg: EvalCfg) -> List:
    """The test sequences the protocol scores (`eval.exclude`: SUBJECT/ACTION left out); one line when that
    leaves none, and a warning for an exclusion of a subject the data has but an action it lacks (a typo
    would otherwise exclude nothing unnoticed)."""
    excluded = set(cfg.exclude or ())
    if not excluded:
        return list(sequences)
    present = {f"{s.subject}/{s.action}" for s in sequences}
    unknown = sorted(excluded - present)
    if unknown and any(s.subject == unknown[0].split("/")[0] for s in sequences):
        log.warning("eval.exclude: %s not in the test data (nothing left out for it)", ", ".join(unknown))
    kept = [s for s in sequences if f"{s.subject}/{s.action}" not in excluded]
    if not kept:
        raise ValueError(f"eval.exclude={sorted(excluded)} leaves no test sequence; exclude fewer")
    return kept


def _by_action(rows: List[Dict[str, Any]], key: str):
    """(protocol action, error, counted frames) per sequence: 'Walking 1' and 'Walking' are one action."""
    return [(action_class(r["action"]), r[key], r["n"]) for r in rows]


@torch.no_grad()
def evaluate_model(model, sequences: Sequence, cfg: Optional[EvalCfg] = None, *, frames: int,
                   flip_reuses_selection: bool = True, device: Union[str, torch.device] = "cpu",
                   resume: Optional[Path] = None, desc: str = "eval") -> Dict:
    """Score `model` on whole test sequences under `cfg` (`EvalCfg`: flip, batch size, precision,
    progress bar). `flip_reuses_selection`: the mirrored pass replays the plain pass's pruning (the
    official TPC scripts) or prunes afresh (the official HoT seq2seq script, main_mixste.py;
    `Config.flip_reuses_selection`). `resume`: a file the per-sequence errors are kept in while it runs
    (the caller deletes it once the result is safe). Returns mpjpe_mm, p_mpjpe_mm, mpjve_mm (means over
    actions), per_action_mpjpe_mm, eval_frames, eval_precision, eval_resumed_sequences."""
    cfg = cfg or EvalCfg()
    if cfg.protocol == "auto":  # a bare EvalCfg: Config resolves auto by the weights, here it is the default
        cfg = replace(cfg, protocol="hot")
    if cfg.protocol == "motionbert" and any(s.root_m is None or s.intrinsics is None for s in sequences):
        raise ValueError("eval.protocol=motionbert needs each test sequence's camera (intrinsics and root "
                         "position); these sequences were built without one")
    sequences = _scored(sequences, cfg)
    device = torch_device(device)
    model.to(device).eval()
    stamp = dict(weights=weights_digest(model), frames=frames, flip=cfg.flip, reuse=flip_reuses_selection,
                 precision=cfg.precision, device=device.type, sequences=len(sequences),
                 protocol=cfg.protocol)
    partial = _Partial(resume, stamp)
    rows: List[Dict[str, Any]] = []
    resumed = 0
    bar = tqdm(total=sum(len(s.pos2d) for s in sequences), desc=desc, unit="frame",
               disable=not cfg.progress, leave=False, dynamic_ncols=True)
    with bar, OutOfMemoryAsOneLine(device, "evaluating", "eval.batch_size") as oom:
        for i, seq in enumerate(sequences):
            row = partial.done(i, seq)
            if row is None:
                row = _score(model, seq, frames, cfg, flip_reuses_selection, oom, device)
                partial.add(row)
            else:
                resumed += 1
            rows.append(row)
            bar.update(row["frames"])
            if cfg.progress:
                bar.set_postfix_str(f"MPJPE so far {mean_over_actions(_by_action(rows, 'p1'))[0]:.1f} mm", refresh=False)
    p1, per_action = mean_over_actions(_by_action(rows, "p1"))
    return {
        "mpjpe_mm": p1,
        "p_mpjpe_mm": mean_over_actions(_by_action(rows, "p2"))[0],
        "mpjve_mm": mean_over_actions(_by_action(rows, "vel"))[0],
        "per_action_mpjpe_mm": per_action,
        "eval_frames": sum(r["n"] for r in rows),
        "eval_precision": cfg.precision,
        "eval_protocol": cfg.protocol,
        "eval_resumed_sequences": resumed,
    }
