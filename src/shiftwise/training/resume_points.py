"""Resume points (``checkpoint.pt`` training state plus its weights files): choosing the one
to resume and the config it implies, writing a run's state, and restoring a run from one.

A resume point records the resolved config (``config_to_dict``), the epoch, the step in the
epoch and the global step, the optimizer, schedule, masks, EMA count, and each rank's RNG
states and epoch sums. Files are written by
:class:`~shiftwise.training.resume_writer.ResumePointWriter`.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch.distributed as dist

from shiftwise.errors import UsageError
from shiftwise.io import find_resumable
from shiftwise.training.config import (
    Difference,
    TrainConfig,
    config_from_dict,
    config_from_options,
    config_to_dict,
    defaults,
    merge,
    reschedules,
    resolve,
)
from shiftwise.training.optimization import build_scheduler
from shiftwise.training.rng import capture_rng, restore_rng
from shiftwise.training.state import EpochTotals, TrainingRun

__all__ = [
    "restore_run",
    "resume_point_and_config",
    "save_resume_point",
    "saved_config",
    "weights_metadata",
]

logger = logging.getLogger(__name__)


def saved_config(resume: dict[str, Any]) -> TrainConfig:
    """The resolved config a resume point records (older files: a flat ``run`` record);
    fields it predates take their defaults."""
    if "config" in resume:
        return merge(defaults(), config_from_dict(resume["config"]))
    if "run" in resume:
        flat = {k: v for k, v in resume["run"].items() if k not in ("recipe", "changes")}
        return merge(defaults(), config_from_options({**flat, **resume["run"]["recipe"]}))
    raise UsageError(f"run.resume: {resume['path']!r} records no run configuration")


def resume_point_and_config(
    requested: TrainConfig,
) -> tuple[dict[str, Any] | None, TrainConfig, list[Difference]]:
    """The verified resume point of ``run.resume`` (``None``: a fresh run), the resolved
    config and what the resume changes (refused unless ``run.allow_config_change``)."""
    if requested.run.resume is None:
        config, differences = resolve(requested)
        return None, config, differences
    resume = find_resumable(requested.run.resume, "run.resume")
    config, differences = resolve(requested, saved_config(resume))
    changes = "; ".join(str(d) for d in differences)
    if differences and not config.run.allow_config_change:
        raise UsageError(
            f"run.resume: the config changes the run saved in {resume['path']!r} "
            f"({changes}); drop those fields or set run.allow_config_change"
        )
    if differences:
        logger.warning("run.resume with a changed configuration: %s", changes)
    return resume, config, differences


def weights_metadata(run: TrainingRun) -> dict[str, Any]:
    """What every weights file of the run records besides the model (``classes``: the class
    names as JSON, which ``shiftwise predict`` prints)."""
    bundle = run.bundle
    return {
        "image_size": bundle.image_size,
        "data": bundle.name,
        "classes": json.dumps(bundle.classes),
    }


def save_resume_point(run: TrainingRun, epoch: int, step_in_epoch: int) -> Path | None:
    """Write a resume point (rank 0) after ``step_in_epoch`` steps of epoch ``epoch``;
    returns the state file's path (``None`` on other ranks)."""
    mine = {"rng": capture_rng(), "totals": run.totals.as_dict()}
    ranks: list[Any] = [mine]
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
        "config": config_to_dict(run.config),
        "num_classes": run.bundle.num_classes,
    }
    return run.writer.save(
        tensors,
        state,
        model=run.config.model.name,
        model_kwargs=run.model_kwargs,
        metadata={**weights_metadata(run), "epoch": epoch},
    )


def restore_run(run: TrainingRun, resume: dict[str, Any]) -> None:
    """Load the weights, optimizer, schedule, masks, EMA, RNG and epoch sums of ``resume``;
    a changed schedule is rebuilt at the step the run has reached."""
    tensors = resume["tensors"]
    run.model.load_state_dict(tensors["model"])
    run.optimizer.load_state_dict(resume["optimizer"])
    optim = run.config.optim
    if reschedules(run.differences):
        decays = (optim.weight_decay, 0.0)
        for group, decay in zip(run.optimizer.param_groups, decays, strict=True):
            group.update(lr=run.lr, initial_lr=run.lr, weight_decay=decay)
        run.scheduler = build_scheduler(run.optimizer, optim, run.steps_per_epoch, run.total_steps)
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
            raise UsageError("optim.ema_decay: the resume point holds no EMA weights")
        run.ema.module.load_state_dict(tensors["ema"])
        run.ema.n_averaged.fill_(resume["ema_n_averaged"])
    run.start_epoch, run.skip_steps = resume["epoch"], resume["step_in_epoch"]
    run.global_step = resume["global_step"]
    ranks = resume["ranks"]
    mine = ranks[run.ctx.rank] if len(ranks) == run.ctx.world else ranks[0]
    restore_rng(mine["rng"])
    if run.skip_steps > 0 and len(ranks) == run.ctx.world:
        run.totals = EpochTotals(**mine["totals"])
    run.log.truncate(run.start_epoch)
    if run.ctx.main:
        logger.info(
            "resumed %s at epoch %d step %d", resume["path"], run.start_epoch, run.skip_steps
        )
