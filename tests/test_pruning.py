"""backbones.hourglass.pruning: the four pruners' selection rules, checked against hand-built inputs and
an independent per-sample DPC-kNN implementation."""
import math

import pytest
import torch

from backbones.hourglass import PRUNERS, KeepPruner, PruneContext, list_pruners
from backbones.hourglass.pruning import TIE_BREAK

pytestmark = pytest.mark.usefixtures("one_thread")

# every registered keep-type pruner (registry-driven: a new one is exercised here with no edit)
PRUNER_NAMES = [n for n in list_pruners() if n != "none" and issubclass(PRUNERS.get(n), KeepPruner)]
T, J = 27, 17
CENTRE = (T - 1) // 2  # 13


def _ctx(inputs, global_idx=None, seed=0, attn=None, centre=None):
    B, n = inputs.shape[0], inputs.shape[1] if global_idx is None else global_idx.shape[1]
    if global_idx is None:
        global_idx = torch.arange(n).expand(B, n)
    return PruneContext(inputs=inputs, global_idx=global_idx, generator=torch.Generator().manual_seed(seed),
                        attn=attn, centre=centre)


def _random_case(B=3, n=T, seed=0):
    """Random frame features, a 2D clip and a valid softmax attention (B, J, H, n, n)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, n, 16, generator=g)
    inputs = torch.randn(B, T, J, 2, generator=g)
    attn = torch.randn(B, J, 2, n, n, generator=g).softmax(-1)
    return feats, inputs, attn


def _select(name, feats, k, inputs, global_idx=None, seed=0, attn=None, centre=None):
    return PRUNERS.build(name).select(feats, k, _ctx(inputs, global_idx, seed, attn, centre))


def _check_valid(idx, B, k, n):
    assert idx.shape == (B, k)
    assert idx.dtype == torch.long
    assert ((idx >= 0) & (idx < n)).all()
    if k > 1:
        assert (idx[:, 1:] > idx[:, :-1]).all(), "not strictly ascending (sorted + unique)"


def test_registered_pruners():
    assert {"cluster", "attention", "uniform", "motion", "random"} <= set(PRUNER_NAMES)
    assert PRUNERS.build("attention").needs_attention
    assert not any(PRUNERS.build(n).needs_attention for n in ("cluster", "uniform", "motion"))


@pytest.mark.parametrize("name", PRUNER_NAMES)
@pytest.mark.parametrize("k", [1, 5, 9, 26, 27])
@pytest.mark.parametrize("centre", [None, CENTRE])
def test_exactly_k_sorted_unique_in_range(name, k, centre):
    feats, inputs, attn = _random_case()
    idx = _select(name, feats, k, inputs, attn=attn, centre=centre)
    _check_valid(idx, 3, k, T)
    if centre is not None:
        assert (idx == CENTRE).any(-1).all(), "seq2frame must force-keep the centre frame"
    if k == T:
        assert (idx == torch.arange(T)).all()


@pytest.mark.parametrize("name", PRUNER_NAMES)
def test_later_stage_with_global_indices(name):
    """Second stage: 14 current tokens holding global frames 0, 2, ..., 26 (centre 13 is not even, so
    use a subset that holds it)."""
    gidx = torch.tensor([0, 2, 4, 6, 8, 10, 12, 13, 15, 17, 19, 21, 23, 26]).expand(3, 14)
    feats, inputs, attn = _random_case(n=14)
    for centre in (None, CENTRE):
        idx = _select(name, feats, 5, inputs, global_idx=gidx, attn=attn, centre=centre)
        _check_valid(idx, 3, 5, 14)
        if centre is not None:
            assert (gidx.gather(1, idx) == CENTRE).any(-1).all()


@pytest.mark.parametrize("name", PRUNER_NAMES)
def test_same_seed_same_selection(name):
    feats, inputs, attn = _random_case(seed=1)
    a = _select(name, feats, 9, inputs, attn=attn, seed=7)
    b = _select(name, feats.clone(), 9, inputs.clone(), attn=attn.clone(), seed=7)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", PRUNER_NAMES)
def test_selection_carries_no_gradient(name):
    feats, inputs, attn = _random_case()
    feats.requires_grad_(True)
    idx = _select(name, feats, 9, inputs, attn=attn)
    assert not idx.requires_grad


# --- cluster (TPC) -------------------------------------------------------------------------------

SEGMENTS = [(0, 6), (6, 13), (13, 20), (20, 27)]


def _four_clusters(seed, B=4):
    """(B, 27, 16) float32: four tight clusters (spread 0.01) around centres ~N(0, 1), one per segment."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(SEGMENTS), 16, generator=g)
    feats = torch.empty(B, T, 16)
    for c, (a, b) in enumerate(SEGMENTS):
        feats[:, a:b] = centres[c] + 0.01 * torch.randn(B, b - a, 16, generator=g)
    return feats


def _dpc_knn_reference(x, k, centre=None, k_neighbours=2, jitter=None):
    """Straightforward DPC-kNN on one sample x (n, C) in float64 (as in the official HoT `cluster_dpc_knn`); `jitter` (n,)
    is added to rho as the official `rho += rand * 1e-6`."""
    x = x.double()
    n, C = x.shape
    d = [[math.sqrt(float(((x[i] - x[j]) ** 2).sum())) / math.sqrt(C) for j in range(n)] for i in range(n)]
    rho = [math.exp(-sum(v ** 2 for v in sorted(row)[:k_neighbours]) / k_neighbours) for row in d]
    if jitter is not None:
        rho = [r + j for r, j in zip(rho, jitter)]
    dmax = max(max(row) for row in d)
    delta = []
    for i in range(n):
        denser = [d[i][j] for j in range(n) if rho[j] > rho[i]]
        delta.append(min(denser) if denser else dmax)
    score = [r * dl for r, dl in zip(rho, delta)]
    order = sorted((i for i in range(n) if i != centre), key=lambda i: -score[i])
    kept = order[:k] if centre is None else order[:k - 1] + [centre]
    return sorted(kept), score, rho


@pytest.mark.parametrize("centre", [None, CENTRE])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cluster_matches_independent_dpc_knn(seed, centre):
    """The jitter is not negligible for DPC-kNN with k=2 (self included): rho depends only on the
    nearest-neighbour distance, so two mutual nearest neighbours have *exactly* equal rho and the jitter
    decides which of them is the denser one (the other gets delta = their distance). The reference
    therefore adds the same seeded jitter (`ctx.noise`, scaled by TIE_BREAK). float64 features keep
    the jitter from being rounded away (see the float32 tie tests below)."""
    k, B = 9, 4
    feats = torch.randn(B, T, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = PRUNERS.build("cluster").select(feats, k, _ctx(torch.zeros(B, T, J, 2), seed=seed, centre=centre))
    jitter = _ctx(torch.zeros(B, T, J, 2), seed=seed).noise((B, T)).double() * TIE_BREAK
    for b in range(B):
        kept, ref_score, rho = _dpc_knn_reference(feats[b], k, centre, jitter=jitter[b].tolist())
        # the comparison is meaningful: densities are all distinct and the cut is not a near-tie
        rs = sorted(rho)
        assert min(y - x for x, y in zip(rs, rs[1:])) > 1e-12
        ss = sorted((s for i, s in enumerate(ref_score) if i != centre), reverse=True)
        kk = k if centre is None else k - 1
        assert ss[kk - 1] - ss[kk] > 1e-9
        assert got[b].tolist() == kept


def test_cluster_keeps_one_representative_per_tight_cluster():
    """Four tight, far-apart clusters laid out as contiguous segments of different lengths (float64:
    the float32 version follows)."""
    for seed in range(5):
        feats = _four_clusters(seed).double()
        idx = _select("cluster", feats, 4, torch.zeros(4, T, J, 2), seed=seed)
        for row in idx.tolist():
            assert [sum(a <= i < b for i in row) for a, b in SEGMENTS] == [1, 1, 1, 1], row


def test_cluster_same_seed_reproduces_and_seed_changes_exact_ties():
    """Two pairs of identical frames: all densities tie exactly and only the jitter orders them."""
    a, b = torch.zeros(8), torch.ones(8)
    feats = torch.stack([a, a, b, b])[None]                   # (1, 4, 8)
    inputs = torch.zeros(1, 4, J, 2)
    picks = set()
    for seed in range(12):
        idx = _select("cluster", feats, 2, inputs, seed=seed)
        assert torch.equal(idx, _select("cluster", feats, 2, inputs, seed=seed))  # reproducible
        picks.add(tuple(idx[0].tolist()))
    assert len(picks) > 1, "the seed never changed the pick among exact ties"


def test_cluster_exact_ties_keep_one_frame_per_pair():
    a, b = torch.zeros(8), torch.ones(8)
    feats = torch.stack([a, a, b, b])[None]                   # (1, 4, 8)
    for seed in range(12):
        row = _select("cluster", feats, 2, torch.zeros(1, 4, J, 2), seed=seed)[0].tolist()
        assert row[0] in (0, 1) and row[1] in (2, 3), (seed, row)


def test_cluster_keeps_one_representative_per_tight_cluster_float32():
    for seed in range(20):
        idx = _select("cluster", _four_clusters(seed), 4, torch.zeros(4, T, J, 2), seed=seed)
        for row in idx.tolist():
            assert [sum(a <= i < b for i in row) for a, b in SEGMENTS] == [1, 1, 1, 1], (seed, row)


def test_cluster_is_translation_invariant():
    # features on a 2**-10 grid and an offset of 16: feats + 16 is exact in float32, so exact pairwise
    # differences (hence distances, rho, delta and the selection) are bit-identical
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        feats = torch.randint(-1024, 1024, (8, T, 32), generator=g).float() / 1024
        inputs = torch.zeros(8, T, J, 2)
        assert torch.equal(_select("cluster", feats, 9, inputs), _select("cluster", feats + 16, 9, inputs))


@pytest.mark.parametrize("dtype, work", [(torch.float32, torch.float64), (torch.bfloat16, torch.float32)])
def test_cluster_exact_distances_work_one_precision_above_the_features(monkeypatch, dtype, work):
    """'exact' distances: float64 for float32 features; float32 for bf16 ones (bf16's own rounding is far
    above float32's, and float64 cost a bf16 forward a fifth of its time). Both agree with a float64
    reference to the features' rounding, with a large shared offset (which cancels in the mm formula)."""
    seen = []
    real = torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda a, b, **kw: seen.append(a.dtype) or real(a, b, **kw))
    g = torch.Generator().manual_seed(0)
    feats = (torch.randn(2, T, 64, generator=g) + 100).to(dtype)
    dist = PRUNERS.build("cluster")._pairwise(feats)
    assert seen == [work] and dist.dtype == dtype
    x = feats.double()
    ref = ((x[:, :, None] - x[:, None]) ** 2).sum(-1).sqrt() / 8
    torch.testing.assert_close(dist.double(), ref, atol=0, rtol=1e-6 if dtype == torch.float32 else 8e-3)


def test_cluster_k_neighbours_option():
    """k_neighbours=1 counts only the point itself: every density is exp(0)=1, ties everywhere; the
    pruner still returns k valid indices."""
    feats, inputs, _ = _random_case()
    idx = PRUNERS.build("cluster", k_neighbours=1).select(feats, 5, _ctx(inputs))
    _check_valid(idx, 3, 5, T)


# --- attention (TPA) -----------------------------------------------------------------------------

def test_attention_picks_the_most_attended_tokens():
    """Every query of every joint and head gives half its weight uniformly and half to one of the
    columns {3, 8, 20} (cycling over queries). Joint 0 additionally sends everything to column 15,
    which is the most received for that joint alone but not on average over the 17 joints."""
    B, H, n = 2, 2, T
    attn = torch.full((B, J, H, n, n), 0.5 / n)
    targets = [3, 8, 20]
    for q in range(n):
        attn[..., q, targets[q % 3]] += 0.5
    attn[:, 0] = 0.0
    attn[:, 0, :, :, 15] = 1.0
    torch.testing.assert_close(attn.sum(-1), torch.ones(B, J, H, n))
    feats = torch.randn(B, n, 8)
    idx = _select("attention", feats, 3, torch.zeros(B, T, J, 2), attn=attn)
    assert idx.tolist() == [targets] * B
    # keep 4: column 15 is next (received 1/17 + 0.5/27*16/17 on average vs 0.5/27 elsewhere)
    idx = _select("attention", feats, 4, torch.zeros(B, T, J, 2), attn=attn)
    assert idx.tolist() == [[3, 8, 15, 20]] * B


def test_attention_seq2frame_keeps_centre():
    attn = torch.full((1, J, 1, T, T), 1.0 / T)
    attn[..., 5] += 1.0
    attn = attn / attn.sum(-1, keepdim=True)
    idx = _select("attention", torch.randn(1, T, 8), 2, torch.zeros(1, T, J, 2), attn=attn, centre=CENTRE)
    assert idx.tolist() == [[5, CENTRE]]


def test_attention_without_weights_raises():
    with pytest.raises(RuntimeError, match="no attention weights"):
        _select("attention", torch.randn(1, T, 8), 3, torch.zeros(1, T, J, 2))


# --- motion (TPMo) -------------------------------------------------------------------------------

def _step_clip(jumps, B=2, n=T):
    """A 2D clip that is static except for rigid jumps of the whole pose at the given frames
    ({frame: size}); the backward difference is non-zero exactly at those frames."""
    step = torch.zeros(n)
    for t, size in jumps.items():
        step[t] = size
    pos = step.cumsum(0)                                       # (n,) displacement along x
    clip = torch.randn(1, 1, J, 2, generator=torch.Generator().manual_seed(0)).expand(B, n, J, 2).clone()
    clip[..., 0] += pos[None, :, None]
    return clip


def test_motion_picks_the_frames_that_move_most():
    clip = _step_clip({4: 1.0, 10: 3.0, 17: 2.0, 23: 0.5, 25: 0.1})
    feats = torch.randn(2, T, 8)
    assert _select("motion", feats, 4, clip).tolist() == [[4, 10, 17, 23]] * 2
    assert _select("motion", feats, 2, clip).tolist() == [[10, 17]] * 2


def test_motion_frame_zero_takes_frame_one_motion():
    clip = _step_clip({1: 5.0, 9: 1.0})
    idx = _select("motion", torch.randn(2, T, 8), 2, clip)
    assert idx.tolist() == [[0, 1]] * 2


def test_motion_uses_confidence_free_xy_only():
    clip = _step_clip({6: 1.0, 12: 2.0})
    conf = torch.rand(2, T, J, 1) * 100  # a wildly varying confidence channel must be ignored
    idx = _select("motion", torch.randn(2, T, 8), 2, torch.cat([clip, conf], dim=-1))
    assert idx.tolist() == [[6, 12]] * 2


def test_motion_later_stage_reads_global_frames():
    """Tokens hold even frames 0..26; the largest jump is at the odd (already pruned) frame 7. Motion must
    be read at each token's global frame: keep frames 10 and 16 = local positions 5 and 8."""
    clip = _step_clip({7: 10.0, 10: 2.0, 16: 3.0, 20: 0.5})
    gidx = torch.arange(0, T, 2).expand(2, 14)
    idx = _select("motion", torch.randn(2, 14, 8), 2, clip, global_idx=gidx)
    assert idx.tolist() == [[5, 8]] * 2
    assert gidx.gather(1, idx).tolist() == [[10, 16]] * 2


def test_motion_seq2frame_keeps_centre():
    clip = _step_clip({4: 1.0, 10: 3.0, 17: 2.0})
    idx = _select("motion", torch.randn(2, T, 8), 3, clip, centre=CENTRE)
    assert idx.tolist() == [[10, CENTRE, 17]] * 2


def test_motion_central_difference_and_bad_option():
    # a spike: the pose is displaced at frame 10 only. Backward difference: frames 10 and 11 both move 2.
    # Central difference (backward + forward) / 2: frame 9 -> 1, frame 10 -> 2, frame 11 -> 1.
    clip = _step_clip({10: 2.0, 11: -2.0})
    central = PRUNERS.build("motion", difference="central")
    assert central.select(torch.randn(2, T, 8), 1, _ctx(clip)).tolist() == [[10]] * 2
    assert central.select(torch.randn(2, T, 8), 3, _ctx(clip)).tolist() == [[9, 10, 11]] * 2
    assert _select("motion", torch.randn(2, T, 8), 2, clip).tolist() == [[10, 11]] * 2
    with pytest.raises(ValueError, match="backward, central"):
        PRUNERS.build("motion", difference="forward")


# --- uniform (TPS) -------------------------------------------------------------------------------

def test_uniform_hand_checked():
    # round(linspace(0, 26, 9)) = round(0, 3.25, 6.5, 9.75, 13, 16.25, 19.5, 22.75, 26), halves to even
    idx = _select("uniform", torch.randn(2, T, 8), 9, torch.zeros(2, T, J, 2))
    assert idx.tolist() == [[0, 3, 6, 10, 13, 16, 20, 23, 26]] * 2
    idx = _select("uniform", torch.randn(1, T, 8), 3, torch.zeros(1, T, J, 2))
    assert idx.tolist() == [[0, 13, 26]]


@pytest.mark.parametrize("n, k", [(27, 2), (27, 14), (243, 81), (243, 61), (81, 27), (10, 4)])
def test_uniform_is_round_linspace(n, k):
    expected = [round(i * (n - 1) / (k - 1)) for i in range(k)]
    idx = _select("uniform", torch.randn(1, n, 8), k, torch.zeros(1, n, J, 2))
    assert idx[0].tolist() == expected
    gaps = torch.diff(idx[0])
    assert gaps.max() - gaps.min() <= 1  # evenly spaced


def test_uniform_seq2frame_moves_nearest_onto_centre():
    # k=4: round(0, 8.67, 17.33, 26) = 0, 9, 17, 26; 9 and 17 are both 4 from 13: the first moves
    idx = _select("uniform", torch.randn(1, T, 8), 4, torch.zeros(1, T, J, 2), centre=CENTRE)
    assert idx.tolist() == [[0, CENTRE, 17, 26]]
    # k=9 already contains 13: unchanged
    idx = _select("uniform", torch.randn(1, T, 8), 9, torch.zeros(1, T, J, 2), centre=CENTRE)
    assert idx.tolist() == [[0, 3, 6, 10, 13, 16, 20, 23, 26]]


def test_uniform_ignores_the_seed():
    feats = torch.randn(1, T, 8)
    a = _select("uniform", feats, 7, torch.zeros(1, T, J, 2), seed=0)
    b = _select("uniform", feats, 7, torch.zeros(1, T, J, 2), seed=99)
    assert torch.equal(a, b)


def test_none_pruner_refuses_to_prune():
    with pytest.raises(RuntimeError):
        _select("none", torch.randn(1, T, 8), 3, torch.zeros(1, T, J, 2))
