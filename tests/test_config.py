"""Config validation and canonicalisation (before any compute)."""
import re
import pytest

from bench.config import BackboneCfg, Config, PipelineCfg, PresetCfg, PrunerCfg, RecovererCfg


def make(**kw):
    return Config(backbone=BackboneCfg("mixste"), **kw)


def test_baseline_collapses_recoverer_and_schedule():
    a = make(pruner=PrunerCfg("none"), recoverer=RecovererCfg("attention"), schedule=[[3, 81]])
    b = make(pruner=PrunerCfg("none"), recoverer=RecovererCfg("interpolation"), schedule=[])
    assert a.schedule == () and a.recoverer.name == "none"
    assert a.cell_identity() == b.cell_identity()


def test_bad_schedule_still_rejected_for_baseline():
    with pytest.raises(ValueError, match="stage 1"):
        make(schedule=[[3, 999]])


def test_store_and_rerun_do_not_change_identity():
    a = make(pruner=PrunerCfg("cluster"), recoverer=RecovererCfg("attention"), schedule=[[3, 81]])
    b = make(pruner=PrunerCfg("cluster"), recoverer=RecovererCfg("attention"), schedule=[[3, 81]],
             store="elsewhere", rerun=True)
    assert a.cell_identity() == b.cell_identity()


@pytest.mark.parametrize("kw,needle", [
    (dict(metrics=["params", "flop"]), "valid metrics"),
    (dict(preset=PresetCfg("huge")), "valid presets"),
    (dict(pipeline=PipelineCfg("seq2many")), "valid pipelines"),
    (dict(pruner=PrunerCfg("clusterr"), schedule=[[3, 81]]), "valid pruners"),
    (dict(pruner=PrunerCfg("cluster"), schedule=[[3, 81]]), "recoverer"),
    (dict(pruner=PrunerCfg("cluster"), recoverer=RecovererCfg("attention")), "needs a schedule"),
])
def test_one_line_errors(kw, needle):
    with pytest.raises(ValueError, match=needle) as e:
        make(**kw)
    assert "\n" not in str(e.value)


def test_seq2frame_drops_recoverer():
    c = make(pruner=PrunerCfg("cluster"), recoverer=RecovererCfg("attention"), pipeline=PipelineCfg("seq2frame"),
             schedule=[[7, 61]])
    assert c.recoverer.name == "none"


@pytest.mark.parametrize("data, needle", [
    (dict(name="h36m", paths={"3d": "/nonexistent/data_3d_h36m.npz", "2d": "/nonexistent/2d.npz"}),
     "data file /nonexistent/data_3d_h36m.npz not found"),
    (dict(name="h36m"), "dataset 'h36m' needs paths="),
    (dict(name="h36m", paths={"3d": "a", "2d": "b", "poses": "c"}), "unknown paths keys ['poses']"),
    (dict(name="realmocap", paths={"3d": "a", "2d": "b"}), "paths is only for dataset 'h36m'"),
    (dict(name="realmocap", noise_px=-1.0), r"noise_px=-1.0 must be a finite number >= 0"),
    (dict(name="synthetic", noise_px=2.0), "only for dataset 'realmocap'"),
])
def test_data_config_checked_before_compute_when_accuracy_is_asked(data, needle):
    """The schema takes any data config; the grid's preflight checks the ones accuracy cells will load."""
    from bench.config import DataCfg
    from bench.grid import Grid

    cell = make(data=DataCfg(**data), metrics=["accuracy"], store="/tmp/unused-store")
    with pytest.raises(ValueError, match=re.escape(needle)):
        Grid([cell]).check_data()
    Grid([make(data=DataCfg(**data), metrics=["params", "flops"])]).check_data()  # FLOPs need no data files


def test_finetune_steps_only_in_finetune_cells_and_not_in_the_baseline():
    from bench.config import TrainCfg

    ft = make(pruner=PrunerCfg("uniform"), recoverer=RecovererCfg("interpolation"), schedule=[[1, 81]],
              mode="finetune", train=TrainCfg(steps=100, finetune_steps=20))
    zs = make(pruner=PrunerCfg("uniform"), recoverer=RecovererCfg("interpolation"), schedule=[[1, 81]],
              mode="zeroshot", train=TrainCfg(steps=100, finetune_steps=20))
    base = make(mode="finetune", train=TrainCfg(steps=100, finetune_steps=20))
    assert ft.train.finetune_steps == 20 and zs.train.finetune_steps == 0 and base.train.finetune_steps == 0
    assert base.mode == "scratch"
    assert ft.baseline_identity() == zs.baseline_identity() == base.baseline_identity()
    with pytest.raises(ValueError, match="finetune_steps must be >= 0"):
        make(train=TrainCfg(finetune_steps=-1))


def test_deriving_the_baseline_config_leaves_the_cell_untouched():
    """`replace(cell, mode="scratch", ...)` builds the cell's baseline; canonicalising it must not reach
    into the TrainCfg it shares with the cell (a finetune cell then trained `steps`, not `finetune_steps`)."""
    from dataclasses import replace

    from bench.config import TrainCfg

    ft = make(pruner=PrunerCfg("uniform"), recoverer=RecovererCfg("interpolation"), schedule=[[1, 81]],
              mode="finetune", train=TrainCfg(steps=100, finetune_steps=20))
    base = replace(ft, pruner=PrunerCfg(), recoverer=RecovererCfg(), schedule=[], mode="scratch")
    assert base.train.finetune_steps == 0 and ft.train.finetune_steps == 20
