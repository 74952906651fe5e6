"""MixSTE: Seq2seq Mixed Spatio-Temporal Encoder for 3D human pose estimation in video.

Paper: Zhang et al., CVPR 2022, arXiv 2203.00859. Official code: github.com/JinluZhang1126/MixSTE
(HoT's copy: NationalGAILab/HoT model/mixste/). Module names follow the official state_dict
(`STEblocks.i`, `TTEblocks.i`, `Spatial_norm`, ...) so official checkpoints map one-to-one.

Layer i = spatial block STE_i (attention over joints per frame) -> shared `Spatial_norm` -> temporal
block TTE_i (attention over frames per joint) -> shared `Temporal_norm`. The temporal positional
embedding is added once, before TTE_0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .layers import Block, PoseBackbone
from .registry import register_backbone, resolve_config

__all__ = ["MixSTE", "MixSTEConfig"]


@dataclass(frozen=True)
class MixSTEConfig:
    num_frames: int = 243     # clip length T
    num_joints: int = 17
    in_chans: int = 2         # (x, y)
    embed_dim: int = 512
    depth: int = 8            # STE + TTE pairs
    num_heads: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    norm_eps: float = 1e-6    # blocks and the shared norms; the head LayerNorm uses torch's 1e-5


PRESETS = {
    "paper": MixSTEConfig(),   # HoT's setting: 243 frames
    # small enough to train on a 2-core CPU in minutes
    "tiny": MixSTEConfig(num_frames=27, embed_dim=32, depth=4, num_heads=4, drop_path_rate=0.0),
    # The family's own receptive fields (JinluZhang1126/MixSTE run.py / common/arguments.py: -cs 512,
    # -dep 8, num_heads 8, mlp_ratio 2 for every `-f`); the paper reports T = 27 (MPI-INF-3DHP), 81 and
    # 243 (Human3.6M). f243 is `paper`.
    "f27": MixSTEConfig(num_frames=27),
    "f81": MixSTEConfig(num_frames=81),
    "f243": MixSTEConfig(num_frames=243),
}


class MixSTE(PoseBackbone):
    def __init__(self, cfg: MixSTEConfig):
        super().__init__()
        C = cfg.embed_dim
        self._set_dims(cfg, C)

        self.Spatial_patch_to_embedding = nn.Linear(cfg.in_chans, C)
        self.Spatial_pos_embed = nn.Parameter(torch.zeros(1, cfg.num_joints, C))
        self.Temporal_pos_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, C))
        # the same stochastic-depth rate for STE i and TTE i, as in the official code
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        blk = dict(num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, norm_eps=cfg.norm_eps)
        self.STEblocks = nn.ModuleList(Block(C, drop_path=dpr[i], **blk) for i in range(cfg.depth))
        self.TTEblocks = nn.ModuleList(Block(C, drop_path=dpr[i], **blk) for i in range(cfg.depth))
        self.Spatial_norm = nn.LayerNorm(C, eps=cfg.norm_eps)
        self.Temporal_norm = nn.LayerNorm(C, eps=cfg.norm_eps)
        self.head = nn.Sequential(nn.LayerNorm(C), nn.Linear(C, 3))

    # --- hourglass contract (PoseBackbone); final_norm is the identity: Temporal_norm ends every layer
    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, J, in_chans) -> tokens (B, T, J, C)."""
        return self.Spatial_patch_to_embedding(x) + self.Spatial_pos_embed

    def forward_layer(self, i: int, x: torch.Tensor, need_weights: bool = False):
        """One STE+TTE pair on (B, T, J, C); returns tokens and, on request, the temporal attention
        weights as (B, J, H, T, T)."""
        B, T, J, C = x.shape
        x, _ = self.STEblocks[i](x.reshape(B * T, J, C))
        x = self.Spatial_norm(x).reshape(B, T, J, C).transpose(1, 2).reshape(B * J, T, C)  # (B*J, T, C)
        if i == 0:
            x = x + self.Temporal_pos_embed
        x, attn = self.TTEblocks[i](x, need_weights)
        x = self.Temporal_norm(x).reshape(B, J, T, C).transpose(1, 2)
        if attn is not None:
            attn = attn.reshape(B, J, *attn.shape[1:])
        return x, attn

    def temporal_positions(self) -> torch.Tensor:
        return self.Temporal_pos_embed

    def regress(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, T, J, C) -> poses (B, T, J, 3)."""
        return self.head(x)



@register_backbone(presets=PRESETS)
def mixste(preset: str = "paper", **overrides) -> MixSTE:
    """MixSTE (paper: 243 frames, 8 STE+TTE pairs, dim 512, 8 heads, MLP ratio 2).
    The official receptive fields are presets `f27`, `f81` and `f243` (= `paper`)."""
    return MixSTE(resolve_config(PRESETS, preset, overrides, "mixste"))
