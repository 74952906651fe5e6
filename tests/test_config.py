"""Config validation and canonicalisation (before any compute)."""
import pytest

from bench.config import BackboneCfg, Config, PipelineCfg, PresetCfg, PrunerCfg, RecovererCfg


def make(**kw):
    return Config(backbone=BackboneCfg("mixste"), **kw)


def test_baseline_collapses_recoverer_and_schedule():
    a = make(pruner=PrunerCfg("none"), recoverer=RecovererCfg("attention"), schedule=[[3, 81]])
    b = make(pruner=PrunerCfg("none"), recoverer=RecovererCfg("interpolation"), schedule=[])
    assert a.schedule == [] and a.recoverer.name == "none"
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
