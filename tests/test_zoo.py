"""Every backbone x every registered pruner x every recoverer that can restore its tokens x one- and
two-stage schedules (as many as the pruner runs), in every pipeline the family and the pruner support,
builds and runs forward (tiny presets). Driven by the registries: a new family or strategy is covered
with no new code (`zoo_cases`, also used by the plug-in test)."""
import pytest
import torch

from backbones import backbone_config, create_hourglass, list_backbones
from backbones.hourglass import PRUNERS, compatible_recoverers, list_pruners
from backbones.registry import backbone_pipelines


def _schedules(depth, frames, max_stages=None):
    one = [[1, frames // 3]]
    two = [[1, (2 * frames) // 3], [min(2, depth - 1), frames // 3]] if depth > 2 else None
    return {"one": one, "two": two if (max_stages or 2) >= 2 else None}


def zoo_cases(pruners=None):
    """(backbone, pipeline, pruner, recoverer, schedule) of every valid combination on tiny presets."""
    cases = []
    for name in list_backbones():
        cfg = backbone_config(name, "tiny")
        for pruner in pruners or [p for p in list_pruners() if p != "none"]:
            p_cls = PRUNERS.get(pruner)
            for pipeline in backbone_pipelines(name):
                if pipeline not in p_cls.pipelines:
                    continue
                recoverers = compatible_recoverers(pruner) if pipeline == "seq2seq" else ["none"]
                for stages, sched in _schedules(cfg.depth, cfg.num_frames, p_cls.max_stages).items():
                    if sched is None:
                        continue
                    for rec in recoverers:
                        cases.append(pytest.param(name, pipeline, pruner, rec, sched,
                                                  id=f"{name}-{pipeline}-{pruner}-{rec}-{stages}"))
    return cases


def check_combination(name, pipeline, pruner, recoverer, schedule):
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


@pytest.mark.parametrize("name,pipeline,pruner,recoverer,schedule", zoo_cases())
def test_combination_forward(name, pipeline, pruner, recoverer, schedule):
    check_combination(name, pipeline, pruner, recoverer, schedule)
