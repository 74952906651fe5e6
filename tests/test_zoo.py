"""Every backbone x every pruner x every recoverer x one- and two-stage schedules, in every pipeline the
family supports, builds and runs forward (tiny presets; new families are covered with no new code)."""
import pytest
import torch

from backbones import backbone_config, create_hourglass, list_backbones
from backbones.registry import backbone_pipelines

PRUNERS = ["cluster", "attention", "uniform", "motion"]


def _schedules(depth, frames):
    one = [[1, frames // 3]]
    two = [[1, (2 * frames) // 3], [min(2, depth - 1), frames // 3]] if depth > 2 else None
    return {"one": one, "two": two}


CASES = []
for name in list_backbones():
    cfg = backbone_config(name, "tiny")
    for pipeline in backbone_pipelines(name):
        recoverers = ["attention", "interpolation", "nearest"] if pipeline == "seq2seq" else ["none"]
        for stages, sched in _schedules(cfg.depth, cfg.num_frames).items():
            for pruner in PRUNERS:
                for rec in recoverers:
                    CASES.append(pytest.param(name, pipeline, pruner, rec, sched,
                                              id=f"{name}-{pipeline}-{pruner}-{rec}-{stages}"))


@pytest.mark.parametrize("name,pipeline,pruner,recoverer,schedule", CASES)
def test_combination_forward(name, pipeline, pruner, recoverer, schedule):
    torch.manual_seed(0)
    model = create_hourglass(name, "tiny", pruner, recoverer, schedule, pipeline).eval()
    x = torch.randn(2, model.num_frames, 17, model.backbone.in_chans)
    with torch.no_grad():
        out, stages = model.forward_with_index(x)
    frames = model.num_frames if pipeline == "seq2seq" else 1
    assert out.shape == (2, frames, 17, 3)
    assert torch.isfinite(out).all()
    assert [s.shape[1] for s in stages] == [k for _, k in schedule]
    if pipeline == "seq2frame":
        centre = (model.num_frames - 1) // 2
        assert all((s == centre).any(dim=1).all() for s in stages)
