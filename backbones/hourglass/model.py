"""The hourglass wrapper: any backbone x any pruner x any recoverer x any schedule, written once.

embed -> layers; before layer l of each stage (l, k) the pruner keeps k tokens and the kept frames'
*global* indices are composed through the stages (hierarchical pruning = several stages). After the
last layer and the backbone's final norm: a token-level recoverer restores T tokens before the head,
an output-level recoverer runs the head on the kept tokens and fills T frames; a seq2frame pipeline
force-keeps the centre frame at every stage and returns its pose only.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..registry import PIPELINES, backbone_config, backbone_pipelines, create
from .pruning import PRUNERS, PruneContext
from .recovery import RECOVERERS
from .schedule import Schedule, parse_schedule
from .tokens import gather_frames

__all__ = ["Hourglass", "build_hourglass", "check_hourglass", "create_hourglass", "PIPELINES"]



class Hourglass(nn.Module):
    """Args:
        backbone: a model implementing the hourglass contract (embed_tokens, forward_layer, final_norm,
            regress, frame_features; attributes depth, num_frames, embed_dim, num_heads, qkv_bias).
        pruner, recoverer: modules from the PRUNERS / RECOVERERS registries.
        schedule: validated stages; empty = no pruning.
        pipeline: 'seq2seq' (T output frames) or 'seq2frame' (the centre frame, force-kept).
        stage_pos_embed: add a zero-initialised learnable positional embedding (1, k, C) to the tokens
            kept by each stage. Default: on for seq2seq, off for seq2frame, as in the official code.
        seed: seeds the tie-break jitter; the same input gives the same selection.
    """

    def __init__(self, backbone: nn.Module, pruner: nn.Module, recoverer: nn.Module, schedule: Schedule,
                 pipeline: str = "seq2seq", stage_pos_embed: Optional[bool] = None, seed: int = 0):
        super().__init__()
        self.backbone, self.pruner, self.recoverer = backbone, pruner, recoverer
        self.schedule = schedule.validate(backbone.depth, backbone.num_frames)
        self.pipeline, self.seed = pipeline, seed
        self.num_frames = backbone.num_frames
        self.centre = (self.num_frames - 1) // 2 if pipeline == "seq2frame" else None
        if stage_pos_embed is None:
            stage_pos_embed = pipeline == "seq2seq"
        C = backbone.embed_dim
        self.pos_embed_token = nn.ParameterList(
            nn.Parameter(torch.zeros(1, k, C)) for _, k in self.schedule) if stage_pos_embed else None
        self._stage_of_layer = {layer: n for n, (layer, _) in enumerate(self.schedule)}

    @property
    def frames_out(self) -> int:
        """Output frames per clip (what frames/s counts)."""
        return 1 if self.pipeline == "seq2frame" else self.num_frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, J, C_in) -> seq2seq (B, T, J, 3) | seq2frame (B, 1, J, 3)."""
        return self.forward_with_index(x)[0]

    def forward_with_index(self, x: torch.Tensor, indices: Optional[Sequence[torch.Tensor]] = None,
                           kept_only: bool = False) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Like forward, also returning each stage's kept *global* frame indices (B, k_s).

        `indices` replays a previous selection (e.g. the flip pass of test-time augmentation reuses the
        unflipped pass's frames). `kept_only` returns the head's poses on the kept frames only
        (B, k, J, 3), for training a seq2frame model against ground truth at those frames.
        """
        B, T = x.shape[:2]
        if T != self.num_frames:
            raise ValueError(f"input has {T} frames but the model was built for {self.num_frames}")
        bb = self.backbone
        tokens = bb.embed_tokens(x)
        gidx = torch.arange(T, device=x.device).expand(B, T)
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        stage_idx: List[torch.Tensor] = []
        attn = None
        for i in range(bb.depth):
            stage = self._stage_of_layer.get(i)
            if stage is not None:
                k = self.schedule[stage].tokens
                if indices is not None:  # replay: global -> local positions (both sorted)
                    local = torch.searchsorted(gidx.contiguous(), indices[stage].contiguous())
                else:
                    ctx = PruneContext(inputs=x, global_idx=gidx, generator=gen, attn=attn, centre=self.centre)
                    local = self.pruner.select(bb.frame_features(tokens).detach(), k, ctx)
                tokens, gidx = gather_frames(tokens, local), gidx.gather(1, local)
                if self.pos_embed_token is not None:
                    pe = self.pos_embed_token[stage]                           # (1, k, C)
                    tokens = tokens + pe.reshape(1, k, *([1] * (tokens.ndim - 3)), pe.shape[-1])
                stage_idx.append(gidx)
            need = self.pruner.needs_attention and (i + 1) in self._stage_of_layer
            tokens, attn = bb.forward_layer(i, tokens, need_weights=need)
        tokens = bb.final_norm(tokens)

        if self.pipeline == "seq2frame" or kept_only:
            poses = bb.regress(tokens)                                           # (B, k, J, 3)
            if getattr(bb, "regresses_centre", False):                           # the head pools to one frame
                return poses, stage_idx
            if kept_only:
                return poses, stage_idx
            pos = (gidx == self.centre).to(torch.uint8).argmax(-1, keepdim=True)
            return gather_frames(poses, pos), stage_idx
        level = self.recoverer.level
        if level == "token":
            return bb.regress(self.recoverer.recover(tokens, gidx, T)), stage_idx
        poses = bb.regress(tokens)
        if level == "output":
            return self.recoverer.recover(poses, gidx, T), stage_idx
        return poses, stage_idx  # level "none": only valid without pruning (checked at build)


def check_hourglass(depth: int, frames: int, pruner: str = "none", recoverer: str = "none", schedule=(),
                    pipeline: str = "seq2seq", supported_pipelines: Sequence[str] = PIPELINES) -> Schedule:
    """Validate a combination without building anything; returns the parsed schedule.
    Every user error is one line naming the fix."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; valid pipelines: {', '.join(PIPELINES)}")
    if pipeline not in supported_pipelines:
        raise ValueError(f"this backbone supports pipeline {', '.join(supported_pipelines)} only; "
                         f"set pipeline={supported_pipelines[0]}")
    PRUNERS.get(pruner), RECOVERERS.get(recoverer)  # unknown names -> one-line error listing the valid ones
    sched = schedule if isinstance(schedule, Schedule) else parse_schedule(schedule)
    sched.validate(depth, frames)
    if pruner == "none" and sched:
        raise ValueError("pruner 'none' keeps every token but a schedule was given; drop the schedule or pick a pruner")
    if pruner != "none" and not sched:
        raise ValueError(f"pruner {pruner!r} needs a schedule, e.g. schedule=[[{max(1, depth // 3)},"
                         f"{max(1, frames // 3)}]]")
    if pipeline == "seq2frame" and recoverer != "none":
        raise ValueError(f"seq2frame returns the centre frame only; use recoverer=none, not {recoverer!r}")
    if pipeline == "seq2seq" and sched and recoverer == "none":
        raise ValueError("a pruned seq2seq model must restore every frame; pick recoverer=attention, "
                         "interpolation or nearest (or pipeline=seq2frame)")
    return sched


def build_hourglass(backbone: nn.Module, pruner: str = "none", recoverer: str = "none", schedule=(),
                    pipeline: str = "seq2seq", pruner_args: Optional[dict] = None,
                    recoverer_args: Optional[dict] = None, **kwargs) -> Hourglass:
    """Check the combination (`check_hourglass`), then build it."""
    sched = check_hourglass(backbone.depth, backbone.num_frames, pruner, recoverer, schedule, pipeline,
                            getattr(backbone, "pipelines", PIPELINES))
    p = PRUNERS.build(pruner, **(pruner_args or {}))
    r = RECOVERERS.build(recoverer, dim=backbone.embed_dim, num_frames=backbone.num_frames,
                         num_heads=backbone.num_heads, qkv_bias=backbone.qkv_bias, **(recoverer_args or {}))
    return Hourglass(backbone, p, r, sched, pipeline=pipeline, **kwargs)


def create_hourglass(backbone: str, preset: str = "paper", pruner: str = "none", recoverer: str = "none",
                     schedule=(), pipeline: str = "seq2seq", pruner_args: Optional[dict] = None,
                     recoverer_args: Optional[dict] = None, backbone_args: Optional[dict] = None,
                     **kwargs) -> Hourglass:
    """The one way to build a cell's model by names: validates first, then builds the backbone (passing
    `frames_per_layer` from the schedule to families whose parameters depend on it) and wraps it."""
    backbone_args = dict(backbone_args or {})
    cfg = backbone_config(backbone, preset, **backbone_args)
    sched = check_hourglass(cfg.depth, cfg.num_frames, pruner, recoverer, schedule, pipeline,
                            backbone_pipelines(backbone))
    if hasattr(cfg, "frames_per_layer") and backbone_args.get("frames_per_layer") is None:
        backbone_args["frames_per_layer"] = sched.frames_per_layer(cfg.depth, cfg.num_frames)
    model = create(backbone, preset=preset, **backbone_args)
    return build_hourglass(model, pruner, recoverer, sched, pipeline, pruner_args, recoverer_args, **kwargs)
