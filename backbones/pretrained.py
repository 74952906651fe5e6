"""Load official checkpoints (upstream and HoT) into vptbench models; weights are never downloaded.

Our module names follow each family's official state_dict, so conversion is mostly unwrapping:
1. take the state dict out of a training checkpoint (`model_pos`, `model`, `state_dict` entries);
2. strip DataParallel's `module.` prefix;
3. for an `Hourglass`, route HoT's extra keys — `pos_embed_token` (one stage), `x_token` and
   `cross_attention.*` (TRA) — to the wrapper, and everything else to `backbone.`.
Loading is strict: any missing or unexpected key or shape mismatch is one error line listing them and,
for a file of another model, naming what the file holds (`identify_weights`: the family whose key names it
has, and the preset whose shapes it fits). Files are read with `torch.load(weights_only=True)`: a file
carrying pickled code is refused, never run.
"""
from __future__ import annotations

import os
import re
import warnings
from functools import lru_cache
from typing import Dict, Mapping, NamedTuple, Optional

import torch
import torch.nn as nn

__all__ = ["load_pretrained", "convert_official", "unwrap_checkpoint", "read_weights", "identify_weights",
           "fit_frame_norms", "weights_into", "describe_preset", "WeightsId", "PUBLISHED_WEIGHTS", "published_weights",
           "IMAGE25D_FAMILIES", "predicts_image25d"]


class Published(NamedTuple):
    path: str     # under a `weights_dir=`, as its publisher lays it out (a folder: its first checkpoint by name)
    preset: str   # the vptbench preset the file fits
    source: str   # who publishes it, and where the file goes in their repository


# each family's unpruned H36M checkpoint under its published name. MixSTE and MHFormer: HoT's releases (the
# HoT README puts each in checkpoint/pretrained/<model>/, one model_<epoch>_<p1>.pth); MotionBERT and
# MotionAGFormer: their own repositories' (HoT releases none). PoseFormer has none here: its head weighs
# every input frame, so it cannot be evaluated pruned from an unpruned file (pass weights=PATH unpruned).
PUBLISHED_WEIGHTS: Dict[str, Published] = {
    "mixste": Published("mixste", "paper", "HoT README, checkpoint/pretrained/mixste/model_*.pth (243 frames)"),
    "mhformer": Published("mhformer", "paper", "HoT README, checkpoint/pretrained/mhformer/model_*.pth (351 frames)"),
    "motionbert": Published("FT_MB_lite_MB_ft_h36m_global_lite/best_epoch.bin", "lite",
                            "MotionBERT model zoo (docs/pose3d.md), checkpoint/pose3d/FT_MB_lite_MB_ft_h36m_global_lite/"),
    "motionagformer": Published("motionagformer-b-h36m.pth.tr", "b",
                                "MotionAGFormer README, checkpoint/motionagformer-b-h36m.pth.tr (base, 243 frames)"),
}


# families whose official H36M files predict MotionBERT's 2.5D image space (MotionBERT's datareader_h36m;
# MotionAGFormer trains on the same data files), not camera-frame metres: scored by eval.protocol=motionbert
IMAGE25D_FAMILIES = ("motionbert", "motionagformer")


def predicts_image25d(family: str, path: str | os.PathLike) -> bool:
    """Whether the checkpoint at `path` predicts 2.5D image coordinates: an official file (bare backbone
    keys) of a family in IMAGE25D_FAMILIES. A vptbench checkpoint (an Hourglass: `backbone.` keys) was
    trained on camera-frame metres, whatever its family."""
    if family not in IMAGE25D_FAMILIES:
        return False
    return not _is_hourglass_state(read_weights(path))


def published_weights(weights_dir: str | os.PathLike, family: str) -> str:
    """The path of `family`'s published checkpoint under `weights_dir` (one line when it has none or the
    file is not there)."""
    if family not in PUBLISHED_WEIGHTS:
        raise ValueError(f"weights_dir= knows no published checkpoint of {family} (published: "
                         f"{', '.join(sorted(PUBLISHED_WEIGHTS))}); pass weights=PATH for this cell")
    entry = PUBLISHED_WEIGHTS[family]
    path = os.path.join(os.path.expanduser(str(weights_dir)), entry.path)
    if not os.path.exists(path):
        raise ValueError(f"weights_dir={weights_dir} has no {entry.path} ({family}: {entry.source}); put the "
                         f"file there or pass weights=PATH")
    return path

_CONTAINER_KEYS = ("model_pos", "model", "state_dict")
_HOT_RECOVERER_KEYS = ("x_token", "cross_attention.")


def unwrap_checkpoint(obj) -> Dict[str, torch.Tensor]:
    """A checkpoint (a flat state dict or a training dict holding one) -> a flat state dict without
    `module.` prefixes."""
    if isinstance(obj, Mapping):
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("checkpoint holds no state dict of tensors (looked for a flat dict or one under "
                         f"{', '.join(_CONTAINER_KEYS)})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _is_hourglass_state(state: Mapping[str, torch.Tensor]) -> bool:
    """A vptbench (Hourglass) checkpoint, whose keys already are ours: `backbone.` prefixes, which no official
    file has."""
    return any(k.startswith("backbone.") for k in state)


def convert_official(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official key names -> this model's key names (identity for a bare backbone, and for a vptbench
    Hourglass checkpoint, whose keys already are)."""
    if not hasattr(model, "backbone"):
        return dict(state_dict)
    if _is_hourglass_state(state_dict):
        return dict(state_dict)
    out = {}
    for k, v in state_dict.items():
        if k == "pos_embed_token":
            out["pos_embed_token.0"] = v  # HoT prunes once: our stage 0
        elif k.startswith(_HOT_RECOVERER_KEYS):
            out[f"recoverer.{k}"] = v
        else:
            out[f"backbone.{k}"] = v
    return out


def _short(names, n=6) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f" … (+{len(names) - n} more)" if len(names) > n else "")


def read_weights(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """The flat state dict of a checkpoint file (official or vptbench), read without running any code it
    carries; every problem is one line naming the file."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {str(path)!r} does not exist; pass the path of an official .pth/.bin file")
    st = os.stat(path)
    return _read_weights(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=2)  # a grid's cells share a file: preflight and each cell read it once
def _read_weights(path: str, _size: int, _mtime_ns: int) -> Dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # its pickle-protocol notice is not the user's business
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors have many types
        first = " ".join(str(e).split()) or type(e).__name__
        found = re.search(r"GLOBAL ([\w.]+)", first)
        if found:
            raise ValueError(f"checkpoint {path!r} carries pickled code or objects ({found.group(1)}), which "
                             "vptbench never runs; re-save its tensors: torch.save(model.state_dict(), path)") from None
        raise ValueError(f"cannot read checkpoint {path!r} with weights_only=True (not a torch checkpoint?): "
                         f"{first[:300]}") from None
    try:
        return unwrap_checkpoint(raw)
    except ValueError as e:
        raise ValueError(f"checkpoint {path!r}: {e}") from None


def _pattern(keys) -> frozenset:
    return frozenset(re.sub(r"\.\d+\.", ".N.", k) for k in keys)


@lru_cache(maxsize=1)
def _family_patterns() -> Dict[str, frozenset]:
    """Each family's key names with block indices folded (its smallest preset is built once to read them)."""
    from .registry import create, list_backbones, list_presets

    out = {}
    for fam in list_backbones():
        presets = list_presets(fam)
        out[fam] = _pattern(create(fam, preset="tiny" if "tiny" in presets else presets[0]).state_dict())
    return out


HOT_EXTRAS = ("pos_embed_token", "x_token", "cross_attention.")


class WeightsId(NamedTuple):
    family: Optional[str]   # the registered family whose key names the file has, if any
    preset: Optional[str]   # its preset whose shapes the file fits, if any
    text: str               # all of it in words

    def __str__(self) -> str:
        return self.text


def identify_weights(state: Mapping[str, torch.Tensor]) -> WeightsId:
    """What a state dict holds: the family whose key names it has, the preset whose shapes it fits (or its
    tensor count), and HoT's extra keys, e.g. 'mixste weights (preset paper: 243 frames, dim 512, depth 8)
    with a pruning stage to 81 tokens and TRA recovery for 243 frames'."""
    from .registry import create, list_presets

    own = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in state.items()}
    extras = {k: v for k, v in own.items() if k.startswith(HOT_EXTRAS) or k.startswith(("recoverer.", "pos_embed_token."))}
    core = {k: v for k, v in own.items() if k not in extras and not k.startswith("pruner.")}
    pattern = _pattern(core)
    scores = {fam: len(pattern & p) / len(pattern | p) for fam, p in _family_patterns().items()}
    fam = max(scores, key=scores.get)
    if scores[fam] < 0.5:
        return WeightsId(None, None, f"weights of no known family ({len(core)} tensors, e.g. {_short(core, 3)})")
    what, found = f"{fam} weights ({len(core)} tensors, matching no preset's shapes)", None
    for preset in list_presets(fam):
        ref = create(fam, preset=preset).state_dict()
        if set(ref) == set(core) and all(ref[k].shape == core[k].shape for k in ref):
            found = preset
            what = f"{fam} weights (preset {preset}: {describe_preset(fam, preset)})"
            break
    stage = next((v for k, v in extras.items() if k.startswith("pos_embed_token")), None)
    x_token = next((v for k, v in extras.items() if k.endswith("x_token")), None)
    if stage is not None:
        what += f" with a pruning stage to {stage.shape[1]} tokens"
    if x_token is not None:
        what += f"{' and' if stage is not None else ' with'} TRA recovery for {x_token.shape[1]} frames"
    return WeightsId(fam, found, what)


def describe_preset(family: str, preset: str, **overrides) -> str:
    from .registry import backbone_config

    c = backbone_config(family, preset, **overrides)
    dim = getattr(c, "embed_dim", None) or getattr(c, "spatial_dim", None)  # PoseFormer: its spatial width
    return f"{c.num_frames} frames, dim {dim}, depth {c.depth}"


def fit_frame_norms(model: nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """MotionAGFormer's temporal GCN normalises per frame (BatchNorm1d over the frame axis), so after a
    pruning stage it has one channel per kept frame where an unpruned file has one per input frame. Which
    frames are kept changes from clip to clip, so each kept slot starts from the file's mean over frames
    (an approximation for zero-shot use; fine-tuning trains it further)."""
    state = dict(state)
    frames = getattr(model, "num_frames", None)
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.modules.batchnorm._BatchNorm) or frames is None or mod.num_features >= frames:
            continue
        for part in ("weight", "bias", "running_mean", "running_var"):
            key = f"{name}.{part}"
            if key in state and state[key].shape == (frames,):
                state[key] = state[key].mean().expand(mod.num_features).clone()
    return state


# what a pruned model may have beyond an unpruned backbone's file: zero-initialised stage embeddings (they add
# nothing until trained) and the strategies' own parameters (a learnable recoverer: untrained)
STAGE_EMBEDDINGS = ("pos_embed_token.",)
STRATEGY_PARAMETERS = ("recoverer.", "pruner.")


def weights_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, cell: str,
                 untrained_ok: bool, family: Optional[str] = None, preset: Optional[str] = None) -> nn.Module:
    """Load a state dict (official key names or vptbench's) into `model` strictly, except that an unpruned
    backbone's file may fill a pruned model: its stage embeddings start at zero, frame-sized norms are
    fitted (`fit_frame_norms`), and a learnable strategy the file does not carry is allowed only with
    `untrained_ok` (fine-tuning trains it). Any other misfit is one line naming what the file holds and
    what the cell is (`source`, `cell`) and, when the file is another family's or preset's (`family`, `preset`
    being the cell's), the options that fit it."""
    converted = convert_official(state, model)
    if hasattr(model, "backbone"):
        converted = fit_frame_norms(model, converted)
    own = model.state_dict()
    missing = set(own) - set(converted)
    unexpected = set(converted) - set(own)
    shapes = [f"{k} {tuple(converted[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(converted)
              if converted[k].shape != own[k].shape]
    untrained = {k for k in missing if k.startswith(STRATEGY_PARAMETERS)}
    if untrained and not untrained_ok:
        raise ValueError(f"{source} holds {identify_weights(state)}, without the parameters of the cell {cell}'s "
                         f"learnable strategy ({_short(untrained, 2)}): it would run untrained; use a parameter-free "
                         f"recoverer (interpolation, nearest) for zero-shot, or mode=finetune to train it")
    missing -= untrained | {k for k in missing if k.startswith(STAGE_EMBEDDINGS)}
    if missing or unexpected or shapes:
        held = identify_weights(state)
        if held.family and held.preset and (held.family, held.preset) != (family, preset):
            raise ValueError(f"{source} holds {held} but the cell is {cell}; use backbone={held.family} "
                             f"preset={held.preset}")
        parts = [f"{len(missing)} missing: {_short(missing, 3)}" if missing else "",
                 f"{len(unexpected)} unexpected: {_short(unexpected, 3)}" if unexpected else "",
                 f"{len(shapes)} shape mismatches: {_short(shapes, 2)}" if shapes else ""]
        raise ValueError(f"{source} holds {held} but the cell is {cell} ("
                         + "; ".join(p for p in parts if p) + "); pick the backbone, preset, schedule and recoverer "
                         "the file was trained with")
    model.load_state_dict(converted, strict=False)
    return model


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an official (upstream or HoT) checkpoint file into `model`, strictly. Returns the model."""
    state = convert_official(read_weights(path), model)
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state)
              if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing: {_short(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {_short(unexpected)}" if unexpected else "",
                 f"{len(shapes)} shape mismatches: {_short(shapes, 3)}" if shapes else ""]
        raise ValueError(f"checkpoint {os.path.basename(str(path))} does not fit {type(model).__name__} "
                         f"(check backbone, preset, schedule): " + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)
    return model
