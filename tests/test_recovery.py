"""backbones.hourglass.recovery: TRA (attention), TRI (interpolation) and nearest, on hand-checked inputs."""
import pytest
import torch

from backbones.hourglass import RECOVERERS, TokenState, list_recoverers

pytestmark = pytest.mark.usefixtures("one_thread")

T, J, C = 27, 17, 64


def _idx(*rows):
    return torch.tensor(rows, dtype=torch.long)


def _kept(idx):
    """What the wrapper hands a recoverer after a keep-type stage: the kept frames (sorted)."""
    return TokenState(frames=idx, assign=None, sizes=torch.ones(idx.shape))


def test_registered_recoverers_and_levels():
    assert {"attention", "interpolation", "nearest", "none"} <= set(list_recoverers())
    assert RECOVERERS.build("attention", dim=C, num_frames=T, num_heads=4).level == "token"
    assert RECOVERERS.build("interpolation").level == "output"
    assert RECOVERERS.build("nearest").level == "output"
    assert RECOVERERS.build("none").level == "none"


# --- attention (TRA) -----------------------------------------------------------------------------

def test_tra_shape_zero_init_and_param_count():
    tra = RECOVERERS.build("attention", dim=C, num_frames=T, num_heads=4, qkv_bias=True)
    assert tra.x_token.shape == (1, T, C)
    assert torch.count_nonzero(tra.x_token) == 0
    # linear_q/k/v + proj (C*C + C each) + the full-length queries (T*C), as in the official HoT TRA
    assert sum(p.numel() for p in tra.parameters()) == 4 * (C * C + C) + T * C == 18368
    out = tra.recover(torch.randn(2, 9, J, C), _kept(_idx(*[list(range(0, 27, 3))] * 2)), T)
    assert out.shape == (2, T, J, C)
    assert torch.isfinite(out).all()


def test_tra_paper_param_count():
    tra = RECOVERERS.build("attention", dim=512, num_frames=243, num_heads=8)
    assert sum(p.numel() for p in tra.parameters()) == 4 * (512 * 512 + 512) + 243 * 512  # 1.175 M


def test_tra_is_per_joint_cross_attention_with_residual_queries():
    torch.manual_seed(0)
    tra = RECOVERERS.build("attention", dim=C, num_frames=T, num_heads=4).eval()
    with torch.no_grad():
        tra.x_token.normal_()  # non-trivial queries
    tokens = torch.randn(2, 9, J, C)
    idx = _idx(*[list(range(0, 27, 3))] * 2)
    with torch.no_grad():
        out = tra.recover(tokens, _kept(idx), T)
        q = tra.x_token.expand(2, T, C)
        for j in (0, 5, 16):
            kv = tokens[:, :, j]                                       # (B, k, C): joint j over time
            expected = q + tra.cross_attention(q, kv, kv)
            torch.testing.assert_close(out[:, :, j], expected, atol=1e-5, rtol=1e-5)
        # joints do not mix: changing joint 3's tokens changes only joint 3's output
        changed = tokens.clone()
        changed[:, :, 3] += 1.0
        out2 = tra.recover(changed, _kept(idx), T)
        others = [j for j in range(J) if j != 3]
        torch.testing.assert_close(out2[:, :, others], out[:, :, others])
        assert not torch.allclose(out2[:, :, 3], out[:, :, 3])


def test_tra_zero_queries_give_the_same_token_for_every_frame():
    """With x_token = 0 every query is linear_q's bias, so every recovered frame is identical."""
    tra = RECOVERERS.build("attention", dim=C, num_frames=T, num_heads=4).eval()
    with torch.no_grad():
        out = tra.recover(torch.randn(1, 9, J, C), _kept(_idx(list(range(0, 27, 3)))), T)
    torch.testing.assert_close(out, out[:, :1].expand_as(out), atol=1e-6, rtol=0)


def test_tra_backward_reaches_queries_and_tokens():
    tra = RECOVERERS.build("attention", dim=C, num_frames=T, num_heads=4)
    tokens = torch.randn(2, 9, J, C, requires_grad=True)
    tra.recover(tokens, _kept(_idx(*[list(range(0, 27, 3))] * 2)), T).pow(2).mean().backward()
    assert tra.x_token.grad is not None and tra.x_token.grad.abs().sum() > 0
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0


def test_tra_rejects_other_lengths():
    tra = RECOVERERS.build("attention", dim=C, num_frames=T, num_heads=4)
    with pytest.raises(ValueError, match="built for 27 frames"):
        tra.recover(torch.randn(1, 3, J, C), _kept(_idx([0, 1, 2])), 30)


# --- interpolation (TRI) -------------------------------------------------------------------------

def _linear_poses(B, n, seed=0):
    """Poses a + b * t, (B, n, J, 3)."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(B, 1, J, 3, generator=g), torch.randn(B, 1, J, 3, generator=g)
    t = torch.arange(n, dtype=torch.float32)[None, :, None, None]
    return a + b * t


@pytest.mark.parametrize("rows", [
    [[2, 5, 6, 11, 20], [0, 1, 13, 25, 26]],
    [[0, 26, 13, 7, 3], [4, 9, 14, 19, 24]],
    [[0, 8, 9, 10, 26], [12, 13, 14, 15, 16]],
])
def test_interpolation_exact_on_linear_motion(rows):
    idx = torch.tensor(rows).sort(dim=-1).values
    full = _linear_poses(2, T)
    kept = full[torch.arange(2)[:, None], idx]                        # head output on the kept frames
    out = RECOVERERS.build("interpolation").recover(kept, _kept(idx), T)
    assert out.shape == (2, T, J, 3)
    for b in range(2):
        first, last = idx[b, 0].item(), idx[b, -1].item()
        torch.testing.assert_close(out[b, first:last + 1], full[b, first:last + 1], atol=1e-5, rtol=1e-5)
        # outside the kept range the edge pose is copied (clamped), not extrapolated
        torch.testing.assert_close(out[b, :first], full[b, first].expand(first, J, 3))
        torch.testing.assert_close(out[b, last + 1:], full[b, last].expand(T - 1 - last, J, 3))


def test_interpolation_hand_checked():
    poses = torch.tensor([0.0, 8.0, 2.0]).reshape(1, 3, 1, 1).expand(1, 3, 1, 3)
    idx = _idx([1, 5, 7])
    out = RECOVERERS.build("interpolation").recover(poses, _kept(idx), 9)[0, :, 0, 0]
    assert out.tolist() == [0.0, 0.0, 2.0, 4.0, 6.0, 8.0, 5.0, 2.0, 2.0]


def test_interpolation_single_kept_frame_fills_everything():
    poses = torch.randn(1, 1, J, 3)
    out = RECOVERERS.build("interpolation").recover(poses, _kept(_idx([13])), T)
    assert torch.equal(out, poses.expand(1, T, J, 3))


def test_interpolation_gradient_flows_to_kept_poses():
    poses = torch.randn(1, 3, J, 3, requires_grad=True)
    RECOVERERS.build("interpolation").recover(poses, _kept(_idx([0, 4, 8])), 9).sum().backward()
    # frames 0..8 take weights: kept 0 -> 1 + 3/4 + 2/4 + 1/4, kept 4 -> 1 + 2 * (1/4 + 2/4 + 3/4), kept 8 -> like 0
    assert poses.grad[0, :, 0, 0].tolist() == [2.5, 4.0, 2.5]


# --- nearest -------------------------------------------------------------------------------------

def test_nearest_hand_checked():
    """Kept frames 2, 6, 11 of 14; each pose holds its frame number. A tie (frame 4: 2 away from both
    2 and 6) goes to the earlier kept frame."""
    idx = _idx([2, 6, 11])
    poses = idx.float().reshape(1, 3, 1, 1).expand(1, 3, J, 3)
    out = RECOVERERS.build("nearest").recover(poses, _kept(idx), 14)
    assert out[0, :, 0, 0].long().tolist() == [2, 2, 2, 2, 2, 6, 6, 6, 6, 11, 11, 11, 11, 11]
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))


def test_nearest_copies_the_nearest_kept_frame():
    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(T, generator=g)[:7].sort().values for _ in range(3)])
    poses = torch.randn(3, 7, J, 3, generator=g)
    out = RECOVERERS.build("nearest").recover(poses, _kept(idx), T)
    for b in range(3):
        for t in range(T):
            dist = (idx[b] - t).abs()
            src = int(torch.nonzero(dist == dist.min())[0])            # earliest of the nearest
            assert torch.equal(out[b, t], poses[b, src]), (b, t)


def test_output_recoverers_keep_kept_frames_exactly():
    idx = _idx([3, 4, 10, 20], [0, 9, 18, 26])
    poses = torch.randn(2, 4, J, 3)
    for name in ("interpolation", "nearest"):
        out = RECOVERERS.build(name).recover(poses, _kept(idx), T)
        assert torch.equal(out[torch.arange(2)[:, None], idx], poses), name
