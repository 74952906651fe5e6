"""PoseFormer: spatial transformer per frame, then a temporal transformer over frames (seq2frame).

Paper: Zheng et al., "3D Human Pose Estimation with Spatial and Temporal Transformers", ICCV 2021,
arXiv 2103.10455. Official code: github.com/zczcwh/PoseFormer (common/model_poseformer.py). Not in
the HoT/H2OT grids; the baseline their FLOPs-vs-MPJPE figure plots. Module names follow the
official state_dict.

Hourglass mapping: the spatial stage (per frame, no temporal mixing) is part of `embed_tokens`; the
prunable layers are the temporal blocks over (B, T, J*C) frame tokens. The head's `weighted_mean`
(Conv1d over the frame axis) has one weight per frame it sees, so it is sized by the tokens left
after the schedule (`frames_per_layer`), and the model only runs seq2frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn

from .layers import Block, PoseBackbone
from .registry import register_backbone, resolve_config

__all__ = ["PoseFormer", "PoseFormerConfig"]


@dataclass(frozen=True)
class PoseFormerConfig:
    num_frames: int = 81
    num_joints: int = 17
    in_chans: int = 2
    spatial_dim: int = 32       # embed_dim_ratio; temporal dim = spatial_dim * num_joints
    spatial_depth: int = 4
    depth: int = 4              # temporal blocks (the prunable layers)
    num_heads: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    frames_per_layer: Optional[Tuple[int, ...]] = None


PRESETS = {
    "paper": PoseFormerConfig(),   # 81 frames, the released model
    "tiny": PoseFormerConfig(num_frames=27, spatial_dim=16, spatial_depth=2, depth=4, num_heads=4),
    # The family's own receptive fields (zczcwh/PoseFormer run_poseformer.py: embed_dim_ratio 32, depth 4,
    # num_heads 8, mlp_ratio 2 for every `-f`); paper Table 6 lists f = 9, 27, 81. f81 is `paper`.
    "f9": PoseFormerConfig(num_frames=9),
    "f27": PoseFormerConfig(num_frames=27),
    "f81": PoseFormerConfig(num_frames=81),
}


class PoseFormer(PoseBackbone):
    pipeline = "seq2frame"
    pipelines = ("seq2frame",)      # the head reduces the clip to one (centre) frame
    regresses_centre = True

    def __init__(self, cfg: PoseFormerConfig):
        super().__init__()
        frames = cfg.frames_per_layer or (cfg.num_frames,) * cfg.depth
        self.frames_per_layer = tuple(frames)
        Cs, Ct = cfg.spatial_dim, cfg.spatial_dim * cfg.num_joints
        self._set_dims(cfg, Ct)
        self.Spatial_patch_to_embedding = nn.Linear(cfg.in_chans, Cs)
        self.Spatial_pos_embed = nn.Parameter(torch.zeros(1, cfg.num_joints, Cs))
        self.Temporal_pos_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, Ct))
        blk = dict(mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias)
        sdpr = torch.linspace(0, cfg.drop_path_rate, cfg.spatial_depth).tolist()
        tdpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.Spatial_blocks = nn.ModuleList(Block(Cs, cfg.num_heads, drop_path=p, **blk) for p in sdpr)
        self.blocks = nn.ModuleList(Block(Ct, cfg.num_heads, drop_path=p, **blk) for p in tdpr)
        self.Spatial_norm = nn.LayerNorm(Cs, eps=1e-6)
        self.Temporal_norm = nn.LayerNorm(Ct, eps=1e-6)
        self.weighted_mean = nn.Conv1d(self.frames_per_layer[-1], 1, kernel_size=1)
        self.head = nn.Sequential(nn.LayerNorm(Ct), nn.Linear(Ct, cfg.num_joints * 3))

    def embed_tokens(self, x):
        """(B, T, J, 2) -> spatial transformer per frame -> frame tokens (B, T, J*Cs)."""
        B, T, J, _ = x.shape
        y = self.Spatial_patch_to_embedding(x.reshape(B * T, J, -1)) + self.Spatial_pos_embed
        for blk in self.Spatial_blocks:
            y = blk(y)[0]
        return self.Spatial_norm(y).reshape(B, T, -1) + self.Temporal_pos_embed

    def forward_layer(self, i, x, need_weights=False):
        if x.shape[1] != self.frames_per_layer[i]:
            raise ValueError(f"temporal block {i} was built for {self.frames_per_layer[i]} frames but sees "
                             f"{x.shape[1]}; build with frames_per_layer from the schedule")
        return self.blocks[i](x, need_weights)

    def final_norm(self, x):
        return self.Temporal_norm(x)

    def regress(self, x):
        """(B, k, J*Cs) -> the clip's (centre) pose (B, 1, J, 3)."""
        if x.shape[1] != self.weighted_mean.in_channels:
            raise ValueError(f"weighted_mean expects {self.weighted_mean.in_channels} frames, got {x.shape[1]}")
        return self.head(self.weighted_mean(x)).reshape(x.shape[0], 1, self.num_joints, 3)

    def frame_features(self, x):
        return x


@register_backbone(presets=PRESETS, pipelines=("seq2frame",))
def poseformer(preset: str = "paper", **overrides) -> PoseFormer:
    """PoseFormer (paper: 81 frames, 4 spatial blocks of dim 32, 4 temporal blocks of dim 544).
    The official receptive fields are presets `f9`, `f27` and `f81` (= `paper`)."""
    return PoseFormer(resolve_config(PRESETS, preset, overrides, "poseformer"))
