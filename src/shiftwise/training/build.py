"""Building a run from its config: the run directory, data, model, optimizer, schedule, EMA,
masks and loaders, restored from the resume point when there is one."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset

from shiftwise.data import AugmentConfig, BatchTransform, DataBundle, load_data
from shiftwise.devices import check_device
from shiftwise.errors import UsageError
from shiftwise.io import PREVIOUS_NAME, STATE_NAME, clean_run_directory
from shiftwise.models.registry import model_family
from shiftwise.sparse import Masking
from shiftwise.training.config import (
    TrainConfig,
    check_output_writable,
    validate,
)
from shiftwise.training.distributed import DistContext, init_distributed
from shiftwise.training.evaluation import val_loader
from shiftwise.training.log import TrainLog
from shiftwise.training.optimization import build_optimizer, build_scheduler, scaled_lr
from shiftwise.training.resume_points import restore_run, resume_point_and_config
from shiftwise.training.resume_writer import ResumePointWriter
from shiftwise.training.rng import seed_everything
from shiftwise.training.run_directory import claim_run_directory
from shiftwise.training.sampler import EpochSampler
from shiftwise.training.state import TrainingRun

__all__ = ["build_run"]

logger = logging.getLogger(__name__)

# Data sets small enough to decode in the main process.
_IN_PROCESS_DATA = ("bundled", "fashion-mnist", "digits")


def _output_dir(config: TrainConfig, resume: dict[str, Any] | None) -> Path:
    """The run directory; refuses to write over a resume point of another run."""
    if config.run.output is None and resume is not None:
        return Path(resume["path"]).parent
    if config.run.output is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        data = Path(config.data.name).name or "data"
        return Path("runs") / f"{config.model.name}-{data}-{stamp}"
    output = Path(config.run.output)
    elsewhere = resume is None or Path(resume["path"]).parent.resolve() != output.resolve()
    if elsewhere and any((output / n).is_file() for n in (STATE_NAME, PREVIOUS_NAME)):
        raise UsageError(
            f"run.output: {str(output)!r} already holds a resume point; continue it with "
            f"run.resume {str(output)!r} or choose another run.output"
        )
    return output


def _build_model(
    config: TrainConfig, augment: AugmentConfig, bundle: DataBundle, device, ctx: DistContext
) -> tuple[nn.Module, dict[str, Any]]:
    """The model on ``device`` and the :func:`create_model` arguments that define it."""
    from shiftwise.models import create_model

    in_chans = 3 if augment.randaug_n > 0 else bundle.in_chans
    model_kwargs: dict[str, Any] = {
        **config.model.kwargs,
        "num_classes": bundle.num_classes,
        "in_chans": in_chans,
    }
    if config.model.width_factor is not None:
        model_kwargs["width_factor"] = config.model.width_factor
    try:
        model = create_model(
            config.model.name, drop_path_rate=config.model.drop_path, **model_kwargs
        )
    except (TypeError, ValueError) as error:
        if not config.model.kwargs:
            raise
        raise UsageError(f"model.kwargs: {error}") from None
    if ctx.world > 1 and device.type != "cpu":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif ctx.world > 1 and ctx.main:
        logger.info("SyncBatchNorm needs GPUs: on CPU each process normalises its own batch")
    return model.to(device), model_kwargs


def _transform(augment: AugmentConfig, bundle: DataBundle, in_chans: int, device) -> BatchTransform:
    """The batched augmentation and normalisation of ``augment`` on ``device``."""
    return BatchTransform(
        bundle.image_size,
        bundle.mean,
        bundle.std,
        bundle.num_classes,
        in_chans,
        AugmentConfig(**dataclasses.asdict(augment)),
    ).to(device)


def _masking(config, model, optimizer, transform, loader, device, total_steps) -> Masking | None:
    """The sparse-training engine of ``config.sparse`` (``None`` for dense training)."""
    sparse = config.sparse
    if not sparse.enabled:
        return None
    granularity = sparse.granularity or model_family(config.model.name).granularity
    snip_data = None
    if sparse.init == "snip":
        transform.eval()
        images, labels = next(iter(loader))
        snip_data = transform(images.to(device), labels.to(device))
    return Masking(
        model,
        optimizer,
        density=sparse.density,
        init=sparse.init,
        growth=sparse.growth,
        update_freq=sparse.update_freq,
        total_steps=total_steps,
        granularity=granularity,
        prune_rate=sparse.prune_rate,
        snip_data=snip_data,
        seed=config.run.seed,
    )


def build_run(requested: TrainConfig) -> TrainingRun:
    """Validate ``requested``, pick the resume point, then read the data and build the
    model, optimizer, schedule, EMA, masks and loaders (restored from the resume point)."""
    requested = validate(requested)
    resume, config, differences = resume_point_and_config(requested)
    output = _output_dir(config, resume)
    directory = None  # the claimed (locked) run directory, rank 0
    if os.environ.get("RANK", "0") == "0":
        here = resume is not None and Path(resume["path"]).parent.resolve() == output.resolve()
        directory = claim_run_directory(output, resuming=here, option="run.output")
    try:
        run = _build(config, differences, resume, output)
    except BaseException:
        if directory is not None:
            directory.abandon()  # removes the directory again if this run created it
        raise
    run.directory = directory
    return run


def _build(
    config: TrainConfig, differences: list, resume: dict[str, Any] | None, output: Path
) -> TrainingRun:
    """Read the data and build everything of a run in the claimed directory ``output``."""
    check_output_writable(output)
    device = check_device(config.run.device, "run.device")
    bundle = load_data(
        config.data.name, image_size=config.data.image_size, data_dir=config.data.data_dir
    )
    if resume is not None and resume["num_classes"] != bundle.num_classes:
        raise UsageError(
            f"run.resume: the resume point has {resume['num_classes']} classes, the data "
            f"{config.data.name!r} has {bundle.num_classes}"
        )
    augment = config.augment
    if not bundle.geometric_aug:  # label-changing augmentation off for this data
        augment = dataclasses.replace(augment, crop_scale=1.0, hflip=0.0, randaug_n=0)
    ctx = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if ctx.main:
        clean_run_directory(output)

    seed = config.run.seed
    seed_everything(seed)
    model, model_kwargs = _build_model(config, augment, bundle, device, ctx)

    train_set = bundle.train
    if config.data.train_limit is not None:
        train_set = Subset(train_set, range(min(config.data.train_limit, len(train_set))))
    optim = config.optim
    accum, batch = optim.accum_steps, optim.batch_size
    steps_per_epoch = len(train_set) // (batch * accum * ctx.world)
    if steps_per_epoch < 1:
        raise UsageError(
            f"optim.batch_size: {len(train_set)} training images cannot fill one step of "
            f"{batch} x {accum} (accum) x {ctx.world} (processes), got optim.batch_size {batch}"
        )
    total_steps = steps_per_epoch * optim.epochs
    lr = scaled_lr(optim, ctx.world)
    optimizer = build_optimizer(model, optim, lr)
    scheduler = build_scheduler(optimizer, optim, steps_per_epoch, total_steps)
    transform = _transform(augment, bundle, model_kwargs["in_chans"], device)
    workers = config.data.workers
    if workers is None:
        workers = 0 if bundle.name in _IN_PROCESS_DATA else 4
    sampler = EpochSampler(
        len(train_set), steps_per_epoch * accum * batch, seed, ctx.rank, ctx.world
    )
    loader = DataLoader(
        train_set,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
    val = val_loader(bundle, 2 * batch, workers, config.data.val_limit, ctx.rank, ctx.world)
    masking = _masking(config, model, optimizer, transform, loader, device, total_steps)
    ema = None
    if optim.ema_decay > 0:
        ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(optim.ema_decay), use_buffers=True
        )
    net = model
    if ctx.world > 1:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    run = TrainingRun(
        config=config,
        differences=differences,
        augment=augment,
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
        writer=ResumePointWriter(output, resume),
        log=TrainLog(output),
        model_kwargs=model_kwargs,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        train_size=len(train_set),
        lr=lr,
    )
    if resume is not None:
        restore_run(run, resume)
    else:
        run.log.truncate(0)  # records of an earlier attempt killed before its first resume point
        torch.manual_seed(seed * 1000 + 1 + ctx.rank)
    return run
