"""``shiftwise.train(config)``: timm-style image classification training, single process or DDP,
as one :class:`Trainer` read top to bottom: set-up, :meth:`~Trainer.train_one_epoch` (with the
optimizer step), :meth:`~Trainer.evaluate`, save.

AdamW (no weight decay on 1-D parameters; optional layer-wise lr decay), linear warm-up +
cosine decay stepped per optimizer step (each parameter group's rate scaled alike), label
smoothing / soft-target cross-entropy with MixUp/CutMix, EMA through
``torch.optim.swa_utils.AveragedModel``, bf16 autocast, gradient accumulation, drop path,
sparse training (``shiftwise.sparse.Masking``), fine-tuning from a weights file
(``model.finetune``, :mod:`shiftwise.training.finetune`; read when the run starts, never on
resume), ``torch.compile`` / channels-last / activation checkpointing (``run.compile``,
``run.channels_last``, ``run.grad_checkpointing``; only the training step is compiled: what is
evaluated, averaged and saved is the eager model, whose keys have no ``_orig_mod.``), DDP
under ``torchrun`` with SyncBatchNorm on GPUs (PyTorch's SyncBatchNorm refuses CPU tensors:
CPU processes keep their own batch statistics, and DDP broadcasts rank 0's running
statistics).

Faults: an optimizer step whose loss or gradient is not finite is skipped (weights, batch-norm
statistics, EMA and masks unchanged) and counted; ``run.max_skipped_steps`` consecutive skips stop
the run with :class:`~shiftwise.errors.DivergedError`, and no file is ever written from
non-finite weights. Unreadable images are skipped (see :mod:`shiftwise.data.datasets`) up to a
``data.max_bad_images`` share. Every file goes through the claimed run directory
(:mod:`shiftwise.training.run_directory`).

Reproducibility: the data order of an epoch is a permutation seeded by ``(seed, epoch)``
and every random augmentation draws from torch's global generator, whose state (with
python's and NumPy's) is saved in each resume point with the epoch's running loss sums.
Resuming therefore continues a run killed mid-epoch to the same final weights and the same
logged metrics as an uninterrupted run with the same seed (single process, same machine and
thread count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from shiftwise.data import AugmentConfig, BatchTransform, ImageFolderDataset, load_data
from shiftwise.errors import DataError, DivergedError, UsageError
from shiftwise.io import STATE_NAME
from shiftwise.models.registry import model_family
from shiftwise.sparse import Masking
from shiftwise.training.config import (
    TrainConfig,
    check_device,
    config_to_dict,
    reschedules,
    validate,
)
from shiftwise.training.distributed import init_distributed
from shiftwise.training.evaluation import evaluate_model, val_loader
from shiftwise.training.finetune import StartWeights, load_start_weights
from shiftwise.training.log import TrainLog
from shiftwise.training.optimization import build_optimizer, build_scheduler, scaled_lr
from shiftwise.training.rng import capture_rng, restore_rng, seed_everything
from shiftwise.training.run_directory import (
    RunDirectory,
    claim_run_directory,
    output_directory,
    resume_point_and_config,
    safe_on_disk,
)
from shiftwise.training.sampler import EpochSampler

__all__ = ["EpochTotals", "TrainResult", "Trainer", "train"]

logger = logging.getLogger(__name__)

# Data sets small enough to decode in the main process.
_IN_PROCESS_DATA = ("bundled", "fashion-mnist", "digits")


@dataclass
class TrainResult:
    """What a finished run reports (top-1/top-5 in %, paths as strings)."""

    model: str
    data: str
    top1: float
    top5: float
    ema_top1: float | None
    chance: float
    epochs: int
    seconds: float
    output: str
    resume_point: str
    weights: str
    curve: str
    log_csv: str
    skipped_steps: int = 0
    bad_images: int = 0

    @property
    def checkpoint(self) -> str:
        """Deprecated name of :attr:`resume_point`."""
        warnings.warn(
            "TrainResult.checkpoint is deprecated, use TrainResult.resume_point",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.resume_point


@dataclass
class EpochTotals:
    """Running sums of one epoch on this rank (saved in mid-epoch resume points)."""

    loss_sum: float = 0.0
    micro_batches: int = 0
    skipped: int = 0
    bad_images: int = 0

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


def train(config: TrainConfig) -> TrainResult:
    """Run the training ``config`` describes; returns the final evaluation and the paths of
    the logs, curve, resume point and weights (rank 0's view).

    Raises :class:`~shiftwise.errors.UsageError` (bad config field, data or resume point; nothing
    written), :class:`~shiftwise.errors.DataError` (too many unreadable images) or
    :class:`~shiftwise.errors.DivergedError` (the last good files are kept).
    """
    started = time.perf_counter()
    trainer = Trainer(config)
    failed = True
    try:
        result = trainer.fit(started)
        if trainer.ctx.world > 1:
            dist.barrier()  # no rank tears the process group down while another still uses it
        failed = False
        return result
    finally:
        trainer.close(failed)


class Trainer:
    """One training run: built from its config by the constructor, run by :meth:`fit`."""

    # -- set-up ------------------------------------------------------------------------

    def __init__(self, config: TrainConfig) -> None:
        """Validate ``config``, pick the resume point, claim the run directory (rank 0), then
        read the data and build the model, optimizer, schedule, EMA, masks and loaders
        (restored from the resume point when there is one)."""
        resume, self.config, self.differences = resume_point_and_config(validate(config))
        self.output = output_directory(self.config, resume)
        self.files: RunDirectory | None = None  # the claimed run directory (rank 0)
        if os.environ.get("RANK", "0") == "0":
            here = resume is not None and Path(resume["path"]).parent.resolve() == (
                self.output.resolve()
            )
            self.files = claim_run_directory(self.output, resuming=here, option="run.output")
        try:
            self._set_up(resume)
        except BaseException:
            if self.files is not None:
                self.files.abandon()  # removes what the claim made, when nothing was written
            raise

    def _set_up(self, resume: dict[str, Any] | None) -> None:
        config, optim = self.config, self.config.optim
        if config.model.finetune is None:
            _check_no_fine_tuning(config)
        self.device = check_device(config.run.device, "run.device")
        self.bundle = load_data(
            config.data.name,
            image_size=config.data.image_size,
            data_dir=config.data.data_dir,
            crop_scale=config.augment.crop_scale,
            hflip=config.augment.hflip,
            seed=config.run.seed,
        )
        if resume is not None and resume["num_classes"] != self.bundle.num_classes:
            raise UsageError(
                f"run.resume: the resume point has {resume['num_classes']} classes, the data "
                f"{config.data.name!r} has {self.bundle.num_classes}",
                also=["data.name"],
            )
        self.augment = config.augment
        if not self.bundle.geometric_aug:  # label-changing augmentation off for this data
            self.augment = dataclasses.replace(self.augment, crop_scale=1.0, hflip=0.0, randaug_n=0)
        self.ctx = init_distributed(self.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.ctx.local_rank)
            torch.cuda.set_device(self.device)

        seed_everything(config.run.seed)
        self.start_weights: StartWeights | None = None  # what model.finetune loaded
        self.model, self.model_kwargs = self._create_model(fine_tune=resume is None)
        self._eval_crop()
        self._data_loaders()
        self.total_steps = self.steps_per_epoch * optim.epochs
        self.lr = scaled_lr(optim, self.ctx.world)
        if optim.min_lr > self.lr and self.ctx.main:
            logger.warning(
                "optim.min_lr %.2e is above the learning rate %.2e that optim.lr gives at this "
                "effective batch (%d images per step, optim.lr_base_batch %d): the cosine rises "
                "to it; set a lower optim.min_lr or a higher optim.lr",
                optim.min_lr,
                self.lr,
                optim.batch_size * optim.accum_steps * self.ctx.world,
                optim.lr_base_batch,
            )
        self.optimizer = build_optimizer(self.model, optim, self.lr)  # the parameter groups
        self.scheduler = build_scheduler(
            self.optimizer, optim, self.steps_per_epoch, self.total_steps, self.lr
        )
        self.transform = BatchTransform(
            self.bundle.image_size,
            self.bundle.mean,
            self.bundle.std,
            self.bundle.num_classes,
            self.model_kwargs["in_chans"],
            AugmentConfig(**dataclasses.asdict(self.augment)),
            crops_in_workers=self.bundle.crops_in_workers,
        ).to(self.device)
        self.val = val_loader(
            self.bundle,
            2 * optim.batch_size,
            self.workers,
            config.data.val_limit,
            self.ctx.rank,
            self.ctx.world,
        )
        self.masking = self._masking()
        self.ema = None
        if optim.ema_decay > 0:
            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(optim.ema_decay), use_buffers=True
            )
        self.net = self._wrap(self.model)
        self.log = TrainLog(self.files) if self.files is not None else None

        # the counters the step loop advances
        self.start_epoch = self.skip_steps = self.global_step = 0
        self.totals = EpochTotals()
        self.consecutive_skips = self.skipped_total = self.bad_total = 0
        self.state_path: Path | None = None
        if resume is not None:
            self._restore(resume)
        else:
            if self.log is not None:  # records of an attempt killed before its first resume point
                self.log.truncate(0)
            torch.manual_seed(config.run.seed * 1000 + 1 + self.ctx.rank)

    def _create_model(self, fine_tune: bool) -> tuple[nn.Module, dict[str, Any]]:
        """The model on the device (with ``fine_tune``, holding the weights of
        ``model.finetune``; in the memory format and checkpointing mode of ``run``) and the
        :func:`create_model` arguments that define it."""
        from shiftwise.models import create_model

        model_config = self.config.model
        in_chans = 3 if self.augment.randaug_n > 0 else self.bundle.in_chans
        model_kwargs: dict[str, Any] = {
            **model_config.kwargs,
            "num_classes": self.bundle.num_classes,
            "in_chans": in_chans,
        }
        if model_config.width_factor is not None:
            model_kwargs["width_factor"] = model_config.width_factor
        try:
            model = create_model(
                model_config.name, drop_path_rate=model_config.drop_path, **model_kwargs
            )
        except (TypeError, ValueError) as error:
            if not model_config.kwargs:
                raise
            raise UsageError(f"model.kwargs: {error}") from None
        if fine_tune and model_config.finetune is not None:
            if self.ctx.main:
                logger.info(
                    "fine-tuning from %s (%s weights)",
                    model_config.finetune,
                    model_config.finetune_weights,
                )
            self.start_weights = load_start_weights(
                model,
                model_config.finetune,
                model_config.finetune_weights,
                model_config.head_init_scale,
                flag="model.finetune",
            )
        if self.config.run.grad_checkpointing:
            model.set_grad_checkpointing(True)
        if self.ctx.world > 1 and self.device.type != "cpu":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif self.ctx.world > 1 and self.ctx.main:
            logger.info("SyncBatchNorm needs GPUs: on CPU each process normalises its own batch")
        return model.to(self.device, memory_format=self.memory_format), model_kwargs

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of the model's weights and of the batches (``run.channels_last``)."""
        if self.config.run.channels_last:
            return torch.channels_last
        return torch.contiguous_format

    def _eval_crop(self) -> None:
        """ImageFolder validation images get the evaluation crop of ``shiftwise eval``
        (:func:`shiftwise.inference.eval_settings`): ``data.crop_pct`` or the model's
        ``pretrained_cfg`` one."""
        crop_pct = self.config.data.crop_pct
        if not isinstance(self.bundle.val, ImageFolderDataset):
            if crop_pct is not None:
                raise UsageError(
                    f"applies to ImageFolder data; {self.bundle.name!r} is resized whole",
                    field="data.crop_pct",
                )
            return
        size = self.bundle.image_size
        if crop_pct is None:
            crop_pct = float(self.model.pretrained_cfg["crop_pct"])
        self.bundle = dataclasses.replace(
            self.bundle, val=self.bundle.val.with_eval_crop(size, crop_pct)
        )

    def _data_loaders(self) -> None:
        """The training set (``data.train_limit``), its seeded sampler and loader, and the
        number of optimizer steps per epoch."""
        config, ctx = self.config, self.ctx
        self.train_set = self.bundle.train
        if config.data.train_limit is not None:
            limit = min(config.data.train_limit, len(self.train_set))
            self.train_set = Subset(self.train_set, range(limit))
        accum, batch = config.optim.accum_steps, config.optim.batch_size
        self.steps_per_epoch = len(self.train_set) // (batch * accum * ctx.world)
        if self.steps_per_epoch < 1:
            raise UsageError(
                f"optim.batch_size: {len(self.train_set)} training images cannot fill one step "
                f"of {batch} x {accum} (accum) x {ctx.world} (processes), got optim.batch_size "
                f"{batch}"
            )
        self.workers = config.data.workers
        if self.workers is None:
            self.workers = 0 if self.bundle.name in _IN_PROCESS_DATA else 4
        self.sampler = EpochSampler(
            len(self.train_set),
            self.steps_per_epoch * accum * batch,
            config.run.seed,
            ctx.rank,
            ctx.world,
        )
        self.loader = DataLoader(
            self.train_set,
            batch_size=batch,
            sampler=self.sampler,
            num_workers=self.workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(config.run.seed),
        )

    def _masking(self) -> Masking | None:
        """The sparse-training engine of ``config.sparse`` (``None`` for dense training)."""
        sparse = self.config.sparse
        if not sparse.enabled:
            return None
        granularity = sparse.granularity or model_family(self.config.model.name).granularity
        snip_data = None
        if sparse.init == "snip":
            self.transform.eval()
            images, labels = next(iter(self.loader))
            snip_data = self.transform(images.to(self.device), labels.to(self.device))
        return Masking(
            self.model,
            self.optimizer,
            density=sparse.density,
            init=sparse.init,
            growth=sparse.growth,
            update_freq=sparse.update_freq,
            total_steps=self.total_steps,
            granularity=granularity,
            prune_rate=sparse.prune_rate,
            snip_data=snip_data,
            seed=self.config.run.seed,
        )

    def _wrap(self, model: nn.Module) -> nn.Module:
        """The module the training step calls: ``model``, in DistributedDataParallel under
        torchrun, compiled with ``run.compile`` (the model itself, sharing the parameters, is
        what is evaluated, averaged and saved)."""
        net = model
        if self.ctx.world > 1:
            device_ids = [self.device] if self.device.type == "cuda" else None
            net = DistributedDataParallel(model, device_ids=device_ids)
        if self.config.run.compile:
            # static shapes (a new batch size recompiles): inductor's dynamic-shape path of
            # torch 2.13 fails on these models' strides ("cannot determine truth value of
            # Relational") when a second batch size appears
            net = torch.compile(net, dynamic=False)
        return net

    def _restore(self, resume: dict[str, Any]) -> None:
        """Load the weights, optimizer, schedule, masks, EMA, RNG and epoch sums of ``resume``;
        a changed schedule is rebuilt at the step the run has reached."""
        for change in self.differences:
            if change.field == "optim.layer_decay" and (change.saved == 1) != (
                change.requested == 1
            ):
                raise UsageError(
                    f"a resume cannot switch layer-wise lr decay on or off (saved "
                    f"{change.saved:g}, requested {change.requested:g}): the optimizer state is "
                    "kept per parameter group",
                    field="optim.layer_decay",
                )
        tensors = resume["tensors"]
        self.model.load_state_dict(tensors["model"])
        keys = ("initial_lr", "weight_decay", "lr_scale")
        fresh = [{k: g[k] for k in keys if k in g} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(resume["optimizer"])
        if reschedules(self.differences):  # this config's rates, decays and schedule
            for group, values in zip(self.optimizer.param_groups, fresh, strict=True):
                group.update(values, lr=values["initial_lr"])
        self.scheduler = build_scheduler(
            self.optimizer,
            self.config.optim,
            self.steps_per_epoch,
            self.total_steps,
            self.lr,
            step=resume["global_step"],
        )
        if self.masking is not None:
            self.masking.load_state_dict(resume["masking"])
        if self.ema is not None:
            if "ema" not in tensors:
                raise UsageError("optim.ema_decay: the resume point holds no EMA weights")
            self.ema.module.load_state_dict(tensors["ema"])
            self.ema.n_averaged.fill_(resume["ema_n_averaged"])
        self.start_epoch, self.skip_steps = resume["epoch"], resume["step_in_epoch"]
        self.global_step = resume["global_step"]
        ranks = resume["ranks"]
        mine = ranks[self.ctx.rank] if len(ranks) == self.ctx.world else ranks[0]
        restore_rng(mine["rng"])
        if self.skip_steps > 0 and len(ranks) == self.ctx.world:
            self.totals = EpochTotals(**mine["totals"])
        if self.files is not None:
            self.files.continue_from(resume)
            self.log.truncate(self.start_epoch)
            logger.info(
                "resumed %s at epoch %d step %d", resume["path"], self.start_epoch, self.skip_steps
            )
            if self.config.model.finetune is not None:
                logger.info(
                    "model.finetune %s is not read again: the run continues from its resume point",
                    self.config.model.finetune,
                )

    @property
    def val_count(self) -> int:
        """How many validation images each evaluation scores (all ranks together)."""
        limit = self.config.data.val_limit
        return len(self.bundle.val) if limit is None else min(limit, len(self.bundle.val))

    # -- the run -------------------------------------------------------------------------

    def fit(self, started: float) -> TrainResult:
        """Train the remaining epochs (evaluating and saving a resume point after each), then
        save the final weights; ``started`` is the run's ``time.perf_counter()`` start."""
        optim = self.config.optim
        if self.ctx.main:
            self._log_start()
        metrics = ema_metrics = None
        val_loss = math.nan
        for epoch in range(self.start_epoch, optim.epochs):
            epoch_start = time.perf_counter()
            self.train_one_epoch(epoch)
            record = self.evaluate(epoch, epoch_start)
            self.totals = EpochTotals()
            metrics = {"top1": record["val_top1"], "top5": record["val_top5"]}
            val_loss = record["val_loss"]
            ema_metrics = {"top1": record["ema_top1"]} if "ema_top1" in record else None
            if self.log is not None:  # log first: a run killed before the resume point repeats it
                self.log.append(record)
            self.save_resume_point(epoch + 1, 0)
            if self.ctx.main:
                self._log_epoch(record)
        if metrics is None:  # resumed a finished run: evaluate what it holds
            amp = optim.amp
            metrics = evaluate_model(self.model, self.val, self.transform, self.device, amp)
            val_loss = metrics["loss"]
            if self.ema is not None:
                ema = self.ema.module
                ema_metrics = evaluate_model(ema, self.val, self.transform, self.device, amp)
        if self.consecutive_skips > 0 or not math.isfinite(val_loss):
            self._fail_diverged(val_loss)
        final = self.save_final()
        if self.log is not None and self.log.records:
            self.log.plot()
        return TrainResult(
            model=self.config.model.name,
            data=self.bundle.name,
            top1=metrics["top1"],
            top5=metrics["top5"],
            ema_top1=ema_metrics["top1"] if ema_metrics is not None else None,
            chance=100.0 / self.bundle.num_classes,
            epochs=optim.epochs,
            seconds=time.perf_counter() - started,
            output=str(self.output),
            resume_point=str(self.state_path or self.output / STATE_NAME),
            weights=str(final),
            curve=str(self.output / "curve.png"),
            log_csv=str(self.output / "log.csv"),
            skipped_steps=self.skipped_total,
            bad_images=self.bad_total,
        )

    def train_one_epoch(self, epoch: int) -> None:
        """One epoch (from the resumed step when it is the first): micro-batches of
        ``optim.batch_size`` images, an optimizer step every ``optim.accum_steps`` of them, a
        resume point every ``run.resume_point_every`` steps."""
        optim, ctx = self.config.optim, self.ctx
        accum, batch = optim.accum_steps, optim.batch_size
        self.net.train()
        self.transform.train()
        done = self.skip_steps if epoch == self.start_epoch else 0
        if done == 0:
            self.totals = EpochTotals()
        self.sampler.set_epoch(epoch, skip=done * accum * batch)
        self.bundle.set_epoch(epoch)  # seeded per-image crops of ImageFolder data
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if optim.amp
            else contextlib.nullcontext()
        )
        progress = tqdm(
            total=self.steps_per_epoch,
            initial=done,
            desc=f"epoch {epoch + 1}/{optim.epochs}",
            disable=not ctx.main or not self.config.run.progress,
            dynamic_ncols=True,
        )
        step_loss, step_micro = torch.zeros((), dtype=torch.float64), 0
        buffers = [b for b in self.model.buffers() if b.is_floating_point()]
        saved_buffers: list[torch.Tensor] = []
        for micro, (images, labels) in enumerate(self.loader):
            if micro % accum == 0:  # batch-norm statistics, restored if the step is skipped
                saved_buffers = [b.detach().clone() for b in buffers]
            images, labels = self._drop_bad_images(images, labels)
            last_micro = (micro + 1) % accum == 0
            if labels.numel() > 0:
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                x, targets = self.transform(images, labels)
                x = x.contiguous(memory_format=self.memory_format)
                sync = contextlib.nullcontext()
                if ctx.world > 1 and not last_micro:
                    sync = self.net.no_sync()
                with sync:
                    with autocast:
                        logits = self.net(x)
                    loss = F.cross_entropy(logits.float(), targets)
                    (loss / accum).backward()
                step_loss += loss.detach().double().cpu()
                step_micro += 1
            if not last_micro:
                continue
            self._optimizer_step(step_loss, step_micro, buffers, saved_buffers, epoch, done)
            step_loss, step_micro = torch.zeros((), dtype=torch.float64), 0
            done += 1
            progress.update(1)
            progress.set_postfix(lr=f"{max(self.scheduler.get_last_lr()):.2e}")
            every = self.config.run.resume_point_every
            if every and self.global_step % every == 0 and done < self.steps_per_epoch:
                self.save_resume_point(epoch, done)
        progress.close()

    def _drop_bad_images(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch without the images that could not be read (label -1), counted."""
        bad = labels < 0
        if not bool(bad.any()):
            return images, labels
        count = int(bad.sum())
        self.totals.bad_images += count
        self.bad_total += count
        allowed = self.config.data.max_bad_images
        if self.totals.bad_images > allowed * self.sampler.num_samples:
            raise DataError(
                f"data.name: {self.totals.bad_images} training images of "
                f"{self.sampler.num_samples} could not be read this epoch (more than "
                f"data.max_bad_images {allowed:g}); see the warnings naming them",
                also=["data.max_bad_images"],
            )
        if bool(bad.all()) and self.ctx.world > 1:
            raise DataError(
                "data.name: a whole batch of unreadable images (not supported under DDP)"
            )
        return images[~bad], labels[~bad]

    def _optimizer_step(
        self,
        step_loss: torch.Tensor,
        step_micro: int,
        buffers: list[torch.Tensor],
        saved_buffers: list[torch.Tensor],
        epoch: int,
        done: int,
    ) -> None:
        """Apply the accumulated gradients (then masks and EMA), or skip the step when the loss
        or a gradient is not finite (restoring the batch-norm statistics its forward passes
        changed); then the schedule advances."""
        norm = _grad_norm(self.model, self.config.optim.clip_grad)
        bad = torch.tensor(float(not (torch.isfinite(norm) and torch.isfinite(step_loss))))
        if self.ctx.world > 1:
            dist.all_reduce(bad)
        if bad.item() == 0:
            self.optimizer.step()
            if self.masking is not None:
                self.masking.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.totals.loss_sum += step_loss.item()
            self.totals.micro_batches += step_micro
            self.consecutive_skips = 0
        else:
            with torch.no_grad():
                for buffer, saved in zip(buffers, saved_buffers, strict=True):
                    buffer.copy_(saved)
            self.totals.skipped += 1
            self.skipped_total += 1
            self.consecutive_skips += 1
            logger.warning(
                "epoch %d step %d: non-finite loss or gradient, optimizer step skipped "
                "(%d in a row)",
                epoch + 1,
                done + 1,
                self.consecutive_skips,
            )
            limit = self.config.run.max_skipped_steps
            if self.consecutive_skips >= limit:
                raise DivergedError(
                    f"training diverged: {self.consecutive_skips} consecutive steps had a "
                    f"non-finite loss or gradient (epoch {epoch + 1}, step {done + 1}; "
                    f"run.max_skipped_steps {limit}); {safe_on_disk(self.output)}; try a lower "
                    "optim.lr or optim.clip_grad",
                    also=["run.max_skipped_steps", "optim.lr", "optim.clip_grad"],
                )
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped first step: "scheduler before optimizer"
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        self.global_step += 1

    # -- evaluate ------------------------------------------------------------------------

    def evaluate(self, epoch: int, started: float) -> dict[str, Any]:
        """The epoch's log record: train loss over the whole epoch, validation metrics (of the
        model and its EMA), density of sparse training, chance level and time since
        ``started``."""
        totals = self.totals
        sums = torch.tensor(
            [totals.loss_sum, totals.micro_batches, totals.skipped, totals.bad_images],
            dtype=torch.float64,
        )
        if self.ctx.world > 1:
            dist.all_reduce(sums)
        amp = self.config.optim.amp
        metrics = evaluate_model(self.model, self.val, self.transform, self.device, amp)
        record = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "lr": max(self.scheduler.get_last_lr()),  # the head's (layer decay scales the rest)
            "train_loss": sums[0].item() / max(sums[1].item(), 1.0),
            "val_loss": metrics["loss"],
            "val_top1": metrics["top1"],
            "val_top5": metrics["top5"],
            "skipped_steps": int(sums[2].item()) // self.ctx.world,
            "bad_images": int(sums[3].item()),
        }
        if self.ema is not None:
            ema = evaluate_model(self.ema.module, self.val, self.transform, self.device, amp)
            record.update(ema_top1=ema["top1"], ema_top5=ema["top5"])
        if self.masking is not None:
            record["density"] = self.masking.density()
        chance = 100.0 / self.bundle.num_classes
        record.update(chance=chance, time=time.perf_counter() - started)
        return record

    # -- save ----------------------------------------------------------------------------

    def _weights_metadata(self, epoch: int) -> dict[str, Any]:
        """What every weights file of the run records besides the model (``classes``: the class
        names as JSON, which ``shiftwise predict`` prints)."""
        metadata = {
            "image_size": self.bundle.image_size,
            "data": self.bundle.name,
            "classes": json.dumps(self.bundle.classes),
            "epoch": epoch,
        }
        if self.config.model.finetune is not None:
            metadata["finetune"] = self.config.model.finetune
        return metadata

    def save_resume_point(self, epoch: int, step_in_epoch: int) -> Path | None:
        """Write a resume point (rank 0) after ``step_in_epoch`` steps of epoch ``epoch``: the
        weights, optimizer, schedule, masks, EMA count, config, and every rank's RNG states and
        epoch sums. Returns the state file's path (``None`` on other ranks)."""
        mine = {"rng": capture_rng(), "totals": self.totals.as_dict()}
        ranks: list[Any] = [mine]
        if self.ctx.world > 1:
            ranks = [None] * self.ctx.world
            dist.all_gather_object(ranks, mine)
        if self.files is None:
            return None
        tensors = {"model": self.model.state_dict()}
        if self.ema is not None:
            tensors["ema"] = self.ema.module.state_dict()
        state = {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "masking": self.masking.state_dict() if self.masking is not None else None,
            "ema_n_averaged": int(self.ema.n_averaged.item()) if self.ema is not None else 0,
            "ranks": ranks,
            "config": config_to_dict(self.config),
            "num_classes": self.bundle.num_classes,
        }
        self.state_path = self.files.save_resume_point(
            tensors,
            state,
            model=self.config.model.name,
            model_kwargs=self.model_kwargs,
            metadata=self._weights_metadata(epoch),
        )
        return self.state_path

    def save_final(self, name: str = "model.safetensors") -> Path:
        """The finished run's weights ``name`` (and its ``-ema`` sibling), rank 0."""
        if self.files is None:
            return self.output / name
        weights = {"model": self.model.state_dict()}
        if self.ema is not None:
            weights["ema"] = self.ema.module.state_dict()
        return self.files.save_weights(
            name,
            weights,
            model=self.config.model.name,
            model_kwargs=self.model_kwargs,
            metadata=self._weights_metadata(self.config.optim.epochs),
        )

    def _fail_diverged(self, val_loss: float) -> None:
        """End a run whose last optimizer step was skipped or whose final validation loss is
        not finite: its weights go to ``model-diverged.safetensors`` (when finite; never to
        ``model.safetensors``) and :class:`DivergedError` is raised."""
        if self.consecutive_skips > 0:
            reason = f"its last {self.consecutive_skips} optimizer step(s) had a non-finite loss"
        else:
            reason = f"its final validation loss is {val_loss}"
        kept = "nothing was written for them (they are not finite)"
        if self.log is not None:
            if self.log.records:
                self.log.plot()
            try:
                path = self.save_final("model-diverged.safetensors")
                kept = f"they were written to {str(path)!r} for inspection"
            except DivergedError:
                pass
        raise DivergedError(
            f"training diverged: {reason}; the final weights are not saved as model.safetensors, "
            f"{kept}; the resume points in {str(self.output)!r} are kept; try a lower optim.lr "
            "or optim.clip_grad",
            also=["optim.lr", "optim.clip_grad"],
        )

    def close(self, failed: bool) -> None:
        """Release the run directory (removing what the claim made when ``failed`` before
        any file was written) and leave the process group."""
        if self.files is not None:
            if failed:
                self.files.abandon()
            else:
                self.files.release()
        if self.ctx.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    # -- logging -------------------------------------------------------------------------

    def _log_start(self) -> None:
        optim = self.config.optim
        logger.info(
            "training %s on %s: %d train / %d val images, %d classes, %d epochs x %d steps, "
            "batch %d x %d x %d, lr %.2e, output %s",
            self.config.model.name,
            self.bundle.name,
            len(self.train_set),
            self.val_count,
            self.bundle.num_classes,
            optim.epochs,
            self.steps_per_epoch,
            optim.batch_size,
            optim.accum_steps,
            self.ctx.world,
            self.lr,
            self.output,
        )

    def _log_epoch(self, record: dict[str, Any]) -> None:
        logger.info(
            "epoch %d/%d: train loss %.4f, val top-1 %.2f%% top-5 %.2f%%%s%s (%.0f s)",
            record["epoch"],
            self.config.optim.epochs,
            record["train_loss"],
            record["val_top1"],
            record["val_top5"],
            f", EMA top-1 {record['ema_top1']:.2f}%" if self.ema is not None else "",
            f", {record['skipped_steps']} steps skipped" if record["skipped_steps"] else "",
            record["time"],
        )


def _check_no_fine_tuning(config: TrainConfig) -> None:
    """Refuse the fine-tuning recipe and options in a run that starts from no weights."""
    if config.run.recipe == "finetune":
        raise UsageError(
            "the finetune recipe starts from trained weights; add model.finetune",
            field="run.recipe",
            also=["model.finetune"],
        )
    model = config.model
    for path, value, default in (
        ("model.head_init_scale", model.head_init_scale, 1.0),
        ("model.finetune_weights", model.finetune_weights, "model"),
    ):
        if value != default:
            raise UsageError(
                "only applies to fine-tuning; add model.finetune",
                field=path,
                also=["model.finetune"],
            )


def _grad_norm(model: nn.Module, clip: float) -> torch.Tensor:
    """Total gradient norm (clipping to ``clip`` when > 0); non-finite if any gradient is."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return torch.zeros(())
    if clip > 0:
        return nn.utils.clip_grad_norm_(params, clip)
    return nn.utils.get_total_norm([p.grad for p in params])
