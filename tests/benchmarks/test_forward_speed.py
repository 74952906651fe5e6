"""Forward latency benchmarks (pytest-benchmark). The default test run passes --benchmark-disable,
so each runs once as a smoke test; time them with

    .venv/bin/python -m pytest tests/benchmarks --benchmark-enable --benchmark-autosave
    .venv/bin/python -m pytest tests/benchmarks --benchmark-enable --benchmark-compare --benchmark-compare-fail=median:10%

The paper-preset pair (MixSTE vs HoT w. MixSTE, ~1-2 s per forward on 2 cores) is behind
VPTBENCH_PAPER_BENCH=1.
"""
import os

import pytest
import torch

from backbones import build_hourglass, create

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
