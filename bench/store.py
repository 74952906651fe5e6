"""Results store: one JSON record per grid cell, keyed by a stable hash of the cell's identity.

Writes are atomic (temp file in the same directory, fsync, os.replace), so a crash or kill never
leaves a torn record; a corrupt or foreign file is reported and skipped, never fatal.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

__all__ = ["ResultStore", "cell_key"]

log = logging.getLogger(__name__)


def cell_key(identity: Dict[str, Any]) -> str:
    """Stable short hash of a JSON-able dict (sorted keys, no whitespace)."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ResultStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

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
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        try:
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
            rec = self._read(p)
            if rec is not None:
                yield rec

    @staticmethod
    def _read(path: Path) -> Optional[Dict[str, Any]]:
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            log.warning("skipping unreadable store file %s: %s", path, e)
            return None
        if not isinstance(rec, dict) or "key" not in rec or "status" not in rec:
            log.warning("skipping foreign file in the store: %s", path)
            return None
        return rec
