"""The hourglass wrapper: any backbone x any pruner x any recoverer x any schedule, written once.

embed -> layers; before layer l of each stage (l, k) the pruner reduces the tokens to k (keeps, merges
or transforms them) and what each token stands for (`TokenState`: its original frame, the token every
original frame lives in, how many frames it holds) is composed through the stages (hierarchical pruning
= several stages). After the last layer and the backbone's final norm: a token-level recoverer restores
T tokens before the head, an output-level recoverer runs the head on the k tokens and fills T frames; a
seq2frame pipeline keeps the centre frame a token of its own at every stage and returns its pose only.
`check_hourglass` refuses, in one line built from the registries, a pair whose recoverer cannot restore
the kind of tokens the pruner produces, a pipeline or stage count the pruner does not support, and
options that are not the strategy's.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..registry import PIPELINES, backbone_config, backbone_pipelines, create
from . import merging, spectral  # noqa: F401  (register merge/unmerge and dct/idct)
from .pruning import PRUNERS, PruneContext
from .recovery import RECOVERERS, sinusoidal_positions
from .schedule import Schedule, parse_schedule
from .strategy import BuildContext, TokenState
from .tokens import gather_frames

__all__ = ["Hourglass", "StageTrace", "build_hourglass", "check_hourglass", "create_hourglass", "compatible_recoverers",
           "PIPELINES"]


class StageTrace(list):
    """What `forward_with_index` returns about the stages: a list of each stage's tokens' original frames
    (B, k) (-1 for tokens that are not frames), with the pruner's replayable `plans` attached; pass it
    back as `indices=` to reduce another input (e.g. the mirrored clip) exactly the same way."""

    def __init__(self, frames=(), plans=()):
        super().__init__(frames)
        self.plans = list(plans)



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
                           kept_only: bool = False) -> Tuple[torch.Tensor, "StageTrace"]:
        """Like forward, also returning the stages (`StageTrace`: each stage's tokens' original frames
        (B, k_s), with the plans attached).

        `indices` replays a previous pass's reduction (e.g. the flip pass of test-time augmentation
        reuses the unflipped pass's): its StageTrace, or for keep-type pruners a list of original frame
        indices per stage. `kept_only` returns the head's poses on the k tokens (B, k, J, 3), for training
        a seq2frame model against ground truth at the frames they stand at.
        """
        B, T = x.shape[:2]
        if T != self.num_frames:
            raise ValueError(f"input has {T} frames but the model was built for {self.num_frames}")
        bb = self.backbone
        tokens = bb.embed_tokens(x)
        state = TokenState.initial(B, T, x.device)
        if self.recoverer.options is not None and getattr(self.recoverer.options, "query_init", None) == "pos":
            state.positions = self.temporal_positions()
        # dynamo cannot trace a torch.Generator: compiled, the tie-break noise is a hash (PruneContext.noise)
        gen = None if torch.compiler.is_compiling() else torch.Generator(device=x.device).manual_seed(self.seed)
        trace = StageTrace()
        attn = None
        for i in range(bb.depth):
            stage = self._stage_of_layer.get(i)
            if stage is not None:
                k = self.schedule[stage].tokens
                if indices is None:
                    ctx = PruneContext(inputs=x, global_idx=state.frames, generator=gen, attn=attn, centre=self.centre,
                                       sizes=state.sizes, seed=self.seed, stage=stage)
                    tokens, plan = self.pruner.reduce(tokens, bb.frame_features(tokens).detach(), k, ctx)
                else:  # replay: the plans of a previous pass, or (keep-type pruners) its frames
                    plan = (indices.plans[stage] if isinstance(indices, StageTrace)
                            else self.pruner.plan_from_frames(indices[stage], state))
                    tokens = self.pruner.replay(plan, tokens)
                state = self.pruner.track(plan, state)
                if self.pos_embed_token is not None:
                    pe = self.pos_embed_token[stage]                           # (1, k, C)
                    tokens = tokens + pe.reshape(1, k, *([1] * (tokens.ndim - 3)), pe.shape[-1])
                trace.append(state.frames)
                trace.plans.append(plan)
            need = self.pruner.needs_attention and (i + 1) in self._stage_of_layer
            tokens, attn = bb.forward_layer(i, tokens, need_weights=need)
        tokens = bb.final_norm(tokens)

        if self.pipeline == "seq2frame" or kept_only:
            poses = bb.regress(tokens)                                           # (B, k, J, 3)
            if getattr(bb, "regresses_centre", False):                           # the head pools to one frame
                return poses, trace
            if kept_only:
                return poses, trace
            pos = (state.frames == self.centre).to(torch.uint8).argmax(-1, keepdim=True)
            return gather_frames(poses, pos), trace
        level = self.recoverer.level
        if level == "token":
            return bb.regress(self.recoverer.recover(tokens, state, T)), trace
        poses = bb.regress(tokens)
        if level == "output":
            return self.recoverer.recover(poses, state, T), trace
        return poses, trace  # level "none": only valid without pruning (checked at build)

    def temporal_positions(self) -> torch.Tensor:
        """(1, T, C): sinusoidal positions plus the backbone's temporal embedding where it has one (as trained
        so far). The sinusoid makes every frame's position distinct from the first step: MixSTE initialises
        its learned embedding to zeros, so on its own it would make position-aware queries the zero queries."""
        if getattr(self, "_sinusoid", None) is None or self._sinusoid.shape[-1] != self.backbone.embed_dim:
            self._sinusoid = sinusoidal_positions(self.num_frames, self.backbone.embed_dim)
        device = next(self.parameters()).device
        pos = self.backbone.temporal_positions() if hasattr(self.backbone, "temporal_positions") else None
        sinusoid = self._sinusoid.to(device)
        return sinusoid if pos is None else sinusoid + pos


def compatible_recoverers(pruner: str, pruner_args: Optional[dict] = None) -> List[str]:
    """The recoverers that can restore what `pruner` produces (for seq2seq), by the registries' declarations."""
    kind = PRUNERS.get(pruner).produces
    return [r for r in RECOVERERS.names() if RECOVERERS.get(r).level != "none"
            and kind in RECOVERERS.get(r).accepts(RECOVERERS.get(r).Options())]


def check_hourglass(depth: int, frames: int, pruner: str = "none", recoverer: str = "none", schedule=(),
                    pipeline: str = "seq2seq", supported_pipelines: Sequence[str] = PIPELINES,
                    pruner_args: Optional[dict] = None, recoverer_args: Optional[dict] = None) -> Schedule:
    """Validate a combination without building anything; returns the parsed schedule.
    Every user error is one line naming the fix; valid names come from the registries."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; valid pipelines: {', '.join(PIPELINES)}")
    if pipeline not in supported_pipelines:
        raise ValueError(f"this backbone supports pipeline {', '.join(supported_pipelines)} only; "
                         f"set pipeline={supported_pipelines[0]}")
    p_cls, r_cls = PRUNERS.get(pruner), RECOVERERS.get(recoverer)  # unknown names: one line listing the valid ones
    PRUNERS.options(pruner, pruner_args)
    r_opts = RECOVERERS.options(recoverer, recoverer_args)
    sched = parse_schedule(schedule).validate(depth, frames)
    if pruner == "none" and sched:
        raise ValueError("pruner 'none' keeps every token but a schedule was given; drop the schedule or pick a pruner")
    if pruner != "none" and not sched:
        raise ValueError(f"pruner {pruner!r} needs a schedule, e.g. schedule=[[{max(1, depth // 3)},"
                         f"{max(1, frames // 3)}]]")
    if pipeline not in p_cls.pipelines:
        raise ValueError(f"pruner {pruner!r} supports pipeline {', '.join(p_cls.pipelines)} only (its "
                         f"{p_cls.produces} tokens have no centre frame to return)")
    if p_cls.max_stages is not None and len(sched) > p_cls.max_stages:
        raise ValueError(f"pruner {pruner!r} runs at most {p_cls.max_stages} stage(s); use a schedule of "
                         f"{p_cls.max_stages} stage(s), e.g. schedule=[[{sched[0].layer},{sched[-1].tokens}]]")
    if pipeline == "seq2frame" and recoverer != "none":
        raise ValueError(f"seq2frame returns the centre frame only; use recoverer=none, not {recoverer!r}")
    if pipeline == "seq2seq" and sched:
        fits = compatible_recoverers(pruner)
        if recoverer == "none":
            raise ValueError(f"a pruned seq2seq model must restore every frame; pick recoverer={' | '.join(fits)} "
                             "(or pipeline=seq2frame)")
        if p_cls.produces not in r_cls.accepts(r_opts):
            raise ValueError(f"recoverer {recoverer!r} cannot restore the {p_cls.produces} tokens pruner {pruner!r} "
                             f"produces (it takes {', '.join(sorted(r_cls.accepts(r_opts)))} tokens); pick "
                             f"recoverer={' | '.join(fits)}")
    return sched


def build_hourglass(backbone: nn.Module, pruner: str = "none", recoverer: str = "none", schedule=(),
                    pipeline: str = "seq2seq", pruner_args: Optional[dict] = None,
                    recoverer_args: Optional[dict] = None, **kwargs) -> Hourglass:
    """Check the combination (`check_hourglass`), then build it."""
    sched = check_hourglass(backbone.depth, backbone.num_frames, pruner, recoverer, schedule, pipeline,
                            getattr(backbone, "pipelines", PIPELINES), pruner_args, recoverer_args)
    p = PRUNERS.build(pruner, **(pruner_args or {}))
    context = BuildContext(dim=backbone.embed_dim, num_frames=backbone.num_frames, num_heads=backbone.num_heads,
                           qkv_bias=backbone.qkv_bias)
    r = RECOVERERS.build(recoverer, context=context, **(recoverer_args or {}))
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
                            backbone_pipelines(backbone), pruner_args, recoverer_args)
    if hasattr(cfg, "frames_per_layer") and backbone_args.get("frames_per_layer") is None:
        backbone_args["frames_per_layer"] = sched.frames_per_layer(cfg.depth, cfg.num_frames)
    model = create(backbone, preset=preset, **backbone_args)
    return build_hourglass(model, pruner, recoverer, sched, pipeline, pruner_args, recoverer_args, **kwargs)
