"""How long the official test protocol takes on this machine for each family's published model: times
the evaluation's own batched forward (`bench.evaluate._predict`, flip test-time augmentation on) on a
measured subset of clips and scales it to the full Human3.6M test set (S9 + S11, four cameras).

    .venv/bin/python reports/eval_time/measure.py [--clips 4] [--windows 8] [--precision fp32|bf16]

Writes a markdown table to stdout. The weights are random: a forward's time does not depend on them."""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import backbones  # noqa: E402
from backbones.pretrained import PUBLISHED_WEIGHTS  # noqa: E402
from bench.data.windows import seq2frame_eval_windows, seq2seq_eval_clips  # noqa: E402
from bench.evaluate import _predict  # noqa: E402
from bench.measure.capability import cpu_isa  # noqa: E402
from bench.cell import environment  # noqa: E402

# the Human3.6M test set as VideoPose3D's files hold it: S9 and S11, 4 cameras each (236 sequences)
TEST_FRAMES, TEST_SEQUENCES = 543_344, 236
PIPELINE = {"mhformer": "seq2frame"}
# HoT's published pruned models beside them (the HoT README's test commands)
PRUNED = {"mixste": [("hot_mixste", "cluster", "attention", [[3, 81]]), ("tpc_mixste", "cluster", "none", [[7, 61]])],
          "mhformer": [("tpc_mhformer", "cluster", "none", [[1, 117]])]}


def forwards_in_test_set(pipeline: str, frames: int) -> float:
    """Clips the protocol runs over the test set: one window per frame (seq2frame), or non-overlapping
    clips with a padded last one per sequence (seq2seq; half a clip per sequence on average)."""
    return TEST_FRAMES if pipeline == "seq2frame" else TEST_FRAMES / frames + TEST_SEQUENCES / 2


def time_model(family: str, clips: int, windows: int, precision: str, pruner="none", recoverer="none",
               schedule=(), pipeline=None) -> dict:
    preset = PUBLISHED_WEIGHTS[family].preset
    pipeline = pipeline or PIPELINE.get(family, "seq2seq")
    model = backbones.create_hourglass(family, preset, pruner, recoverer, list(schedule), pipeline=pipeline).eval()
    F = model.num_frames
    T = windows if pipeline == "seq2frame" else clips * F
    rows = seq2frame_eval_windows(T, F) if pipeline == "seq2frame" else seq2seq_eval_clips(T, F)
    seq = torch.randn(T, model.backbone.num_joints, model.backbone.in_chans)
    batch = len(rows)
    _predict(model, seq, batch, flip=True, rows=rows[: min(2, batch)], precision=precision)  # warm-up
    t0 = time.perf_counter()
    _predict(model, seq, batch, flip=True, rows=rows, precision=precision)
    per_clip = (time.perf_counter() - t0) / len(rows)
    n = forwards_in_test_set(pipeline, F)
    return dict(preset=preset, frames=F, pipeline=pipeline, measured=len(rows), per_clip=per_clip,
                clips=n, hours=per_clip * n / 3600)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=4, help="seq2seq clips timed per family (one batch)")
    p.add_argument("--windows", type=int, default=8, help="seq2frame windows timed (one batch)")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    env = environment("cpu")
    print(f"CPU: {env['cpu_name']} ({cpu_isa()}), {a.threads} threads, torch {torch.__version__}, {a.precision}, "
          "flip test-time augmentation on\n")
    print("| model | preset | frames | pipeline | clips timed | s per clip (flip incl.) | clips in S9+S11 | full test set |")
    print("|---|---|---|---|---|---|---|---|")
    for family in PUBLISHED_WEIGHTS:
        runs = [(family, {})] + [(name, dict(pruner=p, recoverer=r, schedule=s,
                                             pipeline="seq2frame" if r == "none" else "seq2seq"))
                                 for name, p, r, s in PRUNED.get(family, [])]
        for name, kw in runs:
            r = time_model(family, a.clips, a.windows, a.precision, **kw)
            print(f"| {name} | {r['preset']} | {r['frames']} | {r['pipeline']} | {r['measured']} | "
                  f"{r['per_clip']:.3f} | {math.ceil(r['clips']):,} | {r['hours']:.1f} h |", flush=True)


if __name__ == "__main__":
    main()
