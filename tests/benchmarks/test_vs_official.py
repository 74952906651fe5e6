"""Ours vs the official implementations, side by side in one process: same weights, same input ->
outputs within 1e-4, and the throughput ratio at batch 1 (recorded, not asserted: a timing).

Skipped unless VPTBENCH_OFFICIAL_HOT points to a checkout of the official HoT repository
(NationalGAILab/HoT, which holds MixSTE, MotionBERT, MotionAGFormer and MHFormer) with `einops` and
`timm` importable. Nothing of it is committed here. Reproduce:

    git clone https://github.com/NationalGAILab/HoT /tmp/hot       # or any copy of it
    pip install einops timm                                         # in an environment beside ours
    VPTBENCH_OFFICIAL_HOT=/tmp/hot .venv/bin/python -m pytest tests/benchmarks/test_vs_official.py -s
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
from types import SimpleNamespace

import pytest
import torch

from backbones import create, load_pretrained
from bench.measure.speed import measure_speed

HOT = os.environ.get("VPTBENCH_OFFICIAL_HOT")
pytestmark = pytest.mark.skipif(not HOT, reason="set VPTBENCH_OFFICIAL_HOT to a checkout of the official HoT repo")

ARGS = dict(channel=512, d_hid=1024, n_joints=17, out_joints=17, frames=243, maxlen=243, depth=5, dim_feat=256,
            mlp_ratio=4, dim_rep=512, num_heads=8)
# family -> (official module, frames, input channels)
FAMILIES = {"mixste": ("model.mixste.mixste", 243, 2), "motionbert": ("model.motionbert.motionbert", 243, 3),
            "motionagformer": ("model.motionagformer.motionagformer", 243, 3),
            "mhformer": ("model.mhformer.mhformer", 351, 2)}


def _official(family):
    if HOT not in sys.path:
        sys.path.insert(0, HOT)
    module, frames, _ = FAMILIES[family]
    return importlib.import_module(module).Model(SimpleNamespace(**dict(ARGS, frames=frames))).eval()


def _pair(family):
    torch.manual_seed(0)
    official = _official(family)
    with torch.no_grad():  # randomise every tensor so no key can be silently left at its init
        for name, p in official.state_dict().items():
            if p.is_floating_point():
                noise = torch.randn_like(p) * 0.05
                p.copy_(noise.abs() + 0.5 if name.endswith("running_var") else noise)
    ours = create(family).eval()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "official.pth")
        torch.save(official.state_dict(), path)
        load_pretrained(ours, path)
    return official, ours


@pytest.mark.parametrize("family", list(FAMILIES))
def test_outputs_match_official(family):
    official, ours = _pair(family)
    _, frames, chans = FAMILIES[family]
    x = torch.randn(2, frames, 17, chans)
    with torch.no_grad():
        ref = official(x)
        diff = (ref - ours(x)).abs().max().item()
    scale = ref.abs().max().item()
    print(f"\n{family}: max |official - ours| = {diff:.2e} (max |official| = {scale:.2e})")
    # within 1e-4, relative to the output's magnitude (random weights make outputs large)
    assert diff < 1e-4 * max(1.0, scale)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_speed_vs_official(family):
    official, ours = _pair(family)
    _, frames, chans = FAMILIES[family]
    make = lambda b: (torch.randn(b, frames, 17, chans, generator=torch.Generator().manual_seed(0)),)  # noqa: E731
    kw = dict(frames_out_per_clip=frames, batch_size=1, threads=2, warmup=1, iters=1, repeats=5)
    rows = {}
    for _ in range(2):  # alternate, so drift on a shared machine hits both
        for name, model in (("official", official), ("ours", ours)):
            rows.setdefault(name, []).append(measure_speed(model, make, **kw)["clips_per_s"])
    o, u = max(rows["official"]), max(rows["ours"])
    print(f"\n{family}: official {o:.3f} clips/s, ours {u:.3f} clips/s, ratio {u / o:.3f}x")
    assert u > 0 and o > 0
