"""Training objectives on (B, T, J, 3) poses in metres, root joint zeroed in prediction and target.

`mpjpe`: mean joint position error. `mixste`: MixSTE's objective (its paper, Sec. 3.4, and the official
HoT `main_mixste*.py` training loop): joint-weighted MPJPE + 0.5 x temporal consistency + 2.0 x velocity
error, with the per-joint weights below.
"""
from __future__ import annotations

import torch

__all__ = ["MIXSTE_JOINT_WEIGHTS", "mpjpe_loss", "mixste_loss"]

# per-joint weights of the MixSTE loss, H36M joint order (torso 1, knees/elbows 2.5 / 1.5, feet/hands 4)
MIXSTE_JOINT_WEIGHTS = (1, 1, 2.5, 2.5, 1, 2.5, 2.5, 1, 1, 1, 1.5, 1.5, 4, 4, 1.5, 4, 4)


def _zero_root(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(x[..., :1, :]), x[..., 1:, :]], dim=-2)


def mpjpe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L2 over joints and frames, root joint zeroed in both (metres)."""
    return (_zero_root(pred) - _zero_root(target)).norm(dim=-1).mean()


def mixste_loss(pred: torch.Tensor, target: torch.Tensor, tc_weight: float = 0.5,
                vel_weight: float = 2.0) -> torch.Tensor:
    """MixSTE objective on (B, T, J, 3), root zeroed in both (HoT main_mixste*.py): per-joint weighted MPJPE
    + tc_weight x mean of the joint-weighted squared first differences of the *prediction* + vel_weight x
    mean velocity error. One-frame outputs (seq2frame heads that pool to the centre) get the weighted
    MPJPE only."""
    pred, target = _zero_root(pred), _zero_root(target)
    w = pred.new_tensor(MIXSTE_JOINT_WEIGHTS)
    if pred.shape[-2] != len(w):
        raise ValueError(f"the mixste loss weights 17 H36M joints, the model predicts {pred.shape[-2]}; "
                         "use train.loss=mpjpe")
    loss = (w * (pred - target).norm(dim=-1)).mean()
    if pred.shape[1] < 2:
        return loss
    dp, dt = pred.diff(dim=1), target.diff(dim=1)                     # (B, T-1, J, 3)
    tc = (w[:, None] * dp.square()).mean()
    vel = (dp - dt).norm(dim=-1).mean()
    return loss + tc_weight * tc + vel_weight * vel
