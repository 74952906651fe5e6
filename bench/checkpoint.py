"""vptbench's own checkpoints: training state to resume after a kill, and cached trained baselines.

They live in the results store, which a shared filesystem lets other people and machines write, so
reading one must never run code: files are written as plain containers of tensors, numbers and
strings and read back with `torch.load(weights_only=True)`, which refuses anything else. A file that
cannot be used (truncated by a full disk, corrupt, from another version, carrying code, or holding
NaN weights from a run that diverged) is moved aside to `<name>.rejected` with one warning naming it
and why, and the caller trains afresh: a bad file costs a retrain, never the grid, and is kept for a
look rather than deleted.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from .atomic import write_atomic

__all__ = ["save_checkpoint", "read_checkpoint", "REJECTED_SUFFIX"]

log = logging.getLogger(__name__)

REJECTED_SUFFIX = ".rejected"


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Write `state` atomically (temp file in the same directory, fsync, rename): a kill leaves the
    previous checkpoint or the new one, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(state, f))


def _non_finite(state: Dict[str, torch.Tensor]) -> Optional[str]:
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            return name
    return None


def read_checkpoint(path: Path, required: tuple = ("model",),
                    apply: Optional[Callable[[Dict[str, Any]], None]] = None) -> Optional[Dict[str, Any]]:
    """The dict saved at `path`, or None when there is none or it is unusable (then moved aside with a
    warning). `required` keys must be present, the `model` state finite, and `apply(state)` (e.g.
    loading it into a model and optimiser) must succeed: a failure there is the file's fault too."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"holds a {type(state).__name__}, not a dict")
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        bad = _non_finite(state["model"]) if isinstance(state.get("model"), dict) else None
        if bad:
            raise ValueError(f"weight {bad} holds NaN or inf (a diverged run)")
        if apply is not None:
            apply(state)
    except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, the remedy is the same
        why = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the exception printed
        rejected = path.with_name(path.name + REJECTED_SUFFIX)
        os.replace(path, rejected)
        log.warning("checkpoint %s is unusable (%s: %s); moved it to %s and training afresh",
                    path, type(e).__name__, why[:400], rejected.name)
        return None
    return state
