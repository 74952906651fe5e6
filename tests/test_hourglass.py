"""backbones.hourglass.model: every pruner x recoverer x schedule on tiny MixSTE, seq2frame, global indices,
replay, one-line configuration errors, and the paper-size parameter parity (counted on the official HoT code)."""
import itertools

import pytest
import torch

from backbones import build_hourglass, create, create_hourglass, list_backbones
from backbones.hourglass import PRUNERS as REG_PRUNERS
from backbones.hourglass import check_hourglass, compatible_recoverers, list_pruners, list_recoverers
from backbones.registry import backbone_pipelines

pytestmark = pytest.mark.usefixtures("one_thread")

# registry-driven: a newly registered strategy is exercised here with no edit
PRUNERS = [p for p in list_pruners() if p != "none"]
FRAME_PRUNERS = [p for p in PRUNERS if REG_PRUNERS.get(p).produces != "spectral"]  # tokens that stand at frames
PAIRS = [(p, r) for p in PRUNERS for r in compatible_recoverers(p)]
SCHEDULES = {"one": [[1, 9]], "hierarchical": [[1, 18], [2, 9]]}
T, J, CENTRE = 27, 17, 13


def _tiny(pruner="none", recoverer="none", schedule=(), pipeline="seq2seq", seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_hourglass(create("mixste", preset="tiny"), pruner, recoverer, schedule, pipeline, **kwargs)


def _clip(B=2, seed=0, chans=2):
    return torch.randn(B, T, J, chans, generator=torch.Generator().manual_seed(seed))


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def _check_indices(stage_idx, schedule, B=2, centre=None):
    assert [i.shape for i in stage_idx] == [(B, k) for _, k in schedule]
    prev = torch.arange(T).expand(B, T)
    for idx in stage_idx:
        assert ((idx >= 0) & (idx < T)).all()
        assert (idx[:, 1:] > idx[:, :-1]).all()                        # sorted, unique
        assert all(set(r.tolist()) <= set(p.tolist()) for r, p in zip(idx, prev))  # indices compose
        if centre is not None:
            assert (idx == centre).any(-1).all()
        prev = idx


@pytest.mark.parametrize("schedule", list(SCHEDULES), ids=list(SCHEDULES))
@pytest.mark.parametrize("pruner,recoverer", PAIRS)
def test_seq2seq_grid_forward_backward(pruner, recoverer, schedule):
    if len(SCHEDULES[schedule]) > (REG_PRUNERS.get(pruner).max_stages or 9):
        pytest.skip(f"{pruner} runs at most {REG_PRUNERS.get(pruner).max_stages} stage(s)")
    model = _tiny(pruner, recoverer, SCHEDULES[schedule])
    x = _clip()
    y, stage_idx = model.forward_with_index(x)
    assert y.shape == (2, T, J, 3)
    assert torch.isfinite(y).all()
    if pruner in FRAME_PRUNERS:
        _check_indices(stage_idx, SCHEDULES[schedule])
    y.pow(2).mean().backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.backbone.Spatial_patch_to_embedding.weight.grad.abs().sum() > 0
    if recoverer == "attention":
        assert model.recoverer.x_token.grad.abs().sum() > 0
    # the per-stage positional embeddings are zero-initialised, one per stage, sized by its tokens
    assert [tuple(p.shape) for p in model.pos_embed_token] == [(1, k, model.backbone.embed_dim) for _, k in SCHEDULES[schedule]]
    assert all(torch.count_nonzero(p.detach()) == 0 for p in model.pos_embed_token)
    assert all(p.grad is not None for p in model.pos_embed_token)


@pytest.mark.parametrize("schedule", list(SCHEDULES), ids=list(SCHEDULES))
@pytest.mark.parametrize("pruner", [p for p in PRUNERS if "seq2frame" in REG_PRUNERS.get(p).pipelines])
def test_seq2frame_returns_the_centre_frame(pruner, schedule):
    model = _tiny(pruner, "none", SCHEDULES[schedule], "seq2frame")
    assert model.centre == CENTRE and model.frames_out == 1
    assert model.pos_embed_token is None                               # off for seq2frame (HoT tpc_mixste.py)
    x = _clip()
    y, stage_idx = model.forward_with_index(x)
    assert y.shape == (2, 1, J, 3)
    assert torch.isfinite(y).all()
    _check_indices(stage_idx, SCHEDULES[schedule], centre=CENTRE)
    y.sum().backward()
    # the output is the head applied at the centre frame's position among the kept frames
    model.eval()
    with torch.no_grad():
        y, stage_idx = model.forward_with_index(x)
        kept, kept_idx = model.forward_with_index(x, kept_only=True)
        assert kept.shape == (2, SCHEDULES[schedule][-1][1], J, 3)
        pos = (stage_idx[-1] == CENTRE).nonzero()[:, 1]
        torch.testing.assert_close(y[:, 0], kept[torch.arange(2), pos])
        assert all(torch.equal(a, b) for a, b in zip(stage_idx, kept_idx))


@pytest.mark.parametrize("pruner", PRUNERS)
@pytest.mark.parametrize("pipeline", ["seq2seq", "seq2frame"])
def test_replaying_indices_reproduces_the_output(pruner, pipeline):
    """The trace of a pass replays it exactly: on the same input, and on another one (flip-TTA style)."""
    cls = REG_PRUNERS.get(pruner)
    if pipeline not in cls.pipelines:
        pytest.skip(f"{pruner} supports {cls.pipelines}")
    recoverer = compatible_recoverers(pruner)[0] if pipeline == "seq2seq" else "none"
    schedule = SCHEDULES["hierarchical"] if (cls.max_stages or 2) >= 2 else SCHEDULES["one"]
    model = _tiny(pruner, recoverer, schedule, pipeline).eval()
    x, other = _clip(seed=0), _clip(seed=1)
    with torch.no_grad():
        y, stage_idx = model.forward_with_index(x)
        y_replay, replay_idx = model.forward_with_index(x, indices=stage_idx)
        assert torch.equal(y_replay, y)
        assert all(torch.equal(a, b) for a, b in zip(replay_idx, stage_idx))
        # flip-TTA style: another input forced onto the first input's frames keeps exactly those frames
        _, forced_idx = model.forward_with_index(other, indices=stage_idx)
        assert all(torch.equal(a, b) for a, b in zip(forced_idx, stage_idx))


@pytest.mark.parametrize("pruner", PRUNERS)
def test_same_seed_same_selection_and_output(pruner):
    schedule = SCHEDULES["hierarchical"] if (REG_PRUNERS.get(pruner).max_stages or 2) >= 2 else SCHEDULES["one"]
    model = _tiny(pruner, "attention", schedule).eval()
    x = _clip()
    with torch.no_grad():
        y1, idx1 = model.forward_with_index(x)
        y2, idx2 = model.forward_with_index(x)
    assert torch.equal(y1, y2)
    assert all(torch.equal(a, b) for a, b in zip(idx1, idx2))


def test_uniform_hierarchical_indices_hand_checked():
    """27 -> round(linspace(0, 26, 18)) -> then 9 of those 18 positions, as global frames."""
    model = _tiny("uniform", "interpolation", SCHEDULES["hierarchical"]).eval()
    with torch.no_grad():
        _, (first, second) = model.forward_with_index(_clip())
    expected_first = [round(i * 26 / 17) for i in range(18)]
    local = [round(i * 17 / 8) for i in range(9)]
    assert first.tolist() == [expected_first] * 2
    assert second.tolist() == [[expected_first[p] for p in local]] * 2


def test_output_recoverers_agree_on_kept_frames():
    """Interpolation and nearest run the same head on the same kept tokens: identical poses at the kept
    global frames, different elsewhere."""
    x = _clip()
    outs = {}
    for rec in ("interpolation", "nearest"):
        model = _tiny("uniform", rec, [[2, 9]]).eval()
        with torch.no_grad():
            outs[rec], (idx,) = model.forward_with_index(x)
    kept = idx[0]
    torch.testing.assert_close(outs["interpolation"][:, kept], outs["nearest"][:, kept])
    dropped = [t for t in range(T) if t not in kept.tolist()]
    assert not torch.allclose(outs["interpolation"][:, dropped], outs["nearest"][:, dropped])


def test_fresh_tra_predicts_one_pose_per_joint_for_all_frames():
    """TRA's queries are zero at init, so all T recovered tokens (and poses) of a joint coincide."""
    model = _tiny("cluster", "attention", [[1, 9]]).eval()
    with torch.no_grad():
        y = model(_clip())
    torch.testing.assert_close(y, y[:, :1].expand_as(y), atol=1e-5, rtol=0)


def test_unpruned_wrapper_equals_backbone():
    model = _tiny().eval()
    x = _clip()
    with torch.no_grad():
        y, stage_idx = model.forward_with_index(x)
        assert stage_idx == []
        torch.testing.assert_close(y, model.backbone(x), atol=1e-6, rtol=1e-6)
    seq2frame = build_hourglass(model.backbone, pipeline="seq2frame").eval()
    with torch.no_grad():
        torch.testing.assert_close(seq2frame(x), model.backbone(x)[:, CENTRE:CENTRE + 1], atol=1e-6, rtol=1e-6)


def test_wrong_clip_length():
    with pytest.raises(ValueError, match="built for 27"):
        _tiny("cluster", "attention", [[1, 9]])(torch.randn(1, 30, J, 2))


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_and_pipeline_through_create_hourglass(name):
    """create_hourglass builds any registered family (frame-sized layers sized from the schedule)."""
    for pipeline in backbone_pipelines(name):
        recoverer = "attention" if pipeline == "seq2seq" else "none"
        torch.manual_seed(0)
        model = create_hourglass(name, "tiny", "cluster", recoverer, SCHEDULES["hierarchical"], pipeline)
        x = _clip(chans=model.backbone.in_chans)
        y, stage_idx = model.forward_with_index(x)
        assert y.shape == (2, model.frames_out, J, 3), pipeline
        assert torch.isfinite(y).all()
        _check_indices(stage_idx, SCHEDULES["hierarchical"], centre=CENTRE if pipeline == "seq2frame" else None)
        y.pow(2).mean().backward()


# --- configuration errors: one line, naming the fix or the valid choices ------------------------

@pytest.mark.parametrize("kwargs, words", [
    (dict(pruner="none", schedule=[[1, 9]], recoverer="attention"), "drop the schedule or pick a pruner"),
    (dict(pruner="cluster", recoverer="attention"), "needs a schedule"),
    (dict(pruner="cluster", schedule=[[1, 9]]), f"pick recoverer={' | '.join(compatible_recoverers('cluster'))}"),
    (dict(pruner="cluster", schedule=[[1, 9]], recoverer="interpolation", pipeline="seq2frame"),
     "use recoverer=none"),
    (dict(pruner="cluster", schedule=[[4, 9]], recoverer="attention"), "schedule stage 1 [4, 9]"),
    (dict(pruner="cluster", schedule=[[1, 28]], recoverer="attention"), "schedule stage 1 [1, 28]"),
])
def test_bad_combinations(kwargs, words):
    with pytest.raises(ValueError) as err:
        build_hourglass(create("mixste", preset="tiny"), **kwargs)
    assert words in _one_line(err)


@pytest.mark.parametrize("kind, kwargs, valid", [
    ("pruner", dict(pruner="clustr", schedule=[[1, 9]], recoverer="attention"), list_pruners()),
    ("recoverer", dict(pruner="cluster", schedule=[[1, 9]], recoverer="tra"), list_recoverers()),
    ("pipeline", dict(pipeline="seq2many"), ["seq2seq", "seq2frame"]),
])
def test_unknown_names_list_the_valid_ones(kind, kwargs, valid):
    with pytest.raises(ValueError) as err:
        build_hourglass(create("mixste", preset="tiny"), **kwargs)
    msg = _one_line(err)
    assert msg.startswith(f"unknown {kind} ")
    listed = msg.split(f"valid {kind}s:")[1]
    assert all(v in listed for v in valid)


def test_errors_raise_before_building_in_create_hourglass():
    with pytest.raises(ValueError) as err:
        create_hourglass("poseformer", "tiny", "cluster", "attention", [[1, 9]], "seq2seq")
    assert "seq2frame" in _one_line(err)
    with pytest.raises(ValueError) as err:
        create_hourglass("mixste", "tiny", "cluster", "attention", [[1, 9]], backbone_args={"dept": 3})
    assert "dept" in _one_line(err)


def test_valid_combinations_pass_the_check():
    for pruner, recoverer in PAIRS:
        assert check_hourglass(4, T, pruner, recoverer, [[1, 9]]).as_list() == [[1, 9]]
    for pruner, recoverer in itertools.product(PRUNERS, list_recoverers()):  # the rest: one line with the fix
        if (pruner, recoverer) not in PAIRS and recoverer != "none":
            with pytest.raises(ValueError, match=f"pick recoverer={' [|] '.join(compatible_recoverers(pruner))}"):
                check_hourglass(4, T, pruner, recoverer, [[1, 9]])
    assert check_hourglass(4, T) == ()


# --- parameter parity with the published figures (counted on the official code) (building only: forward at paper size is slow) ---

@pytest.fixture(scope="module")
def paper_mixste():
    torch.manual_seed(0)
    return create("mixste", preset="paper")


def _params_m(model):
    return sum(p.numel() for p in model.parameters()) / 1e6


def test_hot_mixste_params(paper_mixste):
    model = build_hourglass(paper_mixste, "cluster", "attention", [[3, 81]])
    assert _params_m(model) == pytest.approx(35.000, abs=0.001)
    # the added 1.216 M = TRA 4 (512^2 + 512) + 243 * 512 and the stage embedding 81 * 512 (official HoT code)
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in paper_mixste.parameters()) \
        == 4 * (512 * 512 + 512) + 243 * 512 + 81 * 512


def test_tpc_mixste_seq2frame_params(paper_mixste):
    model = build_hourglass(paper_mixste, "cluster", "none", [[7, 61]], "seq2frame")
    assert _params_m(model) == pytest.approx(33.784, abs=0.001)
