"""Results store: one JSON record per grid cell, keyed by a stable hash of the cell's identity.

Writes are atomic (temp file in the same directory, fsync, os.replace), so a crash or kill never
leaves a torn record; a corrupt or foreign file is reported and skipped, never fatal. Reading is
defensive: only regular files of at most MAX_RECORD_BYTES are read (a FIFO or a link to /dev/zero
named like a record must neither hang nor exhaust memory), and a record that breaks the schema in
`bench.records` (a string GFLOPs count, an infinite MPJPE) is skipped with one warning, so `get()`
treats it as absent (the cell is recomputed) and `records()` leaves it out of reports (which also
require the cell fields: `records(required=REQUIRED)`).

Concurrent writers, on one machine or on a shared filesystem (NFS, Lustre), need no lock: each
writes its own uniquely named temp file and `os.replace` (rename(2) within one directory) swaps
the whole file in atomically, so readers see the old record or the new one, never a mix, and two
writers of the same key leave one complete record (the later rename wins; both hold the same
cell's numbers). A lock would only save the duplicate work, which the grid avoids by
deduplicating cells before launching. Temp files are hidden (`.tmp-<host>-<pid>-*`), never read
as records, and `prepare()` removes those whose writer is dead (same host) or that are stale.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from .atomic import write_atomic
from .records import MAX_RECORD_BYTES, STORE_REQUIRED, record_problem

__all__ = ["ResultStore", "cell_key"]

log = logging.getLogger(__name__)

STALE_TEMP_S = 6 * 3600  # a temp file this old from another host is a dead writer's leftover


def cell_key(identity: Dict[str, Any]) -> str:
    """Stable short hash of a JSON-able dict (sorted keys, no whitespace)."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ResultStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def prepare(self) -> None:
        """Create the store, check that it can be written (one-line ValueError) and remove temp
        files left by killed writers."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=self._temp_prefix())
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ValueError(f"cannot write results store {self.root}: {e.strerror or e}; "
                             "pass store=DIR with a writable directory") from None
        host = socket.gethostname().replace("-", "_")
        for p in self.root.glob(".tmp-*"):
            try:
                _, t_host, pid, _ = p.name.split("-", 3)
                dead = t_host == host and not _pid_alive(int(pid))
                if dead or time.time() - p.stat().st_mtime > STALE_TEMP_S:
                    p.unlink()
            except (ValueError, OSError):  # not ours, or already gone
                continue

    def mtime(self, key: str) -> Optional[int]:
        try:
            return self._path(key).stat().st_mtime_ns
        except OSError:
            return None

    @staticmethod
    def _temp_prefix() -> str:
        return f".tmp-{socket.gethostname().replace('-', '_')}-{os.getpid()}-"

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        """The cell's record; None when it is absent or not a valid record (then the cell is recomputed)."""
        p = self._path(key)
        if not os.path.lexists(p):
            return None
        return self._read(p)

    def put(self, record: Dict[str, Any]) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create results store {self.root}: {e.strerror}; pass store=DIR") from None
        blob = json.dumps(record, indent=1, sort_keys=True, default=str).encode()
        return write_atomic(self._path(record["key"]), lambda f: f.write(blob), prefix=self._temp_prefix(),
                            suffix=".json")

    def records(self, required: Tuple[str, ...] = STORE_REQUIRED) -> Iterator[Dict[str, Any]]:
        """The valid records, by file name; `required`: the fields a record must have to count."""
        if not self.root.is_dir():
            return
        for p in sorted(self.root.glob("*.json")):
            if p.name.startswith("."):  # a writer's temp file, never a record
                continue
            rec = self._read(p, required)
            if rec is not None:
                yield rec

    @staticmethod
    def _read(path: Path, required: Tuple[str, ...] = STORE_REQUIRED) -> Optional[Dict[str, Any]]:
        try:
            data = _read_bounded(path)
            if data is None:  # not a record file: already warned about
                return None
            rec = json.loads(data)
        except (OSError, ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
            _warn_once(path, f"skipping unreadable store file {path}: {e}")
            return None
        if not isinstance(rec, dict) or "key" not in rec or "status" not in rec:
            _warn_once(path, f"skipping foreign file in the store: {path}")
            return None
        problem = record_problem(rec, required)
        if problem:
            _warn_once(path, f"skipping invalid record {path}: {problem}; fix or delete the file")
            return None
        return rec


def _read_bounded(path: Path) -> Optional[bytes]:
    """The bytes of a regular file of at most MAX_RECORD_BYTES; None (and one warning) for anything else.
    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; fstat on the open descriptor
    (not the name) sees what was really opened, e.g. the device behind a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            _warn_once(path, f"skipping store file {path}: not a regular file ({_kind(st.st_mode)}); "
                             "remove it from the store")
            return None
        if st.st_size > MAX_RECORD_BYTES:
            return _too_big(path)
        chunks, size = [], 0
        while size <= MAX_RECORD_BYTES:
            chunk = os.read(fd, MAX_RECORD_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return _too_big(path) if size > MAX_RECORD_BYTES else b"".join(chunks)  # it grew while read


def _too_big(path: Path) -> None:
    _warn_once(path, f"skipping store file {path}: larger than a record can be ({MAX_RECORD_BYTES >> 20} MiB); "
                     "remove it from the store")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


_warned: set = set()


def _warn_once(path: Path, msg: str) -> None:
    """One line per bad file and version of it, however often a run reads the store."""
    try:
        tag = (str(path), path.stat().st_mtime_ns)
    except OSError:
        tag = (str(path), None)
    if tag not in _warned:
        _warned.add(tag)
        log.warning("%s", msg)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
