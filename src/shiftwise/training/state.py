"""What a training run is made of while it runs: :class:`TrainingRun` and its epoch sums."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from shiftwise.data import AugmentConfig, BatchTransform, DataBundle
from shiftwise.sparse import Masking
from shiftwise.training.config import Difference, TrainConfig
from shiftwise.training.distributed import DistContext
from shiftwise.training.log import TrainLog
from shiftwise.training.resume_writer import ResumePointWriter
from shiftwise.training.run_directory import RunDirectory
from shiftwise.training.sampler import EpochSampler

__all__ = ["EpochTotals", "TrainingRun"]


@dataclass
class EpochTotals:
    """Running sums of one epoch on this rank (saved in mid-epoch resume points)."""

    loss_sum: float = 0.0
    micro_batches: int = 0
    skipped: int = 0
    bad_images: int = 0

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


@dataclass
class TrainingRun:
    """A run built by :func:`shiftwise.training.build.build_run`: its resolved ``config``,
    the ``augment`` actually applied (label-changing augmentation off where the data needs
    it), the built objects, and the counters the step loop advances."""

    config: TrainConfig
    differences: list[Difference]
    augment: AugmentConfig
    bundle: DataBundle
    output: Path
    device: torch.device
    ctx: DistContext
    model: nn.Module
    net: nn.Module  # ``model``, wrapped in DistributedDataParallel under torchrun
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    masking: Masking | None
    transform: BatchTransform
    sampler: EpochSampler
    loader: DataLoader
    val: DataLoader
    writer: ResumePointWriter
    log: TrainLog
    model_kwargs: dict[str, object]
    steps_per_epoch: int
    total_steps: int
    train_size: int
    lr: float
    start_epoch: int = 0
    skip_steps: int = 0
    global_step: int = 0
    totals: EpochTotals = field(default_factory=EpochTotals)
    consecutive_skips: int = 0
    skipped_total: int = 0
    bad_total: int = 0
    state_path: Path | None = None
    directory: RunDirectory | None = None  # the claimed (locked) run directory, rank 0
