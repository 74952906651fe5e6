"""Token merging over frames (ToMe, Bolya et al., ICLR 2023): the `merge` pruner and the `unmerge` recoverer.

`merge` reduces n tokens to k by bipartite soft matching on the frame features, as ToMe does on image
tokens: the current tokens are split alternately (in temporal order) into sources A and destinations B;
each source finds its most similar destination (cosine similarity); the most similar pairs are merged,
the destination becoming the size-weighted mean of itself and its sources (size = how many original
frames a token already holds, so averages stay averages over frames across rounds and stages). One
round removes at most half of the tokens, so a stage runs rounds until k remain. The result is the same
as one size-weighted average over each final group, which is how it is applied (and replayed). Tokens
stay in temporal order of the frame they stand at (the destination that absorbed the others). With
seq2frame the token holding the centre frame is never a source, so the centre stays a token of its own
frame and the pipeline can return it. Choices of this project (ToMe merges inside attention on keys;
here whole frame tokens are merged on the backbone's frame features between layers).

`unmerge` copies each merged token's pose back to every frame it absorbed (output level: the head runs
on the k tokens), giving the full clip for seq2seq.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .pruning import PRUNERS, Pruner, _compose_assign
from .recovery import RECOVERERS, Recoverer
from .strategy import TokenState
from .tokens import gather_frames

__all__ = ["MergePruner", "UnmergeRecoverer", "MergePlan"]


@dataclass
class MergePlan:
    slot: torch.Tensor    # (B, n) the output token each input token goes to, 0..k-1 in temporal order
    sizes: torch.Tensor   # (B, n) original frames each input token holds (the averaging weights)
    rep: torch.Tensor     # (B, k) the input token each output token stands at (the surviving destination)


def _merge_round(feats, sizes, frames, members, r, protect):
    """One bipartite round on m current tokens: merge up to r sources into destinations. Returns the new
    (feats, sizes, frames, members) with the survivors in temporal order. Sources are the tokens at even
    positions, destinations those at odd ones; a protected token (the centre frame, `protect` (B, m)) is
    never a source but may absorb others. `members` (B, n): the current token of every input token."""
    B, m, D = feats.shape
    pos = torch.arange(m, device=feats.device)
    for parity in (0, 1):  # a round whose only source candidate is protected swaps the roles
        src = ((pos % 2) == parity)[None] & ~protect
        dst_ok = ~src
        r_round = min(r, int(src.sum(dim=1).min()))
        if r_round > 0:
            break
    else:
        raise ValueError("token merging cannot reduce further: every candidate source is protected")
    f = F.normalize(feats.float(), dim=-1)
    sim = (f @ f.transpose(1, 2)).masked_fill(~dst_ok[:, None, :], float("-inf"))
    best, dst = sim.max(dim=-1)                                              # (B, m): each token's best destination
    src_sel = best.masked_fill(~src, float("-inf")).argsort(dim=-1, descending=True)[:, :r_round]
    dst_sel = dst.gather(1, src_sel)
    weighted = feats * sizes[..., None]
    weighted = weighted.scatter_add(1, dst_sel[..., None].expand(-1, -1, D), weighted.gather(1, src_sel[..., None].expand(-1, -1, D)))
    sizes = sizes.scatter_add(1, dst_sel, sizes.gather(1, src_sel))
    keep = torch.ones(B, m, dtype=torch.long, device=feats.device).scatter(1, src_sel, 0).bool()  # (int: jit-traceable)
    survivors = keep.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :m - r_round]  # in order
    new_index = keep.long().cumsum(dim=1) - 1                                 # survivors: their new place
    new_index = new_index.scatter(1, src_sel, new_index.gather(1, dst_sel))  # merged sources: their destination's
    take = lambda x: x.gather(1, survivors if x.ndim == 2 else survivors[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    return (take(weighted) / take(sizes)[..., None], take(sizes), take(frames), new_index.gather(1, members))


@PRUNERS.register(name="merge")
class MergePruner(Pruner):
    produces = "merged"

    @torch.no_grad()
    def plan(self, feats: torch.Tensor, k: int, ctx) -> MergePlan:
        B, n, _ = feats.shape
        sizes = ctx.sizes if ctx.sizes is not None else torch.ones(B, n, device=feats.device)
        frames, members = ctx.global_idx, torch.arange(n, device=feats.device).expand(B, n)
        protect = ctx.centre_mask() if ctx.centre is not None else torch.zeros(B, n, dtype=torch.bool,
                                                                                  device=feats.device)
        f, s = feats, sizes.to(feats.dtype)
        while f.shape[1] > k:
            f, s, frames, members = _merge_round(f, s, frames, members, f.shape[1] - k, protect)
            protect = frames == ctx.centre if ctx.centre is not None else torch.zeros_like(frames, dtype=torch.bool)
        rep = torch.searchsorted(ctx.global_idx.contiguous(), frames.contiguous())  # the destinations' input tokens
        return MergePlan(slot=members, sizes=sizes, rep=rep)

    def reduce(self, tokens, feats, k, ctx):
        plan = self.plan(feats, k, ctx)
        return self.replay(plan, tokens), plan

    def replay(self, plan, tokens):
        """Each output token: the size-weighted mean of the input tokens sent to it."""
        B, n = plan.slot.shape
        k, extra = plan.rep.shape[1], [1] * (tokens.ndim - 2)
        w = plan.sizes.to(tokens.dtype)
        index = plan.slot.reshape(B, n, *extra).expand_as(tokens)
        total = tokens.new_zeros(B, k, *tokens.shape[2:]).scatter_add(1, index, tokens * w.reshape(B, n, *extra))
        weight = w.new_zeros(B, k).scatter_add(1, plan.slot, w)
        return total / weight.reshape(B, k, *extra)

    def track(self, plan, state):
        sizes = state.sizes.new_zeros(plan.rep.shape).scatter_add(1, plan.slot, state.sizes)
        return TokenState(frames=state.frames.gather(1, plan.rep), assign=_compose_assign(state.assign, plan.slot),
                          sizes=sizes, kind="merged", positions=state.positions)


@RECOVERERS.register(name="unmerge")
class UnmergeRecoverer(Recoverer):
    """Every original frame takes the pose of the token it was merged into."""

    level = "output"
    kinds = frozenset({"merged"})

    def recover(self, poses, state, T):
        return gather_frames(poses, state.assign)
