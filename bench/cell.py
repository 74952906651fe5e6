"""One grid cell: build -> measure (params, FLOPs, speed) -> train + evaluate -> record.

Metrics already in the store for this cell are not recomputed (unless `rerun`); new metrics are
merged into the cell's record. A failure is recorded with its error (status 'failed').
"""
from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
from dataclasses import asdict
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

import backbones
from . import __version__
from .config import Config
from .store import ResultStore, cell_key

__all__ = ["run_cell", "build_model", "environment"]

log = logging.getLogger(__name__)

METRIC_FIELDS = {
    "params": ("params_m",),
    "flops": ("gflops", "gflops_total"),
    "speed": ("clips_per_s", "frames_per_s", "latency_ms", "peak_mem_mb", "speed_cv"),
    "accuracy": ("mpjpe_mm", "p_mpjpe_mm", "mpjve_mm"),
}


def build_model(cfg: Config):
    return backbones.create_hourglass(
        cfg.backbone.name, cfg.preset.name, cfg.pruner.name, cfg.recoverer.name, cfg.schedule,
        pipeline=cfg.pipeline.name, pruner_args=dict(cfg.pruner.args), recoverer_args=dict(cfg.recoverer.args),
        backbone_args=dict(cfg.backbone.overrides), seed=cfg.seed)


@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "cpu") -> Dict[str, Any]:
    dev = torch.cuda.get_device_name() if device.startswith("cuda") else _cpu_name()
    return {"vptbench_version": __version__, "git_commit": _git_commit(), "torch_version": torch.__version__,
            "device": device, "device_name": dev, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _describe(cfg: Config) -> Dict[str, Any]:
    """The flat, table-friendly description of a cell."""
    bcfg = backbones.backbone_config(cfg.backbone.name, cfg.preset.name, **dict(cfg.backbone.overrides))
    return {"backbone": cfg.backbone.name, "preset": cfg.preset.name, "frames": bcfg.num_frames,
            "depth": bcfg.depth, "pruner": cfg.pruner.name, "recoverer": cfg.recoverer.name,
            "schedule": cfg.schedule, "pipeline": cfg.pipeline.name, "data": cfg.data.name,
            "data_label": cfg.data.label, "seed": cfg.seed, "experiment": cfg.experiment}


def _wanted(cfg: Config, previous: Dict[str, Any] | None) -> Tuple[str, ...]:
    if cfg.rerun or previous is None or previous.get("status") != "ok":
        return tuple(cfg.metrics)
    return tuple(m for m in cfg.metrics if any(previous.get(f) is None for f in METRIC_FIELDS[m]))


def _measure(cfg: Config, todo: Tuple[str, ...], record: Dict[str, Any]) -> None:
    from .measure.flops import count_flops, count_params

    model = build_model(cfg).eval()
    clip = torch.randn(1, model.num_frames, model.backbone.num_joints, model.backbone.in_chans,
                       generator=torch.Generator().manual_seed(cfg.seed))
    record["frames_out"] = model.frames_out
    if "params" in todo:
        record["params_m"] = count_params(model)
    if "flops" in todo:
        rep = count_flops(model, (clip,))
        record.update(gflops=rep.gflops, gflops_total=rep.gflops_total, flops_uncounted_ops=rep.uncounted_ops)
    if "speed" in todo:
        from .measure.speed import measure_speed

        s = cfg.speed
        make = lambda b: (clip.expand(b, *clip.shape[1:]).contiguous(),)  # noqa: E731
        row = measure_speed(model, make, batch_size=s.batch_size, frames_out_per_clip=model.frames_out,
                            threads=s.threads, warmup=s.warmup, iters=s.iters, repeats=s.repeats)
        record.update({k: row[k] for k in ("clips_per_s", "frames_per_s", "latency_ms", "peak_mem_mb", "speed_cv")})
        record.update(speed_batch=s.batch_size, speed_threads=row.get("threads", s.threads))
    if "accuracy" in todo:
        from .data import load_split
        from .train import evaluate_model, train_model

        train_seqs, test_seqs = load_split(cfg.data.name)
        t = cfg.train
        threads = torch.get_num_threads()
        if t.threads:
            torch.set_num_threads(t.threads)
        try:
            torch.manual_seed(cfg.seed)
            model = build_model(cfg)  # fresh weights, seeded
            record.update(train_model(model, train_seqs, frames=model.num_frames, stride=cfg.data.train_stride,
                                      steps=t.steps, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                                      warmup_steps=t.warmup_steps,
                                      seed=cfg.seed, progress=t.progress, desc=_short(cfg)))
            record.update(evaluate_model(model, test_seqs, frames=model.num_frames))
        finally:
            torch.set_num_threads(threads)


def _short(cfg: Config) -> str:
    s = "-" if not cfg.schedule else "/".join(f"{l}:{k}" for l, k in cfg.schedule)
    return f"{cfg.backbone.name}[{cfg.preset.name}] {cfg.pruner.name}+{cfg.recoverer.name} {s}"


def run_cell(cfg: Config) -> Dict[str, Any]:
    """Run the metrics `cfg` asks for that the store lacks; store and return the merged record."""
    store = ResultStore(cfg.store)
    identity = cfg.cell_identity()
    key = cell_key(identity)
    previous = store.get(key)
    todo = _wanted(cfg, previous)
    if not todo and previous is not None:
        log.info("cell %s (%s) already in the store: skipped", key, _short(cfg))
        return dict(previous, skipped=True)
    base = dict(previous) if previous and previous.get("status") == "ok" and not cfg.rerun else {}
    record: Dict[str, Any] = {**base, "key": key, **_describe(cfg), "config": identity}
    record.pop("error", None)
    log.info("cell %s (%s): %s", key, _short(cfg), ", ".join(todo))
    t0 = time.perf_counter()
    try:
        _measure(cfg, todo, record)
        record["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure (bad combination, OOM, bug) is recorded; the grid goes on
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        log.error("cell %s failed: %s: %s", key, type(e).__name__, first, exc_info=log.isEnabledFor(logging.DEBUG))
        record.update(status="failed", error=f"{type(e).__name__}: {first}".rstrip(": "))
    record["cell_s"] = time.perf_counter() - t0
    record["env"] = dict(environment(), host=platform.node())  # host: which node ran it (SLURM)
    store.put(record)
    return record
