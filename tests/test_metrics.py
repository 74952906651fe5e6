"""Pose metrics against hand-computed cases."""
import numpy as np
import pytest

from bench.metrics import aggregate_seeds, flip_poses, mean_over_actions, mpjpe, mpjve, p_mpjpe


def _rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def test_constant_offset_is_the_offset_in_mm():
    target = np.random.default_rng(0).normal(size=(5, 17, 3))
    offset = np.array([0.03, -0.04, 0.0])  # 50 mm
    assert mpjpe(target + offset, target) == pytest.approx(50.0)


def test_p_mpjpe_zero_under_rotation_scale_translation():
    target = np.random.default_rng(1).normal(size=(4, 17, 3))
    pred = 1.7 * target @ _rot([1, 2, 3], 0.9).T + np.array([0.5, -1.0, 2.0])
    assert mpjpe(pred, target) > 100
    assert p_mpjpe(pred, target) == pytest.approx(0.0, abs=1e-6)


def test_p_mpjpe_does_not_undo_a_reflection():
    target = np.random.default_rng(2).normal(size=(3, 17, 3))
    mirrored = target * np.array([-1.0, 1.0, 1.0])
    # a proper rotation cannot map a generic pose onto its mirror image
    assert p_mpjpe(mirrored, target) > 1.0


def test_p_mpjpe_at_most_mpjpe():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(6, 17, 3))
    pred = target + 0.05 * rng.normal(size=target.shape)
    assert p_mpjpe(pred, target) <= mpjpe(pred, target) + 1e-9


def test_mpjve_of_constant_offset_is_zero_and_of_drift_is_the_step():
    target = np.random.default_rng(4).normal(size=(10, 17, 3))
    assert mpjve(target + 0.1, target) == pytest.approx(0.0, abs=1e-9)
    drift = target + np.arange(10)[:, None, None] * np.array([0.002, 0.0, 0.0])
    assert mpjve(drift, target) == pytest.approx(2.0)


def test_mean_over_actions_is_unweighted_across_actions():
    rows = [("walk", 10.0, 100), ("walk", 20.0, 300), ("sit", 40.0, 10)]
    mean, per = mean_over_actions(rows)
    assert per == {"walk": pytest.approx(17.5), "sit": pytest.approx(40.0)}
    assert mean == pytest.approx((17.5 + 40.0) / 2)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same"):
        mpjpe(np.zeros((2, 17, 3)), np.zeros((2, 16, 3)))


def test_p_mpjpe_mirror_of_a_planar_pose_is_a_rotation():
    # for a pose in the z=0 plane, the mirror x -> -x equals a 180 degree turn about y: a proper rotation
    target = np.random.default_rng(5).normal(size=(2, 17, 3)) * np.array([1.0, 1.0, 0.0])
    mirrored = target * np.array([-1.0, 1.0, 1.0])
    assert mpjpe(mirrored, target) > 100
    assert p_mpjpe(mirrored, target) == pytest.approx(0.0, abs=1e-6)


def test_flip_poses_mirrors_x_swaps_sides_and_is_an_involution():
    poses = np.random.default_rng(6).normal(size=(4, 17, 3))
    flipped = flip_poses(poses)
    assert flipped[:, 4, 0] == pytest.approx(-poses[:, 1, 0])      # left hip <- mirrored right hip
    assert flipped[:, 16, 1:] == pytest.approx(poses[:, 13, 1:])    # right wrist <- left wrist, y/z kept
    assert flipped[:, 0, 0] == pytest.approx(-poses[:, 0, 0])       # centre joints stay, mirrored
    assert flip_poses(flipped) == pytest.approx(poses)
    with pytest.raises(ValueError, match="17-joint"):
        flip_poses(np.zeros((2, 16, 2)))


def _rec(seed, mpjpe_mm, pruner="none", status="ok"):
    return {"pruner": pruner, "seed": seed, "status": status, "mpjpe_mm": mpjpe_mm,
            "p_mpjpe_mm": None if mpjpe_mm is None else mpjpe_mm / 2,
            "mpjve_mm": 1.0}


def test_aggregate_seeds_mean_std_n():
    recs = [_rec(0, 10.0), _rec(1, 12.0), _rec(2, 14.0), _rec(0, 30.0, "cluster"),
            _rec(1, 99.0, "cluster", status="failed"), _rec(2, None, "cluster")]
    rows = aggregate_seeds(recs, keys=["pruner"])
    assert [r["pruner"] for r in rows] == ["none", "cluster"]
    base, clus = rows
    assert base["n_seeds"] == 3 and base["mpjpe_mm_mean"] == pytest.approx(12.0)
    assert base["mpjpe_mm_std"] == pytest.approx(2.0) and base["p_mpjpe_mm_std"] == pytest.approx(1.0)
    assert base["mpjve_mm_std"] == 0.0
    assert clus["n_seeds"] == 1 and clus["mpjpe_mm_mean"] == 30.0 and np.isnan(clus["mpjpe_mm_std"])
    pd = pytest.importorskip("pandas")
    assert aggregate_seeds(pd.DataFrame(recs[:3]), keys=["pruner"])[0]["mpjpe_mm_mean"] == pytest.approx(12.0)
    with pytest.raises(ValueError, match="remove 'seed'"):
        aggregate_seeds(recs, keys=["pruner", "seed"])
