"""`train_model` runs as the training tests write them: one set of keywords, `TrainCfg` fields and the
call's own arguments alike, on a small budget with the options those tests were written against."""
from __future__ import annotations

import dataclasses
from typing import Dict

from bench.config import TrainCfg
from bench.train import train_model

CALL_ARGS = ("frames", "stride", "seed", "checkpoint", "desc", "device")  # train_model's, not the config's
# unless a test says otherwise: 4 steps at 1e-3 without warm-up on MPJPE, no checkpoints, no progress bar
TEST_TRAINING = dict(steps=4, lr=1e-3, weight_decay=0.01, warmup_steps=0, loss="mpjpe", checkpoint_every=0,
                     progress=False)


def run_training(model, seqs, **kw) -> Dict:
    """`train_model(model, seqs, cfg, ...)` with `kw` split between the call (CALL_ARGS; frames default to
    the model's, stride to 9, seed to 0) and the config (every other keyword, over TEST_TRAINING)."""
    call = {"frames": model.num_frames, "stride": 9, "seed": 0, **{k: kw.pop(k) for k in CALL_ARGS if k in kw}}
    return train_model(model, seqs, dataclasses.replace(TrainCfg(), **{**TEST_TRAINING, **kw}), **call)
