"""MotionBERT's DSTformer: dual-stream spatio-temporal transformer.

Paper: Zhu et al., "MotionBERT: A Unified Perspective on Learning Human Motion Representations",
ICCV 2023, arXiv 2210.06551. Official code: github.com/Walter0807/MotionBERT (lib/model/DSTformer.py);
HoT's copy: NationalGAILab/HoT model/motionbert/. Module names follow the official state_dict.

Each of the `depth` layers runs two branches on the same input — spatial-then-temporal (`blocks_st`)
and temporal-then-spatial (`blocks_ts`) — fused per token by learned softmax weights (`ts_attn`).
The paper preset is the size HoT uses (dim 256, MLP ratio 4: MotionBERT-Lite), 243 frames; presets
`full` and `lite` are the two sizes MotionBERT releases.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .layers import Attention, DropPath, Mlp, PoseBackbone
from .registry import register_backbone, resolve_config

__all__ = ["MotionBERT", "MotionBERTConfig"]


@dataclass(frozen=True)
class MotionBERTConfig:
    num_frames: int = 243
    num_joints: int = 17
    in_chans: int = 3          # (x, y, confidence)
    embed_dim: int = 256       # dim_feat
    dim_rep: int = 512         # representation before the head (Linear + tanh)
    depth: int = 5
    num_heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6


PRESETS = {
    "paper": MotionBERTConfig(),   # HoT's setting: the MotionBERT-Lite size
    "tiny": MotionBERTConfig(num_frames=27, embed_dim=64, dim_rep=128, depth=4, num_heads=4, mlp_ratio=2.0),
    # The family's own sizes (Walter0807/MotionBERT README model table; maxlen 243, depth 5, num_heads 8,
    # dim_rep 512, att_fuse True in both): MotionBERT, "MotionBERT (162MB)", configs/pretrain/MB_pretrain.yaml
    # (dim_feat 512, mlp_ratio 2; the same in pose3d/MB_ft_h36m.yaml and MB_train_h36m.yaml), and
    # MotionBERT-Lite, "MotionBERT-Lite (61MB)", configs/pretrain/MB_lite.yaml (dim_feat 256, mlp_ratio 4),
    # the same config as `paper`. The sizes are fp32 weight files: params x 4 bytes, in MiB.
    "full": MotionBERTConfig(embed_dim=512, mlp_ratio=2.0),
    "lite": MotionBERTConfig(embed_dim=256, mlp_ratio=4.0),
}


class DSTBlock(nn.Module):
    """Spatial (over joints) and temporal (over frames) attention + MLP pairs in `order` ('st' or 'ts')."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float,
                 norm_eps: float, order: str):
        super().__init__()
        self.order = order
        self.norm1_s, self.norm1_t = nn.LayerNorm(dim, eps=norm_eps), nn.LayerNorm(dim, eps=norm_eps)
        self.norm2_s, self.norm2_t = nn.LayerNorm(dim, eps=norm_eps), nn.LayerNorm(dim, eps=norm_eps)
        self.attn_s = Attention(dim, num_heads, qkv_bias)
        self.attn_t = Attention(dim, num_heads, qkv_bias)
        hidden = int(dim * mlp_ratio)
        self.mlp_s, self.mlp_t = Mlp(dim, hidden), Mlp(dim, hidden)
        self.drop_path = DropPath(drop_path)

    def _spatial(self, x):                                   # x (B, T, J, C)
        B, T, J, C = x.shape
        y = x.reshape(B * T, J, C)
        y = y + self.drop_path(self.attn_s(self.norm1_s(y))[0])
        y = y + self.drop_path(self.mlp_s(self.norm2_s(y)))
        return y.reshape(B, T, J, C)

    def _temporal(self, x, need_weights):
        B, T, J, C = x.shape
        y = x.transpose(1, 2).reshape(B * J, T, C)
        a, attn = self.attn_t(self.norm1_t(y), need_weights)
        y = y + self.drop_path(a)
        y = y + self.drop_path(self.mlp_t(self.norm2_t(y)))
        return y.reshape(B, J, T, C).transpose(1, 2), attn

    def forward(self, x, need_weights: bool = False):
        if self.order == "st":
            x, attn = self._temporal(self._spatial(x), need_weights)
        else:
            x, attn = self._temporal(x, need_weights)
            x = self._spatial(x)
        return x, attn


class MotionBERT(PoseBackbone):
    def __init__(self, cfg: MotionBERTConfig):
        super().__init__()
        C = cfg.embed_dim
        self._set_dims(cfg, C)
        self.joints_embed = nn.Linear(cfg.in_chans, C)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_joints, C))
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, 1, C))
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        blk = dict(num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, norm_eps=cfg.norm_eps)
        self.blocks_st = nn.ModuleList(DSTBlock(C, drop_path=dpr[i], order="st", **blk) for i in range(cfg.depth))
        self.blocks_ts = nn.ModuleList(DSTBlock(C, drop_path=dpr[i], order="ts", **blk) for i in range(cfg.depth))
        self.ts_attn = nn.ModuleList(nn.Linear(2 * C, 2) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(C, eps=cfg.norm_eps)
        self.pre_logits = nn.Sequential()
        self.pre_logits.add_module("fc", nn.Linear(C, cfg.dim_rep))
        self.pre_logits.add_module("act", nn.Tanh())
        self.head = nn.Linear(cfg.dim_rep, 3)
        self._init_weights()

    def _init_weights(self):
        # official init: trunc_normal(0.02) on Linear weights and embeddings, zero biases; the
        # branch fusion starts at 0.5 / 0.5
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.temp_embed, std=0.02)
        for fuse in self.ts_attn:
            nn.init.zeros_(fuse.weight)
            nn.init.constant_(fuse.bias, 0.5)

    # --- hourglass contract
    def embed_tokens(self, x):
        """(B, T, J, 3) -> (B, T, J, C); the temporal embedding needs the full clip length."""
        return self.joints_embed(x) + self.pos_embed + self.temp_embed

    def forward_layer(self, i, x, need_weights: bool = False):
        """Both branches + fusion. Attention weights, on request: the two branches' temporal attention
        averaged, as (B, J, H, T, T)."""
        B, T, J, C = x.shape
        x_st, a_st = self.blocks_st[i](x, need_weights)
        x_ts, a_ts = self.blocks_ts[i](x, need_weights)
        alpha = self.ts_attn[i](torch.cat([x_st, x_ts], dim=-1)).softmax(dim=-1)
        x = x_st * alpha[..., :1] + x_ts * alpha[..., 1:]
        attn = None if a_st is None else ((a_st + a_ts) / 2).reshape(B, J, *a_st.shape[1:])
        return x, attn

    def final_norm(self, x):
        return self.norm(x)

    def temporal_positions(self) -> torch.Tensor:
        return self.temp_embed[:, :, 0]

    def regress(self, x):
        return self.head(self.pre_logits(x))


@register_backbone(presets=PRESETS)
def motionbert(preset: str = "paper", **overrides) -> MotionBERT:
    """MotionBERT / DSTformer (paper: 243 frames, 5 dual-stream layers, dim 256, 8 heads, MLP ratio 4).
    The official sizes are presets `full` (dim 512, MLP ratio 2) and `lite` (= `paper`)."""
    return MotionBERT(resolve_config(PRESETS, preset, overrides, "motionbert"))
