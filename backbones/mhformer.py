"""MHFormer: Multi-Hypothesis Transformer for 3D human pose estimation.

Paper: Li et al., CVPR 2022, arXiv 2111.12707. Official code: github.com/Vegetebird/MHFormer; HoT's
copy: NationalGAILab/HoT model/mhformer/. Module names follow the official state_dict.

Multi-hypothesis generation (MHG) attends over the 34 coordinate channels with the frames as the
feature axis, so it cannot be pruned and lives in `embed_tokens`. The prunable layers are the two
self-hypothesis-refinement blocks (SHR) and the cross-hypothesis-interaction block (CHI); tokens are
(B, T, 3 hypotheses, C), time on dim 1. Pruning clusters on the concatenated hypotheses (3C).
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Optional

import torch
import torch.nn as nn

from .layers import Attention, Block, CrossAttention, DropPath, Mlp, PoseBackbone
from .registry import register_backbone, resolve_config

__all__ = ["MHFormer", "MHFormerConfig"]


@dataclass(frozen=True)
class MHFormerConfig:
    num_frames: int = 351
    num_joints: int = 17
    in_chans: int = 2
    embed_dim: int = 512       # per hypothesis (`channel`)
    mlp_hidden: int = 1024     # `d_hid`, the MLP over the concatenated hypotheses
    num_heads: int = 8
    mhg_depth: int = 4         # blocks per MHG encoder
    mhg_heads: int = 9         # heads of the MHG encoders (dim = num_frames)
    num_shr: int = 2
    qkv_bias: bool = True
    drop_rate: float = 0.1
    drop_path_rate: float = 0.2
    # The official embedding is Conv1d + BatchNorm1d + ReLU + Dropout(0.25) for frames <= 27 and a bare
    # Conv1d above (model/mhformer.py of both MHFormer and HoT); None follows that rule
    embed_norm: Optional[bool] = None

    @property
    def depth(self) -> int:
        return self.num_shr + 1  # SHR blocks then one CHI block

    @property
    def normed_embedding(self) -> bool:
        return self.num_frames <= 27 if self.embed_norm is None else self.embed_norm


PRESETS = {
    "paper": MHFormerConfig(),   # HoT's setting: 351 frames
    # tiny is ours (no official file has its shapes): the bare embedding, as its committed results were trained
    "tiny": MHFormerConfig(num_frames=27, embed_dim=64, mlp_hidden=128, num_heads=4, mhg_depth=2, mhg_heads=3,
                           embed_norm=False),
    # The family's own receptive fields (Vegetebird/MHFormer: one architecture, `--frames` the only size
    # knob; common/opt.py layers 3, channel 512, d_hid 1024; 4 MHG blocks of 9 heads hard-coded in
    # model/mhformer.py). Paper Table 4 reports 9 / 27 / 81 / 243 / 351 frames; f351 is `paper`.
    # f27 builds the official normed embedding (three BatchNorm1d), so the official 27-frame file loads.
    "f27": MHFormerConfig(num_frames=27),
    "f81": MHFormerConfig(num_frames=81),
    "f243": MHFormerConfig(num_frames=243),
    "f351": MHFormerConfig(num_frames=351),
}


class MHGEncoder(nn.Module):
    """Transformer over the J*C_in coordinate tokens, features = frames."""

    def __init__(self, cfg: MHFormerConfig):
        super().__init__()
        D = cfg.num_frames
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_joints * cfg.in_chans, D))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.mhg_depth).tolist()
        self.blocks = nn.ModuleList(Block(D, cfg.mhg_heads, 2.0, cfg.qkv_bias, drop=cfg.drop_rate, drop_path=p)
                                    for p in dpr)
        self.norm = nn.LayerNorm(D, eps=1e-6)

    def forward(self, x):
        x = self.pos_drop(x + self.pos_embed)
        for blk in self.blocks:
            x = blk(x)[0]
        return self.norm(x)


class HypothesisMlp(nn.Module):
    """The shared tail of SHR and CHI: concat hypotheses -> pre-norm MLP residual -> split."""

    def __init__(self, cfg: MHFormerConfig, drop_path: float):
        super().__init__()
        self.norm2 = nn.LayerNorm(3 * cfg.embed_dim, eps=1e-6)
        self.mlp = Mlp(3 * cfg.embed_dim, cfg.mlp_hidden, drop=cfg.drop_rate)
        self.drop_path = DropPath(drop_path)

    def mix(self, xs):
        x = torch.cat(xs, dim=-1)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return list(x.chunk(3, dim=-1))


class SHRBlock(HypothesisMlp):
    """Self-hypothesis refinement: per-hypothesis self-attention over frames, then the joint MLP."""

    def __init__(self, cfg: MHFormerConfig, drop_path: float):
        super().__init__(cfg, drop_path)
        C = cfg.embed_dim
        for h in (1, 2, 3):
            setattr(self, f"norm1_{h}", nn.LayerNorm(C, eps=1e-6))
            setattr(self, f"attn_{h}", Attention(C, cfg.num_heads, cfg.qkv_bias, proj_drop=cfg.drop_rate))

    def forward(self, xs, need_weights=False):
        out, weights = [], []
        for h, x in enumerate(xs, start=1):
            y, a = getattr(self, f"attn_{h}")(getattr(self, f"norm1_{h}")(x), need_weights)
            out.append(x + self.drop_path(y))
            weights.append(a)
        return self.mix(out), (torch.stack(weights, dim=1) if need_weights else None)


class CHIBlock(HypothesisMlp):
    """Cross-hypothesis interaction; the three updates are sequential (later ones see updated x1, x2)."""

    # (query, key, value) hypotheses for attn_1..3, as in the official block
    ORDER = ((2, 3, 1), (1, 3, 2), (1, 2, 3))

    def __init__(self, cfg: MHFormerConfig, drop_path: float):
        super().__init__(cfg, drop_path)
        C = cfg.embed_dim
        for h in (1, 2, 3):
            for n in (1, 2, 3):
                setattr(self, f"norm3_{h}{n}", nn.LayerNorm(C, eps=1e-6))
            setattr(self, f"attn_{h}", CrossAttention(C, cfg.num_heads, cfg.qkv_bias, proj_drop=cfg.drop_rate))

    def forward(self, xs, need_weights=False):
        xs = list(xs)
        for h, (iq, ik, iv) in enumerate(self.ORDER, start=1):
            norm = lambda n, i: getattr(self, f"norm3_{h}{n}")(xs[i - 1])  # noqa: E731
            xs[h - 1] = xs[h - 1] + self.drop_path(getattr(self, f"attn_{h}")(norm(1, iq), norm(2, ik), norm(3, iv)))
        return self.mix(xs), None


class TransformerHypothesis(nn.Module):
    def __init__(self, cfg: MHFormerConfig):
        super().__init__()
        C, T = cfg.embed_dim, cfg.num_frames
        for h in (1, 2, 3):
            setattr(self, f"pos_embed_{h}", nn.Parameter(torch.zeros(1, T, C)))
            setattr(self, f"pos_drop_{h}", nn.Dropout(cfg.drop_rate))
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.SHR_blocks = nn.ModuleList(SHRBlock(cfg, dpr[i]) for i in range(cfg.num_shr))
        self.CHI_blocks = nn.ModuleList([CHIBlock(cfg, dpr[cfg.num_shr])])
        self.norm = nn.LayerNorm(3 * C, eps=1e-6)


class MHFormer(PoseBackbone):
    pipeline = "seq2frame"  # trained on every frame, evaluated on the centre frame

    def __init__(self, cfg: MHFormerConfig):
        super().__init__()
        self._set_dims(cfg, cfg.embed_dim)
        coords = cfg.num_joints * cfg.in_chans
        for h in (1, 2, 3):
            setattr(self, f"norm_{h}", nn.LayerNorm(cfg.num_frames))  # eps 1e-5, as in the official code
            setattr(self, f"Transformer_encoder_{h}", MHGEncoder(cfg))
            setattr(self, f"embedding_{h}", self._embedding(cfg, coords))
        self.Transformer_hypothesis = TransformerHypothesis(cfg)
        self.regression = nn.Sequential(nn.BatchNorm1d(3 * cfg.embed_dim),
                                        nn.Conv1d(3 * cfg.embed_dim, cfg.num_joints * 3, kernel_size=1))

    @staticmethod
    def _embedding(cfg: MHFormerConfig, coords: int) -> nn.Module:
        conv = nn.Conv1d(coords, cfg.embed_dim, kernel_size=1)
        if not cfg.normed_embedding:
            return conv
        return nn.Sequential(conv, nn.BatchNorm1d(cfg.embed_dim), nn.ReLU(inplace=True), nn.Dropout(0.25))

    def embed_tokens(self, x):
        """(B, T, J, 2) -> MHG -> three hypotheses with positional embeddings, (B, T, 3, C)."""
        B, T, J, Cin = x.shape
        x = x.reshape(B, T, J * Cin).transpose(1, 2)                  # (B, 34, T): coordinates are tokens
        hyps = []
        for h in (1, 2, 3):
            x = x + getattr(self, f"Transformer_encoder_{h}")(getattr(self, f"norm_{h}")(x))
            hyps.append(x)
        th = self.Transformer_hypothesis
        out = []
        for h, x_h in enumerate(hyps, start=1):
            e = getattr(self, f"embedding_{h}")(x_h).transpose(1, 2)     # (B, T, C)
            out.append(getattr(th, f"pos_drop_{h}")(e + getattr(th, f"pos_embed_{h}")))
        return torch.stack(out, dim=2)

    def forward_layer(self, i, x, need_weights=False):
        th = self.Transformer_hypothesis
        block = th.SHR_blocks[i] if i < self.cfg.num_shr else th.CHI_blocks[i - self.cfg.num_shr]
        xs, attn = block(list(x.unbind(dim=2)), need_weights)
        return torch.stack(xs, dim=2), attn

    def final_norm(self, x):
        B, T, H, C = x.shape
        return self.Transformer_hypothesis.norm(x.reshape(B, T, H * C)).reshape(B, T, H, C)

    def regress(self, x):
        """(B, T, 3, C) -> (B, T, J, 3)."""
        B, T = x.shape[:2]
        y = self.regression(x.reshape(B, T, -1).transpose(1, 2))     # (B, J*3, T)
        return y.transpose(1, 2).reshape(B, T, self.num_joints, 3)

    def frame_features(self, x):
        """The concatenated hypotheses (B, T, 3C), as the official TPC w. MHFormer clusters on."""
        return x.flatten(2)


@register_backbone(presets=PRESETS)
def mhformer(preset: str = "paper", **overrides) -> MHFormer:
    """MHFormer (paper: 351 frames, MHG 3 x 4 blocks, 2 SHR + 1 CHI, dim 512 per hypothesis).
    The official receptive fields are presets `f27`, `f81`, `f243` and `f351` (= `paper`)."""
    return MHFormer(resolve_config(PRESETS, preset, overrides, "mhformer"))
