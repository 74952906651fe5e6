"""Which device a cell runs on: `device=auto|cpu|cuda|cuda:N`, checked before any compute.

`auto` (the default) is the first CUDA GPU when there is one, else the CPU. The *kind* of device
(`cpu` or `cuda`) is part of a cell's identity, because timings, memory and even trained weights
differ between a CPU and a GPU: a GPU cell is its own record next to the CPU one, and reports and
`vptbench compare` align cells by it. The index (`cuda:1`) and the GPU model are not: which of a
node's GPUs ran a cell is placement, and a GPU model differs from another as one CPU differs from
another (both are stamped in the record's `env`; compare only stores from one machine).

Parallel cells on one machine (`hydra/launcher=joblib`) each claim a GPU of their own for the life
of their worker process (`claim_gpu`: an exclusive lock file per GPU), so no two cells share a GPU
unless the user pins one (`device=cuda:0`).
"""
from __future__ import annotations

import atexit
import os
import re
import tempfile
from pathlib import Path
from typing import List, Optional

__all__ = ["DEVICE_PATTERN", "device_kind", "check_device_name", "check_device_exists", "resolve_device",
           "available_devices", "claim_gpu", "gpu_count", "torch_device", "sync", "is_out_of_memory",
           "OutOfMemoryAsOneLine"]

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
VALID = "auto, cpu, cuda, cuda:N"


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def available_devices() -> List[str]:
    return ["cpu"] + [f"cuda:{i}" for i in range(gpu_count())]


def check_device_name(name: str) -> None:
    """Syntax only (no torch): a typo is one line before anything else is looked at."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"unknown device {name!r}; valid: {VALID}")


def check_device_exists(name: str) -> None:
    """One line naming the devices this machine has, when `name` is not one of them."""
    check_device_name(name)
    if not name.startswith("cuda"):
        return
    n = gpu_count()
    have = ", ".join(available_devices())
    if n == 0:
        raise ValueError(f"device={name} but this machine has no CUDA GPU (devices: {have}); "
                         "use device=cpu (or auto)")
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= n:
        raise ValueError(f"device={name} but this machine has {n} CUDA GPU(s) ({have}); pick one of them")


def device_kind(name: str) -> str:
    """'cpu' or 'cuda' for a device name; `auto` resolves on this machine."""
    check_device_name(name)
    if name == "auto":
        return "cuda" if gpu_count() else "cpu"
    return name.split(":")[0]


def resolve_device(name: str):
    """The torch.device a cell runs on: `auto` -> cuda:0 or cpu; `cuda` -> this worker's claimed GPU
    (see claim_gpu) or the current one."""
    import torch

    check_device_exists(name)
    kind = device_kind(name)
    if kind == "cpu":
        return torch.device("cpu")
    if ":" in name:
        return torch.device(name)
    index = _claimed if _claimed is not None else torch.cuda.current_device()
    return torch.device("cuda", index)


def torch_device(device):
    """`device` (a name or a torch.device) checked and resolved, for direct callers of training,
    evaluation and timing: a typo or a missing GPU fails before any work, in the cells' wording."""
    return resolve_device(str(device))


def sync(device) -> None:
    """Wait for the GPU's queued work, so a wall-clock interval measures it; a CPU has nothing queued."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; the CPU allocator a RuntimeError saying it; Python a MemoryError."""
    import torch

    text = str(e).lower()
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text))


class OutOfMemoryAsOneLine:
    """Context that turns running out of memory inside it into one line naming the batch (set
    `batch` as the work proceeds), the device and the batch size to lower, so the orchestrator records
    a sentence instead of a multi-line allocator report."""

    def __init__(self, device, doing: str, setting: str):
        self.device, self.doing, self.setting, self.batch = device, doing, setting, 0

    def __enter__(self) -> "OutOfMemoryAsOneLine":
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if error is not None and is_out_of_memory(error):
            raise ValueError(f"out of memory at batch {self.batch} on {self.device} while {self.doing}; "
                             f"lower {self.setting}") from None
        return False


# ------------------------------------------------------------------ one GPU per parallel worker

_claimed: Optional[int] = None


def _lock_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"vptbench-gpus-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_gpu() -> int:
    """This process's own GPU index, claimed once with an exclusive lock file per GPU (released when the
    process exits; a dead holder's lock is taken over). ValueError when every GPU is held."""
    global _claimed
    if _claimed is not None:
        return _claimed
    for index in range(gpu_count()):
        lock = _lock_dir() / f"gpu{index}.lock"
        for _ in range(2):  # second try after removing a dead holder's lock
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                try:
                    holder = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    holder = 0
                if holder and _alive(holder):
                    break
                lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            _claimed = index
            atexit.register(lambda p=lock: p.unlink(missing_ok=True))
            return index
    raise ValueError(f"every one of this machine's {gpu_count()} GPU(s) is held by another vptbench worker; "
                     "run at most that many cells at once (hydra.launcher.n_jobs), or pin device=cuda:N to share one")
