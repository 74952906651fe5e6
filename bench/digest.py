"""Content digests of user files (a weights file's sha256 joins its cells' identity), computed once per
file version: a 130 MB checkpoint takes about half a second to hash, and a grid asks for every cell."""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache

__all__ = ["file_sha256"]


def file_sha256(path: str) -> str:
    """The hex sha256 of the file's bytes (cached by path, size and modification time)."""
    st = os.stat(path)
    return _sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, _size: int, _mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
