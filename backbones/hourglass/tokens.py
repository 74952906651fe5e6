"""Indexing along the token (frame) axis, shared by the wrapper, the recoverers and training."""
from __future__ import annotations

import torch

__all__ = ["gather_frames"]


def gather_frames(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, n, ...) at positions idx (B, k) along dim 1: each clip of the batch its own frames."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]
