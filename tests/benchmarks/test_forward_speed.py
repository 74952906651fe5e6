"""Forward latency benchmarks (pytest-benchmark). The default test run passes --benchmark-disable,
so each runs once as a smoke test; time them with

    .venv/bin/python -m pytest tests/benchmarks --benchmark-enable --benchmark-autosave
    .venv/bin/python -m pytest tests/benchmarks --benchmark-enable --benchmark-compare --benchmark-compare-fail=mean:10%

Covered: every pruner and recoverer in tiny MixSTE (the hourglass around a fixed backbone), and every
backbone unpruned and with HoT-style pruning at the tiny preset (one fixed, reduced size: paper sizes
take 0.1-2 s per forward on 2 cores). The paper-preset cells of every backbone are behind
VPTBENCH_PAPER_BENCH=1. Tiny models run on one intra-op thread (the `one_thread` fixture): on a shared
2-core machine two spinning threads make tiny forwards 2-15x slower and the comparison meaningless.
"""
import os

import pytest
import torch

from backbones import backbone_config, build_hourglass, create, create_hourglass, list_backbones
from backbones.registry import backbone_pipelines

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "baseline": ("none", "none", []),
    "cluster+attention": ("cluster", "attention", [[1, 9]]),
    "cluster+interpolation": ("cluster", "interpolation", [[1, 9]]),
    "attention+attention": ("attention", "attention", [[1, 9]]),
    "uniform+interpolation": ("uniform", "interpolation", [[1, 9]]),
    "uniform+nearest": ("uniform", "nearest", [[1, 9]]),
    "motion+attention": ("motion", "attention", [[1, 9]]),
    "cluster+attention hierarchical": ("cluster", "attention", [[1, 18], [2, 9]]),
}


def _forward(model, x):
    with torch.inference_mode():
        return model(x)


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_mixste_forward(benchmark, name):
    torch.manual_seed(0)
    model = build_hourglass(create("mixste", preset="tiny"), *TINY[name]).eval()
    x = torch.randn(8, model.num_frames, 17, 2)
    out = benchmark(_forward, model, x)
    assert out.shape == (8, model.num_frames, 17, 3)


@pytest.mark.skipif(os.environ.get("VPTBENCH_PAPER_BENCH") != "1", reason="set VPTBENCH_PAPER_BENCH=1 (slow)")
@pytest.mark.parametrize("cell", ["mixste", "hot_mixste"])
def test_paper_mixste_forward(benchmark, cell):
    args = ("none", "none", []) if cell == "mixste" else ("cluster", "attention", [[3, 81]])
    model = build_hourglass(create("mixste"), *args).eval()
    x = torch.randn(1, 243, 17, 2)
    benchmark.pedantic(_forward, args=(model, x), rounds=5, warmup_rounds=1)


def _hot_cell(name: str, preset: str):
    """(pruner, recoverer, schedule, pipeline): prune to a third of the frames before the second layer,
    attention recovery for seq2seq families, the centre frame for seq2frame-only ones."""
    cfg = backbone_config(name, preset)
    stage = [[1, max(1, cfg.num_frames // 3) | 1]]
    if "seq2seq" in backbone_pipelines(name):
        return "cluster", "attention", stage, "seq2seq"
    return "cluster", "none", stage, "seq2frame"


def _cell(name: str, preset: str, pruned: bool):
    torch.manual_seed(0)
    if pruned:
        pruner, recoverer, schedule, pipeline = _hot_cell(name, preset)
    else:
        pruner, recoverer, schedule, pipeline = "none", "none", [], backbone_pipelines(name)[0]
    model = create_hourglass(name, preset, pruner, recoverer, schedule, pipeline=pipeline).eval()
    return model, torch.randn(1, model.num_frames, model.backbone.num_joints, model.backbone.in_chans)


@pytest.mark.parametrize("pruned", [False, True], ids=["baseline", "hot"])
@pytest.mark.parametrize("name", list_backbones())
def test_tiny_backbone_forward(benchmark, name, pruned):
    model, x = _cell(name, "tiny", pruned)
    out = benchmark(_forward, model, x)
    assert out.shape[0] == 1 and torch.isfinite(out).all()


@pytest.mark.skipif(os.environ.get("VPTBENCH_PAPER_BENCH") != "1", reason="set VPTBENCH_PAPER_BENCH=1 (slow)")
@pytest.mark.parametrize("pruned", [False, True], ids=["baseline", "hot"])
@pytest.mark.parametrize("name", list_backbones())
def test_paper_backbone_forward(benchmark, name, pruned):
    model, x = _cell(name, "paper", pruned)
    benchmark.pedantic(_forward, args=(model, x), rounds=3, warmup_rounds=1)
