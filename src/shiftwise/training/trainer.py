"""``shiftwise.train(config)``: timm-style image classification training, single process or DDP.

AdamW (no weight decay on 1-D parameters), linear warm-up + cosine decay stepped per optimizer
step, label smoothing / soft-target cross-entropy with MixUp/CutMix, EMA through
``torch.optim.swa_utils.AveragedModel``, bf16 autocast, gradient accumulation, drop path,
sparse training (``shiftwise.sparse.Masking``), DDP under ``torchrun`` with SyncBatchNorm on
GPUs (PyTorch's SyncBatchNorm refuses CPU tensors: CPU processes keep their own batch
statistics, and DDP broadcasts rank 0's running statistics).

Faults: an optimizer step whose loss or gradient is not finite is skipped (weights, batch-norm
statistics, EMA and masks unchanged) and counted; ``run.max_skipped_steps`` consecutive skips stop
the run with :class:`~shiftwise.errors.DivergedError`, and no file is ever written from
non-finite weights. Unreadable images are skipped (see :mod:`shiftwise.data.datasets`) up to a
``data.max_bad_images`` share. Resume points are written by :mod:`shiftwise.training.resume_points`.

Reproducibility: the data order of an epoch is a permutation seeded by ``(seed, epoch)``
and every random augmentation draws from torch's global generator, whose state (with
python's and NumPy's) is saved in each resume point with the epoch's running loss sums.
Resuming therefore continues a run killed mid-epoch to the same final weights and the same
logged metrics as an uninterrupted run with the same seed (single process, same machine and
thread count).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist

from shiftwise.errors import DivergedError
from shiftwise.io import STATE_NAME, save_weights, weights_file
from shiftwise.training.build import build_run
from shiftwise.training.config import TrainConfig
from shiftwise.training.evaluation import evaluate_model
from shiftwise.training.loop import evaluate_epoch, train_epoch
from shiftwise.training.resume_points import save_resume_point, weights_metadata
from shiftwise.training.state import EpochTotals, TrainingRun

__all__ = ["TrainResult", "train"]

logger = logging.getLogger(__name__)


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


def _log_start(run: TrainingRun) -> None:
    optim = run.config.optim
    logger.info(
        "training %s on %s: %d train / %d val images, %d classes, %d epochs x %d steps, "
        "batch %d x %d x %d, lr %.2e, output %s",
        run.config.model.name,
        run.bundle.name,
        run.train_size,
        _val_count(run),
        run.bundle.num_classes,
        optim.epochs,
        run.steps_per_epoch,
        optim.batch_size,
        optim.accum_steps,
        run.ctx.world,
        run.lr,
        run.output,
    )


def _val_count(run: TrainingRun) -> int:
    limit = run.config.data.val_limit
    return len(run.bundle.val) if limit is None else min(limit, len(run.bundle.val))


def _fail_diverged(run: TrainingRun, val_loss: float) -> None:
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
        f"{kept}; the resume points in {str(run.output)!r} are kept; try a lower optim.lr or "
        "optim.clip_grad"
    )


def _save_final(run: TrainingRun, name: str = "model.safetensors") -> Path:
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
            model=run.config.model.name,
            model_kwargs=run.model_kwargs,
            weights=kind,
            metadata={**weights_metadata(run), "epoch": run.config.optim.epochs},
        )
    return final


def train(config: TrainConfig) -> TrainResult:
    """Run the training ``config`` describes; returns the final evaluation and the paths of
    the logs, curve, resume point and weights (rank 0's view).

    Raises :class:`~shiftwise.errors.UsageError` (bad config field, data or resume point; nothing
    written), :class:`~shiftwise.errors.DataError` (too many unreadable images) or
    :class:`~shiftwise.errors.DivergedError` (the last good files are kept).
    """
    started = time.perf_counter()
    run = build_run(config)
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


def _train(run: TrainingRun, started: float) -> TrainResult:
    if run.ctx.main:
        _log_start(run)
    optim = run.config.optim
    metrics = ema_metrics = None
    val_loss = math.nan
    for epoch in range(run.start_epoch, optim.epochs):
        epoch_start = time.perf_counter()
        train_epoch(run, epoch)
        record = evaluate_epoch(run, epoch, epoch_start)
        run.totals = EpochTotals()
        metrics = {"top1": record["val_top1"], "top5": record["val_top5"]}
        val_loss = record["val_loss"]
        ema_metrics = {"top1": record["ema_top1"]} if "ema_top1" in record else None
        if run.ctx.main:  # log first: a run killed before the resume point repeats the epoch
            run.log.append(record)
        run.state_path = save_resume_point(run, epoch + 1, 0) or run.state_path
        if run.ctx.main:
            logger.info(
                "epoch %d/%d: train loss %.4f, val top-1 %.2f%% top-5 %.2f%%%s%s (%.0f s)",
                epoch + 1,
                optim.epochs,
                record["train_loss"],
                record["val_top1"],
                record["val_top5"],
                f", EMA top-1 {record['ema_top1']:.2f}%" if run.ema is not None else "",
                f", {record['skipped_steps']} steps skipped" if record["skipped_steps"] else "",
                record["time"],
            )
    if metrics is None:  # resumed a finished run: evaluate what it holds
        metrics = evaluate_model(run.model, run.val, run.transform, run.device, optim.amp)
        val_loss = metrics["loss"]
        if run.ema is not None:
            ema_metrics = evaluate_model(
                run.ema.module, run.val, run.transform, run.device, optim.amp
            )
    if run.consecutive_skips > 0 or not math.isfinite(val_loss):
        _fail_diverged(run, val_loss)
    final = _save_final(run)
    if run.ctx.main and run.log.records:
        run.log.plot()
    return TrainResult(
        model=run.config.model.name,
        data=run.bundle.name,
        top1=metrics["top1"],
        top5=metrics["top5"],
        ema_top1=ema_metrics["top1"] if ema_metrics is not None else None,
        chance=100.0 / run.bundle.num_classes,
        epochs=optim.epochs,
        seconds=time.perf_counter() - started,
        output=str(run.output),
        resume_point=str(run.state_path or run.output / STATE_NAME),
        weights=str(final),
        curve=str(run.log.png_path),
        log_csv=str(run.log.csv_path),
        skipped_steps=run.skipped_total,
        bad_images=run.bad_total,
    )
