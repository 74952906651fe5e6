"""Reading npz files whose members are pickled objects (VideoPose3D's format), without running code.

`np.load(allow_pickle=True)` unpickles whatever a file holds, and falls back to `pickle.load` for a
file that is not an npz at all, so a planted data file could run code. `read_npz_value` instead
opens the zip itself (anything else is refused), reads only the member asked for, checks the .npy
header with numpy's public readers, and unpickles with `_NumpyOnlyUnpickler`, which builds numpy
arrays, dtypes and scalars and nothing else (`_ALLOWED_GLOBALS`: numpy's reconstructors in the numpy
1.x and 2.x module spellings, plus a latin-1-only `_codecs.encode`, which numpy <= 1.16 used for raw
array bytes under pickle protocol 2, i.e. the published Human3.6M files of 2018). Any other global is
refused before it is imported, as is a copyreg extension code (found by a parse-only pass, because
the C unpickler resolves cached codes without asking `find_class`).
"""
from __future__ import annotations

import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np

__all__ = ["read_npz_value", "read_npz_dict"]

# numpy's own reconstructors, taken from its reduce tuples so no private module is imported.
_PROBE = np.zeros(1, dtype=np.float32)
_RECONSTRUCT = _PROBE.__reduce__()[0]      # numpy.{core,_core}.multiarray._reconstruct
_FROMBUFFER = _PROBE.__reduce_ex__(5)[0]   # numpy.{core,_core}.numeric._frombuffer
_SCALAR = np.float32(0).__reduce__()[0]    # numpy.{core,_core}.multiarray.scalar
# Largest member we decompress: Human3.6M's biggest file is a few hundred MB, so this only stops bombs.
_MAX_MEMBER_BYTES = 8 << 30


def _latin1_bytes(text, encoding):
    """`_codecs.encode` only as pickle protocol 2 (numpy <= 1.16's np.savez) uses it: raw array bytes."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not array bytes")
    return text.encode("latin1")


# Every global a VideoPose3D pickle names (see `pickletools.dis` of np.savez output): the 0-d
# object array and each float array come back through _reconstruct + ndarray + dtype (protocols
# 2-4) or _frombuffer + dtype (protocol 5); numpy scalars through scalar + dtype. numpy 1.x
# spells the modules numpy.core.*, numpy 2.x numpy._core.*.
_ALLOWED_GLOBALS: Dict[Tuple[str, str], Callable] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("_codecs", "encode"): _latin1_bytes,
}


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for something outside _ALLOWED_GLOBALS; raised before anything is imported."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays, dtypes and scalars and nothing else."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _RefusedGlobal(f"{module}.{name}") from None


def _refuse_extension_codes(stream) -> None:
    """Parse (never run) the pickle: EXT1/2/4 codes resolve through copyreg's cache without
    find_class once any code in the process has loaded them, so a VideoPose3D pickle may hold none."""
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name.startswith("EXT"):
            raise _RefusedGlobal(f"copyreg extension code {arg}")


def _npy_header(stream) -> Tuple[tuple, np.dtype]:
    """(shape, dtype) of a .npy stream, leaving it at the data; numpy's public header readers only."""
    version = np.lib.format.read_magic(stream)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"npy format version {version[0]}.{version[1]}, expected 1.0 or 2.0")
    shape, _, dtype = readers[version](stream)
    return shape, dtype


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _npz_member(zf: zipfile.ZipFile, path: Path, key: str, how_to_create: str) -> zipfile.ZipInfo:
    """The zip entry of `key`, checked to exist and to be of a sane uncompressed size."""
    names = zf.namelist()
    if f"{key}.npy" not in names:
        keys = [n[:-4] if n.endswith(".npy") else n for n in names]
        raise ValueError(f"{path} has no key '{key}' (keys: {keys}); {how_to_create}")
    info = zf.getinfo(f"{key}.npy")
    if info.file_size > _MAX_MEMBER_BYTES:
        raise ValueError(f"{path}: '{key}' unpacks to {info.file_size} bytes, over this reader's "
                         f"{_MAX_MEMBER_BYTES} limit; {how_to_create}")
    return info


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    """The value of one .npy member: plain arrays via read_array(allow_pickle=False), object arrays
    via a parse-only pass and then _NumpyOnlyUnpickler."""
    with zf.open(info) as stream:
        shape, dtype = _npy_header(stream)
        if dtype.hasobject:
            _refuse_extension_codes(stream)
    if not dtype.hasobject:
        with zf.open(info) as stream:
            return np.lib.format.read_array(stream, allow_pickle=False)
    with zf.open(info) as stream:
        _npy_header(stream)
        value = _NumpyOnlyUnpickler(stream, fix_imports=False, encoding="ASCII").load()
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape):
        raise ValueError(f"the pickle holds a {type(value).__name__}, not the {shape} array its header declares")
    return value


def read_npz_value(path: Path, key: str, how_to_create: str):
    """The array stored under `key` in the npz at `path`, without ever running pickled code.

    Only that member is read; a file that is not a zip is refused rather than unpickled (what
    np.load would do), and a pickle naming anything but numpy's array and scalar builders is
    refused with the global it asked for.
    """
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path} is not an npz (zip) file ({_one_line(err)}); {how_to_create}") from None
    except OSError as err:
        raise ValueError(f"{path} cannot be read ({_one_line(err)}); check its permissions") from None
    with zf:
        info = _npz_member(zf, path, key, how_to_create)
        try:
            return _read_member(zf, info)
        except _RefusedGlobal as err:
            raise ValueError(f"{path}: '{key}' holds a pickled {err} object, which a VideoPose3D file never "
                             f"contains; refusing to load it ({how_to_create})") from None
        except Exception as err:  # corrupt zip, bad header, truncated or malformed pickle: all one line
            raise ValueError(f"{path}: '{key}' is not a readable .npy array ({_one_line(err)}); "
                             f"{how_to_create}") from None


def read_npz_dict(path: Path, key: str, how_to_create: str) -> Dict:
    """The dict pickled under `key` (a 0-d object array, as np.savez stores a dict)."""
    value = read_npz_value(path, key, how_to_create)
    if value.dtype != object or value.shape != () or not isinstance(value.item(), dict):
        raise ValueError(f"{path}: '{key}' is not a pickled dict; {how_to_create}")
    return value.item()
