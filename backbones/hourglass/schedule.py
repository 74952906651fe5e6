"""Pruning schedules: one stage is HoT, several stages are H2OT's hierarchical pruning.

A stage `(layer, tokens)` keeps `tokens` frames *before* layer `layer` (0-based), i.e. `layer` layers
still see the previous token count. Layers strictly increase and lie in [1, depth); token counts
strictly decrease and never exceed the clip length.
"""
from __future__ import annotations

from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

__all__ = ["Stage", "Schedule", "parse_schedule"]


class Stage(NamedTuple):
    layer: int
    tokens: int


class Schedule(Tuple[Stage, ...]):
    """An immutable tuple of stages; build it with `parse_schedule`, check it with `validate`.

    A schedule remembers the (depth, frames) it was validated for, so the config that checked it first
    and every builder it then passes through (`check_hourglass`, `build_hourglass`, `Hourglass`) share
    that one check instead of repeating it."""

    checked_for: Optional[Tuple[int, int]] = None

    def validate(self, depth: int, frames: int) -> "Schedule":
        if self.checked_for != (depth, frames):
            self._check(depth, frames)
            self.checked_for = (depth, frames)
        return self

    def _check(self, depth: int, frames: int) -> None:
        prev_layer, prev_tokens = 0, frames
        for n, (layer, tokens) in enumerate(self, start=1):
            where = f"schedule stage {n} [{layer}, {tokens}]"
            if not 1 <= layer < depth:
                raise ValueError(f"{where}: layer must be in 1..{depth - 1} (pruning happens before that layer "
                                 f"of a {depth}-layer model)")
            if n > 1 and layer <= prev_layer:
                raise ValueError(f"{where}: layers must strictly increase (previous stage prunes before layer {prev_layer})")
            if tokens < 1 or tokens > frames:
                raise ValueError(f"{where}: tokens must be in 1..{frames} (the clip has {frames} frames)")
            if n > 1 and tokens >= prev_tokens:
                raise ValueError(f"{where}: tokens must strictly decrease (previous stage keeps {prev_tokens})")
            prev_layer, prev_tokens = layer, tokens

    def frames_per_layer(self, depth: int, frames: int) -> List[int]:
        """Token count each of the `depth` layers sees (static, for frame-sized parameters)."""
        out, t, stages = [], frames, dict(self)
        for i in range(depth):
            t = stages.get(i, t)
            out.append(t)
        return out

    def as_list(self) -> List[List[int]]:
        return [[s.layer, s.tokens] for s in self]

    def __repr__(self) -> str:
        return f"Schedule({self.as_list()})"


def parse_schedule(value: Iterable[Sequence[int]] | None) -> Schedule:
    """Accept `[[3, 81]]`, `[(1, 121), (4, 61)]`, `None` or `[]`; structural errors name the stage. A
    Schedule is returned as it is (with its validation)."""
    if isinstance(value, Schedule):
        return value
    stages = []
    for n, item in enumerate(value or [], start=1):
        item = list(item) if isinstance(item, (list, tuple)) or hasattr(item, "__iter__") else item
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError(f"schedule stage {n} {item!r}: expected [layer, tokens], e.g. schedule=[[3,81]]")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in item):
            raise ValueError(f"schedule stage {n} {item!r}: layer and tokens must be integers")
        stages.append(Stage(*item))
    return Schedule(stages)
