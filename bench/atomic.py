"""Atomic file writes, the one way vptbench writes a file another process may read (store records,
checkpoints): a uniquely named temp file in the same directory, flushed and fsynced, then renamed over
the target (rename(2) within a directory is atomic on local filesystems and NFS). A reader sees the old
file or the new one, never a torn mix; a crash or kill leaves at most a hidden temp file behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["write_atomic"]

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: Path, write: Callable[[BinaryIO], None], *, prefix: str | None = None,
                 suffix: str = ".tmp") -> Path:
    """Call `write(file)` on a temp file next to `path`, then move it into place. The temp file is hidden
    (`prefix` defaults to `.<name>.`) and gets the usual mode (mkstemp makes 0600; a shared store wants
    others to read it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
