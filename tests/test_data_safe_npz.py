"""bench.data.h36m's restricted npz reader: planted pickles never run, genuine VideoPose3D files still load.

Every payload below writes a marker file when unpickled by plain pickle (the control test shows it
does); each test asserts the marker was never written and the error is one line naming the file.
"""
import copyreg
import io
import os
import pickle
import pickletools
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench.data import load_dataset, load_split, npz
from bench.data.h36m import read_metadata, read_positions_2d, read_positions_3d
from bench.data.skeleton import KEYPOINTS_SYMMETRY

# What VideoPose3D's prepare_data_h36m.py stores under `metadata`.
VP3D_METADATA = {"num_joints": 17, "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]}
SUBJECT_ACTIONS = (("S1", "Walking 1"), ("S9", "WalkDog"))


class WriteMarker:
    """Unpickling this calls Path.write_text(marker, 'pwned')."""

    def __init__(self, marker):
        self.marker = Path(marker)

    def __reduce__(self):
        return Path.write_text, (self.marker, "pwned")


class ShellMarker:
    """Unpickling this runs `touch marker` through os.system."""

    def __init__(self, marker):
        self.marker = Path(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _write_marker(path):
    Path(path).write_text("pwned")


class ExtensionMarker:
    """Reduces to a module-level function, so a registered copyreg extension code can stand for it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return _write_marker, (self.marker,)


def _arrays(T=6):
    world = np.zeros((T, 32, 3), dtype=np.float32)
    world[:, :, 2] = 1.0
    world[:, :, 0] = np.arange(T)[:, None] * 0.01
    px = np.arange(T * 17 * 2, dtype=np.float32).reshape(T, 17, 2)
    return world, px


def _genuine(tmp_path, save=np.savez_compressed, positions_3d=None, positions_2d=None, metadata=None):
    """3D and 2D files written as prepare_data_h36m.py writes them; any part may be replaced."""
    world, px = _arrays()
    p3 = tmp_path / "data_3d_h36m.npz"
    p2 = tmp_path / "data_2d_h36m_gt.npz"
    save(p3, positions_3d={s: {a: world} for s, a in SUBJECT_ACTIONS} if positions_3d is None else positions_3d)
    save(p2, positions_2d={s: {a: [px] * 4} for s, a in SUBJECT_ACTIONS} if positions_2d is None else positions_2d,
         metadata=VP3D_METADATA if metadata is None else metadata)
    return p3, p2


def _npz_with_pickle(path, key, pickled: bytes):
    """An npz whose `key` member is a 0-d object .npy followed by exactly these pickle bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{key}.npy", buf.getvalue() + pickled)
    return path


def _one_line_error(err, path, *needles):
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


PAYLOADS = {"write_text": (WriteMarker, "pathlib"), "os_system": (ShellMarker, "system")}


# ---------------------------------------------------------------- the payloads are live


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_control_payloads_run_under_plain_np_load(tmp_path, payload):
    """Without the restricted reader these files do run code, so the tests below mean something."""
    make, _ = PAYLOADS[payload]
    marker = tmp_path / "marker"
    np.savez(tmp_path / "evil.npz", positions_3d={"S1": {"Walking 1": make(marker)}})
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as npz:
        npz["positions_3d"]
    assert marker.exists()
    marker.unlink()
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(make(marker)))
    np.load(tmp_path / "evil.pkl", allow_pickle=True)          # np.load's fallback to pickle.load
    assert marker.exists()


# ---------------------------------------------------------------- planted payloads are refused


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "inside-the-dict"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_planted_3d_payload_is_refused_and_never_runs(tmp_path, payload, nested):
    make, global_name = PAYLOADS[payload]
    marker = tmp_path / "marker"
    value = {"S1": {"Walking 1": make(marker)}} if nested else make(marker)
    p3, _ = _genuine(tmp_path, positions_3d=value)
    with pytest.raises(ValueError, match="which a VideoPose3D file never contains; refusing to load it") as err:
        read_positions_3d(p3)
    _one_line_error(err, p3, "'positions_3d' holds a pickled", global_name)
    assert not marker.exists()


def test_planted_2d_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    _, px = _arrays()
    _, p2 = _genuine(tmp_path, positions_2d={"S1": {"Walking 1": [px, px, WriteMarker(marker), px]}})
    with pytest.raises(ValueError, match="refusing to load it") as err:
        read_positions_2d(p2)
    _one_line_error(err, p2, "'positions_2d' holds a pickled pathlib")
    assert not marker.exists()


def test_planted_metadata_is_never_read_by_the_loader(tmp_path):
    """The Human3.6M loader does not open `metadata`, so a payload there cannot run (and loading works)."""
    marker = tmp_path / "marker"
    p3, p2 = _genuine(tmp_path, metadata=WriteMarker(marker))
    seqs = load_dataset("h36m", paths={"3d": p3, "2d": p2})
    assert len(seqs) == 8 and not marker.exists()
    with pytest.raises(ValueError, match="refusing to load it") as err:
        read_metadata(p2)                                        # the explicit reader refuses it too
    _one_line_error(err, p2, "'metadata' holds a pickled pathlib")
    assert not marker.exists()


@pytest.mark.parametrize("which", ["3d", "2d"])
def test_plain_pickle_file_is_refused_not_unpickled(tmp_path, which):
    marker = tmp_path / "marker"
    p3, p2 = _genuine(tmp_path)
    bad = {"3d": p3, "2d": p2}[which]
    bad.write_bytes(pickle.dumps(WriteMarker(marker)))
    with pytest.raises(ValueError, match=r"is not an npz \(zip\) file") as err:
        load_dataset("h36m", paths={"3d": p3, "2d": p2})
    _one_line_error(err, bad, "VideoPose3D/blob/main/DATASETS.md")
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["load_dataset", "load_split", "load_split_paths"])
@pytest.mark.parametrize("which", ["3d", "2d"])
def test_public_entry_points_refuse_planted_files(tmp_path, entry, which):
    marker = tmp_path / "marker"
    _, px = _arrays()
    if which == "3d":
        p3, p2 = _genuine(tmp_path, positions_3d={"S1": {"Walking 1": ShellMarker(marker)}})
    else:
        p3, p2 = _genuine(tmp_path, positions_2d={"S1": {"Walking 1": [WriteMarker(marker)] * 4}})
    call = {"load_dataset": lambda: load_dataset("h36m", paths={"3d": p3, "2d": p2}),
            "load_split": lambda: load_split("h36m", paths={"3d": p3, "2d": p2}),
            "load_split_paths": lambda: load_split((p3, p2))}[entry]
    with pytest.raises(ValueError, match="refusing to load it") as err:
        call()
    _one_line_error(err, {"3d": p3, "2d": p2}[which])
    assert not marker.exists()


def test_copyreg_extension_codes_are_refused_even_when_cached(tmp_path, monkeypatch):
    """EXT opcodes resolve through copyreg's cache without find_class; the parse-only pass refuses them."""
    marker = tmp_path / "marker"
    module, code = _write_marker.__module__, 0x7FFF_FF01
    copyreg.add_extension(module, "_write_marker", code)
    try:
        pickled = pickle.dumps(np.array({"S1": {"Walking 1": ExtensionMarker(marker)}}, dtype=object), protocol=2)
        assert "EXT4" in {op.name for op, _, _ in pickletools.genops(pickled)}  # the function is named by its code
        pickle.loads(pickle.dumps(_write_marker, protocol=2))   # now cached: find_class would be skipped
        p3 = _npz_with_pickle(tmp_path / "data_3d_h36m.npz", "positions_3d", pickled)
        with pytest.raises(ValueError, match="copyreg extension code") as err:
            read_positions_3d(p3)
        _one_line_error(err, p3, "refusing to load it")
        assert not marker.exists()
        monkeypatch.setattr(npz, "_refuse_extension_codes", lambda stream: None)
        with pytest.raises(ValueError):                          # control: find_class alone is bypassed ...
            read_positions_3d(p3)
        assert marker.exists()                                   # ... and the payload ran
    finally:
        copyreg.remove_extension(module, "_write_marker", code)


def test_malformed_members_are_one_line(tmp_path, monkeypatch):
    p3 = _npz_with_pickle(tmp_path / "trunc_3d.npz", "positions_3d",
                          pickle.dumps(np.array({"S1": {}}, dtype=object), protocol=4)[:-5])
    with pytest.raises(ValueError, match="'positions_3d' is not a readable .npy array") as err:
        read_positions_3d(p3)
    _one_line_error(err, p3)
    with zipfile.ZipFile(tmp_path / "nohdr_3d.npz", "w") as zf:
        zf.writestr("positions_3d.npy", b"not an npy file")
    with pytest.raises(ValueError, match="is not a readable .npy array") as err:
        read_positions_3d(tmp_path / "nohdr_3d.npz")
    _one_line_error(err, tmp_path / "nohdr_3d.npz")
    p3, p2 = _genuine(tmp_path)
    with pytest.raises(ValueError, match=r"has no key 'positions_3d' \(keys: \['positions_2d', 'metadata'\]\)"):
        read_positions_3d(p2)
    monkeypatch.setattr(npz, "_MAX_MEMBER_BYTES", 100)
    with pytest.raises(ValueError, match="unpacks to .* bytes, over this reader's 100 limit") as err:
        read_positions_3d(p3)
    _one_line_error(err, p3)


# ---------------------------------------------------------------- genuine files still load


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["savez", "savez_compressed"])
def test_genuine_videopose3d_files_load(tmp_path, save):
    p3, p2 = _genuine(tmp_path, save=save)
    world, px = _arrays()
    got3, got2 = read_positions_3d(p3), read_positions_2d(p2)
    assert sorted(got3) == ["S1", "S9"] and got3["S9"]["WalkDog"].dtype == np.float32
    np.testing.assert_array_equal(got3["S1"]["Walking 1"], world)
    assert len(got2["S9"]["WalkDog"]) == 4
    np.testing.assert_array_equal(got2["S9"]["WalkDog"][3], px)
    assert read_metadata(p2) == VP3D_METADATA
    seqs = load_dataset("h36m", paths={"3d": p3, "2d": p2})
    assert len(seqs) == 8 and {s.pos3d.shape for s in seqs} == {(6, 17, 3)}
    train, test = load_split((p3, p2))
    assert {s.subject for s in train} == {"S1"} and {s.subject for s in test} == {"S9"}


@pytest.mark.parametrize("protocol,numpy1", [(2, True), (2, False), (3, True), (4, False), (5, False)],
                         ids=["p2-numpy1.16", "p2-numpy2", "p3-numpy1", "p4-numpy2", "p5-numpy2"])
def test_older_and_newer_pickle_protocols_load(tmp_path, protocol, numpy1):
    """numpy <= 1.16 wrote protocol 2 (raw bytes via _codecs.encode), 1.17-1.26 protocol 3 with the
    numpy.core spelling, 2.x protocol 4 with numpy._core; protocol 5 uses _frombuffer; scalars use scalar."""
    world, px = _arrays()
    value = np.array({"S1": {"Walking 1": world}, "note": {"n": np.int64(3)}}, dtype=object)
    pickled = pickle.dumps(value, protocol=protocol)
    if numpy1:
        assert protocol < 4  # GLOBAL names are newline-terminated text, so respelling keeps the pickle valid
        pickled = pickled.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"numpy.core.multiarray\n_reconstruct" in pickled and b"numpy._core" not in pickled
    p3 = _npz_with_pickle(tmp_path / "data_3d_h36m.npz", "positions_3d", pickled)
    with pytest.raises(ValueError, match=r"subject 'note' action 'n' is a numpy int64 scalar, expected a \(T, 32"):
        read_positions_3d(p3)                                    # a scalar is not an action array ...
    value = np.array({"S1": {"Walking 1": world}}, dtype=object)
    p3 = _npz_with_pickle(tmp_path / "data_3d_h36m.npz", "positions_3d", pickle.dumps(value, protocol=protocol))
    np.testing.assert_array_equal(read_positions_3d(p3)["S1"]["Walking 1"], world)  # ... but the arrays load


def test_embedded_realmocap_files_load_through_the_reader():
    from bench.data import realmocap as rm

    assert sorted(read_positions_3d(rm.FILES_DIR / rm.FILE_3D)) == ["climbA", "climbB", "deepmimic"]
    assert read_metadata(rm.FILES_DIR / rm.FILE_2D)["keypoints_symmetry"] == KEYPOINTS_SYMMETRY
    motion = rm.load_realmocap_motion()
    assert motion.metadata == {} and str(rm.FILES_DIR / rm.FILE_3D) in motion.source


# ---------------------------------------------------------------- structure errors name file, subject, action


def test_3d_structure_errors_name_the_file_subject_and_action(tmp_path):
    world, _ = _arrays()
    p3, _ = _genuine(tmp_path, positions_3d={"S1": {"Walking 1": world}, "S9": {"Walking 1": [world]}})
    with pytest.raises(ValueError) as err:
        read_positions_3d(p3)
    _one_line_error(err, p3, "subject 'S9' action 'Walking 1' is a list, expected a (T, 32 or 17, 3) array; pass the "
                             "path of a VideoPose3D data_3d_*.npz")
    p3, _ = _genuine(tmp_path, positions_3d={"S1": [world]})
    with pytest.raises(ValueError, match=r"subject 'S1' maps to a list, expected a str -> dict of actions") as err:
        read_positions_3d(p3)
    _one_line_error(err, p3)
    p3, _ = _genuine(tmp_path, positions_3d=world)
    with pytest.raises(ValueError, match="'positions_3d' is not a pickled dict") as err:
        read_positions_3d(p3)                                    # a plain array: read with allow_pickle=False
    _one_line_error(err, p3)
    p3, _ = _genuine(tmp_path, positions_3d={"S1": {"Walking 1": np.array(["a", "b"])}})
    with pytest.raises(ValueError, match=r"action 'Walking 1' is an array of dtype <U1, expected") as err:
        read_positions_3d(p3)


def test_2d_structure_errors_name_the_file_subject_action_and_camera(tmp_path):
    _, px = _arrays()
    _, p2 = _genuine(tmp_path, positions_2d={"S1": {"Walking 1": px}})
    with pytest.raises(ValueError) as err:
        read_positions_2d(p2)
    _one_line_error(err, p2, "subject 'S1' action 'Walking 1' is an array of dtype float32, expected a list of "
                             "per-camera (T, 17, 2) arrays")
    _, p2 = _genuine(tmp_path, positions_2d={"S1": {"Walking 1": [px, px, None, px]}})
    with pytest.raises(ValueError) as err:
        read_positions_2d(p2)
    _one_line_error(err, p2, "subject 'S1' action 'Walking 1' camera 2 is a NoneType, expected a (T, 17, 2) array")


def test_preprocessing_errors_name_the_files(tmp_path):
    """Errors raised later by sequences_from_motion carry the file names too (MotionSet.source)."""
    world, px = _arrays()
    p3, p2 = _genuine(tmp_path, positions_2d={s: {a: [px[:3]] * 4} for s, a in SUBJECT_ACTIONS})
    with pytest.raises(ValueError, match=r"subject 'S1' action 'Walking 1' camera 0: .*T2 >= 6") as err:
        load_dataset("h36m", paths={"3d": p3, "2d": p2})
    _one_line_error(err, p3, f"{p3} + {p2}: subject 'S1'")
    p3, p2 = _genuine(tmp_path, positions_3d={"S1": {"Walking 1": world[:, :5]}})
    with pytest.raises(ValueError, match=r"expected \(T>0, 17, 3\)") as err:
        load_dataset((p3, p2))
    _one_line_error(err, p2)
    world[2, 3, 0] = np.nan
    p3, p2 = _genuine(tmp_path, positions_3d={"S2": {"Walking 1": world}})
    with pytest.raises(ValueError, match="no Human3.6M camera calibration for subject 'S2'"):
        load_dataset((p3, p2))
    p3, p2 = _genuine(tmp_path, positions_3d={"S1": {"Walking 1": world}})
    with pytest.raises(ValueError, match="NaN") as err:
        load_dataset((p3, p2))
    _one_line_error(err, p3, str(p2))
