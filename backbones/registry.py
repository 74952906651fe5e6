"""Name -> builder registries (timm-style), with one-line errors that list the valid names.

One small `Registry` class serves backbones here and pruners/recoverers in `backbones.hourglass`;
nothing else is registered (only what a config picks by name).
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Any, Callable, Dict, Iterable, List, Union

__all__ = ["PIPELINES", "Registry", "register_backbone", "create", "list_backbones", "is_backbone", "BACKBONES",
           "backbone_config", "backbone_pipelines", "list_presets", "resolve_config"]


def _natural_key(name: str):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name.lower())]


class Registry:
    """A named table of builders. `kind` is used in error messages ("backbone", "pruner", ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Callable[..., Any]] = {}

    def register(self, fn: Callable[..., Any] = None, *, name: str | None = None):
        """Decorator: `@reg.register` (keyed by `__name__`) or `@reg.register(name="x")`."""

        def _add(f):
            key = name or f.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = f
            return f

        return _add(fn) if fn is not None else _add

    def names(self, filter: Union[str, Iterable[str]] = "", exclude: Union[str, Iterable[str]] = "") -> List[str]:
        names = list(self._entries)
        if filter:
            pats = [filter] if isinstance(filter, str) else list(filter)
            names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in pats)]
        if exclude:
            pats = [exclude] if isinstance(exclude, str) else list(exclude)
            names = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in pats)]
        return sorted(names, key=_natural_key)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise ValueError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        valid = ", ".join(self.names())
        hint = difflib.get_close_matches(str(name), self.names(), n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"unknown {self.kind} {name!r}{did}; valid {self.kind}s: {valid}"

    def build(self, name: str, **kwargs) -> Any:
        # "not set" means "use the default": a config file can pass None for any field.
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return self.get(name)(**kwargs)


BACKBONES = Registry("backbone")
# what a wrapped model returns: every input frame (seq2seq) or the centre frame only (seq2frame)
PIPELINES = ("seq2seq", "seq2frame")
_PRESETS: Dict[str, Dict[str, Any]] = {}
_PIPELINES: Dict[str, tuple] = {}


def register_backbone(fn=None, *, presets: Dict[str, Any] | None = None,
                      pipelines: tuple = PIPELINES):
    """Register a backbone builder `fn(preset='paper', **overrides) -> nn.Module` under `fn.__name__`.

    `presets` (name -> frozen config dataclass with at least `depth` and `num_frames`) lets callers
    resolve and validate a configuration without building the model (`backbone_config`);
    `pipelines` names the pipelines the family supports.
    """

    def _add(f):
        BACKBONES.register(f)
        _PRESETS[f.__name__] = presets or {}
        _PIPELINES[f.__name__] = tuple(pipelines)
        return f

    return _add(fn) if fn is not None else _add


def backbone_config(name: str, preset: str | None = "paper", **overrides):
    """The resolved config dataclass of `create(name, preset=preset, **overrides)`, without building it."""
    BACKBONES.get(name)
    preset = preset or "paper"  # None means "the default", as in create()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return resolve_config(_PRESETS[name], preset, overrides, name)


def backbone_pipelines(name: str) -> tuple:
    BACKBONES.get(name)
    return _PIPELINES[name]


def list_presets(name: str) -> List[str]:
    BACKBONES.get(name)
    return sorted(_PRESETS[name], key=_natural_key)


def create(name: str, **overrides) -> Any:
    """Build backbone `name`; `preset=` picks a named size, other overrides replace config fields."""
    return BACKBONES.build(name, **overrides)


def list_backbones(filter: Union[str, Iterable[str]] = "", exclude: Union[str, Iterable[str]] = "") -> List[str]:
    return BACKBONES.names(filter, exclude)


def is_backbone(name: str) -> bool:
    return name in BACKBONES


def resolve_config(presets: Dict[str, Any], preset: str, overrides: Dict[str, Any], family: str):
    """Merge a named preset (a frozen dataclass) with field overrides; one-line errors for typos."""
    import dataclasses

    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for {family}; valid presets: "
                         f"{', '.join(sorted(presets, key=_natural_key))}")
    base = presets[preset]
    fields = {f.name for f in dataclasses.fields(base)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown {family} option(s) {', '.join(bad)}; valid options: {', '.join(sorted(fields))}")
    # configs are frozen (hashable): sequences from a config file or a schedule arrive as lists
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    for key, value in overrides.items():
        _check_type(family, key, getattr(base, key), value)
        _check_range(family, key, value)
    return dataclasses.replace(base, **overrides)


def _check_type(family: str, key: str, default: Any, value: Any) -> None:
    """An override must have its preset value's type (an int where a float is expected is fine), so that
    `depth=x` is a one-line error here, not a failure deep inside the model's constructor."""
    want = type(default)
    if default is None or isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return
    raise ValueError(f"{family} option {key} must be {want.__name__} (like {default!r}), got {value!r}")


def _check_range(family: str, key: str, value: Any) -> None:
    """Architecture numbers are sizes and counts (ints >= 1: depth=0 would build an empty model whose
    record reads "ok" with 0 GFLOPs), rates and scales (finite floats >= 0, drop rates < 1)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, int) and value < 1:
        raise ValueError(f"{family} option {key} must be >= 1, got {value} (a size or count)")
    if isinstance(value, float) and not (math.isfinite(value) and value >= 0 and ("drop" not in key or value < 1)):
        rule = "in [0, 1)" if "drop" in key else "a finite number >= 0"
        raise ValueError(f"{family} option {key} must be {rule}, got {value}")
