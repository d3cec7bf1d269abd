"""The optimizer and learning-rate schedule of a run: AdamW, linear warm-up, cosine decay."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from shiftwise.training.config import OptimConfig

__all__ = ["build_optimizer", "build_scheduler", "param_groups", "scaled_lr"]


def scaled_lr(optim: OptimConfig, world: int) -> float:
    """``optim.lr`` scaled linearly from ``lr_base_batch`` to the effective batch
    ``batch_size * accum_steps * world``."""
    return optim.lr * optim.batch_size * optim.accum_steps * world / optim.lr_base_batch


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on >= 2-D weights only, except those the model lists in
    ``no_weight_decay()`` (timm's hook: for our networks, the parameters outside the sparse
    scope, GRN's ``gamma``/``beta``), so ``shiftwise train`` and timm's optimizer factory
    decay the same parameters."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 and name not in skip else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, optim: OptimConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` at learning rate ``lr``, as one fused kernel over all
    parameters where PyTorch has it for their device (CPU from torch 2.4, CUDA), else the
    default implementation: the same update, without a Python loop over hundreds of tensors
    (the SW networks have about twice ConvNeXt's parameter tensors)."""
    groups = param_groups(model, optim.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for these parameters' device or dtype
        return torch.optim.AdamW(groups, lr=lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, steps_per_epoch: int, total_steps: int
) -> LRScheduler:
    """Linear warm-up (from 0.1% of the peak) then cosine decay to ``min_lr``, per step."""
    warmup = min(round(optim.warmup_epochs * steps_per_epoch), total_steps - 1)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=optim.min_lr)
    if warmup <= 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])
