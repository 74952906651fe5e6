"""Layers shared by every backbone family: attention (SDPA or explicit weights), MLP, drop-path, block.

Numerics follow the official code bases (MixSTE, MotionBERT, MotionAGFormer, MHFormer, PoseFormer, HoT): fused qkv
projection split [q | k | v] head-major, scale d**-0.5, softmax, heads concatenated, output projection.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Attention", "CrossAttention", "Mlp", "DropPath", "Block", "PoseBackbone", "attend", "attention_kernels",
           "softmax_decomposed", "KERNELS"]


CPU_EXPLICIT_MAX_KEYS = 32  # the default rule: up to this many keys on a CPU, the explicit product
KERNELS = ("sdpa", "explicit", "decomposed")  # what a chooser may answer (see `attend`)
# (q, k, v) -> one of KERNELS | None (no opinion: the default rule); set by `attention_kernels`
KernelChooser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Optional[str]]
_CHOOSER: contextvars.ContextVar[Optional[KernelChooser]] = contextvars.ContextVar("attention_kernel", default=None)


@contextlib.contextmanager
def attention_kernels(choose: KernelChooser) -> Iterator[None]:
    """Within the block, `choose(q, k, v)` picks the kernel of every `attend` call that needs no weights.
    The maths is the same either way; the timing path (bench.measure.fastpath) uses this to run each
    attention shape on the kernel it measured faster on the machine at hand."""
    token = _CHOOSER.set(choose)
    try:
        yield
    finally:
        _CHOOSER.reset(token)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, need_weights: bool = False):
    """Scaled dot-product attention over (..., H, N, D) tensors.

    The fused SDPA kernel returns no weights, so when a caller needs them (an attention-score pruner
    reads the layer before it) the explicit path runs instead; the kernels give the same maths.
    Otherwise the kernel is a speed choice: inside `attention_kernels` the caller's (one of `KERNELS`),
    else a default rule: on a CPU, short key sequences (the 17 joints of a spatial layer) take the
    explicit path, where the fused CPU kernel's tiling overhead made it 2-3x slower on the CPU this was
    first measured on (torch 2.13, 2 threads: 17 keys 1.5 vs 4.7 ms at head dim 32). Other CPUs differ
    (an Intel Xeon with AMX runs SDPA 1.6x faster at 17 keys and head dim 64), which is why timing
    measures per shape. "decomposed" is the explicit product with the softmax written as max, exp, sum,
    divide (`softmax_decomposed`), for rows too short for torch's softmax kernel.
    Returns (out (..., H, N, Dv), weights (..., H, N, M) or None).
    """
    kernel = "explicit"
    if not need_weights:
        # torch.compile picks its own kernels, and dynamo cannot trace a ContextVar (a graph break at
        # every attention call, and the per-block recompiles then exhaust its limit)
        choose = None if torch.compiler.is_compiling() else _CHOOSER.get()
        kernel = choose(q, k, v) if choose is not None else None
        if kernel is None:
            kernel = "sdpa" if k.shape[-2] > CPU_EXPLICIT_MAX_KEYS or q.device.type != "cpu" else "explicit"
        if kernel == "sdpa":
            return F.scaled_dot_product_attention(q, k, v), None
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    attn = softmax_decomposed(scores) if kernel == "decomposed" else scores.softmax(dim=-1)
    return attn @ v, (attn if need_weights else None)


def softmax_decomposed(scores: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis as four whole-tensor ops: subtract the row max, exp, sum, divide.

    The same maths as `Tensor.softmax` (to rounding). Why it exists: torch's CPU softmax vectorises
    along the row, and a row shorter than one SIMD vector (fewer than 16 floats with AVX-512, 32
    bf16 values) takes a slow per-row path: on an Intel Xeon with AMX (torch 2.13, 2 threads, 2 M
    fp32 values) rows of 9 take 17 ms against 2.6 ms here, rows of 16 or more 0.7-1.9 ms against 1.2-2.6
    here. Pruned tiny models attend over 9 kept frames, so the timing path measures both per shape.
    Without autograd it works in place on `scores` (a fresh product that nothing else holds)."""
    if torch.is_grad_enabled():
        e = (scores - scores.amax(dim=-1, keepdim=True)).exp()
        return e / e.sum(dim=-1, keepdim=True)
    e = scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
    return e.div_(e.sum(dim=-1, keepdim=True))


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis of (B, N, C).

    Args:
        dim: channels C.
        num_heads: heads H (C must be divisible by H).
        qkv_bias: bias on the fused qkv projection.
        proj_drop: dropout after the output projection.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention dim {dim} is not divisible by num_heads {num_heads}; pick a divisor")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        out, attn = attend(qkv[0], qkv[1], qkv[2], need_weights)  # (B, H, N, d)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(out)), attn


class CrossAttention(nn.Module):
    """Multi-head cross-attention with separate q/k/v projections (HoT TRA, MHFormer CHI).

    Args:
        dim: channels C of queries, keys and values.
        num_heads: heads H.
        qkv_bias: bias on `linear_q/k/v`.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention dim {dim} is not divisible by num_heads {num_heads}; pick a divisor")
        self.num_heads = num_heads
        self.linear_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.linear_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.linear_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        return x.reshape(B, N, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, N, d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, N, C = q.shape
        out, _ = attend(self._heads(self.linear_q(q)), self._heads(self.linear_k(k)), self._heads(self.linear_v(v)))
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))


class Mlp(nn.Module):
    """fc1 -> GELU (exact erf) -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden: int, out_dim: Optional[int] = None, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Per-sample stochastic depth: zero a whole residual branch with probability `p` while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm transformer block: x + DP(attn(norm1 x)); x + DP(mlp(norm2 x)).

    Args:
        dim: channels C.
        num_heads: attention heads.
        mlp_ratio: MLP hidden = mlp_ratio * C.
        qkv_bias: bias on the qkv projection.
        drop: dropout in the MLP and after the attention projection.
        drop_path: stochastic-depth rate of both residual branches.
        norm_eps: LayerNorm epsilon (1e-6 in MixSTE/MotionBERT, 1e-5 in MotionAGFormer).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, qkv_bias: bool = True,
                 drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        y, attn = self.attn(self.norm1(x), need_weights)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, attn


class PoseBackbone(nn.Module):
    """The hourglass contract every family implements, so pruning and recovery are written once:

        embed_tokens(x) -> tokens (B, T, ..., C)       time on dim 1
        forward_layer(i, tokens, need_weights) -> (tokens, temporal attention (B, ..., T, T) or None)
        final_norm(tokens) -> tokens                   before any token-level recovery
        regress(tokens) -> poses (B, T, J, 3)
        frame_features(tokens) -> (B, T, D)            what a clustering pruner compares

    plus the attributes set by `_set_dims`. Defaults here: no final norm, frame features = mean
    over the joint axis, and `forward` = the unpruned model.
    """

    pipeline = "seq2seq"

    def _set_dims(self, cfg, embed_dim: int) -> None:
        self.cfg = cfg
        self.num_frames, self.num_joints, self.in_chans = cfg.num_frames, cfg.num_joints, cfg.in_chans
        self.embed_dim, self.depth, self.num_heads, self.qkv_bias = embed_dim, cfg.depth, cfg.num_heads, cfg.qkv_bias

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def temporal_positions(self) -> Optional[torch.Tensor]:
        """(1, T, C) the temporal position embedding tokens get, if the family has one (position-aware
        recovery reads it); None: the wrapper falls back to sinusoidal positions."""
        return None

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(x)
        for i in range(self.depth):
            x, _ = self.forward_layer(i, x)
        return self.regress(self.final_norm(x))
