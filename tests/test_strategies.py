"""The strategies beyond the papers' (random, merge + unmerge, dct + idct, position-aware TRA), what each
promises, and the plug-in contract: a strategy registered in one place runs everywhere with no other edit."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch

from backbones import create_hourglass
from backbones.hourglass import PRUNERS, RECOVERERS, KeepPruner, PruneContext, TokenState, check_hourglass
from backbones.hourglass.spectral import dct_basis
from bench import cli
from bench.store import ResultStore

pytestmark = pytest.mark.usefixtures("one_thread")

T, J = 27, 17
CENTRE = (T - 1) // 2


def _ctx(B=2, n=T, seed=0, centre=None, frames=None, sizes=None):
    frames = torch.arange(n).expand(B, n) if frames is None else frames
    return PruneContext(inputs=torch.zeros(B, T, J, 2), global_idx=frames, generator=torch.Generator().manual_seed(seed),
                        centre=centre, sizes=sizes)


# --- random -------------------------------------------------------------------------------------------

def test_random_is_uniform_without_replacement_and_seeded():
    pruner = PRUNERS.build("random")
    feats = torch.randn(2, T, 8)
    a = pruner.select(feats, 9, _ctx(seed=5))
    assert a.shape == (2, 9) and (a[:, 1:] > a[:, :-1]).all()              # k distinct frames, in order
    assert torch.equal(a, pruner.select(torch.randn(2, T, 8), 9, _ctx(seed=5)))  # same seed: same frames
    assert not torch.equal(a, pruner.select(feats, 9, _ctx(seed=6)))
    counts = torch.zeros(T)
    for seed in range(600):
        counts += torch.bincount(pruner.select(feats[:1], 9, _ctx(B=1, seed=seed))[0], minlength=T)
    expected = 600 * 9 / T                                                  # each frame with probability k/n
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all(), counts
    centre = pruner.select(feats, 9, _ctx(centre=CENTRE))
    assert (centre == CENTRE).any(-1).all()


def test_random_model_same_input_same_frames():
    model = create_hourglass("mixste", "tiny", "random", "interpolation", [[1, 9]]).eval()
    x = torch.randn(2, T, J, 2)
    with torch.no_grad():
        (_, a), (_, b) = model.forward_with_index(x), model.forward_with_index(x)
    assert torch.equal(a[0], b[0])


# --- merge + unmerge ----------------------------------------------------------------------------------

def test_merge_averages_the_most_similar_frames_weighted_by_size():
    """Frames 0-1 and 2-3 are identical pairs, 4-5 distinct: merging 6 -> 4 joins exactly the pairs, and a
    second stage weighs each token by the frames it already holds."""
    feats = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1], [1, 1], [-1, 1]])[None]
    merge = PRUNERS.build("merge")
    ctx = _ctx(B=1, n=6)
    tokens = torch.arange(6.0).reshape(1, 6, 1)
    out, plan = merge.reduce(tokens, feats, 4, ctx)
    state = merge.track(plan, TokenState.initial(1, 6, "cpu"))
    assert state.kind == "merged" and state.sizes.tolist() == [[2, 2, 1, 1]]
    assert state.assign.tolist() == [[0, 0, 1, 1, 2, 3]]                    # every frame lives in a token
    assert state.frames.tolist() == [[1, 3, 4, 5]]                          # each stands at its destination
    assert out.flatten().tolist() == [0.5, 2.5, 4.0, 5.0]
    # second stage (sources at even positions, destinations at odd ones): the first token (2 frames, mean
    # 0.5) is most similar to the second (2 frames, mean 2.5): together the mean of their 4 frames
    feats2 = torch.tensor([[1.0, 0], [1, 0.05], [0, 1], [-1, 1]])[None]
    ctx2 = _ctx(B=1, n=4, frames=state.frames, sizes=state.sizes)
    out2, plan2 = merge.reduce(out, feats2, 3, ctx2)
    state2 = merge.track(plan2, state)
    assert out2.flatten().tolist() == pytest.approx([(2 * 0.5 + 2 * 2.5) / 4, 4.0, 5.0])
    assert state2.sizes.tolist() == [[4, 1, 1]] and state2.assign.tolist() == [[0, 0, 0, 0, 1, 2]]
    assert state2.frames.tolist() == [[3, 4, 5]]


@pytest.mark.parametrize("schedule", [[[1, 9]], [[1, 18], [2, 9]], [[1, 3]]])
def test_merge_then_unmerge_covers_every_frame(schedule):
    model = create_hourglass("mixste", "tiny", "merge", "unmerge", schedule).eval()
    x = torch.randn(3, T, J, 2)
    with torch.no_grad():
        y, trace = model.forward_with_index(x)
        kept, _ = model.forward_with_index(x, kept_only=True)
    assert y.shape == (3, T, J, 3) and trace[-1].shape == (3, schedule[-1][1])
    # every output frame is the pose of one of the k merged tokens (unmerge copies), each token used
    matches = (y[:, :, None] == kept[:, None]).flatten(3).all(-1)            # (B, T, k)
    assert (matches.sum(-1) >= 1).all() and (matches.any(1)).all()
    assert (trace[-1][:, 1:] > trace[-1][:, :-1]).all()                      # tokens in temporal order


def test_merge_keeps_the_centre_a_token_of_its_own_for_seq2frame():
    merge = PRUNERS.build("merge")
    feats = torch.randn(4, T, 8)
    feats[:, CENTRE] = feats[:, CENTRE - 1]                                  # the centre's twin: would merge
    _, plan = merge.reduce(torch.randn(4, T, 5), feats, 5, _ctx(B=4, centre=CENTRE))
    state = merge.track(plan, TokenState.initial(4, T, "cpu"))
    assert (state.frames == CENTRE).any(-1).all()
    model = create_hourglass("mixste", "tiny", "merge", "none", [[1, 18], [2, 9]], pipeline="seq2frame").eval()
    with torch.no_grad():
        y, trace = model.forward_with_index(torch.randn(2, T, J, 2))
    assert y.shape == (2, 1, J, 3) and all((t == CENTRE).any(-1).all() for t in trace)


# --- dct + idct ---------------------------------------------------------------------------------------

def test_dct_basis_is_orthonormal_and_idct_inverts_it():
    D = dct_basis(T, T, dtype=torch.float64)
    torch.testing.assert_close(D @ D.T, torch.eye(T, dtype=torch.float64))
    x = torch.randn(2, T, J, 4)
    dct, idct = PRUNERS.build("dct"), RECOVERERS.build("idct")
    coeffs, k = dct.reduce(x, None, T, _ctx())
    torch.testing.assert_close(idct.recover(coeffs, None, T), x, atol=1e-5, rtol=1e-5)
    # a motion made of the lowest frequencies survives keeping only those
    smooth = 2.0 * D[0] + 0.5 * D[2]
    low, _ = dct.reduce(smooth.float().reshape(1, T, 1), None, 3, _ctx(B=1))
    torch.testing.assert_close(idct.recover(low, None, T).flatten(), smooth.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs,words", [
    (dict(recoverer="interpolation"), "recoverer 'interpolation' cannot restore the spectral tokens pruner 'dct' produces"),
    (dict(recoverer="nearest"), "pick recoverer=attention | idct"),
    (dict(recoverer="unmerge"), "cannot restore the spectral tokens"),
    (dict(recoverer="idct", schedule=[[1, 18], [2, 9]]), "runs at most 1 stage(s)"),
    (dict(recoverer="none", pipeline="seq2frame"), "supports pipeline seq2seq only"),
])
def test_dct_refuses_what_its_tokens_cannot_do(kwargs, words):
    kwargs = {"schedule": [[1, 9]], **kwargs}
    with pytest.raises(ValueError, match=None) as err:
        check_hourglass(4, T, "dct", **kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_unmerge_needs_merged_tokens():
    with pytest.raises(ValueError, match="recoverer 'unmerge' cannot restore the frames tokens pruner 'cluster'"):
        check_hourglass(4, T, "cluster", "unmerge", [[1, 9]])


# --- position-aware TRA -------------------------------------------------------------------------------

def test_position_aware_tra_uses_the_frames_positions():
    zeros = create_hourglass("mixste", "tiny", "uniform", "attention", [[1, 9]]).eval()
    pos = create_hourglass("mixste", "tiny", "uniform", "attention", [[1, 9]], recoverer_args={"query_init": "pos"}).eval()
    assert set(pos.state_dict()) == set(zeros.state_dict())                 # same parameters, official names
    pos.load_state_dict(zeros.state_dict())
    x = torch.randn(2, T, J, 2)
    with torch.no_grad():
        from backbones.hourglass.recovery import sinusoidal_positions  # sinusoid + the learned embedding

        torch.testing.assert_close(pos.temporal_positions(),
                                   sinusoidal_positions(T, pos.backbone.embed_dim) + pos.backbone.Temporal_pos_embed)
        pos.backbone.Temporal_pos_embed.normal_()                            # MixSTE's own temporal embedding
        a = pos(x)
        pos.backbone.Temporal_pos_embed.normal_()
        assert not torch.allclose(a, pos(x))
    # a family without a temporal embedding gets sinusoidal positions
    agf = create_hourglass("motionagformer", "tiny", "uniform", "attention", [[1, 9]], recoverer_args={"query_init": "pos"})
    p = agf.temporal_positions()
    assert p.shape == (1, agf.num_frames, agf.backbone.embed_dim) and torch.allclose(p[0, 0, 1::2], torch.ones(1))
    with pytest.raises(ValueError, match="cannot restore the spectral tokens"):
        check_hourglass(4, T, "dct", "attention", [[1, 9]], recoverer_args={"query_init": "pos"})


# --- options and the plug-in contract ----------------------------------------------------------------

@pytest.mark.parametrize("kind,name,args,words", [
    ("pruner", "cluster", {"k_neighbors": 3}, "unknown pruner option(s) k_neighbors for pruner 'cluster'; valid options: "
                                              "k_neighbours (default 2), distance (default 'exact')"),
    ("pruner", "cluster", {"distance": "l1"}, "pruner 'cluster' option distance must be one of exact, mm, got 'l1'"),
    ("pruner", "cluster", {"k_neighbours": "two"}, "option k_neighbours must be int"),
    ("pruner", "uniform", {"step": 2}, "valid options: none: it takes no options"),
    ("recoverer", "attention", {"query": "pos"}, "valid options: query_init (default 'zeros')"),
    ("recoverer", "interpolation", {"order": 2}, "unknown recoverer option(s) order"),
])
def test_strategy_options_are_typed(kind, name, args, words):
    with pytest.raises(ValueError) as err:
        check_hourglass(4, T, name if kind == "pruner" else "cluster", name if kind == "recoverer" else "interpolation",
                        [[1, 9]], **{f"{kind}_args": args})
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def every_other(monkeypatch):
    """A throwaway pruner registered at test time: one class, one decorator-equivalent, nothing else."""

    class EveryOther(KeepPruner):
        """Keeps k frames spread over the clip, a fixed stride apart (a test strategy)."""

        @dataclass(frozen=True)
        class Options:
            offset: int = 0

        def select(self, feats, k, ctx):
            B, n = feats.shape[:2]
            idx = (torch.arange(k) * n // k + self.options.offset).clamp(max=n - 1).expand(B, k).clone()
            if ctx.centre is not None:
                near = (idx - ctx.centre_mask().to(torch.uint8).argmax(-1, keepdim=True)).abs().argmin(-1, keepdim=True)
                idx = idx.scatter(1, near, ctx.centre_mask().to(torch.uint8).argmax(-1, keepdim=True)).sort(-1).values
            return idx

    monkeypatch.setitem(PRUNERS._entries, "every_other", EveryOther)
    return "every_other"


def test_a_throwaway_pruner_runs_through_the_zoo_and_the_cli(every_other, tmp_path, capsys):
    from tests.test_zoo import check_combination, zoo_cases

    cases = zoo_cases([every_other])
    assert len(cases) >= 10 and {c.values[1] for c in cases} == {"seq2seq", "seq2frame"}
    for case in cases:
        check_combination(*case.values)
    rc = cli.main(["run", "preset=tiny", f"pruner={every_other}", "recoverer=interpolation", "schedule=[[1,9]]",
                   "+pruner.args.offset=1", "metrics=[params,flops]", f"store={tmp_path}"])
    (rec,) = ResultStore(tmp_path).records()
    assert rc == 0 and rec["status"] == "ok" and rec["pruner"] == every_other and rec["gflops"] > 0
    assert rec["config"]["pruner"] == {"name": every_other, "args": {"offset": 1}}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pruner"] == every_other
    rc = cli.main(["run", "preset=tiny", f"pruner={every_other}", "recoverer=interpolation", "schedule=[[1,9]]",
                   "+pruner.args.ofset=1", "metrics=[params]", f"store={tmp_path / 'typo'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "unknown pruner option(s) ofset for pruner 'every_other'; valid options: offset" in err
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("pruner", [p for p in PRUNERS.names() if p != "none"])
def test_strategies_leave_the_nn_module_api_intact(pruner):
    """A strategy method named like an nn.Module method (apply, ...) would break `model.apply(fn)`,
    which initialisers and module-hook FLOP counters (thop) call on the whole model."""
    from backbones.hourglass import compatible_recoverers

    model = create_hourglass("mixste", "tiny", pruner, compatible_recoverers(pruner)[-1], [[1, 9]])
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert type(model.pruner).__name__ in seen and type(model.recoverer).__name__ in seen
