"""Structured configs (hydra ConfigStore schemas) and their one-line validation.

The YAML options live in `ablations/<group>/`; each extends the schema stored here, so a misspelled
key fails at composition and a bad value fails in `__post_init__`, before any compute. `Config` is
what one grid cell runs; `cell_identity()` is what the results store keys it by.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

import backbones
from backbones.hourglass import check_hourglass, parse_schedule

__all__ = ["Config", "BackboneCfg", "PrunerCfg", "RecovererCfg", "PresetCfg", "PipelineCfg", "DataCfg",
           "TrainCfg", "SpeedCfg", "METRICS", "register_configs"]

METRICS = ("params", "flops", "speed", "accuracy")


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
    name: str = "realmocap"                                   # realmocap | synthetic
    label: str = ""                                           # how tables name the data
    train_stride: int = 9                                     # frames between training windows


@dataclass
class TrainCfg:
    # defaults suit the tiny presets on a CPU: small batches and a warmed-up 2e-3 learn fastest per
    # CPU second there (measured; paper presets on a GPU want the reference recipes instead)
    steps: int = 640                  # optimiser steps (the budget every cell gets)
    batch_size: int = 4               # clips per step
    lr: float = 4e-3
    warmup_steps: int = 40
    weight_decay: float = 0.01
    threads: int = 0                  # torch threads while training; 0 = leave as is
    progress: bool = True             # tqdm bar on stderr


@dataclass
class SpeedCfg:
    batch_size: int = 1
    threads: int = 2                  # fixed thread count for timing
    warmup: int = 2
    iters: int = 3                    # forwards per timed repeat
    repeats: int = 5
    precision: str = "fp32"           # fp32 | bf16 | fp16 (autocast around the timed forwards)


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
    store: str = "results/store"      # directory of the results store
    rerun: bool = False               # re-run cells already in the store
    train: TrainCfg = field(default_factory=TrainCfg)
    speed: SpeedCfg = field(default_factory=SpeedCfg)
    experiment: Optional[str] = None  # the named grid this cell belongs to (set by experiment configs)

    def __post_init__(self):
        """Validate and canonicalise; every error is one line naming the fix."""
        bad = [m for m in self.metrics if m not in METRICS]
        if bad or not self.metrics:
            raise ValueError(f"unknown metric(s) {', '.join(map(str, bad)) or '(none given)'}; "
                             f"valid metrics: {', '.join(METRICS)}, e.g. metrics=[params,flops]")
        cfg = backbones.backbone_config(self.backbone.name, self.preset.name, **dict(self.backbone.overrides))
        sched = parse_schedule(self.schedule).validate(cfg.depth, cfg.num_frames)
        if self.pruner.name == "none":
            # the unpruned baseline has nothing to recover: one canonical cell however a grid spells it
            sched, self.recoverer = (), RecovererCfg("none")
        elif self.pipeline.name == "seq2frame":
            self.recoverer = RecovererCfg("none")  # seq2frame returns the (force-kept) centre frame
        self.schedule = check_hourglass(cfg.depth, cfg.num_frames, self.pruner.name, self.recoverer.name,
                                        sched, self.pipeline.name,
                                        backbones.registry.backbone_pipelines(self.backbone.name)).as_list()
        from .measure.speed import PRECISIONS
        if self.speed.precision not in PRECISIONS:
            raise ValueError(f"unknown speed.precision {self.speed.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.train.steps < 0 or self.train.batch_size < 1 or self.speed.batch_size < 1:
            raise ValueError("train.steps must be >= 0 and batch sizes >= 1")

    def cell_identity(self) -> Dict[str, Any]:
        """Everything that changes a cell's numbers (not where it is stored or whether to rerun)."""
        d = asdict(self)
        for k in ("store", "rerun", "experiment", "metrics"):  # metrics accumulate in one record
            d.pop(k)
        d["train"].pop("progress")
        return d


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, node in [("backbone", BackboneCfg), ("pruner", PrunerCfg), ("recoverer", RecovererCfg),
                        ("preset", PresetCfg), ("pipeline", PipelineCfg), ("data", DataCfg)]:
        cs.store(group=group, name=f"base_{group}", node=node)
