"""Structured configs (hydra ConfigStore schemas), the names every option may take, and their one-line
validation.

The bottom of `bench`: the modules above take the valid names of metrics, modes, losses, schedules,
optimisers and precisions from here, and this module imports no other part of `bench` but the device
names (`bench.devices`, a leaf). Importing it is cheap (no torch, no hydra): the model registry is
consulted only when a `Config` is validated, and hydra only when the schemas are registered.

The YAML options live in `ablations/<group>/`; each extends the schema stored here, so a misspelled
key fails at composition and a bad value fails in `__post_init__`, before any compute. `Config` is
what one grid cell runs; `cell_identity()` is what the results store keys it by. Its schedule is parsed
and validated once, there, and travels as a `backbones.Schedule` that remembers it was checked.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

from .devices import check_device_name, device_kind
from .records import METRIC_GROUPS

__all__ = ["Config", "BackboneCfg", "PrunerCfg", "RecovererCfg", "PresetCfg", "PipelineCfg", "DataCfg",
           "TrainCfg", "EvalCfg", "SpeedCfg", "METRICS", "MODES", "FLIP_SELECTIONS", "WEIGHT_SUFFIXES", "LOSSES", "LR_SCHEDULES", "OPTIMIZERS",
           "PRECISIONS", "register_configs"]

MISSING = "???"  # omegaconf.MISSING: a value the config must set (written out so importing this stays cheap)

METRICS = tuple(METRIC_GROUPS)  # params, flops, speed, accuracy
# how a cell gets its weights: trained pruned from scratch, fine-tuned from the trained unpruned baseline
# (or from a weights file), the baseline's weights with the pruner plugged in untrained, or a weights file
# evaluated as loaded (`weights=`; a pruned cell on an unpruned backbone's file is zero-shot)
MODES = ("scratch", "finetune", "zeroshot", "eval")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".tar", ".pth.tar", ".pth.tr", ".ckpt")  # published checkpoint names
# test-time flip: whether the mirrored pass re-prunes or replays the plain pass's selection. `official`:
# as the official HoT test scripts do, afresh for seq2seq (main_mixste.py) and replayed for seq2frame
# (main_mixste_tpc.py, main_mhformer_tpc.py)
FLIP_SELECTIONS = ("official", "afresh", "reuse")
# how predictions are scored (bench.evaluate): `hot` = VideoPose3D / official HoT (camera-frame metres);
# `motionbert` = MotionBERT's 2.5D image space (bench.data.image25d), what its and MotionAGFormer's
# published files predict; `auto` = motionbert for exactly those files evaluated as loaded, else hot
EVAL_PROTOCOLS = ("auto", "hot", "motionbert")
# MotionBERT's test skips three S9 takes (its block_list: s_09_act_05_subact_02, s_09_act_10_subact_02,
# s_09_act_13_subact_01, named by H36M action and sub-action numbers). Which VideoPose3D action name each
# sub-action is is not recorded there; taken here as sub-action 1 = the name without " 1" (unconfirmed:
# eval.exclude overrides it)
MOTIONBERT_EXCLUDED = ("S9/Greeting 1", "S9/SittingDown 1", "S9/Waiting")
LOSSES = ("mpjpe", "mixste")          # bench.losses
LR_SCHEDULES = ("cosine", "epoch")    # bench.train
OPTIMIZERS = ("adamw", "adam")        # bench.train
PRECISIONS = ("fp32", "bf16", "fp16")  # training: autocast; timing: a model copy in that dtype


@dataclass
class BackboneCfg:
    name: str = MISSING
    overrides: Dict[str, Any] = field(default_factory=dict)  # architecture fields, e.g. {depth: 6}


@dataclass
class PrunerCfg:
    name: str = "none"
    args: Dict[str, Any] = field(default_factory=dict)       # e.g. {k_neighbours: 2} for cluster


@dataclass
class RecovererCfg:
    name: str = "none"
    args: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PresetCfg:
    name: str = "paper"                                       # paper | tiny


@dataclass
class PipelineCfg:
    name: str = "seq2seq"                                     # seq2seq | seq2frame


@dataclass
class DataCfg:
    name: str = "realmocap"                                   # realmocap | synthetic | h36m
    label: str = ""                                           # how tables name the data
    train_stride: int = 9                                     # frames between training windows
    paths: Dict[str, str] = field(default_factory=dict)       # h36m only: {3d: ..., 2d: ...[, cameras: ...]}
    noise_px: float = 0.0                                     # realmocap only: detector-like 2D jitter (px std)


# Training options added after stores existed: while at the value that reproduces the earlier behaviour
# they stay out of a cell's identity, so existing records and cached baselines keep their keys.
NEUTRAL_TRAIN_OPTIONS = {"optimizer": "adamw", "amsgrad": False, "epochs": 0.0, "lr_decay_large_every": 0,
                         "precision": "fp32", "compile": False}
NEUTRAL_SPEED_OPTIONS = {"compile": False}
NEUTRAL_EVAL_OPTIONS = {"precision": "fp32", "protocol": "hot", "exclude": []}


@dataclass
class TrainCfg:
    # defaults suit the tiny presets on a CPU: small batches and a warmed-up 2e-3 learn fastest per
    # CPU second there (measured; paper presets on a GPU want the paper recipes, recipe=mixste|mhformer)
    steps: int = 640                  # optimiser steps (the budget every cell gets)
    epochs: float = 0.0               # > 0: the budget in epochs (passes over the windows) instead of steps
    finetune_steps: int = 0           # steps of a mode=finetune cell after its baseline; 0 = `steps`
    batch_size: int = 4               # clips per step
    lr: float = 4e-3
    warmup_steps: int = 40
    weight_decay: float = 0.01
    optimizer: str = "adamw"          # adamw | adam (MHFormer's recipe: adam with amsgrad)
    amsgrad: bool = False
    threads: int = 0                  # torch threads while training; 0 = leave as is
    progress: bool = True             # tqdm bar on stderr
    flip_augment: bool = True         # mirror half the training clips (official HoT code: data_augmentation=1)
    # mixste (weighted MPJPE + temporal consistency + velocity, MixSTE's objective, bench.losses) | mpjpe;
    # measured on the embedded mocap, tiny MixSTE, 1600 steps, 3 seeds: 102.9 +- 0.4 vs 106.6 +- 7.5 mm
    loss: str = "mixste"
    tc_weight: float = 0.5            # mixste: temporal-consistency coefficient (HoT main_mixste*.py)
    vel_weight: float = 2.0           # mixste: velocity-error coefficient (HoT main_mixste*.py)
    lr_schedule: str = "cosine"       # cosine (warm-up + cosine to 0) | epoch (warm-up + x lr_decay per epoch)
    epoch_steps: int = 100            # optimiser steps per epoch; 0 = one pass over the training windows
    lr_decay: float = 0.99            # epoch schedule: lr factor per epoch (HoT main_mixste*.py)
    lr_decay_large: float = 0.5       # ... and instead every lr_decay_large_every-th epoch (MHFormer recipe)
    lr_decay_large_every: int = 0     # 0 = off
    minutes: float = 0.0              # stop early after this many minutes of training; 0 = steps only
    checkpoint_every: int = 100       # steps between resumable checkpoints; 0 = none
    precision: str = "fp32"           # fp32 | bf16 | fp16: autocast around forward + loss (fp16 with a grad scaler)
    compile: bool = False             # torch.compile the training forward (its first step is timed apart)


@dataclass
class EvalCfg:
    flip: bool = True                 # flip test-time augmentation (the papers' protocol)
    batch_size: int = 64              # clips per forward while evaluating
    flip_selection: str = "official"  # official | afresh | reuse: the mirrored pass's pruning (FLIP_SELECTIONS)
    precision: str = "fp32"           # fp32 | bf16 | fp16: autocast around the forward (bf16 where the CPU has it)
    progress: bool = True             # tqdm bar over the test frames, with an ETA, on stderr
    protocol: str = "auto"            # auto | hot | motionbert: how predictions are scored (EVAL_PROTOCOLS)
    exclude: Optional[List[str]] = None  # SUBJECT/ACTION test sequences left out; None = the protocol's own


@dataclass
class SpeedCfg:
    batch_size: int = 1
    threads: int = 2                  # fixed thread count for timing
    warmup: int = 2
    iters: int = 3                    # forwards per timed repeat
    repeats: int = 5
    precision: str = "fp32"           # fp32 | bf16 | fp16: a copy with weights and activations in that dtype
    compile: bool = False             # time the torch.compile'd model (compilation timed apart, never inside)
    # measurement quality (bench/measure/quality.py): a timing over these is re-measured, then flagged
    max_cv: float = 0.05              # of the repeats (and of a pruned cell's paired time ratio)
    max_realised: float = 1.3         # paired speed-up / FLOPs ratio
    remeasure_s: float = 20.0         # seconds of re-measuring at most (0: flag without re-measuring)


@dataclass
class Config:
    backbone: BackboneCfg = field(default_factory=BackboneCfg)
    pruner: PrunerCfg = field(default_factory=PrunerCfg)
    recoverer: RecovererCfg = field(default_factory=RecovererCfg)
    preset: PresetCfg = field(default_factory=PresetCfg)
    pipeline: PipelineCfg = field(default_factory=PipelineCfg)
    data: DataCfg = field(default_factory=DataCfg)
    schedule: List[Any] = field(default_factory=list)       # [[layer, tokens], ...]; [] = no pruning
    metrics: List[str] = field(default_factory=lambda: list(METRICS))
    seed: int = 0
    mode: str = "scratch"             # scratch | finetune | zeroshot | eval (see MODES)
    weights: str = ""                 # a checkpoint (official layout or vptbench's), or a folder holding one
    weights_dir: str = ""             # the official files under their published names (backbones.PUBLISHED_WEIGHTS)
    store: str = "results/store"      # directory of the results store
    rerun: bool = False               # re-run cells already in the store
    train: TrainCfg = field(default_factory=TrainCfg)
    speed: SpeedCfg = field(default_factory=SpeedCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    device: str = "auto"              # auto (first CUDA GPU, else CPU) | cpu | cuda | cuda:N (bench.devices)
    experiment: Optional[str] = None  # the named grid this cell belongs to (set by experiment configs)

    def __post_init__(self):
        """Validate and canonicalise; every error is one line naming the fix."""
        bad = [m for m in self.metrics if m not in METRICS]
        if bad or not self.metrics:
            raise ValueError(f"unknown metric(s) {', '.join(map(str, bad)) or '(none given)'}; "
                             f"valid metrics: {', '.join(METRICS)}, e.g. metrics=[params,flops]")
        import backbones
        from backbones.hourglass import check_hourglass, parse_schedule

        cfg = backbones.backbone_config(self.backbone.name, self.preset.name, **dict(self.backbone.overrides))
        sched = parse_schedule(self.schedule).validate(cfg.depth, cfg.num_frames)
        if self.pruner.name == "none" or self.pipeline.name == "seq2frame":
            from backbones.hourglass import RECOVERERS

            RECOVERERS.options(self.recoverer.name, dict(self.recoverer.args))  # dropped below, typos named first
        if self.pruner.name == "none":
            # the unpruned baseline has nothing to recover: one canonical cell however a grid spells it
            sched, self.recoverer = parse_schedule(()), RecovererCfg("none")
        elif self.pipeline.name == "seq2frame":
            self.recoverer = RecovererCfg("none")  # seq2frame returns the (force-kept) centre frame
        self.schedule = check_hourglass(cfg.depth, cfg.num_frames, self.pruner.name, self.recoverer.name,
                                        sched, self.pipeline.name, backbones.backbone_pipelines(self.backbone.name),
                                        dict(self.pruner.args), dict(self.recoverer.args))
        self._check_weights()
        self._resolve_protocol()
        if self.speed.precision not in PRECISIONS:
            raise ValueError(f"unknown speed.precision {self.speed.precision!r}; valid: {', '.join(PRECISIONS)}")
        check_device_name(self.device)
        self._check_numbers()
        self._check_accuracy()
        if self.mode != "finetune":
            # only finetune cells use it: keep other cells' identity canonical. A new TrainCfg, not an
            # assignment: `dataclasses.replace(cell, mode="scratch")` (the cell's baseline) shares it with the cell
            self.train = replace(self.train, finetune_steps=0)

    def _check_numbers(self) -> None:
        """Every number a cell uses, in range before any compute (one line: name, rule, value, meaning)."""
        t, sp = self.train, self.speed
        for name, value, ok, rule, meaning in [
            ("seed", self.seed, 0 <= self.seed < 2 ** 63, ">= 0", "seeds numpy and torch"),
            ("train.steps", t.steps, t.steps >= 0, ">= 0", "optimiser steps"),
            ("train.finetune_steps", t.finetune_steps, t.finetune_steps >= 0, ">= 0", "0 = the same as train.steps"),
            ("train.batch_size", t.batch_size, t.batch_size >= 1, ">= 1", "clips per step"),
            ("train.lr", t.lr, math.isfinite(t.lr) and t.lr > 0, "a finite number > 0", "peak learning rate"),
            ("train.weight_decay", t.weight_decay, math.isfinite(t.weight_decay) and t.weight_decay >= 0,
             "a finite number >= 0", "0 = none"),
            ("train.warmup_steps", t.warmup_steps, t.warmup_steps >= 0, ">= 0", "0 = no warm-up"),
            ("train.tc_weight", t.tc_weight, math.isfinite(t.tc_weight) and t.tc_weight >= 0, "a finite number >= 0",
             "mixste loss"),
            ("train.vel_weight", t.vel_weight, math.isfinite(t.vel_weight) and t.vel_weight >= 0, "a finite number >= 0",
             "mixste loss"),
            ("train.threads", t.threads, t.threads >= 0, ">= 0", "0 = leave torch's setting"),
            ("data.train_stride", self.data.train_stride, self.data.train_stride >= 1, ">= 1",
             "frames between training windows"),
            ("eval.batch_size", self.eval.batch_size, self.eval.batch_size >= 1, ">= 1", "clips per forward"),
            ("speed.batch_size", sp.batch_size, sp.batch_size >= 1, ">= 1", "clips per timed forward"),
            ("speed.threads", sp.threads, sp.threads >= 1, ">= 1", "torch threads while timing"),
            ("speed.warmup", sp.warmup, sp.warmup >= 0, ">= 0", "untimed forwards first"),
            ("speed.iters", sp.iters, sp.iters >= 1, ">= 1", "forwards per timed repeat"),
            ("speed.repeats", sp.repeats, sp.repeats >= 1, ">= 1", "timed repeats; the median is kept"),
            ("speed.max_cv", sp.max_cv, sp.max_cv > 0, "> 0", "a fraction: repeats varying more are re-measured"),
            ("speed.max_realised", sp.max_realised, sp.max_realised > 0, "> 0",
             "paired speed-up / FLOPs ratio beyond which a timing is re-measured"),
            ("speed.remeasure_s", sp.remeasure_s, sp.remeasure_s >= 0, ">= 0", "seconds of re-measuring at most"),
        ]:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {value!r} ({meaning})")
        if not str(self.store).strip():
            raise ValueError("store= is empty; pass store=DIR, the results store directory (default results/store)")
        if Path(self.store).expanduser().resolve() == Path(Path(self.store).expanduser().resolve().anchor):
            raise ValueError(f"store={self.store} is the filesystem root; pass store=DIR, a directory of its own")

    def _check_weights(self) -> None:
        """`weights=` resolved to one existing file (a folder: its first checkpoint by name, as the official
        HoT loader takes the first *.pth of --previous_dir); the modes that use it. Reading the file and
        fitting it to the model are `preflight`'s (one line, before compute)."""
        if self.weights_dir and not self.weights:  # weights= wins: a cell may name its own file
            from backbones.pretrained import published_weights

            self.weights = published_weights(self.weights_dir, self.backbone.name)
        if not self.weights:
            if self.mode == "eval":
                raise ValueError("mode=eval evaluates a weights file; pass weights=PATH (an official checkpoint, "
                                 "e.g. HoT's model_*.pth or MotionBERT's best_epoch.bin, or a vptbench one)")
            return
        path = Path(self.weights).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
            if not found:
                raise ValueError(f"weights={self.weights} is a folder without a checkpoint file "
                                 f"({', '.join('*' + s for s in WEIGHT_SUFFIXES)}); pass the file itself")
            path = found[0]
        if not path.is_file():
            raise ValueError(f"weights={self.weights}: no such file; pass the path of a checkpoint file")
        self.weights = str(path.resolve())
        if self.mode == "zeroshot":
            self.mode = "eval"  # the file is the baseline: plugging a pruner into it untrained is evaluating it
        if self.mode not in ("eval", "finetune"):
            raise ValueError(f"weights= needs mode=eval (evaluate it as loaded, pruned zero-shot if the cell "
                             f"prunes) or mode=finetune (train from it); mode={self.mode} trains from random weights")

    def _resolve_protocol(self) -> None:
        """`eval.protocol=auto` resolved by what the weights predict, `eval.exclude` by the protocol; a
        protocol the cell's predictions are not in is one line."""
        protocol = self.eval.protocol
        if protocol not in EVAL_PROTOCOLS:
            raise ValueError(f"unknown eval.protocol {protocol!r}; valid: {', '.join(EVAL_PROTOCOLS)}")
        image25d = False
        if self.weights and self.mode == "eval":
            from backbones.pretrained import predicts_image25d

            image25d = predicts_image25d(self.backbone.name, self.weights)
        if protocol == "auto":
            protocol = "motionbert" if image25d else "hot"
        elif protocol == "motionbert" and not image25d:
            raise ValueError("eval.protocol=motionbert scores MotionBERT's 2.5D image-space output, which only its "
                             "and MotionAGFormer's official files predict (evaluated as loaded, mode=eval); "
                             "vptbench's models predict camera-frame metres: use eval.protocol=hot")
        exclude = self.eval.exclude
        if exclude is None:
            exclude = list(MOTIONBERT_EXCLUDED) if protocol == "motionbert" else []
        bad = [e for e in exclude if not isinstance(e, str) or e.count("/") != 1 or not all(e.split("/"))]
        if bad:
            raise ValueError(f"eval.exclude entries are SUBJECT/ACTION, e.g. 'S9/Waiting 1'; got {bad[0]!r}")
        self.eval = replace(self.eval, protocol=protocol, exclude=sorted(set(exclude)))

    def _check_accuracy(self) -> None:
        t = self.train
        for name, value, valid in [("mode", self.mode, MODES), ("train.loss", t.loss, LOSSES),
                                   ("train.precision", t.precision, PRECISIONS),
                                   ("eval.precision", self.eval.precision, PRECISIONS),
                                   ("train.lr_schedule", t.lr_schedule, LR_SCHEDULES),
                                   ("train.optimizer", t.optimizer, OPTIMIZERS)]:
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        if (t.epoch_steps < 0 or not math.isfinite(t.epochs) or t.epochs < 0 or t.lr_decay_large_every < 0 or not 0 < t.lr_decay <= 1
                or not 0 < t.lr_decay_large <= 1 or not 0 <= t.minutes < math.inf or t.checkpoint_every < 0):
            raise ValueError("train.epoch_steps, train.epochs, train.lr_decay_large_every, train.minutes and "
                             "train.checkpoint_every must be >= 0, train.lr_decay and train.lr_decay_large in (0, 1]")
        if self.eval.flip_selection not in FLIP_SELECTIONS:
            raise ValueError(f"unknown eval.flip_selection {self.eval.flip_selection!r}; "
                             f"valid: {', '.join(FLIP_SELECTIONS)}")
        if self.pruner.name == "none" and not self.weights:
            self.mode = "scratch"  # the baseline is its own baseline: one canonical cell
        elif self.mode == "zeroshot":
            from backbones.hourglass import PRUNERS, RECOVERERS, compatible_recoverers

            def learnable(reg, name, args) -> bool:
                return any(True for _ in reg.build(name, dim=8, num_frames=9, num_heads=1, **args).parameters())

            for kind, reg, c in (("pruner", PRUNERS, self.pruner), ("recoverer", RECOVERERS, self.recoverer)):
                if learnable(reg, c.name, dict(c.args)):
                    free = [r for r in compatible_recoverers(self.pruner.name) if not learnable(RECOVERERS, r, {})]
                    raise ValueError(f"mode=zeroshot needs parameter-free strategies but {kind} {c.name!r} "
                                     "has learnable parameters; use mode=finetune, or a parameter-free "
                                     f"recoverer ({', '.join(free) or 'none fits this pruner'})")

    def flip_reuses_selection(self) -> bool:
        """Whether the flip pass replays the plain pass's pruning (`eval.flip_selection`, `official` resolved
        by the pipeline)."""
        choice = self.eval.flip_selection
        if choice == "official":
            choice = "reuse" if self.pipeline.name == "seq2frame" else "afresh"
        return choice == "reuse"

    def cell_identity(self) -> Dict[str, Any]:
        """Everything that changes a cell's numbers (not where it is stored or whether to rerun)."""
        d = asdict(self)
        # the selection the flip pass uses only matters where a pruner selects; replaying it is what
        # records before the option meant, so those keep their keys
        if self.pruner.name == "none" or not self.eval.flip or self.flip_reuses_selection():
            d["eval"].pop("flip_selection")
        else:
            d["eval"]["flip_selection"] = "afresh"
        d["schedule"] = [list(stage) for stage in self.schedule]
        for k in ("store", "rerun", "experiment", "metrics"):  # metrics accumulate in one record
            d.pop(k)
        for k in ("progress", "checkpoint_every", "threads"):  # how it runs, not what it computes
            d["train"].pop(k)
        for k in ("max_cv", "max_realised", "remeasure_s"):  # how long to measure, not what
            d["speed"].pop(k)
        for k, neutral in NEUTRAL_TRAIN_OPTIONS.items():
            if d["train"][k] == neutral:
                d["train"].pop(k)
        if "lr_decay_large_every" not in d["train"]:
            d["train"].pop("lr_decay_large")  # unused
        for section, neutral_options in (("speed", NEUTRAL_SPEED_OPTIONS), ("eval", NEUTRAL_EVAL_OPTIONS)):
            for k, neutral in neutral_options.items():
                if d[section][k] == neutral:
                    d[section].pop(k)
        d["eval"].pop("progress")  # how it runs, not what it computes
        # the device kind, not the index (see bench.devices); CPU cells keep the keys they had before devices
        d.pop("device")
        if device_kind(self.device) != "cpu":
            d["device"] = device_kind(self.device)
        d.pop("weights")
        d.pop("weights_dir")  # where the file was found; its content (below) is what counts
        if self.weights:  # the file's content, not its path: a moved copy is the same cell
            from .digest import file_sha256

            d["weights"] = file_sha256(self.weights)
            if self.mode == "eval":
                d.pop("train")  # nothing is trained
        return d

    def baseline_identity(self) -> Dict[str, Any]:
        """What the trained unpruned model a finetune/zeroshot cell starts from depends on: this cell
        without its pruner, recoverer, schedule, mode, evaluation and timing settings."""
        d = self.cell_identity()
        for k in ("pruner", "recoverer", "schedule", "mode", "eval", "speed"):
            d.pop(k)
        if "train" in d:
            d["train"].pop("finetune_steps")
        return d


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, node in [("backbone", BackboneCfg), ("pruner", PrunerCfg), ("recoverer", RecovererCfg),
                        ("preset", PresetCfg), ("pipeline", PipelineCfg), ("data", DataCfg)]:
        cs.store(group=group, name=f"base_{group}", node=node)
