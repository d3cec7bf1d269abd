"""The optimizer and learning-rate schedule of a run: AdamW (optionally with layer-wise
learning-rate decay), linear warm-up, cosine decay."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from shiftwise.training.config import OptimConfig
from shiftwise.training.finetune import layer_decay_param_groups

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "param_groups", "scaled_lr"]


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
    """AdamW at learning rate ``lr`` over :func:`param_groups` or, with ``optim.layer_decay``
    below 1, over :func:`~shiftwise.training.finetune.layer_decay_param_groups` (each group at
    ``lr`` times its ``lr_scale``), as one fused kernel over all parameters where PyTorch has
    it for their device (CPU from torch 2.4, CUDA), else the default implementation: the same
    update, without a Python loop over hundreds of tensors (the SW networks have about twice
    ConvNeXt's parameter tensors)."""
    if optim.layer_decay == 1:
        groups = param_groups(model, optim.weight_decay)
    else:
        groups = layer_decay_param_groups(model, optim.weight_decay, optim.layer_decay, lr)
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for these parameters' device or dtype
        return torch.optim.AdamW(groups, lr=lr)


def lr_factor(
    optim: OptimConfig, steps_per_epoch: int, total_steps: int, peak_lr: float
) -> Callable[[int], float]:
    """The schedule as a factor on each parameter group's initial learning rate, a function of
    the optimizer step: linear warm-up from 0.001 to 1 over ``optim.warmup_epochs`` (at most
    ``total_steps - 1`` steps), then a cosine from 1 to ``optim.min_lr / peak_lr``, reached
    at ``total_steps`` and kept after. A group at ``peak_lr`` follows PyTorch's
    ``LinearLR(start_factor=1e-3)`` then ``CosineAnnealingLR(eta_min=min_lr)``; a group that
    layer decay scales by ``s`` ends at ``s * min_lr`` (as the official ConvNeXt / SLaK
    schedules, which scale every value of one schedule), where one absolute ``eta_min`` would
    make it rise to ``min_lr``."""
    warmup = min(round(optim.warmup_epochs * steps_per_epoch), total_steps - 1)
    length = max(1, total_steps - warmup)
    floor = optim.min_lr / peak_lr

    def factor(step: int) -> float:
        if step < warmup:
            return 1e-3 + (1.0 - 1e-3) * step / warmup
        progress = min(step - warmup, length) / length
        return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * progress)) / 2

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    optim: OptimConfig,
    steps_per_epoch: int,
    total_steps: int,
    peak_lr: float,
    step: int = 0,
) -> LambdaLR:
    """The per-step schedule :func:`lr_factor` on every group's ``initial_lr`` (set from its
    ``lr`` when missing), positioned after ``step`` optimizer steps (a resumed run's)."""
    factor = lr_factor(optim, steps_per_epoch, total_steps, peak_lr)
    return LambdaLR(optimizer, factor, last_epoch=step - 1)
