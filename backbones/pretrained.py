"""Load official checkpoints (upstream and HoT) into vptbench models; weights are never downloaded.

Our module names follow each family's official state_dict, so conversion is mostly unwrapping:
1. take the state dict out of a training checkpoint (`model_pos`, `model`, `state_dict` entries);
2. strip DataParallel's `module.` prefix;
3. for an `Hourglass`, route HoT's extra keys — `pos_embed_token` (one stage), `x_token` and
   `cross_attention.*` (TRA) — to the wrapper, and everything else to `backbone.`.
Loading is strict: any missing or unexpected key or shape mismatch is one error line listing them.
"""
from __future__ import annotations

import os
from typing import Dict, Mapping

import torch
import torch.nn as nn

__all__ = ["load_pretrained", "convert_official", "unwrap_checkpoint"]

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


def convert_official(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official key names -> this model's key names (identity for a bare backbone)."""
    if not hasattr(model, "backbone"):
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


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an official (upstream or HoT) checkpoint file into `model`, strictly. Returns the model."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {str(path)!r} does not exist; pass the path of an official .pth/.bin file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors have many types
        raise ValueError(f"cannot read checkpoint {str(path)!r} with weights_only=True: {str(e).splitlines()[0]}") from None
    state = convert_official(unwrap_checkpoint(raw), model)
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
