"""One grid cell: build -> measure (params, FLOPs, speed) -> train + evaluate -> record.

Metrics already in the store for this cell are not recomputed (unless `rerun`); new metrics are
merged into the cell's record. A failure is recorded with its error (status 'failed').

Accuracy of a pruned cell depends on `mode`: `scratch` (default, as HoT/H2OT train their pruned models)
trains the pruned model from fresh weights; `finetune` starts from the trained unpruned baseline (same
backbone, preset, data, training settings and seed) and trains the pruned model; `zeroshot` plugs a
parameter-free pruner/recoverer into that baseline without training. The baseline is trained once per
identity and cached at `<store>/checkpoints/<baseline key>.pt` (atomic write; the unpruned cell itself
loads it when present, so delete the file to retrain); training resumes from `run-<key>.pt` after a kill.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import subprocess
import time
from dataclasses import replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

import backbones
from backbones.hourglass import PRUNERS, RECOVERERS
from backbones.pretrained import describe_preset, fit_frame_norms, read_weights, weights_into
from . import __version__
from .checkpoint import read_checkpoint, save_checkpoint
from .config import Config, DataCfg, PrunerCfg, RecovererCfg
from .devices import device_kind, is_out_of_memory, resolve_device
from .measure.capability import cpu_features, cpu_isa
from .records import METRIC_GROUPS
from .store import ResultStore, cell_key

__all__ = ["run_cell", "build_model", "environment", "load_baseline", "load_cell_data", "has_metric", "cell_label"]

log = logging.getLogger(__name__)

METRIC_FIELDS = METRIC_GROUPS  # metric -> the record fields it writes


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
    """Where a record was measured: package, commit, torch, the CPU always (its name, the ISA torch's kernels
    dispatch to and the extensions the timing path probes), and for a CUDA device the GPU, CUDA, cuDNN and
    driver versions and the TF32 settings (they change fp32 GPU speed and results)."""
    env = {"vptbench_version": __version__, "git_commit": _git_commit(), "torch_version": torch.__version__,
           "device": str(device), "device_name": _cpu_name(), "cpu_name": _cpu_name(), "cpu_count": os.cpu_count(),
           "cpu_isa": cpu_isa(), "cpu_features": ",".join(k for k, v in cpu_features().items() if v),
           "threads": torch.get_num_threads(), "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if str(device).startswith("cuda"):
        dev = torch.device(device)
        props = torch.cuda.get_device_properties(dev)
        env.update(device_name=props.name, gpu_memory_gb=round(props.total_memory / 2 ** 30, 1),
                   gpu_capability=f"{props.major}.{props.minor}", cuda_version=torch.version.cuda,
                   cudnn_version=torch.backends.cudnn.version(), driver_version=_driver_version(),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                   float32_matmul_precision=torch.get_float32_matmul_precision())
    return env


@lru_cache(maxsize=1)
def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _data_key(data: DataCfg) -> Tuple:
    """What a loaded split depends on: the config and, for user files, their size and modification time."""
    paths = tuple(sorted((k, str(v)) for k, v in dict(data.paths).items()))
    stats = []
    for _, path in paths:
        try:
            st = os.stat(path)
            stats.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append(None)
    return data.name, paths, float(data.noise_px), tuple(stats)


@lru_cache(maxsize=2)
def _load_dataset_cached(key: Tuple):
    from .data import load_dataset

    name, paths, noise_px, _ = key
    return load_dataset(name, paths=dict(paths) or None, **({"noise_px": noise_px} if noise_px else {}))


def needs_training_data(cfg: Config) -> bool:
    """Every accuracy cell trains (itself or the baseline it starts from) except evaluating given weights."""
    return not (cfg.weights and cfg.mode == "eval")


def load_cell_data(data: DataCfg, need_train: bool = True):
    """(train, test) sequences of a cell's data config; an empty train split is accepted where nothing trains.
    The last two data sets loaded are kept, so a grid's preflight check and the cells that run in the same
    process (evaluating or training) read the files once."""
    from .data.dataset import split_loaded

    key = _data_key(data)
    return split_loaded(data.name, _load_dataset_cached(key), need_train=need_train)


def _describe(cfg: Config) -> Dict[str, Any]:
    """The flat, table-friendly description of a cell."""
    bcfg = backbones.backbone_config(cfg.backbone.name, cfg.preset.name, **dict(cfg.backbone.overrides))
    return {"backbone": cfg.backbone.name, "preset": cfg.preset.name, "frames": bcfg.num_frames,
            "depth": bcfg.depth, "pruner": cfg.pruner.name, "recoverer": cfg.recoverer.name,
            "schedule": [list(stage) for stage in cfg.schedule], "pipeline": cfg.pipeline.name, "data": cfg.data.name,
            "data_label": cfg.data.label, "seed": cfg.seed, "mode": cfg.mode, "experiment": cfg.experiment,
            "device": device_kind(cfg.device), "pruner_args": _options_label(PRUNERS, cfg.pruner),
            "recoverer_args": _options_label(RECOVERERS, cfg.recoverer)}


def _options_label(registry, strategy) -> str:
    """`query_init=pos`: a strategy's options that differ from its defaults ("" for none), so that tables and
    compare tell a variant (position-aware TRA) from the strategy as published."""
    options, default = registry.options(strategy.name, dict(strategy.args)), registry.get(strategy.name).Options()
    return ",".join(f"{f.name}={getattr(options, f.name)}" for f in dataclasses.fields(options)
                    if getattr(options, f.name) != getattr(default, f.name))


def has_metric(rec: Dict[str, Any] | None, metric: str) -> bool:
    """The record holds `metric` (all its fields), or for speed a recorded skip (out of memory at that batch).
    FLOPs also need the other counters' pass (`flops_counters_missing` is written by it, their values may be
    null when not installed): a record from before it, or missing a counter installed since, gets them on the
    next run, the rest of the record kept."""
    if not rec:
        return False
    if metric == "flops":
        from .measure.conventions import installed_since

        if not isinstance(rec.get("flops_counters_missing"), list) or installed_since(rec["flops_counters_missing"]):
            return False
    return all(rec.get(f) is not None for f in METRIC_FIELDS[metric]) or (metric == "speed" and
                                                                          bool(rec.get("speed_skipped")))


def _wanted(cfg: Config, previous: Dict[str, Any] | None) -> Tuple[str, ...]:
    if cfg.rerun or previous is None or previous.get("status") != "ok":
        return tuple(cfg.metrics)
    return tuple(m for m in cfg.metrics if not has_metric(previous, m))


def _measure(cfg: Config, todo: Tuple[str, ...], record: Dict[str, Any], device: torch.device) -> None:
    from .measure.flops import count_flops, count_params

    model = build_model(cfg).eval()
    clip = torch.randn(1, model.num_frames, model.backbone.num_joints, model.backbone.in_chans,
                       generator=torch.Generator().manual_seed(cfg.seed))
    record["frames_out"] = model.frames_out
    if "params" in todo:
        record["params_m"] = count_params(model)
    if "flops" in todo:  # counted on the CPU: the count does not depend on the device
        from .measure.conventions import count_conventions, record_fields

        rep = count_flops(model, (clip,))
        record.update(gflops=rep.gflops, gflops_total=rep.gflops_total, flops_uncounted_ops=rep.uncounted_ops)
        # the same clip under every counter users meet (thop, torchprofile, ptflops, fvcore, FlopCounterMode)
        record.update(record_fields(count_conventions(model, (clip,), model.frames_out, rep.gflops, rep.gflops_total)))
    if "speed" in todo:
        _time(cfg, model, clip, record, device)
    if "accuracy" in todo:
        from .evaluate import evaluate_model

        train_seqs, test_seqs = load_cell_data(cfg.data, needs_training_data(cfg))
        threads = torch.get_num_threads()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        try:
            torch.manual_seed(cfg.seed)
            model = build_model(cfg)  # fresh weights, seeded
            ckdir = Path(cfg.store) / "checkpoints"
            record.update(_weights_for_accuracy(cfg, model, train_seqs, ckdir, device))
            record["eval_precision_emulated"] = _eval_precision_emulated(cfg.eval.precision, device)
            partial = ckdir / f"eval-{cell_key(cfg.cell_identity())}.json"
            record.update(evaluate_model(model, test_seqs, cfg.eval, frames=model.num_frames, device=device,
                                         flip_reuses_selection=cfg.flip_reuses_selection(), resume=partial,
                                         desc=cell_label(cfg)))
            partial.unlink(missing_ok=True)
        finally:
            torch.set_num_threads(threads)


def _eval_precision_emulated(precision: str, device: torch.device) -> Optional[bool]:
    """Whether a reduced evaluation precision runs without the CPU's arithmetic for it (None for fp32
    and on a GPU); one line, before any forward, where no kernel here runs it."""
    if precision == "fp32" or device.type != "cpu":
        return None
    from .measure.capability import check_precision

    support = check_precision(precision, "eval.precision")
    if support.emulated:
        log.warning("eval.precision=%s is emulated: %s; the errors are %s's, but the evaluation runs slower "
                    "than fp32 here", precision, support.why, precision)
    return support.emulated


def _weights_for_accuracy(cfg: Config, model, train_seqs, ckdir: Path, device: torch.device) -> Dict[str, Any]:
    """Give `model` the weights the cell's mode asks for; returns what the record says of them.

    - weights= (the user's file): loaded, then evaluated as is (mode=eval; zero-shot if the cell prunes an
      unpruned backbone's file) or fine-tuned from (mode=finetune);
    - the unpruned baseline: trained (cached for the cells that start from it);
    - finetune / zeroshot: the trained baseline's weights, then trained further or not;
    - scratch: trained from its seeded initialisation."""
    out: Dict[str, Any] = {}
    if cfg.weights:
        load_weights(cfg, model)
        out.update(weights=cfg.weights, weights_sha256=cfg.cell_identity()["weights"])
        train = cfg.mode == "finetune"
    elif cfg.pruner.name == "none" or cfg.mode != "scratch":
        base_key = cell_key(cfg.baseline_identity())
        state, info = _trained_baseline(cfg, train_seqs, ckdir / f"{base_key}.pt", device)
        load_baseline(model, state)
        out.update(baseline_key=base_key, **{f"baseline_{k}": v for k, v in info.items()})
        if cfg.pruner.name == "none":
            return dict(out, **info)
        train = cfg.mode != "zeroshot"
    else:
        train = True
    if not train:
        return dict(out, train_steps=0, train_loss_mm=None, train_s=0.0, train_stop=cfg.mode)
    resume = ckdir / f"run-{cell_key(cfg.cell_identity())}.pt"
    out.update(_train(cfg, model, train_seqs, resume, device))
    resume.unlink(missing_ok=True)
    return out


def _time(cfg: Config, model, clip: torch.Tensor, record: Dict[str, Any], device: torch.device) -> None:
    """Throughput at speed.batch_size on the cell's device. Running out of memory at that batch is a
    recorded skip (one line; the cell stays ok and the grid is not failed), not an error."""
    from .measure.flops import count_flops
    from .measure.quality import measure_until_clean, timing_problem
    from .measure.speed import measure_speed

    s = cfg.speed
    make = lambda b: (clip.expand(b, *clip.shape[1:]).contiguous(),)  # noqa: E731
    record.update(speed_batch=s.batch_size, speed_precision=s.precision, speed_device=str(device),
                  speed_compile=s.compile)
    # a pruned seq2seq cell times its unpruned baseline alternately in the same run: its speed-up is then a
    # within-run ratio, not one between records timed at different moments of a shared machine
    pair = None
    if cfg.pruner.name != "none" and cfg.pipeline.name == "seq2seq" and not s.compile:
        pair = backbones.create_hourglass(cfg.backbone.name, cfg.preset.name, "none", "none", [],
                                          backbone_args=dict(cfg.backbone.overrides), seed=cfg.seed)
    flops_ratio = None
    if pair is not None:  # what the speed-up may plausibly be (bench.measure.quality)
        own = record.get("gflops_total") or count_flops(model, (clip,)).gflops_total
        flops_ratio = count_flops(pair, (clip,)).gflops_total / own
    measure = lambda: measure_speed(  # noqa: E731
        model, make, batch_size=s.batch_size, frames_out_per_clip=model.frames_out, threads=s.threads,
        warmup=s.warmup, iters=s.iters, repeats=s.repeats, precision=s.precision, device=str(device),
        compile=s.compile, batch1_latency=True, paired=pair)
    check = lambda r: timing_problem(r, max_cv=s.max_cv, max_realised=s.max_realised, flops_ratio=flops_ratio)  # noqa: E731
    try:
        row = measure_until_clean(measure, check, s.remeasure_s)
    except Exception as e:  # noqa: BLE001 - only out-of-memory is a skip; anything else fails the cell
        if not is_out_of_memory(e):
            raise
        _free_device_memory()
        why = f"out of memory at batch {s.batch_size} on {device}; lower speed.batch_size"
        log.warning("cell %s: %s", cell_label(cfg), why)
        record.update(dict.fromkeys(METRIC_FIELDS["speed"]), speed_skipped=why, speedup_paired=None)
        return
    record.pop("speed_skipped", None)
    record.update({k: row[k] for k in METRIC_FIELDS["speed"]})
    paired = row.get("paired_clips_per_s")
    record.update(speed_threads=row.get("threads", s.threads), speed_compile_s=row.get("compile_s"),
                  speed_path=row["speed_path"], speedup_paired=row["clips_per_s"] / paired if paired else None,
                  speed_attempts=row["speed_attempts"], speed_noisy=row["speed_noisy"])
    if row["speed_noisy"]:
        log.warning("cell %s: noisy timing, flagged in the record: %s", cell_label(cfg), row["speed_noisy"])


def _free_device_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train(cfg: Config, model, train_seqs, checkpoint: Path, device: torch.device) -> Dict[str, Any]:
    from .train import train_model

    t = cfg.train
    if cfg.mode == "finetune" and t.finetune_steps > 0:
        t = replace(t, steps=t.finetune_steps, epochs=0.0)  # a finetune with its own budget, in steps
    out = train_model(model, train_seqs, t, frames=model.num_frames, stride=cfg.data.train_stride, seed=cfg.seed,
                      checkpoint=checkpoint, desc=cell_label(cfg), device=device)
    out.pop("train_losses_mm")  # the curve stays out of the record
    return out


def _trained_baseline(cfg: Config, train_seqs, path: Path,
                      device: torch.device) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The trained unpruned model for `cfg` (same backbone, preset, data, training, seed): loaded from
    `path` when a previous cell trained it, else trained once and cached there atomically."""
    base_cfg = replace(cfg, pruner=PrunerCfg(), recoverer=RecovererCfg(), schedule=[], mode="scratch")

    def fits(saved) -> None:  # a file of another model (or planted) is rejected here, not in every cell using it
        if not isinstance(saved["train"], dict):
            raise ValueError("its 'train' entry is not a dict")
        build_model(base_cfg).load_state_dict(saved["model"])

    saved = read_checkpoint(path, required=("model", "train"), apply=fits)
    if saved is not None:
        return saved["model"], saved["train"]
    torch.manual_seed(cfg.seed)
    base = build_model(base_cfg)
    resume = path.with_name(f"run-{path.name}")
    info = _train(base_cfg, base, train_seqs, resume, device)
    save_checkpoint({"model": base.state_dict(), "train": info, "identity": cfg.baseline_identity()}, path)
    resume.unlink(missing_ok=True)
    return base.state_dict(), info


# what a pruned model has beyond its unpruned baseline: stage positional embeddings and the strategies
PRUNED_ONLY = ("pos_embed_token.", "recoverer.", "pruner.")


def load_baseline(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Load unpruned baseline weights into a (pruned) model; only the pruned model's own extra parameters
    may be missing and frame-sized norms are fitted (`backbones.pretrained.fit_frame_norms`); anything else (unexpected or
    missing keys, shape mismatches) is a one-line error."""
    state = fit_frame_norms(model, state)
    try:
        res = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError("the baseline's weights do not fit the pruned model (shape mismatch: "
                         f"{str(e).splitlines()[-1].strip()}); use mode=scratch for this backbone/schedule") from None
    missing = [k for k in res.missing_keys if not k.startswith(PRUNED_ONLY)]
    if missing or res.unexpected_keys:
        raise ValueError(f"the baseline's weights do not fit the model: missing {missing[:5]}, unexpected "
                         f"{res.unexpected_keys[:5]}; use mode=scratch")


def load_weights(cfg: Config, model: torch.nn.Module) -> None:
    """The cell's `weights=` file into its model (`backbones.pretrained.weights_into`): one line naming what
    the file holds and what the cell is when they do not fit. Fine-tuning may start a learnable recoverer
    the file lacks; evaluating may not."""
    fam, preset = cfg.backbone.name, cfg.preset.name
    cell = f"{cell_label(cfg)} ({describe_preset(fam, preset, **dict(cfg.backbone.overrides))})"
    weights_into(model, read_weights(cfg.weights), source=f"weights={cfg.weights}", cell=cell,
                 untrained_ok=cfg.mode == "finetune", family=fam, preset=preset)


def cell_label(cfg: Config) -> str:
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
        log.info("cell %s (%s) already in the store: skipped", key, cell_label(cfg))
        return dict(previous, skipped=True)
    # a finished record keeps what this run does not recompute (rerun=true metrics=[speed] re-times a
    # cell without losing its accuracy); a failed one starts afresh
    base = dict(previous) if previous and previous.get("status") == "ok" else {}
    for metric in todo if cfg.rerun else ():
        for f in METRIC_FIELDS[metric]:
            base.pop(f, None)
    record: Dict[str, Any] = {**base, "key": key, **_describe(cfg), "config": identity}
    record.pop("error", None)
    log.info("cell %s (%s): %s", key, cell_label(cfg), ", ".join(todo))
    t0 = time.perf_counter()
    device = torch.device("cpu")
    try:
        device = resolve_device(cfg.device)
        _measure(cfg, todo, record, device)
        record["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure (bad combination, OOM, bug) is recorded; the grid goes on
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        log.error("cell %s failed: %s: %s", key, type(e).__name__, first, exc_info=log.isEnabledFor(logging.DEBUG))
        record.update(status="failed", error=f"{type(e).__name__}: {first}".rstrip(": "))
        _free_device_memory()  # after an out-of-memory, the next cell of the grid starts clean
    record["cell_s"] = time.perf_counter() - t0
    record["env"] = dict(environment(device), host=platform.node())  # host: which node ran it (SLURM)
    store.put(record)
    return record
