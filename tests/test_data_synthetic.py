"""bench.data.synthetic: seeded, skeleton-consistent, labelled synthetic, shaped like the real loader."""
import numpy as np

from bench.data import Sequence, load_dataset, make_synthetic_dataset
from bench.data.camera import project_world
from bench.data.skeleton import PARENTS
from bench.data.synthetic import TEMPLATE_OFFSETS, synthetic_motion, synthetic_world_motion

BONES = np.linalg.norm(TEMPLATE_OFFSETS[1:], axis=1)


def test_dataset_is_labelled_and_shaped_like_the_loader():
    seqs = make_synthetic_dataset(num_sequences=3, frames=40, seed=1)
    assert len(seqs) == 3 * 4 and all(isinstance(s, Sequence) for s in seqs)
    assert {s.subject for s in seqs} == {"synthetic"}
    assert {s.action for s in seqs} == {"synthetic_0", "synthetic_1", "synthetic_2"}
    for s in seqs:
        assert s.pos2d.shape == (40, 17, 2) and s.pos3d.shape == (40, 17, 3) and s.fps == 50.0
        assert np.all(s.pos3d[:, 0] == 0)
    assert len(load_dataset("synthetic")) == 6 * 4                    # the named default


def test_seeded():
    a, b, c = (make_synthetic_dataset(2, 30, seed) for seed in (7, 7, 8))
    assert all(np.array_equal(x.pos2d, y.pos2d) and np.array_equal(x.pos3d, y.pos3d) for x, y in zip(a, b))
    assert not np.allclose(a[0].pos3d, c[0].pos3d)


def test_bone_lengths_are_fixed_and_motion_is_plausible():
    world = synthetic_world_motion(200, np.random.default_rng(0))
    bones = np.linalg.norm(world[:, 1:] - world[:, list(PARENTS[1:])], axis=-1)   # (T, 16)
    np.testing.assert_allclose(bones, np.broadcast_to(BONES, bones.shape), atol=1e-9)
    assert np.ptp(world[:, 10] - world[:, 0], axis=0).max() > 0.05      # the pose actually moves
    assert -0.15 < world[:, [3, 6], 2].min() and world[:, [3, 6], 2].max() < 0.7   # feet near the floor
    assert world[:, 10, 2].min() > 1.3                                   # head stays up
    # the subject faces where it walks, with its right hip on its right: forward = up x right
    right = world[:, 1] - world[:, 4]
    forward = np.cross([0.0, 0.0, 1.0], right)
    velocity = np.gradient(world[:, 0, :2], axis=0)
    assert np.mean(np.sum(forward[:, :2] * velocity, axis=1) > 0) > 0.9


def test_every_joint_is_inside_every_image():
    motion = synthetic_motion(num_sequences=4, frames=100, seed=2)
    for action, world in motion.positions_3d["synthetic"].items():
        for cam, px in zip(motion.cameras["synthetic"][action], motion.positions_2d["synthetic"][action]):
            assert px.min() > 0 and px[..., 0].max() < cam["res_w"] and px[..., 1].max() < cam["res_h"]
            np.testing.assert_allclose(px, project_world(world, cam), atol=1e-3)
