"""A model's positional inputs, as the counters and the timer take them: a tensor or a sequence of them."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch

__all__ = ["Inputs", "as_inputs"]

Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]


def as_inputs(inputs: Inputs) -> Tuple[torch.Tensor, ...]:
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
