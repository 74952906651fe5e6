"""MotionAGFormer: attention (transformer) and graph-convolution (GCNFormer) streams fused adaptively.

Paper: Mehraban et al., "MotionAGFormer: Enhancing 3D Human Pose Estimation with a
Transformer-GCNFormer Network", WACV 2024, arXiv 2310.16288. Official code:
github.com/TaatiTeam/MotionAGFormer; HoT's copy: NationalGAILab/HoT model/motionagformer/.
Module names follow the official state_dict.

The temporal GCN normalises per frame index (BatchNorm1d over T), so its parameters are sized by the
frames each layer sees: the builder takes `frames_per_layer` (from the pruning schedule) and builds
every layer static and correct (as HoT's hot_motionagformer.py does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn

from .layers import Attention, DropPath, Mlp, PoseBackbone
from .registry import register_backbone, resolve_config

__all__ = ["MotionAGFormer", "MotionAGFormerConfig", "SPATIAL_NEIGHBOURS"]

# Row j lists the joints j aggregates from in the spatial GCN (the official adjacency lists). NOTE: not
# symmetric — the thorax (8) lists neck and spine only, while both shoulders (11, 14) list the thorax.
SPATIAL_NEIGHBOURS = {0: (1, 7), 1: (2, 0), 2: (3, 1), 3: (2,), 4: (5, 0), 5: (6, 4), 6: (5,), 7: (0, 8), 8: (7, 9),
                      9: (8, 10), 10: (9,), 11: (12, 8), 12: (13, 11), 13: (12,), 14: (15, 8), 15: (16, 14),
                      16: (15,)}


@dataclass(frozen=True)
class MotionAGFormerConfig:
    num_frames: int = 243
    num_joints: int = 17
    in_chans: int = 3                 # (x, y, confidence)
    embed_dim: int = 128              # dim_feat
    dim_rep: int = 512
    depth: int = 16
    num_heads: int = 4                # HoT's default; the official B config uses 8 (same shapes)
    neighbour_num: int = 4            # temporal-GCN kNN; official B config uses 2 (same shapes)
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    layer_scale_init: float = 1e-5
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5
    frames_per_layer: Optional[Tuple[int, ...]] = None  # tokens each layer sees; None = num_frames everywhere


PRESETS = {
    "paper": MotionAGFormerConfig(),   # HoT's setting: the B size with 4 heads / 4 temporal neighbours
    "tiny": MotionAGFormerConfig(num_frames=27, embed_dim=32, dim_rep=64, depth=4, neighbour_num=2),
    # The family's own variants, MotionAGFormer-XS / -S / -B / -L (README table: 2.2 / 4.8 / 11.7 / 19.0 M
    # params), from TaatiTeam/MotionAGFormer configs/h36m/MotionAGFormer-{xsmall,small,base,large}.yaml
    # (n_layers -> depth, dim_feat -> embed_dim, n_frames -> num_frames). All four share dim_rep 512,
    # mlp_ratio 4, num_heads 8, qkv_bias False, neighbour_num 2, layer_scale_init_value 1e-5, drop_path 0,
    # and the settings this model implements without a field: hierarchical False,
    # use_adaptive_fusion True, use_temporal_similarity True, use_tcn False, graph_only False.
    "xs": MotionAGFormerConfig(num_frames=27, embed_dim=64, depth=12, num_heads=8, neighbour_num=2),
    "s": MotionAGFormerConfig(num_frames=81, embed_dim=64, depth=26, num_heads=8, neighbour_num=2),
    "b": MotionAGFormerConfig(num_frames=243, embed_dim=128, depth=16, num_heads=8, neighbour_num=2),
    "l": MotionAGFormerConfig(num_frames=243, embed_dim=128, depth=26, num_heads=8, neighbour_num=2),
}
PRESETS["base"] = PRESETS["b"]  # the former name of the B preset, kept as an alias


def _normalise(adj: torch.Tensor) -> torch.Tensor:
    """D^-1/2 A D^-1/2 with D the row sums."""
    d = adj.sum(dim=-1).clamp(min=1e-6).pow(-0.5)
    return d[..., :, None] * adj * d[..., None, :]


class GCN(nn.Module):
    """ReLU(x + BN(Â·V(x) + U(x))): over joints with the fixed skeleton (`mode='spatial'`) or over
    frames with a kNN graph of raw dot-product similarity (`mode='temporal'`); Â = D^-1/2 A D^-1/2."""

    def __init__(self, dim: int, num_nodes: int, mode: str, neighbour_num: int = 4, num_joints: int = 17):
        super().__init__()
        self.mode, self.neighbour_num = mode, neighbour_num
        self.U, self.V = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.batch_norm = nn.BatchNorm1d(num_nodes)
        for lin in (self.U, self.V):
            nn.init.normal_(lin.weight, 0, (2.0 / dim) ** 0.5)
        if mode == "spatial":
            adj = torch.zeros(num_joints, num_joints)
            for j, neighbours in SPATIAL_NEIGHBOURS.items():
                adj[j, list(neighbours)] = 1.0
            self.register_buffer("adj", _normalise(adj), persistent=False)  # not in the official state_dict

    def forward(self, x, need_weights=False):               # x (B, T, J, C)
        B, T, J, C = x.shape
        if self.mode == "spatial":
            y = x.reshape(B * T, J, C)
            adj = self.adj
        else:
            y = x.transpose(1, 2).reshape(B * J, T, C)
            sim = y @ y.transpose(1, 2)
            thr = sim.topk(min(self.neighbour_num, T), dim=-1).values[..., -1:]
            adj = _normalise((sim >= thr).to(y.dtype))
        y = torch.relu(y + self.batch_norm(adj @ self.V(y) + self.U(y)))
        if self.mode == "spatial":
            return y.reshape(B, T, J, C), None
        return y.reshape(B, J, T, C).transpose(1, 2), None


class AxisAttention(Attention):
    """Self-attention over joints ('spatial') or frames ('temporal') of (B, T, J, C) tokens; `qkv` and
    `proj` sit directly on the mixer, as in the official state_dict (`mixer.qkv.weight`)."""

    def __init__(self, dim, num_heads, qkv_bias, mode):
        super().__init__(dim, num_heads, qkv_bias)
        self.mode = mode

    def forward(self, x, need_weights=False):
        B, T, J, C = x.shape
        if self.mode == "spatial":
            y, _ = super().forward(x.reshape(B * T, J, C))
            return y.reshape(B, T, J, C), None
        y, a = super().forward(x.transpose(1, 2).reshape(B * J, T, C), need_weights)
        return y.reshape(B, J, T, C).transpose(1, 2), a


class AGFormerBlock(nn.Module):
    """x + DP(ls1 * mixer(norm1 x)); x + DP(ls2 * mlp(norm2 x)) with a learnable layer scale."""

    def __init__(self, dim, mixer: nn.Module, mlp_ratio, norm_eps, layer_scale_init, drop_path):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=norm_eps), nn.LayerNorm(dim, eps=norm_eps)
        self.mixer = mixer
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.layer_scale_1 = nn.Parameter(layer_scale_init * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(layer_scale_init * torch.ones(dim))

    def forward(self, x, need_weights=False):
        y, attn = self.mixer(self.norm1(x), need_weights)  # every mixer returns (tokens, weights or None)
        x = x + self.drop_path(self.layer_scale_1 * y)
        x = x + self.drop_path(self.layer_scale_2 * self.mlp(self.norm2(x)))
        return x, attn


class MotionAGFormerBlock(nn.Module):
    def __init__(self, cfg: MotionAGFormerConfig, frames: int, drop_path: float):
        super().__init__()
        C = cfg.embed_dim
        blk = dict(mlp_ratio=cfg.mlp_ratio, norm_eps=cfg.norm_eps, layer_scale_init=cfg.layer_scale_init,
                   drop_path=drop_path)
        self.att_spatial = AGFormerBlock(C, AxisAttention(C, cfg.num_heads, cfg.qkv_bias, "spatial"), **blk)
        self.att_temporal = AGFormerBlock(C, AxisAttention(C, cfg.num_heads, cfg.qkv_bias, "temporal"), **blk)
        self.graph_spatial = AGFormerBlock(C, GCN(C, cfg.num_joints, "spatial", num_joints=cfg.num_joints), **blk)
        self.graph_temporal = AGFormerBlock(C, GCN(C, frames, "temporal", cfg.neighbour_num), **blk)
        self.fusion = nn.Linear(2 * C, 2)
        nn.init.zeros_(self.fusion.weight)
        nn.init.constant_(self.fusion.bias, 0.5)

    def forward(self, x, need_weights=False):
        x_attn, attn = self.att_temporal(self.att_spatial(x)[0], need_weights)
        x_graph = self.graph_temporal(self.graph_spatial(x)[0])[0]
        alpha = self.fusion(torch.cat([x_attn, x_graph], dim=-1)).softmax(dim=-1)
        return x_attn * alpha[..., :1] + x_graph * alpha[..., 1:], attn


class MotionAGFormer(PoseBackbone):
    def __init__(self, cfg: MotionAGFormerConfig):
        super().__init__()
        frames = cfg.frames_per_layer or (cfg.num_frames,) * cfg.depth
        if len(frames) != cfg.depth:
            raise ValueError(f"frames_per_layer has {len(frames)} entries for {cfg.depth} layers")
        self.frames_per_layer = tuple(frames)
        C = cfg.embed_dim
        self._set_dims(cfg, C)
        self.joints_embed = nn.Linear(cfg.in_chans, C)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_joints, C))
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.layers = nn.ModuleList(MotionAGFormerBlock(cfg, frames[i], dpr[i]) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(C, eps=cfg.norm_eps)
        self.rep_logit = nn.Sequential()
        self.rep_logit.add_module("fc", nn.Linear(C, cfg.dim_rep))
        self.rep_logit.add_module("act", nn.Tanh())
        self.head = nn.Linear(cfg.dim_rep, 3)

    def embed_tokens(self, x):
        return self.joints_embed(x) + self.pos_embed

    def forward_layer(self, i, x, need_weights=False):
        B, T, J, C = x.shape
        if T != self.frames_per_layer[i]:
            raise ValueError(f"layer {i} was built for {self.frames_per_layer[i]} frames but sees {T}; "
                             f"build with frames_per_layer from the schedule")
        x, attn = self.layers[i](x, need_weights)
        return x, None if attn is None else attn.reshape(B, J, *attn.shape[1:])

    def final_norm(self, x):
        return self.norm(x)

    def regress(self, x):
        return self.head(self.rep_logit(x))


@register_backbone(presets=PRESETS)
def motionagformer(preset: str = "paper", **overrides) -> MotionAGFormer:
    """MotionAGFormer (paper: 243 frames, 16 layers, dim 128; HoT's 4 heads / 4 temporal neighbours).
    The official variants are presets `xs`, `s`, `b` (alias `base`) and `l`."""
    return MotionAGFormer(resolve_config(PRESETS, preset, overrides, "motionagformer"))
