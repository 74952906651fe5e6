"""Training runs for grid cells (tiny presets on a CPU, paper presets on a GPU); evaluation is `bench.evaluate`.

Training: AdamW (or Adam, optionally amsgrad, as the MHFormer recipe); loss `mixste` or `mpjpe`
(`bench.losses`); learning rate either linear
warm-up then cosine decay over the step budget (`cosine`), or the official HoT code's per-epoch decay (`epoch`:
after the same warm-up, lr x `lr_decay` after each epoch, except that every `lr_decay_large_every`-th
epoch multiplies by `lr_decay_large` instead, as MHFormer's recipe does). An epoch is `epoch_steps`
optimiser steps, or one pass over the training windows (windows / batch size) when that is 0; `epochs`
> 0 sets the budget in epochs instead of `steps`. Seeded window sampling; the same seed gives the
same loss curve. With a checkpoint path, model, optimiser, scheduler, RNG states and step are saved
atomically every `checkpoint_every` steps and a rerun resumes there, ending with the same weights as an
uninterrupted run. seq2frame models train against ground truth at the frames they kept (as TPC and
MHFormer do), seq2seq models on every output frame (as MixSTE and HoT do). Flip augmentation
(`flip_augment`, the official code's `data_augmentation=1`): each training clip is mirrored (x negated, left/right joints swapped, in the 2D
input and the 3D target alike) with probability 1/2, drawn from the seeded sampler.

Devices: training runs on the `device` named (cpu, cuda, cuda:N). Training copies the training sequences
there once (`WindowBank`) and gathers, pads and mirrors every batch there, drawing window ids and coin
flips from the same seeded numpy sampler in the same order as the per-clip numpy pipeline it replaced,
so a CPU run's losses are bit-for-bit those of that pipeline. Checkpoints hold CPU-loadable tensors and
resume on either device (torch moves the optimiser state to the parameters' device). `precision`
bf16/fp16 runs the training forward and loss under autocast (fp16 with a gradient scaler, saved with the
checkpoint); evaluation always runs in fp32. `compile` runs the training forward
through torch.compile; its first step, mostly compilation, is reported as `train_compile_s` and left out
of `train_s`. `train_data_s` is the time spent producing batches and `train_data_share` its fraction of
`train_s`: a large share means the input pipeline, not the model, bounds the throughput. Running out of
memory becomes one line naming the batch, the device and the batch size to lower.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from backbones.hourglass import gather_frames

from .checkpoint import read_checkpoint, save_checkpoint
from .config import LOSSES, LR_SCHEDULES, OPTIMIZERS, TrainCfg
from .data.skeleton import NUM_JOINTS
from .data.windows import WindowBank, train_windows
from .devices import OutOfMemoryAsOneLine, is_out_of_memory, sync, torch_device
from .evaluate import model_input
from .losses import mixste_loss, mpjpe_loss
from .metrics import flip_poses
from .precision import autocast

__all__ = ["TrainingDiverged", "train_model"]



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
# optional, so that checkpoints written before them (or on a CPU, or in fp32) stay valid
CUDA_RNG_KEY, GRAD_SCALER_KEY = "cuda_rng", "grad_scaler"


def _check_training_options(loss: str, optimizer: str, precision: str) -> None:
    """Unknown names fail before the data or the model are touched."""
    if loss not in LOSSES:
        raise ValueError(f"unknown train.loss {loss!r}; valid: {', '.join(LOSSES)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown train.optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    autocast("cpu", precision, "train.precision")  # its one-line error for an unknown name


def _training_forward(model, seq2frame: bool, compile: bool):
    """x -> (prediction, each stage's kept frame indices). seq2frame models predict the frames they
    kept (trained against those, as HoT's main_mixste_tpc.py does), seq2seq models every frame (no indices needed).
    With `compile`, this function is what torch.compile wraps: it calls `model` itself, so it shares
    its parameters and checkpoints keep saving `model.state_dict()` (no `_orig_mod.` keys), and it
    covers seq2frame's `forward_with_index` too, which compiling the module's `forward` would miss."""
    def forward(x: torch.Tensor):
        if seq2frame:
            return model.forward_with_index(x, kept_only=True)
        return model(x), []
    return torch.compile(forward) if compile else forward


def _batch(bank: WindowBank, rng: np.random.Generator, batch_size: int, in_chans: int,
           flip_augment: bool):
    """`batch_size` random windows with the model's input channels, each mirrored (input and target
    alike) on a coin flip when `flip_augment`; all on the bank's device. Window ids, then coin flips,
    come from `rng` in the order the per-clip numpy pipeline drew them, so a seed gives the same batches."""
    x, y = bank.gather(rng.integers(0, len(bank), size=batch_size))
    x = model_input(x, in_chans)
    if flip_augment:
        mirror = torch.from_numpy(rng.random(batch_size) < 0.5).to(bank.device)[:, None, None, None]
        x, y = torch.where(mirror, flip_poses(x), x), torch.where(mirror, flip_poses(y), y)
    return x, y


def _timed_batch(bank: WindowBank, rng: np.random.Generator, batch_size: int, in_chans: int,
                 flip_augment: bool):
    """`_batch` and the seconds it took, synchronised on a GPU so that the gathers queued there are
    counted (and the previous step's queued work is not)."""
    sync(bank.device)
    t = time.perf_counter()
    x, y = _batch(bank, rng, batch_size, in_chans, flip_augment)
    sync(bank.device)
    return x, y, time.perf_counter() - t


def _resume_state(model, opt, sched, rng: np.random.Generator, scaler, device: torch.device, step: int,
                  losses: List[float]) -> Dict:
    """Everything a rerun needs to continue as if never killed. The torch RNG saved is the CPU
    generator's; a GPU run adds every CUDA generator's state and an fp16 run the gradient scaler's, both
    under optional keys, so CPU and older checkpoints stay valid."""
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
             "losses": losses}
    if device.type == "cuda":
        state[CUDA_RNG_KEY] = torch.cuda.get_rng_state_all()
    if scaler.is_enabled():
        state[GRAD_SCALER_KEY] = scaler.state_dict()
    return state


def _restore_optional(state: Dict, scaler, device: torch.device) -> None:
    """The optional parts of a checkpoint, where this run uses them: CUDA generators (only on a GPU;
    a CPU resume of a GPU checkpoint has none to set) and the fp16 gradient scaler."""
    if device.type == "cuda" and CUDA_RNG_KEY in state:
        for i, gen_state in enumerate(state[CUDA_RNG_KEY][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gen_state, i)
    if scaler.is_enabled() and GRAD_SCALER_KEY in state:
        scaler.load_state_dict(state[GRAD_SCALER_KEY])


def _schedule_step(sched, scaler) -> None:
    """Advance the learning rate. An fp16 step the scaler skipped (inf gradients, routine while it finds
    its scale) makes torch warn that the scheduler stepped before the optimiser; the budget counts
    attempted steps, so that is intended and the warning is silenced, for fp16 only."""
    with warnings.catch_warnings():
        if scaler.is_enabled():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        sched.step()


def _window_bank(sequences: Sequence, index, frames: int, device: torch.device) -> WindowBank:
    """The training windows on `device`; a GPU too small for the whole training split says so."""
    try:
        return WindowBank(sequences, index, frames, device)
    except RuntimeError as e:
        if not is_out_of_memory(e):
            raise
        raise ValueError(f"out of memory on {device} copying the training split there; "
                         "train on fewer sequences or on the cpu") from None


def train_model(model, sequences: Sequence, cfg: TrainCfg, *, frames: int, stride: int, seed: int,
                checkpoint: Optional[Path] = None, desc: str = "train",
                device: Union[str, torch.device] = "cpu") -> Dict:
    """Train in place on `device` (the model is moved there) as `cfg` says; returns {train_steps,
    train_loss_mm (mean of the last 10% of steps), train_s, train_stop ('steps' | 'minutes'),
    train_losses_mm, train_data_s, train_data_share} and, with `cfg.compile`, train_compile_s (the first
    step, left out of train_s and train_data_s). `checkpoint` (a file) is resumed from when it exists and
    written every `cfg.checkpoint_every` steps; the caller deletes it once the result is safe elsewhere.
    The budget is `cfg.steps` (or `cfg.epochs`); `cfg.finetune_steps` and `cfg.threads` are the caller's
    to apply (`bench.cell`)."""
    steps = cfg.steps  # an epoch budget replaces it below
    _check_training_options(cfg.loss, cfg.optimizer, cfg.precision)
    if cfg.flip_augment and model.backbone.num_joints != NUM_JOINTS:
        raise ValueError(f"training flip augmentation needs the 17-joint H36M skeleton, the model has "
                         f"{model.backbone.num_joints} joints; set train.flip_augment=false")
    device = torch_device(device)
    index = train_windows(sequences, frames, stride) if steps or cfg.epochs else []
    epoch_steps = cfg.epoch_steps or math.ceil(len(index) / cfg.batch_size)  # 0: one pass over the windows
    if cfg.epochs > 0:
        steps = math.ceil(cfg.epochs * epoch_steps)
    if steps == 0:
        return {"train_steps": 0, "train_loss_mm": None, "train_s": 0.0, "train_stop": "steps",
                "train_losses_mm": [], "train_data_s": 0.0, "train_data_share": None}
    if len(index) == 0:
        raise ValueError(f"no training windows of {frames} frames in the training split; use shorter clips")
    model.to(device)  # before the optimiser exists: its state then lives with the parameters
    make_opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam  # Adam: L2 decay, MHFormer's

    def fresh():
        """Optimiser, scheduler, sampler and gradient scaler of a run that starts at step 0."""
        torch.manual_seed(seed)
        o = make_opt(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)
        factor = _lr_lambda(cfg.lr_schedule, steps, cfg.warmup_steps, epoch_steps, cfg.lr_decay,
                            cfg.lr_decay_large, cfg.lr_decay_large_every)
        return o, torch.optim.lr_scheduler.LambdaLR(o, factor), \
            np.random.default_rng(seed), torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    opt, sched, rng, scaler = fresh()
    losses: List[float] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        initial = {k: v.clone() for k, v in model.state_dict().items()}

        def resume(state) -> None:
            try:
                if not isinstance(state["step"], int) or not 0 < state["step"] <= steps:
                    raise ValueError(f"step {state['step']!r} is not within this run's 1..{steps}")
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])  # casts the state to each parameter's device
                sched.load_state_dict(state["scheduler"])
                rng.bit_generator.state = state["numpy_rng"]
                torch.set_rng_state(state["torch_rng"])
                _restore_optional(state, scaler, device)
            except BaseException:
                model.load_state_dict(initial)  # a half-applied file must not leak into the fresh run
                raise

        state = read_checkpoint(Path(checkpoint), required=RESUME_KEYS, apply=resume)
        if state is None:
            opt, sched, rng, scaler = fresh()
        else:
            start, losses = state["step"], [float(v) for v in state["losses"]]
    bank = _window_bank(sequences, index, frames, device)
    forward = _training_forward(model, getattr(model, "pipeline", "seq2seq") == "seq2frame", cfg.compile)
    in_chans = model.backbone.in_chans
    objective = mpjpe_loss if cfg.loss == "mpjpe" else lambda p, y: mixste_loss(p, y, cfg.tc_weight, cfg.vel_weight)
    model.train()
    t0 = time.perf_counter()
    data_s, compile_s = 0.0, None
    stop = "steps"
    bar = tqdm(range(start, steps), desc=desc, disable=not cfg.progress, leave=False, dynamic_ncols=True)
    with OutOfMemoryAsOneLine(device, "training", "train.batch_size") as oom:
        for step in bar:
            oom.batch = step + 1
            t_step = time.perf_counter()
            x, y, batch_s = _timed_batch(bank, rng, cfg.batch_size, in_chans, cfg.flip_augment)
            with autocast(device.type, cfg.precision, "train.precision"):
                pred, stage_idx = forward(x)
                if stage_idx:
                    y = gather_frames(y, stage_idx[-1])
                value = objective(pred.float(), y)  # the loss in fp32 whatever the forward's precision
            if not torch.isfinite(value):
                _diverged(step + 1, value.item(), cfg.lr, checkpoint)
            opt.zero_grad(set_to_none=True)
            scaler.scale(value).backward()  # disabled scaler (fp32, bf16): value.backward(), opt.step()
            scaler.step(opt)
            scaler.update()
            _schedule_step(sched, scaler)
            losses.append(mpjpe_loss(pred.detach().float(), y).item() * 1000.0)
            if cfg.compile and compile_s is None:
                compile_s = time.perf_counter() - t_step  # mostly compilation: not training throughput
            else:
                data_s += batch_s
            bar.set_postfix(mpjpe_mm=f"{losses[-1]:.1f}")
            if checkpoint is not None and cfg.checkpoint_every > 0 and (step + 1) % cfg.checkpoint_every == 0:
                save_checkpoint(_resume_state(model, opt, sched, rng, scaler, device, step + 1, losses),
                                Path(checkpoint))
            if cfg.minutes > 0 and time.perf_counter() - t0 > 60.0 * cfg.minutes:
                stop = "minutes"
                break
    train_s = time.perf_counter() - t0 - (compile_s or 0.0)
    model.eval()
    if not all(torch.isfinite(p).all() for p in model.parameters()):  # the last step blew the weights up
        _diverged(len(losses), float("nan"), cfg.lr, checkpoint)
    tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
    out = {"train_steps": len(losses), "train_loss_mm": float(np.mean(tail)), "train_s": train_s,
           "train_stop": stop, "train_losses_mm": losses, "train_data_s": data_s,
           "train_data_share": min(1.0, data_s / train_s) if train_s > 0 else 0.0}
    if cfg.compile:
        out["train_compile_s"] = compile_s
    return out


def _diverged(step: int, loss: float, lr: float, checkpoint: Optional[Path]) -> None:
    """Stop a run whose loss left the finite numbers; its checkpoint goes too, so nothing reuses it."""
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    raise TrainingDiverged(f"training diverged at step {step} (loss {loss:g}); lower train.lr (now {lr:g})")


