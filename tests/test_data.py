"""bench.data: skeleton constants, camera geometry, loading (names, VideoPose3D paths) and splits."""
import numpy as np
import pytest

from bench.data import load_dataset, load_split, sequences_from_motion, split_sequences
from bench.data.camera import (camera_to_world, look_at_camera, matrix_to_quat, normalize_screen, project_to_2d,
                               project_world, quat_to_matrix, ring_cameras, world_to_camera)
from bench.data.h36m import H36M_ACTIONS, action_class, h36m_cameras, write_positions_2d, write_positions_3d
from bench.data.skeleton import (H36M_32_TO_17, H36M_EXTRINSICS, H36M_INTRINSICS, JOINT_NAMES, LEFT, PARENTS,
                                 RIGHT)
from bench.data.synthetic import synthetic_motion

# ---------------------------------------------------------------- skeleton


def test_skeleton_constants_are_consistent():
    assert len(JOINT_NAMES) == len(PARENTS) == 17
    assert PARENTS == (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
    assert all(PARENTS[j] < j for j in range(1, 17))                 # parents precede children
    for l, r in zip(LEFT, RIGHT):                                    # pairs mirror each other by name
        assert JOINT_NAMES[l].replace("left", "") == JOINT_NAMES[r].replace("right", "")
    removed = sorted(set(range(32)) - set(H36M_32_TO_17))
    assert removed == [4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31]
    assert [c["id"] for c in H36M_INTRINSICS] == ["54138969", "55011271", "58860488", "60457274"]
    assert sorted(H36M_EXTRINSICS) == ["S1", "S11", "S5", "S6", "S7", "S8", "S9"]
    for cams in H36M_EXTRINSICS.values():
        assert len(cams) == 4
        for c in cams:
            assert abs(np.linalg.norm(c["orientation"]) - 1) < 1e-6


# ---------------------------------------------------------------- camera


def test_quaternion_matrix_round_trip():
    rng = np.random.default_rng(0)
    qs = rng.normal(size=(50, 4))
    qs = np.concatenate([qs, [[1e-9, 1, 0, 0], [0, 0, 1, 1e-9], [0, 0.6, 0, 0.8]]])  # ~180 degree turns
    for q in qs:
        q = q / np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        R = quat_to_matrix(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(matrix_to_quat(R), q, atol=1e-9)


def test_quaternion_rotates_like_axis_angle():
    q = [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]                 # +90 degrees about z
    np.testing.assert_allclose(quat_to_matrix(q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_world_camera_round_trip():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 17, 3))
    q, t = H36M_EXTRINSICS["S9"][2]["orientation"], np.array(H36M_EXTRINSICS["S9"][2]["translation_mm"]) / 1000
    np.testing.assert_allclose(camera_to_world(world_to_camera(X, q, t), q, t), X, atol=1e-12)
    # rotation keeps distances between points
    Xc = world_to_camera(X, q, t)
    np.testing.assert_allclose(np.linalg.norm(Xc[0, 1] - Xc[0, 2]), np.linalg.norm(X[0, 1] - X[0, 2]))


def test_look_at_puts_target_at_principal_point_and_up_at_top():
    cam_pos, target = np.array([0.0, -5.0, 1.6]), np.array([0.0, 0.0, 1.6])   # looking along +y
    q = look_at_camera(cam_pos, target)
    intr = H36M_INTRINSICS[0]
    np.testing.assert_allclose(world_to_camera(target, q, cam_pos), [0, 0, 5], atol=1e-12)
    for distort in (True, False):
        np.testing.assert_allclose(project_to_2d(world_to_camera(target, q, cam_pos), intr, distort),
                                   intr["center"], atol=1e-9)
    # without distortion (whose tangential term shifts points slightly sideways) directions are exact
    above = project_to_2d(world_to_camera(target + [0, 0, 0.5], q, cam_pos), intr, distort=False)
    right = project_to_2d(world_to_camera(target + [0.5, 0, 0], q, cam_pos), intr, distort=False)
    assert above[1] < intr["center"][1] and above[0] == pytest.approx(intr["center"][0])
    assert right[0] > intr["center"][0] and right[1] == pytest.approx(intr["center"][1])  # +x is right facing +y


def test_look_at_rejects_degenerate_views():
    with pytest.raises(ValueError, match="coincide"):
        look_at_camera([1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="parallel"):
        look_at_camera([0, 0, 5], [0, 0, 0])


def test_convention_matches_real_h36m_calibration():
    """With q = camera->world, every real H36M camera sees the capture centre near the image centre,
    has its y axis pointing down, and look_at_camera reproduces its orientation (tiny roll aside)."""
    for subject in H36M_EXTRINSICS:
        for cam in h36m_cameras(subject):
            px = project_world(np.array([0.0, 0.0, 0.9]), cam)
            assert 300 < px[0] < 700 and 300 < px[1] < 700, (subject, cam["id"], px)
            R = quat_to_matrix(cam["orientation"])
            assert R[2, 1] < -0.9                                           # camera y = world down
            t = np.array(cam["translation_m"])
            q = look_at_camera(t, t + R[:, 2])
            assert np.abs(q - np.asarray(cam["orientation"])).max() < 0.05


def test_distortion_formula_by_hand():
    intr = {"focal": (1000.0, 900.0), "center": (500.0, 400.0), "radial": (0.1, 0.01, 0.001),
            "tangential": (0.01, 0.02)}
    X = np.array([0.2, 0.4, 2.0])                         # x/z = 0.1, y/z = 0.2, r2 = 0.05
    # radial = 1 + 0.005 + 0.000025 + 1.25e-7; tan = 0.01*0.1 + 0.02*0.2 = 0.005
    xd = 0.1 * (1.005025125 + 0.005) + 0.01 * 0.05
    yd = 0.2 * (1.005025125 + 0.005) + 0.02 * 0.05
    np.testing.assert_allclose(project_to_2d(X, intr), [1000 * xd + 500, 900 * yd + 400], rtol=1e-12)
    np.testing.assert_allclose(project_to_2d(X, intr, distort=False), [600.0, 580.0])
    with pytest.raises(ValueError, match="behind the camera"):
        project_to_2d(np.array([0.0, 0.0, -1.0]), intr)


def test_normalize_screen():
    out = normalize_screen(np.array([[0.0, 0.0], [1000.0, 1002.0], [500.0, 501.0]]), 1000, 1002)
    np.testing.assert_allclose(out, [[-1, -1.002], [1, 1.002], [0, 0]])
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        normalize_screen(np.zeros((3, 3)), 1000, 1000)


def test_ring_cameras_look_at_target_from_the_requested_places():
    target = np.array([1.0, -2.0, 1.1])
    cams = ring_cameras(target, distance=5.0, height=1.6, azimuths_deg=(0, 90, 180, 270))
    for cam, (dx, dy) in zip(cams, [(5, 0), (0, 5), (-5, 0), (0, -5)]):
        np.testing.assert_allclose(cam["translation_m"], target + [dx, dy, 0.5] - [0, 0, 0], atol=1e-12)
        np.testing.assert_allclose(project_world(target, cam), cam["center"], atol=1e-9)
    with pytest.raises(ValueError, match="one per camera"):
        ring_cameras(target, distance=5, height=1.6, azimuths_deg=(0, 90))


# ---------------------------------------------------------------- preprocessing and loading


def test_sequences_from_motion_is_camera_frame_root_relative():
    motion = synthetic_motion(num_sequences=1, frames=30, seed=3)
    seqs = sequences_from_motion(motion)
    assert [(s.subject, s.action, s.camera) for s in seqs] == [("synthetic", "synthetic_0", c) for c in range(4)]
    world = motion.positions_3d["synthetic"]["synthetic_0"]
    for s in seqs:
        cam = motion.cameras["synthetic"]["synthetic_0"][s.camera]
        X = world_to_camera(world, cam["orientation"], cam["translation_m"])
        assert s.pos3d.dtype == np.float32 and s.pos2d.dtype == np.float32
        assert np.all(s.pos3d[:, 0] == 0)
        np.testing.assert_allclose(s.pos3d, X - X[:, :1], atol=1e-5)
        # the 2D input is the (normalised) projection of the same camera-frame points
        px = project_to_2d(X, cam)
        np.testing.assert_allclose(s.pos2d, normalize_screen(px, cam["res_w"], cam["res_h"]), atol=1e-5)
        assert s.fps == 50.0 and len(s) == 30


def test_camera_selection():
    seqs = sequences_from_motion(synthetic_motion(2, 10, 0), cameras=[1, 3])
    assert [s.camera for s in seqs] == [1, 3, 1, 3]
    with pytest.raises(ValueError, match="camera index 4 out of range"):
        sequences_from_motion(synthetic_motion(1, 10, 0), cameras=[4])


def _broken(kind):
    motion = synthetic_motion(num_sequences=2, frames=20, seed=0)
    if kind == "shape3d":
        motion.positions_3d["synthetic"]["synthetic_1"] = np.zeros((20, 16, 3))
    elif kind == "nan3d":
        motion.positions_3d["synthetic"]["synthetic_1"][5, 3, 0] = np.nan
    elif kind == "nan2d":
        motion.positions_2d["synthetic"]["synthetic_1"][2][0, 0, 1] = np.nan
    elif kind == "short2d":
        motion.positions_2d["synthetic"]["synthetic_1"][0] = motion.positions_2d["synthetic"]["synthetic_1"][0][:19]
    elif kind == "missing2d":
        del motion.positions_2d["synthetic"]["synthetic_1"]
    return motion


@pytest.mark.parametrize("kind,needle", [("shape3d", r"shape \(20, 16, 3\)"), ("nan3d", "NaN"), ("nan2d", "camera 2"),
                                         ("short2d", "T2 >= 20"), ("missing2d", "missing 2D")])
def test_bad_arrays_raise_one_line_naming_the_action(kind, needle):
    with pytest.raises(ValueError, match=needle) as err:
        sequences_from_motion(_broken(kind))
    msg = str(err.value)
    assert "'synthetic_1'" in msg and "\n" not in msg


def test_unknown_name_and_bad_paths():
    with pytest.raises(ValueError, match=r"unknown dataset 'h36mm'.*realmocap"):
        load_dataset("h36mm")
    with pytest.raises(ValueError, match=r"dataset 'h36m' needs paths="):
        load_dataset("h36m")
    with pytest.raises(ValueError, match=r"paths has no \['2d'\]"):
        load_dataset("h36m", paths={"3d": "a.npz"})
    with pytest.raises(ValueError, match=r"unknown paths keys \['3D'\]"):
        load_dataset("h36m", paths={"3D": "a.npz", "2d": "b.npz"})
    with pytest.raises(ValueError, match="only for dataset 'h36m'"):
        load_dataset("realmocap", paths={"3d": "a.npz", "2d": "b.npz"})
    with pytest.raises(ValueError, match="expected \\(path_3d, path_2d"):
        load_dataset(["only_one.npz"])


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match="realmocap_3d.npz not found.*bench.data.realmocap prepare"):
        load_dataset("realmocap", files_dir=tmp_path)
    with pytest.raises(ValueError, match="nope_3d.npz not found.*VideoPose3D/blob/main/DATASETS.md"):
        load_dataset((tmp_path / "nope_3d.npz", tmp_path / "nope_2d.npz"))
    with pytest.raises(ValueError, match=r"^data file \S*data_3d_h36m.npz not found; get it by following [^\n]*$"):
        load_dataset("h36m", paths={"3d": tmp_path / "data_3d_h36m.npz", "2d": tmp_path / "data_2d_h36m_gt.npz"})


def _write_fake_h36m(tmp_path):
    """Tiny VideoPose3D-format files: 32-joint 3D for S1 and S9, 2D 3 frames longer than the 3D."""
    rng = np.random.default_rng(0)
    p3d, p2d = {}, {}
    for subject in ("S1", "S9"):
        world = rng.normal(scale=0.3, size=(12, 32, 3)) + [0, 0, 1.0]
        p3d[subject] = {"Walking 1": world.astype(np.float32)}
        cams = h36m_cameras(subject)
        p2d[subject] = {"Walking 1": [project_world(np.concatenate([world, world[-3:]]), c).astype(np.float32)
                                      for c in cams]}
        p2d[subject]["Walking 1"] = [np.asarray(a)[:, list(H36M_32_TO_17)] for a in p2d[subject]["Walking 1"]]
    write_positions_3d(tmp_path / "data_3d_h36m.npz", p3d)
    write_positions_2d(tmp_path / "data_2d_h36m_gt.npz", p2d)
    return p3d


def test_h36m_format_files_load_with_32_to_17_and_truncation(tmp_path):
    p3d = _write_fake_h36m(tmp_path)
    paths = (str(tmp_path / "data_3d_h36m.npz"), str(tmp_path / "data_2d_h36m_gt.npz"))
    seqs = load_dataset(paths)
    assert len(seqs) == 8 and all(s.pos2d.shape == (12, 17, 2) and s.pos3d.shape == (12, 17, 3) for s in seqs)
    s = next(s for s in seqs if s.subject == "S9" and s.camera == 1)
    cam = h36m_cameras("S9")[1]
    X = world_to_camera(p3d["S9"]["Walking 1"][:, list(H36M_32_TO_17)], cam["orientation"], cam["translation_m"])
    np.testing.assert_allclose(s.pos3d, X - X[:, :1], atol=1e-5)
    train, test = load_split(paths)                                   # Human3.6M protocol: by subject
    assert {s.subject for s in train} == {"S1"} and {s.subject for s in test} == {"S9"}


def _official_files(tmp_path, T3=5, extra_2d=2):
    """Files built exactly as VideoPose3D's prepare_data_h36m.py writes them (np.savez, uncompressed)."""
    world = np.zeros((T3, 32, 3), dtype=np.float32)
    world[:, :, 2] = 1.0                                  # every joint 1 m above the floor ...
    world[:, 1] = [0.0, 0.0, 1.0 + 0.1]                   # ... except the right hip, 10 cm higher
    world[:, :, 0] = np.arange(T3)[:, None] * 0.01        # the whole body drifts along x
    px = np.arange((T3 + extra_2d) * 17 * 2, dtype=np.float32).reshape(T3 + extra_2d, 17, 2)
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d={"S1": {"Walking 1": world}, "S9": {"WalkDog": world},
                                                          "S11": {"Directions": world}})
    np.savez(tmp_path / "data_2d_h36m_cpn_ft_h36m_dbb.npz",
             positions_2d={s: {a: [px, px, px, px]} for s, a in (("S1", "Walking 1"), ("S9", "WalkDog"),
                                                                 ("S11", "Directions"))},
             metadata={"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": [[4, 5, 6, 11, 12, 13],
                                                                                       [1, 2, 3, 14, 15, 16]]})
    return {"3d": tmp_path / "data_3d_h36m.npz", "2d": tmp_path / "data_2d_h36m_cpn_ft_h36m_dbb.npz"}


def test_official_format_camera_transform_by_hand(tmp_path):
    paths = _official_files(tmp_path)
    seqs = load_dataset("h36m", paths=paths)
    assert len(seqs) == 12 and {s.pos2d.shape for s in seqs} == {(5, 17, 2)}       # CPN 2D truncated 7 -> 5
    s = next(s for s in seqs if s.subject == "S1" and s.camera == 0)
    # S1 camera 54138969: q = (w, x, y, z), t in mm. R = rotation matrix of q (camera -> world);
    # camera coords of the 10 cm vertical root->hip offset are R^T @ (0, 0, 0.1) = 0.1 * third row of R.
    w, x, y, z = 0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088
    n = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    third_row = np.array([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)])
    np.testing.assert_allclose(s.pos3d[:, 1], np.tile(0.1 * third_row, (5, 1)), atol=1e-6)
    np.testing.assert_allclose(s.pos3d[:, 0], 0.0)                                  # root-relative
    np.testing.assert_allclose(s.pos3d[:, 2:], 0.0, atol=1e-6)                      # other joints sit on the root
    # 2D: X / w * 2 - [1, h / w] with camera 0's 1000 x 1002 image
    np.testing.assert_allclose(s.pos2d[0, 0], [0 / 1000 * 2 - 1, 1 / 1000 * 2 - 1.002], atol=1e-6)
    np.testing.assert_allclose(s.pos2d[4, 16], [(4 * 34 + 32) / 500 - 1, (4 * 34 + 33) / 500 - 1.002], atol=1e-6)
    s2 = next(s for s in seqs if s.subject == "S1" and s.camera == 1)               # 1000 x 1000 camera
    np.testing.assert_allclose(s2.pos2d[0, 0, 1], 1 / 500 - 1.0, atol=1e-6)
    train, test = load_split("h36m", paths=paths)
    assert {s.subject for s in train} == {"S1"} and {s.subject for s in test} == {"S9", "S11"}
    assert sorted({action_class(s.action) for s in test}) == ["Directions", "WalkDog"]


def test_official_format_2d_shorter_than_3d_is_rejected(tmp_path):
    paths = _official_files(tmp_path, extra_2d=-1)
    with pytest.raises(ValueError, match=r"subject 'S1' action 'Walking 1' camera 0: .*T2 >= 5"):
        load_dataset("h36m", paths=paths)


@pytest.mark.parametrize("name, cls", [
    ("Walking 1", "Walking"), ("Walking", "Walking"), ("WalkDog 1", "WalkDog"), ("WalkingDog", "WalkDog"),
    ("WalkTogether 2", "WalkTogether"), ("TakingPhoto 1", "Photo"), ("Photo", "Photo"),
    ("SittingDown 2", "SittingDown"), ("Sitting 1", "Sitting"), ("climb_3", "climb_3"),
])
def test_action_class(name, cls):
    assert action_class(name) == cls


def test_action_classes_cover_the_15_protocol_actions():
    names = [f"{a} {i}" for a in H36M_ACTIONS for i in (1, 2)] + ["TakingPhoto", "WalkingDog"]
    assert sorted({action_class(n) for n in names}) == sorted(H36M_ACTIONS) and len(H36M_ACTIONS) == 15
    with pytest.raises(ValueError, match="not a non-empty string"):
        action_class("")


def test_h36m_cameras_unknown_subject():
    with pytest.raises(ValueError, match="no Human3.6M camera calibration for subject 'S2'"):
        h36m_cameras("S2")


# ---------------------------------------------------------------- splits


def test_realmocap_default_split_is_by_whole_sequence():
    train, test = load_split("realmocap")
    assert {s.action for s in train} == {"climb_0", "climb_1", "climb_2", "backflip", "cartwheel", "crawl", "dance_a",
                                         "dance_b", "getup_facedown", "getup_faceup", "roll", "spin", "spinkick"}
    assert len(train) == 52 and len(test) == 28                       # 4 cameras each
    assert {(s.subject, s.action) for s in test} == {("climbA", "climb_3"), ("climbB", "climb_4"), *(
        ("deepmimic", a) for a in ("walk", "run", "kick", "punch", "jump"))}
    assert {s.subject for s in train} == {"climbA", "deepmimic"}     # both sources on both sides


def test_split_is_a_parameter_and_is_checked():
    seqs = load_dataset("synthetic")
    train, test = split_sequences(seqs, train=["synthetic_0"], test=["synthetic_5", "synthetic_4"])
    assert {s.action for s in train} == {"synthetic_0"} and {s.action for s in test} == {"synthetic_4", "synthetic_5"}
    train, test = load_split("realmocap", split={"by": "subject", "train": ["climbA"], "test": ["climbB"]})
    assert len(train) == 16 and len(test) == 4
    with pytest.raises(ValueError, match="in both train and test"):
        split_sequences(seqs, ["synthetic_0"], ["synthetic_0"])
    with pytest.raises(ValueError, match=r"\['synthetic_9'\] not found"):
        split_sequences(seqs, ["synthetic_9"], ["synthetic_0"])
    with pytest.raises(ValueError, match="by='action' or by='subject'"):
        split_sequences(seqs, [], [], by="frame")
    with pytest.raises(ValueError, match="the test split is empty"):
        split_sequences(seqs, ["synthetic_0"], ["synthetic_9"], strict=False)
    train, test = split_sequences(seqs, ["synthetic_0", "synthetic_9"], ["synthetic_1"], strict=False)
    assert {s.action for s in train} == {"synthetic_0"}
