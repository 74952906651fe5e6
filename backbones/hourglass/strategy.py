"""What every pruner and recoverer shares: typed options, and the record of what reduced tokens stand for.

A strategy's options are a frozen dataclass (`Options`) checked before any model is built: an unknown
key, a wrong type or a value out of range is one line that lists the valid options. Model sizes a
recoverer needs (`BuildContext`) are passed apart from the user's options, so no constructor needs a
catch-all `**kwargs` that would swallow a typo.

`TokenState` is what the hourglass wrapper tracks through the pruning stages and hands to the
recoverer: which original frames each current token stands for. Pruners declare the kind of tokens
they produce (`KINDS`): `frames` (each token is one original frame: keep-type pruners), `merged` (each
token averages a set of frames: token merging) or `spectral` (tokens are not frames, e.g. frequency
coefficients); recoverers declare which kinds they can restore, and the wrapper checks the pair.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional

import torch
import torch.nn as nn

from ..registry import Registry

__all__ = ["KINDS", "NoOptions", "Strategy", "BuildContext", "TokenState", "check_options", "StrategyRegistry"]

KINDS = ("frames", "merged", "spectral")


@dataclass(frozen=True)
class NoOptions:
    """A strategy without options."""


@dataclass(frozen=True)
class BuildContext:
    """Sizes of the model a strategy is built into (not user options)."""
    dim: int
    num_frames: int
    num_heads: int = 8
    qkv_bias: bool = True


@dataclass
class TokenState:
    """Which original frames the current tokens stand for, after the stages so far.

    Attributes:
        frames: (B, n) the original frame each token stands at: the kept frame (frames), the frame of
            the token that absorbed the others (merged), -1 (spectral).
        assign: (B, T) the token each original frame now lives in, -1 where it was dropped; None for
            spectral tokens.
        sizes: (B, n) how many original frames each token holds (1 for kept frames).
        kind: one of KINDS.
        positions: (1, T, C) the temporal positions of the T original frames (the backbone's temporal
            embedding, or sinusoidal where it has none), for recoverers that use them; None if unused.
    """
    frames: torch.Tensor
    assign: Optional[torch.Tensor]
    sizes: torch.Tensor
    kind: str = "frames"
    positions: Optional[torch.Tensor] = None

    @classmethod
    def initial(cls, B: int, T: int, device) -> "TokenState":
        frames = torch.arange(T, device=device).expand(B, T)
        return cls(frames=frames, assign=frames, sizes=torch.ones(B, T, device=device))


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def check_options(kind: str, name: str, options_cls: type, args: Optional[Dict[str, Any]]) -> Any:
    """`options_cls(**args)` with one-line errors: unknown keys list the valid options; a wrong type or a
    value outside a Literal's choices names what it must be; the dataclass's own `__post_init__` may add
    range checks (one-line ValueErrors)."""
    args = dict(args or {})
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    hints = typing.get_type_hints(options_cls)
    unknown = sorted(set(args) - set(fields))
    if unknown:
        valid = ", ".join(f"{n} (default {f.default!r})" for n, f in fields.items()) or "none: it takes no options"
        raise ValueError(f"unknown {kind} option(s) {', '.join(unknown)} for {kind} {name!r}; valid options: {valid}")
    for key, value in args.items():
        hint = hints[key]
        if not _type_ok(value, hint):
            want = ("one of " + ", ".join(map(str, typing.get_args(hint))) if typing.get_origin(hint) is typing.Literal
                    else getattr(hint, "__name__", str(hint)))
            raise ValueError(f"{kind} {name!r} option {key} must be {want}, got {value!r}")
    return options_cls(**args)


class Strategy(nn.Module):
    """Base of pruners and recoverers: `Options` (a frozen dataclass) holds the user's settings."""

    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None):
        super().__init__()
        self.options = options if options is not None else self.Options()


class StrategyRegistry(Registry):
    """The registry of pruners or recoverers: `build(name, context=None, **options)` checks the options
    against the class's `Options` (one-line errors) and builds it; recoverers also get the model sizes
    (`context`, or its fields as keywords: dim, num_frames, num_heads, qkv_bias)."""

    CONTEXT = tuple(f.name for f in dataclasses.fields(BuildContext))

    def options(self, name: str, args: Optional[Dict[str, Any]] = None) -> Any:
        """The validated options of strategy `name` (nothing is built)."""
        return check_options(self.kind, name, self.get(name).Options, args)

    def build(self, name: str, context: Optional[BuildContext] = None, **kwargs) -> Any:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        sizes = {k: kwargs.pop(k) for k in self.CONTEXT if k in kwargs}
        cls = self.get(name)
        options = self.options(name, kwargs)
        if getattr(cls, "needs_context", False):
            context = context or BuildContext(**{"dim": 1, "num_frames": 1, **sizes})
            return cls(options, context)
        return cls(options)
