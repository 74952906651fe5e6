"""Token recoverers: restore the full clip length after pruning.

The contract (`Recoverer`): built with its typed options and the model sizes (`BuildContext`),
`recover(x, state, T)` restores T frames from the reduced tokens, knowing what each stands for
(`strategy.TokenState`). Two levels:
- token level (`level = "token"`): x = tokens (B, k, J, C) -> (B, T, J, C), before the regression
  head (TRA, idct);
- output level (`level = "output"`): the head runs on the k tokens, then x = poses (B, k, J, 3) ->
  (B, T, J, 3) (TRI, nearest, unmerge).
`accepts(options)` names the kinds of tokens (strategy.KINDS) it can restore; the wrapper refuses other
pairs in one line. Frame-kind tokens are sorted ascending by their original frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, FrozenSet, Literal, Optional

import torch

from ..layers import CrossAttention
from .strategy import BuildContext, Strategy, StrategyRegistry, TokenState
from .tokens import gather_frames

__all__ = ["RECOVERERS", "Recoverer", "AttentionRecoverer", "InterpolationRecoverer", "NearestRecoverer",
           "NoRecoverer", "sinusoidal_positions"]

RECOVERERS = StrategyRegistry("recoverer")


class Recoverer(Strategy):
    level: ClassVar[str] = "output"                       # token | output | none
    kinds: ClassVar[FrozenSet[str]] = frozenset({"frames"})
    needs_context: ClassVar[bool] = False                 # built with the model sizes (BuildContext)

    def __init__(self, options=None, context: Optional[BuildContext] = None):
        super().__init__(options)

    @classmethod
    def accepts(cls, options=None) -> FrozenSet[str]:
        return cls.kinds

    def recover(self, x: torch.Tensor, state: TokenState, T: int) -> torch.Tensor:
        raise NotImplementedError


def sinusoidal_positions(T: int, C: int) -> torch.Tensor:
    """(1, T, C) sin/cos positions (Vaswani et al. 2017), for backbones without a temporal embedding."""
    pos = torch.arange(T, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, C, 2, dtype=torch.float32) * (-math.log(10000.0) / C))
    out = torch.zeros(T, C)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : C // 2]
    return out[None]


@RECOVERERS.register(name="attention")
class AttentionRecoverer(Recoverer):
    """TRA: full-length, zero-initialised learnable queries cross-attend, per joint over time, to the
    kept tokens; the queries are added back as the only residual (no norm, no MLP; as in the official HoT
    code, the default). `query_init=pos` makes it position-aware: the queries start from the frames'
    temporal positions (sinusoidal, plus the backbone's learned temporal embedding where it has one) and the keys
    carry their tokens' frame positions, so it starts near a smoothing interpolator instead of averaging
    every kept token alike (a choice of this project, not of the papers)."""

    level = "token"
    needs_context = True

    @dataclass(frozen=True)
    class Options:
        query_init: Literal["zeros", "pos"] = "zeros"

    def __init__(self, options=None, context: Optional[BuildContext] = None):
        super().__init__(options)
        if context is None:
            raise ValueError("the attention recoverer needs the model sizes (dim, num_frames)")
        self.x_token = torch.nn.Parameter(torch.zeros(1, context.num_frames, context.dim))
        self.cross_attention = CrossAttention(context.dim, context.num_heads, context.qkv_bias)

    @classmethod
    def accepts(cls, options=None):
        positional = options is not None and options.query_init == "pos"
        return frozenset({"frames", "merged"}) if positional else frozenset({"frames", "merged", "spectral"})

    def recover(self, tokens, state, T):
        B, k, J, C = tokens.shape
        if T != self.x_token.shape[1]:
            raise ValueError(f"attention recoverer was built for {self.x_token.shape[1]} frames, got {T}")
        q = self.x_token
        if self.options.query_init == "pos":
            pos = state.positions.to(tokens.dtype)                                  # (1, T, C)
            q = q + pos
            tokens = tokens + gather_frames(pos.expand(B, -1, -1), state.frames)[:, :, None]  # keys: frame positions
        kv = tokens.transpose(1, 2).reshape(B * J, k, C)                          # per joint, over time
        q = q.expand(B * J, T, C)
        out = q + self.cross_attention(q, kv, kv)                                 # (B*J, T, C)
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
class InterpolationRecoverer(Recoverer):
    """TRI: linear interpolation of the 3D poses over time between the kept frames' global indices;
    frames before the first / after the last kept frame copy it (edges clamped). No parameters."""

    level = "output"

    def recover(self, poses, state, T):
        left, right, w = _neighbours(state.frames, T)
        w = w[..., None, None].to(poses.dtype)
        return gather_frames(poses, left) * (1 - w) + gather_frames(poses, right) * w


@RECOVERERS.register(name="nearest")
class NearestRecoverer(Recoverer):
    """Each frame copies the pose of the nearest kept frame in time (ties go to the earlier one)."""

    level = "output"

    def recover(self, poses, state, T):
        left, right, w = _neighbours(state.frames, T)
        return gather_frames(poses, torch.where(w > 0.5, right, left))


@RECOVERERS.register(name="none")
class NoRecoverer(Recoverer):
    """No recovery: for seq2frame pipelines (only the centre frame is returned) and unpruned models."""

    level = "none"
    kinds = frozenset()
