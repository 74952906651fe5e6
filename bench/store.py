"""Results store: one JSON record per grid cell, keyed by a stable hash of the cell's identity.

Writes are atomic (temp file in the same directory, fsync, os.replace), so a crash or kill never
leaves a torn record; a corrupt or foreign file is reported and skipped, never fatal.

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
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

__all__ = ["ResultStore", "cell_key"]

log = logging.getLogger(__name__)

_UMASK = os.umask(0o022)
os.umask(_UMASK)
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
        p = self._path(key)
        if not p.exists():
            return None
        return self._read(p)

    def put(self, record: Dict[str, Any]) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create results store {self.root}: {e.strerror}; pass store=DIR") from None
        path = self._path(record["key"])
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=self._temp_prefix(), suffix=".json")
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a shared store wants the usual mode
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True, default=str)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def records(self) -> Iterator[Dict[str, Any]]:
        if not self.root.is_dir():
            return
        for p in sorted(self.root.glob("*.json")):
            if p.name.startswith("."):  # a writer's temp file, never a record
                continue
            rec = self._read(p)
            if rec is not None:
                yield rec

    @staticmethod
    def _read(path: Path) -> Optional[Dict[str, Any]]:
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            _warn_once(path, f"skipping unreadable store file {path}: {e}")
            return None
        if not isinstance(rec, dict) or "key" not in rec or "status" not in rec:
            _warn_once(path, f"skipping foreign file in the store: {path}")
            return None
        return rec


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
