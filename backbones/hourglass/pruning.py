"""Token pruners: reduce the n tokens of a schedule stage to k.

The contract (`Pruner`): `reduce(tokens, feats, k, ctx) -> (tokens, plan)` reduces the tokens and
returns a `plan` that `replay(plan, other_tokens)` re-applies (the flip pass of test-time augmentation
reuses the plain pass's plan) and `track(plan, state)` turns into what the new tokens stand for
(`strategy.TokenState`). `feats` is one feature per frame (B, n, D) from the backbone's
`frame_features`. A pruner declares the kind of tokens it produces (`produces`: frames, merged or
spectral), the pipelines it supports, how many stages it may run (`max_stages`) and its typed options.

Keep-type pruners (`KeepPruner`) only choose: `select(feats, k, ctx) -> (B, k)` *local* positions,
sorted ascending so temporal order is kept; selection never carries gradients (the official HoT
`cluster_dpc_knn` runs under no_grad). Score-based ones share one rule (`ScorePruner.select`): top-k
of the score; for seq2frame the centre frame's score is set to -inf, k-1 are chosen and the centre is
appended (the official HoT `cluster_dpc_knn_center`, tpc_mixste.py). Token merging and frequency
tokens live in `merging.py` and `spectral.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional, Tuple

import torch

from .strategy import Strategy, StrategyRegistry, TokenState
from .tokens import gather_frames

__all__ = ["PRUNERS", "PruneContext", "hashed_uniform", "Pruner", "KeepPruner", "ScorePruner", "ClusterPruner", "AttentionPruner",
           "UniformPruner", "MotionPruner", "RandomPruner", "NoPruner", "TIE_BREAK"]

PRUNERS = StrategyRegistry("pruner")
TIE_BREAK = 1e-6  # magnitude of the seeded jitter that breaks exact ties (official HoT code: rand * 1e-6)


@dataclass
class PruneContext:
    """What a pruner may look at besides the frame features."""
    inputs: torch.Tensor                    # the 2D input clip (B, T, J, C_in)
    global_idx: torch.Tensor                # (B, n) original frame each current token stands at
    generator: Optional[torch.Generator]    # seeded: same input -> same selection; None under torch.compile
    attn: Optional[torch.Tensor] = None     # preceding layer's temporal attention (B, ..., n, n)
    centre: Optional[int] = None            # global centre frame to keep as a token of its own (seq2frame)
    sizes: Optional[torch.Tensor] = None    # (B, n) original frames each current token holds
    seed: int = 0                           # the hashed noise's seed (no generator)
    stage: int = 0                          # the hashed noise's stream: one per pruning stage

    def noise(self, shape) -> torch.Tensor:
        """Uniform [0, 1) noise of `shape`: from the forward's seeded generator, or, where there is none
        (under torch.compile, which cannot trace a torch.Generator), a counter hash of (seed, stage,
        position): as deterministic, other values."""
        if self.generator is None:
            return hashed_uniform(shape, self.seed, self.stage, self.inputs.device)
        return torch.rand(shape, generator=self.generator, device=self.generator.device).to(self.inputs.device)

    def centre_mask(self) -> torch.Tensor:
        """(B, n) bool, True at the token holding the centre frame."""
        return self.global_idx == self.centre


def hashed_uniform(shape, seed: int, stream: int, device) -> torch.Tensor:
    """Uniform [0, 1) floats from an integer hash of each position (a 32-bit mix in the manner of
    MurmurHash3's finaliser), in plain tensor ops that torch.compile traces."""
    mask = 0xFFFFFFFF
    n = math.prod(shape)
    x = (torch.arange(n, device=device, dtype=torch.int64) + (seed * 0x9E3779B1 + stream * 0x632BE5AB + 1)) & mask
    for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        x = ((x ^ (x >> shift)) * mult) & mask
    x = x ^ (x >> 16)
    return (x.to(torch.float64) / 2.0 ** 32).to(torch.float32).reshape(shape)


class Pruner(Strategy):
    """Reduces n tokens to k (see the module docstring for the contract)."""

    produces: ClassVar[str] = "frames"                         # strategy.KINDS
    needs_attention: ClassVar[bool] = False                    # the preceding layer computes explicit weights
    max_stages: ClassVar[Optional[int]] = None                 # None: any number of stages
    pipelines: ClassVar[Tuple[str, ...]] = ("seq2seq", "seq2frame")

    def reduce(self, tokens: torch.Tensor, feats: torch.Tensor, k: int, ctx: PruneContext) -> Tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def replay(self, plan: Any, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def track(self, plan: Any, state: TokenState) -> TokenState:
        raise NotImplementedError

    def plan_from_frames(self, frames: torch.Tensor, state: TokenState) -> Any:
        raise ValueError(f"pruner {type(self).__name__} cannot replay a selection given as frame indices; pass the "
                         "stages forward_with_index returned")


def _compose_assign(assign: Optional[torch.Tensor], new_slot: torch.Tensor) -> Optional[torch.Tensor]:
    """Original frame -> token, after a stage that sends current token i to `new_slot[:, i]` (-1: dropped)."""
    if assign is None:
        return None
    moved = new_slot.gather(1, assign.clamp(min=0))
    return torch.where(assign >= 0, moved, torch.full_like(moved, -1))


class KeepPruner(Pruner):
    """A pruner that keeps k of the n tokens as they are; subclasses implement `select`."""

    def select(self, feats: torch.Tensor, k: int, ctx: PruneContext) -> torch.Tensor:
        raise NotImplementedError

    def reduce(self, tokens, feats, k, ctx):
        idx = self.select(feats, k, ctx)
        return gather_frames(tokens, idx), idx

    def replay(self, plan, tokens):
        return gather_frames(tokens, plan)

    def track(self, plan, state):
        B, n = state.frames.shape
        slot = torch.full((B, n), -1, dtype=torch.long, device=plan.device)
        slot.scatter_(1, plan, torch.arange(plan.shape[1], device=plan.device).expand_as(plan))
        return TokenState(frames=state.frames.gather(1, plan), assign=_compose_assign(state.assign, slot),
                          sizes=state.sizes.gather(1, plan), kind=state.kind, positions=state.positions)

    def plan_from_frames(self, frames, state):
        """Original frame indices (B, k) -> local positions (both sorted): replays a recorded selection."""
        return torch.searchsorted(state.frames.contiguous(), frames.to(state.frames.device).contiguous())


class ScorePruner(KeepPruner):
    """Keep the k highest-scoring tokens; subclasses define `score(feats, ctx) -> (B, n)`."""

    def score(self, feats: torch.Tensor, ctx: PruneContext) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def select(self, feats, k, ctx):
        score = self.score(feats, ctx)
        if ctx.centre is None:
            idx = score.topk(k, dim=-1).indices
        else:
            centre = ctx.centre_mask()
            idx = score.masked_fill(centre, float("-inf")).topk(k - 1, dim=-1).indices
            idx = torch.cat([idx, centre.to(torch.uint8).argmax(-1, keepdim=True)], dim=-1)
        return idx.sort(dim=-1).values


@PRUNERS.register(name="cluster")
class ClusterPruner(ScorePruner):
    """TPC: DPC-kNN density-peak clustering; keep the cluster centres (official HoT `cluster_dpc_knn`, hot_mixste.py).

    rho_i = exp(-mean of squared distances to the `k_neighbours` nearest tokens, the token itself
    included), distances = Euclidean / sqrt(C); delta_i = distance to the nearest denser token (the
    densest token gets the sample's maximum distance); score = rho * delta. The seeded 1e-6 jitter
    goes on rho, as in the official code.

    Two numerical choices differ from the official code, which shares both flaws:
    - density ties the jitter leaves (in float32 it rounds to ~16 levels near rho = 1, and mutual
      nearest neighbours tie exactly with k = 2) go to the lower index, so one token per tie is the
      denser and a cluster never keeps two frames;
    - `distance='exact'` uses the matmul formula on mean-centred features one precision above theirs
      (float64 for float32 features: error ~1e-6 of the distances, below float32 pairwise
      differences, and 8x faster than them on MHFormer's 351 x 1536 features; float32 for bf16/fp16
      features, whose own rounding, ~4e-3, is far above float32's, and where float64 cost TPC w.
      MHFormer a fifth of its bf16 batch-16 forward), with exact zeros on the diagonal; `'mm'` is
      torch.cdist's default matmul formula in the features' dtype (the official numerics), which
      cancels when the features share a large offset.
    """

    @dataclass(frozen=True)
    class Options:
        k_neighbours: int = 2                       # neighbours in the density, the token itself included
        distance: Literal["exact", "mm"] = "exact"  # exact: centred, one precision up; mm: torch.cdist (official)

        def __post_init__(self):
            if self.k_neighbours < 1:
                raise ValueError(f"pruner 'cluster' option k_neighbours must be >= 1, got {self.k_neighbours}")

    def __init__(self, options: Optional["ClusterPruner.Options"] = None):
        super().__init__(options)
        self.k_neighbours, self.distance = self.options.k_neighbours, self.options.distance

    def _pairwise(self, feats: torch.Tensor) -> torch.Tensor:
        """Euclidean distances / sqrt(C), (B, n, n)."""
        if self.distance == "mm":
            return torch.cdist(feats, feats) / math.sqrt(feats.shape[-1])
        x = feats.to(torch.float64 if feats.dtype.itemsize >= 4 else torch.float32)
        x = x - x.mean(dim=1, keepdim=True)  # distances are shift-invariant; centring avoids cancellation
        dist = torch.cdist(x, x, compute_mode="use_mm_for_euclid_dist")
        dist.diagonal(dim1=-2, dim2=-1).zero_()
        return (dist / math.sqrt(feats.shape[-1])).to(feats.dtype)

    def score(self, feats, ctx):
        dist = self._pairwise(feats)
        knn = dist.topk(min(self.k_neighbours, dist.shape[-1]), dim=-1, largest=False).values
        rho = (-(knn ** 2).mean(dim=-1)).exp() + ctx.noise(dist.shape[:2]) * TIE_BREAK
        order = torch.arange(rho.shape[-1], device=rho.device)
        # [b, i, j]: token j is denser than token i; a strict total order (ties -> lower index)
        denser = torch.where(rho[:, None, :] == rho[:, :, None], order[None, None, :] < order[None, :, None],
                             rho[:, None, :] > rho[:, :, None])
        dmax = dist.flatten(1).max(dim=-1).values[:, None, None]
        delta = torch.where(denser, dist, dmax).min(dim=-1).values
        return rho * delta


@PRUNERS.register(name="attention")
class AttentionPruner(ScorePruner):
    """TPA: keep the tokens that *receive* the most attention in the preceding temporal attention,
    averaged over queries, heads and joints (UNCONFIRMED detail in the papers; this is the choice)."""

    needs_attention = True

    def score(self, feats, ctx):
        if ctx.attn is None:
            raise RuntimeError("attention pruner got no attention weights from the preceding layer")
        received = ctx.attn.mean(dim=-2)                                   # (B, ..., n): mean over queries
        received = received.reshape(received.shape[0], -1, received.shape[-1]).mean(dim=1)
        return received + ctx.noise(received.shape) * TIE_BREAK


@PRUNERS.register(name="motion")
class MotionPruner(ScorePruner):
    """TPMo: keep the frames with the largest 2D input motion.

    Motion of frame t = mean over joints of the L2 norm of the backward difference of the input (x, y)
    (`x_t - x_{t-1}`; frame 0 takes frame 1's value), read at each token's global frame index, so
    later stages still rank by the input's motion. Choices (UNCONFIRMED in the paper): 2D input, not
    features; L2; backward difference (`difference='central'` averages both neighbours).
    """

    @dataclass(frozen=True)
    class Options:
        difference: Literal["backward", "central"] = "backward"

    def __init__(self, options: Optional["MotionPruner.Options"] = None):
        super().__init__(options)
        self.difference = self.options.difference

    def score(self, feats, ctx):
        xy = ctx.inputs[..., :2]
        step = (xy[:, 1:] - xy[:, :-1]).norm(dim=-1).mean(dim=-1)            # (B, T-1): motion into t+1
        backward = torch.cat([step[:, :1], step], dim=1)                        # (B, T)
        if self.difference == "central":
            forward = torch.cat([step, step[:, -1:]], dim=1)
            backward = (backward + forward) / 2
        motion = backward.gather(1, ctx.global_idx)
        return motion + ctx.noise(motion.shape) * TIE_BREAK


@PRUNERS.register(name="uniform")
class UniformPruner(KeepPruner):
    """TPS: evenly spaced tokens, `round(linspace(0, n-1, k))`, deterministic and parameter-free.
    For seq2frame the kept position nearest the centre is moved onto the centre."""

    @torch.no_grad()
    def select(self, feats, k, ctx):
        B, n = feats.shape[:2]
        idx = torch.linspace(0, n - 1, k, device=feats.device).round().long().expand(B, k).clone()
        if ctx.centre is not None:
            centre = ctx.centre_mask().to(torch.uint8).argmax(-1, keepdim=True)          # (B, 1)
            nearest = (idx - centre).abs().argmin(-1, keepdim=True)
            idx = idx.scatter(1, nearest, centre).sort(dim=-1).values
        return idx


@PRUNERS.register(name="random")
class RandomPruner(ScorePruner):
    """k frames drawn uniformly without replacement (the control every pruning table should have): the top
    k of uniform noise from the forward's seeded generator, so the same input and seed give the same
    frames. For seq2frame the centre is kept and k-1 others drawn, like every score-based pruner."""

    def score(self, feats, ctx):
        return ctx.noise(feats.shape[:2])


@PRUNERS.register(name="none")
class NoPruner(KeepPruner):
    """Keeps every token; only valid with an empty schedule (the unpruned baseline)."""

    def select(self, feats, k, ctx):
        raise RuntimeError("pruner 'none' cannot prune; use an empty schedule")
