"""Token recoverers: restore the full clip length after pruning.

Two levels:
- token level (`level = "token"`): `recover(tokens (B, k, J, C), idx (B, k), T) -> (B, T, J, C)`,
  before the regression head (TRA);
- output level (`level = "output"`): the head runs on the kept tokens, then
  `recover(poses (B, k, J, 3), idx (B, k), T) -> (B, T, J, 3)` fills every frame from the kept
  frames' *global* indices (TRI, nearest).
`idx` is sorted ascending (pruners keep temporal order).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import CrossAttention
from ..registry import Registry
from .tokens import gather_frames

__all__ = ["RECOVERERS", "AttentionRecoverer", "InterpolationRecoverer", "NearestRecoverer", "NoRecoverer"]

RECOVERERS = Registry("recoverer")


@RECOVERERS.register(name="attention")
class AttentionRecoverer(nn.Module):
    """TRA: full-length, zero-initialised learnable queries cross-attend, per joint over time, to the
    kept tokens; the queries are added back as the only residual (no norm, no MLP; as in the official HoT code)."""

    level = "token"

    def __init__(self, dim: int, num_frames: int, num_heads: int = 8, qkv_bias: bool = True, **_):
        super().__init__()
        self.x_token = nn.Parameter(torch.zeros(1, num_frames, dim))
        self.cross_attention = CrossAttention(dim, num_heads, qkv_bias)

    def recover(self, tokens: torch.Tensor, idx: torch.Tensor, T: int) -> torch.Tensor:
        B, k, J, C = tokens.shape
        if T != self.x_token.shape[1]:
            raise ValueError(f"attention recoverer was built for {self.x_token.shape[1]} frames, got {T}")
        kv = tokens.transpose(1, 2).reshape(B * J, k, C)                     # per joint, over time
        q = self.x_token.expand(B * J, T, C)
        out = q + self.cross_attention(q, kv, kv)                            # (B*J, T, C)
        return out.reshape(B, J, T, C).transpose(1, 2)


def _neighbours(idx: torch.Tensor, T: int):
    """For every frame t in 0..T-1: the kept positions left/right of t and the weight of the right one.
    Frames outside [idx[0], idx[-1]] clamp to the edge kept frame."""
    B, k = idx.shape
    t = torch.arange(T, device=idx.device).expand(B, T).contiguous()
    right = torch.searchsorted(idx.contiguous(), t).clamp(max=k - 1)          # first kept index >= t
    left = (right - 1).clamp(min=0)
    left = torch.where(idx.gather(1, right) <= t, right, left)                # exact hit or past the end
    i_l, i_r = idx.gather(1, left), idx.gather(1, right)
    span = (i_r - i_l).clamp(min=1)
    w = ((t - i_l).float() / span).clamp(0, 1)
    return left, right, w


@RECOVERERS.register(name="interpolation")
class InterpolationRecoverer(nn.Module):
    """TRI: linear interpolation of the 3D poses over time between the kept frames' global indices;
    frames before the first / after the last kept frame copy it (edges clamped). No parameters."""

    level = "output"

    def __init__(self, **_):
        super().__init__()

    def recover(self, poses, idx, T):
        left, right, w = _neighbours(idx, T)
        w = w[..., None, None].to(poses.dtype)
        return gather_frames(poses, left) * (1 - w) + gather_frames(poses, right) * w


@RECOVERERS.register(name="nearest")
class NearestRecoverer(nn.Module):
    """Each frame copies the pose of the nearest kept frame in time (ties go to the earlier one)."""

    level = "output"

    def __init__(self, **_):
        super().__init__()

    def recover(self, poses, idx, T):
        left, right, w = _neighbours(idx, T)
        return gather_frames(poses, torch.where(w > 0.5, right, left))


@RECOVERERS.register(name="none")
class NoRecoverer(nn.Module):
    """No recovery: for seq2frame pipelines (only the centre frame is returned) and unpruned models."""

    level = "none"

    def __init__(self, **_):
        super().__init__()
