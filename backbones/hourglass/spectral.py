"""Frequency tokens: the `dct` pruner and the `idct` recoverer (the idea behind PoseFormerV2, Zhao et al.
CVPR 2023, and CFP: a motion is carried by its low temporal frequencies).

`dct` replaces the n frame tokens of every joint by the k lowest-frequency coefficients of their
orthonormal DCT-II over time (a fixed (k, n) basis applied along the token axis); the tokens are no
longer frames, so frame-based recoverers (interpolation, nearest, unmerge) are refused with the reason,
and it supports seq2seq only (there is no centre frame to return) and one stage (a second would take
frequencies of frequencies). `idct` zero-pads the k coefficients to n and applies the inverse (the
basis' transpose), restoring T frame tokens before the regression head: the least-squares low-pass
reconstruction.
"""
from __future__ import annotations

import math

import torch

from .pruning import PRUNERS, Pruner
from .recovery import RECOVERERS, Recoverer
from .strategy import TokenState

__all__ = ["DCTPruner", "IDCTRecoverer", "dct_basis"]


def dct_basis(n: int, k: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(k, n) rows of the orthonormal DCT-II: D[f, t] = sqrt(2/n) c_f cos(pi (2t + 1) f / (2n)), c_0 = 1/sqrt(2)."""
    t = torch.arange(n, dtype=torch.float64, device=device)
    f = torch.arange(k, dtype=torch.float64, device=device)[:, None]
    basis = math.sqrt(2.0 / n) * torch.cos(math.pi * (2 * t + 1) * f / (2 * n))
    basis[0] /= math.sqrt(2.0)
    return basis.to(dtype)


def _along_tokens(basis: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """basis (m, n) applied to tokens (B, n, ...) along dim 1 -> (B, m, ...)."""
    B, n = tokens.shape[:2]
    out = basis.to(tokens.dtype) @ tokens.reshape(B, n, -1)
    return out.reshape(B, basis.shape[0], *tokens.shape[2:])


@PRUNERS.register(name="dct")
class DCTPruner(Pruner):
    produces = "spectral"
    max_stages = 1
    pipelines = ("seq2seq",)

    def reduce(self, tokens, feats, k, ctx):
        return self.replay(k, tokens), k

    def replay(self, plan, tokens):
        return _along_tokens(dct_basis(tokens.shape[1], plan, tokens.device), tokens)

    def track(self, plan, state):
        B = state.frames.shape[0]
        n = state.frames.shape[1]
        return TokenState(frames=torch.full((B, plan), -1, dtype=torch.long, device=state.frames.device), assign=None,
                          sizes=state.sizes.new_full((B, plan), n / plan), kind="spectral", positions=state.positions)


@RECOVERERS.register(name="idct")
class IDCTRecoverer(Recoverer):
    level = "token"
    kinds = frozenset({"spectral"})

    def recover(self, coeffs, state, T):
        return _along_tokens(dct_basis(T, coeffs.shape[1], coeffs.device).transpose(0, 1), coeffs)
