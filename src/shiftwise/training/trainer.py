"""``shiftwise.train(config)``: timm-style image classification training, single process or DDP.

AdamW (no weight decay on 1-D parameters), linear warm-up + cosine decay stepped per optimizer
step, label smoothing / soft-target cross-entropy with MixUp/CutMix, EMA through
``torch.optim.swa_utils.AveragedModel``, bf16 autocast, gradient accumulation, drop path,
sparse training (``shiftwise.sparse.Masking``), DDP under ``torchrun`` with SyncBatchNorm on
GPUs (PyTorch's SyncBatchNorm refuses CPU tensors: CPU processes keep their own batch
statistics, and DDP broadcasts rank 0's running statistics).

Faults: an optimizer step whose loss or gradient is not finite is skipped (weights, batch-norm
statistics, EMA and masks unchanged) and counted; ``max_skipped_steps`` consecutive skips stop
the run with :class:`~shiftwise.errors.DivergedError`, and no file is ever written from
non-finite weights. Unreadable images are skipped (see :mod:`shiftwise.data.datasets`) up to a
``max_bad_images`` share. Checkpoints are written by :class:`shiftwise.io.CheckpointWriter`.

Reproducibility: the data order of an epoch is a permutation seeded by ``(seed, epoch)``
and every random augmentation draws from torch's global generator, whose state (with
python's and NumPy's) is saved in each checkpoint with the epoch's running loss sums.
Resuming therefore continues a run killed mid-epoch to the same final weights and the same
logged metrics as an uninterrupted run with the same seed (single process, same machine and
thread count).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Sampler, Subset
from tqdm import tqdm

from shiftwise.data import AugmentConfig, BatchTransform, DataBundle, load_data
from shiftwise.errors import DataError, DivergedError, UsageError
from shiftwise.io import (
    PREVIOUS_NAME,
    STATE_NAME,
    CheckpointWriter,
    clean_run_directory,
    find_resumable,
    save_weights,
    weights_file,
)
from shiftwise.training.config import (
    RunSpec,
    TrainConfig,
    check_device,
    check_output_writable,
    flag,
    resolve,
    validate,
)
from shiftwise.training.evaluation import evaluate_model, val_loader
from shiftwise.training.log import TrainLog
from shiftwise.training.recipe import Recipe
from shiftwise.training.resumed_options import resumed_options, saved_options
from shiftwise.training.run_directory import RunDirectory, claim_run_directory

__all__ = ["EpochSampler", "TrainResult", "capture_rng", "restore_rng", "train"]

logger = logging.getLogger(__name__)

# Options whose change on resume rebuilds the learning-rate schedule.
SCHEDULE_OPTIONS = {
    "--lr",
    "--warmup-epochs",
    "--min-lr",
    "--epochs",
    "--batch-size",
    "--accum-steps",
    "--weight-decay",
}


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
    checkpoint: str
    weights: str
    curve: str
    log_csv: str
    skipped_steps: int = 0
    bad_images: int = 0


class EpochSampler(Sampler[int]):
    """This rank's share of a permutation seeded by ``(seed, epoch)``, minus a skipped prefix.

    The first ``num_samples * world`` entries of the permutation are dealt round-robin to the
    ranks; :meth:`set_epoch` selects the epoch and how many of this rank's samples were
    already consumed (a resumed mid-epoch run).
    """

    def __init__(self, size: int, num_samples: int, seed: int, rank: int, world: int) -> None:
        self.size, self.num_samples, self.seed = size, num_samples, seed
        self.rank, self.world = rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[: self.num_samples * self.world]
        return iter(order[self.rank :: self.world][self.skip :].tolist())

    def __len__(self) -> int:
        return self.num_samples - self.skip


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class _EpochTotals:
    """Running sums of one epoch on this rank (saved in mid-epoch checkpoints)."""

    loss_sum: float = 0.0
    micro_batches: int = 0
    skipped: int = 0
    bad_images: int = 0

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


@dataclass
class _Run:
    """Everything a run is made of, built by :func:`_setup`."""

    config: TrainConfig
    spec: RunSpec
    recipe: Recipe  # spec.recipe with label-changing augmentation off where the data needs it
    bundle: DataBundle
    output: Path
    device: torch.device
    ctx: _Dist
    model: nn.Module
    net: nn.Module
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    masking: Any
    transform: BatchTransform
    sampler: EpochSampler
    loader: DataLoader
    val: DataLoader
    writer: CheckpointWriter
    log: TrainLog
    model_kwargs: dict[str, Any]
    steps_per_epoch: int
    total_steps: int
    train_size: int
    lr: float
    start_epoch: int = 0
    skip_steps: int = 0
    global_step: int = 0
    totals: _EpochTotals = field(default_factory=_EpochTotals)
    consecutive_skips: int = 0
    skipped_total: int = 0
    bad_total: int = 0
    state_path: Path | None = None
    directory: RunDirectory | None = None  # the claimed (locked) run directory, rank 0


def capture_rng() -> dict[str, Any]:
    """States of python's, NumPy's and torch's global generators (CPU and CUDA)."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            *numpy_state[2:],
        ),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _init_distributed(device: torch.device) -> _Dist:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on >= 2-D weights only (not biases, norms, layer scales)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _scheduler(optimizer, recipe, steps_per_epoch: int, total_steps: int):
    """Linear warm-up (from 0.1% of the peak) then cosine decay to ``min_lr``, per step."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warmup = min(round(recipe.warmup_epochs * steps_per_epoch), total_steps - 1)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=recipe.min_lr)
    if warmup <= 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


def _output_dir(config: TrainConfig, spec: RunSpec, resume: dict | None) -> Path:
    """The run directory; refuses to write over a checkpoint of another run."""
    if config.output is None and resume is not None:
        return Path(resume["path"]).parent
    if config.output is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{spec.model}-{Path(spec.data).name or 'data'}-{stamp}"
    output = Path(config.output)
    elsewhere = resume is None or Path(resume["path"]).parent.resolve() != output.resolve()
    if elsewhere and any((output / n).is_file() for n in (STATE_NAME, PREVIOUS_NAME)):
        raise UsageError(
            f"--output: {str(output)!r} already holds a checkpoint; pass --resume "
            f"{output} to continue it or choose another --output"
        )
    return output


def _resume_and_spec(config: TrainConfig) -> tuple[dict | None, RunSpec]:
    """The verified checkpoint to resume (``None``: fresh run) and the run's definition."""
    if config.resume is None:
        return None, resolve(config)
    resume = find_resumable(config.resume, "--resume")
    if "run" not in resume:
        raise UsageError(f"--resume: {resume['path']!r} records no run configuration")
    spec = resolve(config, resume["run"])
    if spec.changes and not config.allow_config_change:
        raise UsageError(
            f"--resume: the options change the run saved in {resume['path']!r} "
            f"({'; '.join(spec.changes)}); drop them or pass --allow-config-change"
        )
    if spec.changes:
        logger.warning("--resume with changed configuration: %s", "; ".join(spec.changes))
    return resume, spec


def _setup(config: TrainConfig) -> _Run:
    """Validate ``config``, pick the checkpoint to resume, then read the data and build the
    model, optimizer, schedule, EMA, masks and loaders (restored from the checkpoint)."""

    validate(config)
    resume, spec = _resume_and_spec(config)
    config = resumed_options(config, resume.get("options") if resume is not None else None)
    output = _output_dir(config, spec, resume)
    # -- run directory ownership and lock (shiftwise.training.run_directory) --
    directory = None
    if os.environ.get("RANK", "0") == "0":
        resuming_here = resume is not None and Path(resume["path"]).parent.resolve() == (
            output.resolve()
        )
        directory = claim_run_directory(output, resuming=resuming_here, option=flag("output"))
    try:
        run = _build_run(config, resume, spec, output)
    except BaseException:
        if directory is not None:
            directory.abandon()  # removes the directory again if this run created it
        raise
    run.directory = directory
    return run


def _build_run(config: TrainConfig, resume: dict | None, spec: RunSpec, output: Path) -> _Run:
    """Read the data and build everything of a run in the claimed directory ``output``."""
    check_output_writable(output)
    device = check_device(config.device)
    bundle = load_data(spec.data, image_size=spec.image_size, data_dir=config.data_dir)
    if resume is not None and resume["num_classes"] != bundle.num_classes:
        raise UsageError(
            f"--resume: the checkpoint has {resume['num_classes']} classes, the data "
            f"{spec.data!r} has {bundle.num_classes}"
        )
    recipe = spec.recipe
    if not bundle.geometric_aug:  # label-changing augmentation off for this data
        recipe = recipe.replace(crop_scale=1.0, hflip=0.0, randaug_n=0)
    ctx = _init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if ctx.main:
        clean_run_directory(output)

    _seed_everything(spec.seed)
    model, model_kwargs = _build_model(spec, recipe, bundle, device, ctx)

    train_set = bundle.train
    if spec.train_limit is not None:
        train_set = Subset(train_set, range(min(spec.train_limit, len(train_set))))
    accum, batch = spec.accum_steps, recipe.batch_size
    steps_per_epoch = len(train_set) // (batch * accum * ctx.world)
    if steps_per_epoch < 1:
        raise UsageError(
            f"--batch-size: {len(train_set)} training images cannot fill one step of "
            f"{batch} x {accum} (accum) x {ctx.world} (processes), got --batch-size {batch}"
        )
    total_steps = steps_per_epoch * recipe.epochs
    lr = recipe.lr * batch * accum * ctx.world / recipe.lr_base_batch
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=lr)
    scheduler = _scheduler(optimizer, recipe, steps_per_epoch, total_steps)
    transform = _transform(recipe, bundle, model_kwargs["in_chans"], device)
    workers = config.workers
    if workers is None:
        workers = 0 if bundle.name in ("bundled", "fashion-mnist", "digits") else 4
    sampler = EpochSampler(
        len(train_set), steps_per_epoch * accum * batch, spec.seed, ctx.rank, ctx.world
    )
    loader = DataLoader(
        train_set,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(spec.seed),
    )
    val = val_loader(bundle, 2 * batch, workers, config.val_limit, ctx.rank, ctx.world)
    masking = _masking(spec, model, optimizer, transform, loader, device, total_steps)
    ema = None
    if recipe.ema_decay > 0:
        ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True
        )
    net = model
    if ctx.world > 1:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    run = _Run(
        config=config,
        spec=spec,
        recipe=recipe,
        bundle=bundle,
        output=output,
        device=device,
        ctx=ctx,
        model=model,
        net=net,
        ema=ema,
        optimizer=optimizer,
        scheduler=scheduler,
        masking=masking,
        transform=transform,
        sampler=sampler,
        loader=loader,
        val=val,
        writer=CheckpointWriter(output, resume),
        log=TrainLog(output),
        model_kwargs=model_kwargs,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        train_size=len(train_set),
        lr=lr,
    )
    if resume is not None:
        _restore(run, resume)
    else:
        run.log.truncate(0)  # records of an earlier attempt killed before its first checkpoint
        torch.manual_seed(spec.seed * 1000 + 1 + ctx.rank)
    return run


def _build_model(spec, recipe, bundle, device, ctx) -> tuple[nn.Module, dict[str, Any]]:
    """The model on ``device`` and the :func:`create_model` arguments that define it."""
    from shiftwise.models import create_model

    in_chans = 3 if recipe.randaug_n > 0 else bundle.in_chans
    model_kwargs: dict[str, Any] = {
        **(spec.model_kwargs or {}),
        "num_classes": bundle.num_classes,
        "in_chans": in_chans,
    }
    if spec.width_factor is not None:
        model_kwargs["width_factor"] = spec.width_factor
    model = create_model(spec.model, drop_path_rate=recipe.drop_path, **model_kwargs)
    if ctx.world > 1 and device.type != "cpu":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif ctx.world > 1 and ctx.main:
        logger.info("SyncBatchNorm needs GPUs: on CPU each process normalises its own batch")
    return model.to(device), model_kwargs


def _transform(recipe, bundle, in_chans: int, device) -> BatchTransform:
    """The batched augmentation and normalisation of ``recipe`` on ``device``."""
    augment = AugmentConfig(
        crop_scale=recipe.crop_scale,
        hflip=recipe.hflip,
        randaug_n=recipe.randaug_n,
        randaug_m=recipe.randaug_m,
        reprob=recipe.reprob,
        mixup=recipe.mixup,
        cutmix=recipe.cutmix,
        smoothing=recipe.smoothing,
    )
    return BatchTransform(
        bundle.image_size, bundle.mean, bundle.std, bundle.num_classes, in_chans, augment
    ).to(device)


def _masking(spec, model, optimizer, transform, loader, device, total_steps):
    """The sparse-training engine of ``spec`` (``None`` for dense training)."""
    if not spec.sparse:
        return None
    from shiftwise.models.registry import model_family
    from shiftwise.sparse import Masking

    granularity = spec.granularity or model_family(spec.model).granularity
    snip_data = None
    if spec.sparse_init == "snip":
        transform.eval()
        images, labels = next(iter(loader))
        snip_data = transform(images.to(device), labels.to(device))
    return Masking(
        model,
        optimizer,
        density=spec.density,
        init=spec.sparse_init,
        growth=spec.growth,
        update_freq=spec.update_freq,
        total_steps=total_steps,
        granularity=granularity,
        prune_rate=spec.prune_rate,
        snip_data=snip_data,
        seed=spec.seed,
    )


def _restore(run: _Run, resume: dict[str, Any]) -> None:
    """Load the weights, optimizer, schedule, masks, EMA, RNG and epoch sums of ``resume``."""
    tensors = resume["tensors"]
    run.model.load_state_dict(tensors["model"])
    run.optimizer.load_state_dict(resume["optimizer"])
    changed = {change.split(":")[0] for change in run.spec.changes}
    if changed & SCHEDULE_OPTIONS:  # the new schedule, at the step the run has reached
        decays = (run.recipe.weight_decay, 0.0)
        for group, decay in zip(run.optimizer.param_groups, decays, strict=True):
            group.update(lr=run.lr, initial_lr=run.lr, weight_decay=decay)
        run.scheduler = _scheduler(run.optimizer, run.recipe, run.steps_per_epoch, run.total_steps)
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(resume["global_step"]):
                run.scheduler.step()
    else:
        run.scheduler.load_state_dict(resume["scheduler"])
    if run.masking is not None:
        run.masking.load_state_dict(resume["masking"])
    if run.ema is not None:
        if "ema" not in tensors:
            raise UsageError("--ema-decay: the checkpoint holds no EMA weights")
        run.ema.module.load_state_dict(tensors["ema"])
        run.ema.n_averaged.fill_(resume["ema_n_averaged"])
    run.start_epoch, run.skip_steps = resume["epoch"], resume["step_in_epoch"]
    run.global_step = resume["global_step"]
    ranks = resume["ranks"]
    mine = ranks[run.ctx.rank] if len(ranks) == run.ctx.world else ranks[0]
    restore_rng(mine["rng"])
    if run.skip_steps > 0 and len(ranks) == run.ctx.world:
        run.totals = _EpochTotals(**mine["totals"])
    run.log.truncate(run.start_epoch)
    if run.ctx.main:
        logger.info(
            "resumed %s at epoch %d step %d", resume["path"], run.start_epoch, run.skip_steps
        )


def _checkpoint(run: _Run, epoch: int, step_in_epoch: int) -> Path | None:
    """Write a checkpoint (rank 0) after ``step_in_epoch`` steps of epoch ``epoch``."""
    mine = {"rng": capture_rng(), "totals": run.totals.as_dict()}
    ranks = [mine]
    if run.ctx.world > 1:
        ranks = [None] * run.ctx.world
        dist.all_gather_object(ranks, mine)
    if not run.ctx.main:
        return None
    tensors = {"model": run.model.state_dict()}
    if run.ema is not None:
        tensors["ema"] = run.ema.module.state_dict()
    state = {
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": run.global_step,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "masking": run.masking.state_dict() if run.masking is not None else None,
        "ema_n_averaged": int(run.ema.n_averaged.item()) if run.ema is not None else 0,
        "ranks": ranks,
        "run": run.spec.as_dict(),
        "options": saved_options(run.config),
        "num_classes": run.bundle.num_classes,
    }
    return run.writer.save(
        tensors,
        state,
        model=run.spec.model,
        model_kwargs=run.model_kwargs,
        metadata={**_weights_metadata(run), "epoch": epoch},
    )


def _weights_metadata(run: _Run) -> dict[str, Any]:
    return {"image_size": run.bundle.image_size, "data": run.bundle.name}


def _floating_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b for b in model.buffers() if b.is_floating_point()]


def _grad_norm(model: nn.Module, clip: float) -> torch.Tensor:
    """Total gradient norm (clipping to ``clip`` when > 0); non-finite if any gradient is."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return torch.zeros(())
    if clip > 0:
        return nn.utils.clip_grad_norm_(params, clip)
    return nn.utils.get_total_norm([p.grad for p in params])


def _train_epoch(run: _Run, epoch: int) -> None:
    """One epoch (from the resumed step when it is the first); updates ``run``'s counters."""
    recipe, ctx, config = run.recipe, run.ctx, run.config
    accum, batch = run.spec.accum_steps, recipe.batch_size
    run.net.train()
    run.transform.train()
    done = run.skip_steps if epoch == run.start_epoch else 0
    if done == 0:
        run.totals = _EpochTotals()
    run.sampler.set_epoch(epoch, skip=done * accum * batch)
    autocast = (
        torch.autocast(run.device.type, dtype=torch.bfloat16)
        if recipe.amp
        else contextlib.nullcontext()
    )
    progress = tqdm(
        total=run.steps_per_epoch,
        initial=done,
        desc=f"epoch {epoch + 1}/{recipe.epochs}",
        disable=not ctx.main or not config.progress,
        dynamic_ncols=True,
    )
    step_loss, step_micro = torch.zeros((), dtype=torch.float64), 0
    buffers = _floating_buffers(run.model)
    saved_buffers: list[torch.Tensor] = []
    for micro, (images, labels) in enumerate(run.loader):
        if micro % accum == 0:
            saved_buffers = [b.detach().clone() for b in buffers]
        images, labels = _drop_bad_images(run, images, labels)
        last_micro = (micro + 1) % accum == 0
        if labels.numel() > 0:
            images = images.to(run.device, non_blocking=True)
            labels = labels.to(run.device, non_blocking=True)
            x, targets = run.transform(images, labels)
            sync = contextlib.nullcontext()
            if ctx.world > 1 and not last_micro:
                sync = run.net.no_sync()
            with sync:
                with autocast:
                    logits = run.net(x)
                loss = F.cross_entropy(logits.float(), targets)
                (loss / accum).backward()
            step_loss += loss.detach().double().cpu()
            step_micro += 1
        if not last_micro:
            continue
        _optimizer_step(run, step_loss, step_micro, buffers, saved_buffers, epoch, done)
        step_loss, step_micro = torch.zeros((), dtype=torch.float64), 0
        done += 1
        progress.update(1)
        progress.set_postfix(lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
        every = config.checkpoint_every
        if every and run.global_step % every == 0 and done < run.steps_per_epoch:
            run.state_path = _checkpoint(run, epoch, done) or run.state_path
    progress.close()


def _drop_bad_images(
    run: _Run, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch without the images that could not be read (label -1), counted."""
    bad = labels < 0
    if not bool(bad.any()):
        return images, labels
    count = int(bad.sum())
    run.totals.bad_images += count
    run.bad_total += count
    limit = run.config.max_bad_images * run.sampler.num_samples
    if run.totals.bad_images > limit:
        raise DataError(
            f"--data: {run.totals.bad_images} training images of {run.sampler.num_samples} "
            f"could not be read this epoch (more than --max-bad-images "
            f"{run.config.max_bad_images:g}); see the warnings naming them"
        )
    if bool(bad.all()) and run.ctx.world > 1:
        raise DataError("--data: a whole batch of unreadable images (not supported under DDP)")
    return images[~bad], labels[~bad]


def _optimizer_step(run, step_loss, step_micro, buffers, saved_buffers, epoch, done) -> None:
    """Apply the accumulated gradients, or skip the step when the loss or a gradient is not
    finite (restoring the batch-norm statistics the step's forward passes changed)."""
    norm = _grad_norm(run.model, run.recipe.clip_grad)
    bad = torch.tensor(float(not (torch.isfinite(norm) and torch.isfinite(step_loss))))
    if run.ctx.world > 1:
        dist.all_reduce(bad)
    if bad.item() == 0:
        run.optimizer.step()
        if run.masking is not None:
            run.masking.step()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        run.totals.loss_sum += step_loss.item()
        run.totals.micro_batches += step_micro
        run.consecutive_skips = 0
    else:
        with torch.no_grad():
            for buffer, saved in zip(buffers, saved_buffers, strict=True):
                buffer.copy_(saved)
        run.totals.skipped += 1
        run.skipped_total += 1
        run.consecutive_skips += 1
        logger.warning(
            "epoch %d step %d: non-finite loss or gradient, optimizer step skipped (%d in a row)",
            epoch + 1,
            done + 1,
            run.consecutive_skips,
        )
        if run.consecutive_skips >= run.config.max_skipped_steps:
            raise DivergedError(
                f"training diverged: {run.consecutive_skips} consecutive steps had a non-finite "
                f"loss or gradient (epoch {epoch + 1}, step {done + 1}; --max-skipped-steps "
                f"{run.config.max_skipped_steps}); {run.writer.safe_on_disk()}; try a lower "
                "--lr or --clip-grad"
            )
    run.optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # a skipped first step: "scheduler before optimizer"
        warnings.simplefilter("ignore", UserWarning)
        run.scheduler.step()
    run.global_step += 1


def _evaluate_epoch(run: _Run, epoch: int, started: float) -> dict[str, Any]:
    """The epoch's log record: train loss over the whole epoch, validation metrics."""
    totals = torch.tensor(
        [run.totals.loss_sum, run.totals.micro_batches, run.totals.skipped, run.totals.bad_images],
        dtype=torch.float64,
    )
    if run.ctx.world > 1:
        dist.all_reduce(totals)
    metrics = evaluate_model(run.model, run.val, run.transform, run.device, run.recipe.amp)
    record = {
        "epoch": epoch + 1,
        "step": run.global_step,
        "lr": run.scheduler.get_last_lr()[0],
        "train_loss": totals[0].item() / max(totals[1].item(), 1.0),
        "val_loss": metrics["loss"],
        "val_top1": metrics["top1"],
        "val_top5": metrics["top5"],
        "skipped_steps": int(totals[2].item()) // run.ctx.world,
        "bad_images": int(totals[3].item()),
    }
    if run.ema is not None:
        ema = evaluate_model(run.ema.module, run.val, run.transform, run.device, run.recipe.amp)
        record.update(ema_top1=ema["top1"], ema_top5=ema["top5"])
    if run.masking is not None:
        record["density"] = run.masking.density()
    record.update(chance=100.0 / run.bundle.num_classes, time=time.perf_counter() - started)
    return record


def _log_start(run: _Run) -> None:
    recipe = run.recipe
    logger.info(
        "training %s on %s: %d train / %d val images, %d classes, %d epochs x %d steps, "
        "batch %d x %d x %d, lr %.2e, output %s",
        run.spec.model,
        run.bundle.name,
        run.train_size,
        _val_count(run),
        run.bundle.num_classes,
        recipe.epochs,
        run.steps_per_epoch,
        recipe.batch_size,
        run.spec.accum_steps,
        run.ctx.world,
        run.lr,
        run.output,
    )


def _val_count(run: _Run) -> int:
    limit = run.config.val_limit
    return len(run.bundle.val) if limit is None else min(limit, len(run.bundle.val))


def _fail_diverged(run: _Run, val_loss: float) -> None:
    """End a run whose last optimizer step was skipped or whose final validation loss is not
    finite: its weights go to ``model-diverged.safetensors`` (when finite; never to
    ``model.safetensors``) and :class:`DivergedError` is raised."""
    if run.consecutive_skips > 0:
        reason = f"its last {run.consecutive_skips} optimizer step(s) had a non-finite loss"
    else:
        reason = f"its final validation loss is {val_loss}"
    kept = "nothing was written for them (they are not finite)"
    if run.ctx.main:
        if run.log.records:
            run.log.plot()
        try:
            path = _save_final(run, "model-diverged.safetensors")
            kept = f"they were written to {str(path)!r} for inspection"
        except DivergedError:
            pass
    raise DivergedError(
        f"training diverged: {reason}; the final weights are not saved as model.safetensors, "
        f"{kept}; the checkpoints in {str(run.output)!r} are kept; try a lower --lr or "
        "--clip-grad"
    )


def _save_final(run: _Run, name: str = "model.safetensors") -> Path:
    """``model.safetensors`` (and ``model-ema.safetensors``) of the finished run (rank 0)."""
    final = run.output / name
    if not run.ctx.main:
        return final
    weights = {"model": run.model.state_dict()}
    if run.ema is not None:
        weights["ema"] = run.ema.module.state_dict()
    for kind, state_dict in weights.items():
        save_weights(
            state_dict,
            weights_file(final, kind),
            model=run.spec.model,
            model_kwargs=run.model_kwargs,
            weights=kind,
            metadata={**_weights_metadata(run), "epoch": run.recipe.epochs},
        )
    return final


def train(config: TrainConfig) -> TrainResult:
    """Run the training ``config`` describes; returns the final evaluation and the paths of
    the logs, curve, checkpoint and weights (rank 0's view).

    Raises :class:`~shiftwise.errors.UsageError` (bad option, data or checkpoint; nothing
    written), :class:`~shiftwise.errors.DataError` (too many unreadable images) or
    :class:`~shiftwise.errors.DivergedError` (the last good files are kept).
    """
    started = time.perf_counter()
    run = _setup(config)
    try:
        result = _train(run, started)
        if run.ctx.world > 1:
            dist.barrier()  # no rank tears the process group down while another still uses it
        return result
    finally:
        if run.directory is not None:
            run.directory.release()
        if run.ctx.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(run: _Run, started: float) -> TrainResult:
    if run.ctx.main:
        _log_start(run)
    recipe = run.recipe
    metrics = ema_metrics = None
    val_loss = math.nan
    for epoch in range(run.start_epoch, recipe.epochs):
        epoch_start = time.perf_counter()
        _train_epoch(run, epoch)
        record = _evaluate_epoch(run, epoch, epoch_start)
        run.totals = _EpochTotals()
        metrics = {"top1": record["val_top1"], "top5": record["val_top5"]}
        val_loss = record["val_loss"]
        ema_metrics = {"top1": record["ema_top1"]} if "ema_top1" in record else None
        if run.ctx.main:  # log first: a run killed before the checkpoint repeats the epoch
            run.log.append(record)
        run.state_path = _checkpoint(run, epoch + 1, 0) or run.state_path
        if run.ctx.main:
            logger.info(
                "epoch %d/%d: train loss %.4f, val top-1 %.2f%% top-5 %.2f%%%s%s (%.0f s)",
                epoch + 1,
                recipe.epochs,
                record["train_loss"],
                record["val_top1"],
                record["val_top5"],
                f", EMA top-1 {record['ema_top1']:.2f}%" if run.ema is not None else "",
                f", {record['skipped_steps']} steps skipped" if record["skipped_steps"] else "",
                record["time"],
            )
    if metrics is None:  # resumed a finished run: evaluate what it holds
        metrics = evaluate_model(run.model, run.val, run.transform, run.device, recipe.amp)
        val_loss = metrics["loss"]
        if run.ema is not None:
            ema_metrics = evaluate_model(
                run.ema.module, run.val, run.transform, run.device, recipe.amp
            )
    if run.consecutive_skips > 0 or not math.isfinite(val_loss):
        _fail_diverged(run, val_loss)
    final = _save_final(run)
    if run.ctx.main and run.log.records:
        run.log.plot()
    return TrainResult(
        model=run.spec.model,
        data=run.bundle.name,
        top1=metrics["top1"],
        top5=metrics["top5"],
        ema_top1=ema_metrics["top1"] if ema_metrics is not None else None,
        chance=100.0 / run.bundle.num_classes,
        epochs=recipe.epochs,
        seconds=time.perf_counter() - started,
        output=str(run.output),
        checkpoint=str(run.state_path or run.output / STATE_NAME),
        weights=str(final),
        curve=str(run.log.png_path),
        log_csv=str(run.log.csv_path),
        skipped_steps=run.skipped_total,
        bad_images=run.bad_total,
    )
