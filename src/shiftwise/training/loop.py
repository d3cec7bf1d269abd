"""The step loop: one epoch of training (micro-batches, accumulation, skipped non-finite
steps, resume points every ``run.resume_point_every`` steps) and its evaluation record."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from shiftwise.errors import DataError, DivergedError
from shiftwise.training.evaluation import evaluate_model
from shiftwise.training.resume_points import save_resume_point
from shiftwise.training.state import EpochTotals, TrainingRun

__all__ = ["evaluate_epoch", "train_epoch"]

logger = logging.getLogger(__name__)


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


def train_epoch(run: TrainingRun, epoch: int) -> None:
    """One epoch (from the resumed step when it is the first); updates ``run``'s counters."""
    optim, ctx = run.config.optim, run.ctx
    accum, batch = optim.accum_steps, optim.batch_size
    run.net.train()
    run.transform.train()
    done = run.skip_steps if epoch == run.start_epoch else 0
    if done == 0:
        run.totals = EpochTotals()
    run.sampler.set_epoch(epoch, skip=done * accum * batch)
    run.bundle.set_epoch(epoch)  # seeded per-image crops of ImageFolder data
    autocast = (
        torch.autocast(run.device.type, dtype=torch.bfloat16)
        if optim.amp
        else contextlib.nullcontext()
    )
    progress = tqdm(
        total=run.steps_per_epoch,
        initial=done,
        desc=f"epoch {epoch + 1}/{optim.epochs}",
        disable=not ctx.main or not run.config.run.progress,
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
        every = run.config.run.resume_point_every
        if every and run.global_step % every == 0 and done < run.steps_per_epoch:
            run.state_path = save_resume_point(run, epoch, done) or run.state_path
    progress.close()


def _drop_bad_images(
    run: TrainingRun, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch without the images that could not be read (label -1), counted."""
    bad = labels < 0
    if not bool(bad.any()):
        return images, labels
    count = int(bad.sum())
    run.totals.bad_images += count
    run.bad_total += count
    allowed = run.config.data.max_bad_images
    if run.totals.bad_images > allowed * run.sampler.num_samples:
        raise DataError(
            f"data.name: {run.totals.bad_images} training images of "
            f"{run.sampler.num_samples} could not be read this epoch (more than "
            f"data.max_bad_images {allowed:g}); see the warnings naming them"
        )
    if bool(bad.all()) and run.ctx.world > 1:
        raise DataError("data.name: a whole batch of unreadable images (not supported under DDP)")
    return images[~bad], labels[~bad]


def _optimizer_step(
    run: TrainingRun,
    step_loss: torch.Tensor,
    step_micro: int,
    buffers: list[torch.Tensor],
    saved_buffers: list[torch.Tensor],
    epoch: int,
    done: int,
) -> None:
    """Apply the accumulated gradients, or skip the step when the loss or a gradient is not
    finite (restoring the batch-norm statistics the step's forward passes changed)."""
    norm = _grad_norm(run.model, run.config.optim.clip_grad)
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
        limit = run.config.run.max_skipped_steps
        if run.consecutive_skips >= limit:
            raise DivergedError(
                f"training diverged: {run.consecutive_skips} consecutive steps had a non-finite "
                f"loss or gradient (epoch {epoch + 1}, step {done + 1}; run.max_skipped_steps "
                f"{limit}); {run.writer.safe_on_disk()}; try a lower optim.lr or optim.clip_grad"
            )
    run.optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # a skipped first step: "scheduler before optimizer"
        warnings.simplefilter("ignore", UserWarning)
        run.scheduler.step()
    run.global_step += 1


def evaluate_epoch(run: TrainingRun, epoch: int, started: float) -> dict[str, Any]:
    """The epoch's log record: train loss over the whole epoch, validation metrics."""
    totals = torch.tensor(
        [run.totals.loss_sum, run.totals.micro_batches, run.totals.skipped, run.totals.bad_images],
        dtype=torch.float64,
    )
    if run.ctx.world > 1:
        dist.all_reduce(totals)
    amp = run.config.optim.amp
    metrics = evaluate_model(run.model, run.val, run.transform, run.device, amp)
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
        ema = evaluate_model(run.ema.module, run.val, run.transform, run.device, amp)
        record.update(ema_top1=ema["top1"], ema_top5=ema["top5"])
    if run.masking is not None:
        record["density"] = run.masking.density()
    record.update(chance=100.0 / run.bundle.num_classes, time=time.perf_counter() - started)
    return record
