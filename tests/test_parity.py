"""Params / FLOPs parity with the REFERENCE table below (counted on the official HoT code, NationalGAILab/HoT):
±0.001 M params, ±0.1 % paper-convention GFLOPs, one clip at batch 1."""
import pytest
import torch

from backbones import create_hourglass
from bench.measure import count_flops, count_params

REFERENCE = {
    # name: (backbone, pruner, recoverer, schedule, pipeline, params M, GFLOPs)
    "MixSTE": ("mixste", "none", "none", [], "seq2seq", 33.784, 277.248),
    "HoT w. MixSTE": ("mixste", "cluster", "attention", [[3, 81]], "seq2seq", 35.000, 167.512),
    "TPC w. MixSTE": ("mixste", "cluster", "none", [[7, 61]], "seq2frame", 33.784, 251.284),
    "MotionBERT": ("motionbert", "none", "none", [], "seq2seq", 16.002, 131.094),
    "HoT w. MotionBERT": ("motionbert", "cluster", "attention", [[1, 81]], "seq2seq", 16.348, 63.209),
    "MotionAGFormer": ("motionagformer", "none", "none", [], "seq2seq", 11.724, 95.922),
    "HoT w. MotionAGFormer": ("motionagformer", "cluster", "attention", [[7, 81]], "seq2seq", 11.828, 60.521),
    "MHFormer": ("mhformer", "none", "none", [], "seq2frame", 31.516, 14.146),
    "TPC w. MHFormer": ("mhformer", "cluster", "none", [[1, 117]], "seq2frame", 31.516, 8.220),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_params_and_gflops(name):
    backbone, pruner, recoverer, schedule, pipeline, params_m, gflops = REFERENCE[name]
    torch.manual_seed(0)
    model = create_hourglass(backbone, "paper", pruner, recoverer, schedule, pipeline)
    clip = torch.randn(1, model.num_frames, 17, model.backbone.in_chans)
    assert count_params(model) == pytest.approx(params_m, abs=0.001)
    report = count_flops(model, (clip,))
    assert report.gflops == pytest.approx(gflops, rel=1e-3)
    assert report.gflops_total > report.gflops
    assert report.uncounted_ops == []
