"""``shiftwise train``: timm-style image classification training, single process or DDP.

AdamW (no weight decay on 1-D parameters), linear warm-up + cosine decay stepped per optimizer
step, label smoothing / soft-target cross-entropy with MixUp/CutMix, EMA through
``torch.optim.swa_utils.AveragedModel``, bf16 autocast, gradient accumulation, drop path,
sparse training (``shiftwise.sparse.Masking``), DDP under ``torchrun`` with SyncBatchNorm on
GPUs (PyTorch's SyncBatchNorm refuses CPU tensors: CPU processes keep their own batch
statistics, and DDP broadcasts rank 0's running statistics).

Reproducibility: the data order of an epoch is a permutation seeded by ``(seed, epoch)``
and every random augmentation draws from torch's global generator, whose state (with
python's and NumPy's) is saved in each checkpoint. ``--resume`` therefore continues a run
killed mid-epoch to the same final weights as an uninterrupted run with the same seed
(single process, same machine and thread count).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass
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
from shiftwise.tools.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_weights,
    restore_rng,
    save_checkpoint,
    save_weights,
)
from shiftwise.tools.evaluate import evaluate_model, val_loader
from shiftwise.tools.recipe import RECIPES, Recipe, default_recipe
from shiftwise.tools.train_log import TrainLog

__all__ = ["EpochSampler", "TrainResult", "add_arguments", "register", "run", "train"]

logger = logging.getLogger(__name__)

RECIPE_OPTIONS = {
    "epochs": int,
    "batch_size": int,
    "lr": float,
    "weight_decay": float,
    "warmup_epochs": float,
    "min_lr": float,
    "drop_path": float,
    "smoothing": float,
    "mixup": float,
    "cutmix": float,
    "randaug_n": int,
    "randaug_m": int,
    "reprob": float,
    "crop_scale": float,
    "hflip": float,
    "ema_decay": float,
    "clip_grad": float,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``shiftwise train`` (recipe fields default to the chosen recipe)."""
    parser.add_argument("--model", default="sw_atto", help="model name (default sw_atto)")
    parser.add_argument(
        "--data",
        default="bundled",
        help="bundled (default), fashion-mnist, digits or an ImageFolder root with train/ val/",
    )
    parser.add_argument("--data-dir", default=None, help="cache directory of the bundled set")
    parser.add_argument("--image-size", type=int, default=None, help="input side (pixels)")
    parser.add_argument("--output", default=None, help="run directory (default runs/...)")
    parser.add_argument("--resume", default=None, help="checkpoint.pt (or its run directory)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None)
    for name, kind in RECIPE_OPTIONS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--accum-steps", type=int, default=1, help="gradient accumulation")
    parser.add_argument("--width-factor", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: best)")
    parser.add_argument("--train-limit", type=int, default=None, help="first N train images")
    parser.add_argument("--val-limit", type=int, default=None, help="first N val images")
    parser.add_argument(
        "--checkpoint-every", type=int, default=0, help="also checkpoint every N steps"
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    sparse = parser.add_argument_group("sparse training (shiftwise.sparse.Masking)")
    sparse.add_argument("--sparse", action="store_true", help="dynamic sparse training")
    sparse.add_argument("--density", type=float, default=0.6)
    sparse.add_argument("--sparse-init", default="erk", choices=("erk", "snip", "uniform"))
    sparse.add_argument("--growth", default="random", choices=("random", "gradient"))
    sparse.add_argument("--update-freq", type=int, default=100)
    sparse.add_argument("--prune-rate", type=float, default=0.3)
    sparse.add_argument(
        "--granularity", choices=("fine", "group"), default=None, help="default: group for sw_*"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (bundled data by default)",
        description="Train an image classifier; with torchrun it runs data-parallel (DDP).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


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


def _scheduler(optimizer, recipe: Recipe, steps_per_epoch: int, total_steps: int):
    """Linear warm-up (from 0.1% of the peak) then cosine decay to ``min_lr``, per step."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warmup = min(round(recipe.warmup_epochs * steps_per_epoch), total_steps - 1)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=recipe.min_lr)
    if warmup <= 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


def _resolve_recipe(args: argparse.Namespace, bundle: DataBundle) -> Recipe:
    """The run's recipe: defaults for the model, overridden by the options given, with
    label-changing geometric augmentation off for data that forbids it."""
    changes = {name: getattr(args, name) for name in RECIPE_OPTIONS}
    recipe = default_recipe(args.model, args.recipe).replace(**changes, amp=args.amp)
    if not bundle.geometric_aug:
        recipe = recipe.replace(crop_scale=1.0, hflip=0.0, randaug_n=0)
    return recipe


def _check_args(args: argparse.Namespace) -> None:
    from shiftwise.models import list_models

    if args.model not in list_models():
        raise ValueError(f"--model: unknown model {args.model!r}, expected one of {list_models()}")
    for name in ("accum_steps", "checkpoint_every", "train_limit", "val_limit", "workers"):
        value = getattr(args, name)
        low = 1 if name in ("accum_steps", "train_limit", "val_limit") else 0
        if value is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def _output_dir(args: argparse.Namespace, resume: dict | None) -> Path:
    """The run directory; refuses to start a fresh run over an existing checkpoint."""
    if args.output is None and resume is not None:
        return Path(resume["path"]).parent
    if args.output is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        data = Path(args.data).name if args.data else "data"
        return Path("runs") / f"{args.model}-{data}-{stamp}"
    output = Path(args.output)
    if resume is None and (output / "checkpoint.pt").exists():
        raise ValueError(
            f"--output: {str(output)!r} already holds a checkpoint; pass --resume "
            f"{output / 'checkpoint.pt'} to continue it or choose another --output"
        )
    return output


def _check_resume(resume: dict, args: argparse.Namespace, num_classes: int) -> None:
    meta = resume["metadata"]
    if meta.get("model") != args.model:
        raise ValueError(
            f"--resume: the checkpoint is for model {meta.get('model')!r}, got --model "
            f"{args.model!r}"
        )
    if int(meta.get("num_classes", -1)) != num_classes:
        raise ValueError(
            f"--resume: the checkpoint has {meta.get('num_classes')} classes, the data "
            f"{args.data!r} has {num_classes}"
        )


def train(args: argparse.Namespace) -> TrainResult:
    """Run the training described by ``args`` (see :func:`add_arguments`); returns the
    final evaluation and the paths of the logs, curve and checkpoint (rank 0's view)."""
    _check_args(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bundle = load_data(args.data, image_size=args.image_size, data_dir=args.data_dir)
    resume = load_checkpoint(args.resume) if args.resume else None
    if resume is not None:
        _check_resume(resume, args, bundle.num_classes)
    output = _output_dir(args, resume)
    recipe = _resolve_recipe(args, bundle)
    ctx = _init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    try:
        result = _train(args, recipe, bundle, resume, output, device, ctx)
        if ctx.world > 1:
            dist.barrier()  # no rank tears the process group down while another still uses it
        return result
    finally:
        if ctx.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(args, recipe, bundle, resume, output, device, ctx: _Dist) -> TrainResult:
    from shiftwise.models import create_model

    started = time.perf_counter()
    _seed_everything(args.seed)
    in_chans = 3 if recipe.randaug_n > 0 else bundle.in_chans
    model_kwargs = {"in_chans": in_chans}
    if args.width_factor is not None:
        model_kwargs["width_factor"] = args.width_factor
    model = create_model(
        args.model,
        num_classes=bundle.num_classes,
        drop_path_rate=recipe.drop_path,
        **model_kwargs,
    )
    if ctx.world > 1 and device.type != "cpu":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif ctx.world > 1 and ctx.main:
        logger.info("SyncBatchNorm needs GPUs: on CPU each process normalises its own batch")
    model.to(device)

    train_set = bundle.train
    if args.train_limit is not None:
        train_set = Subset(train_set, range(min(args.train_limit, len(train_set))))
    accum, batch = args.accum_steps, recipe.batch_size
    steps_per_epoch = len(train_set) // (batch * accum * ctx.world)
    if steps_per_epoch < 1:
        raise ValueError(
            f"--batch-size: {len(train_set)} training images cannot fill one step of "
            f"{batch} x {accum} (accum) x {ctx.world} (processes), got --batch-size {batch}"
        )
    total_steps = steps_per_epoch * recipe.epochs
    lr = recipe.lr * batch * accum * ctx.world / recipe.lr_base_batch
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=lr)
    scheduler = _scheduler(optimizer, recipe, steps_per_epoch, total_steps)

    transform = BatchTransform(
        bundle.image_size,
        bundle.mean,
        bundle.std,
        bundle.num_classes,
        in_chans,
        AugmentConfig(
            crop_scale=recipe.crop_scale,
            hflip=recipe.hflip,
            randaug_n=recipe.randaug_n,
            randaug_m=recipe.randaug_m,
            reprob=recipe.reprob,
            mixup=recipe.mixup,
            cutmix=recipe.cutmix,
            smoothing=recipe.smoothing,
        ),
    ).to(device)
    workers = args.workers
    if workers is None:
        workers = 0 if bundle.name in ("bundled", "fashion-mnist", "digits") else 4
    sampler = EpochSampler(
        len(train_set), steps_per_epoch * accum * batch, args.seed, ctx.rank, ctx.world
    )
    loader = DataLoader(
        train_set,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(args.seed),
    )
    val = val_loader(bundle, 2 * batch, workers, args.val_limit, ctx.rank, ctx.world)

    masking = None
    if args.sparse:
        from shiftwise.sparse import Masking

        granularity = args.granularity or ("group" if args.model.startswith("sw_") else "fine")
        snip_data = None
        if args.sparse_init == "snip":
            transform.eval()
            images, labels = next(iter(loader))
            snip_data = transform(images.to(device), labels.to(device))
        masking = Masking(
            model,
            optimizer,
            density=args.density,
            init=args.sparse_init,
            growth=args.growth,
            update_freq=args.update_freq,
            total_steps=total_steps,
            granularity=granularity,
            prune_rate=args.prune_rate,
            snip_data=snip_data,
            seed=args.seed,
        )
    ema = None
    if recipe.ema_decay > 0:
        ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True
        )
    net = model
    if ctx.world > 1:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    start_epoch, skip_steps, global_step = 0, 0, 0
    log = TrainLog(output)
    if resume is not None:
        tensors, _ = load_weights(Path(resume["path"]).parent / resume["weights"])
        model.load_state_dict(tensors["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if masking is not None:
            if resume.get("masking") is None:
                raise ValueError("--sparse: the checkpoint was trained dense (no masks)")
            masking.load_state_dict(resume["masking"])
        if ema is not None:
            if "ema" not in tensors:
                raise ValueError("--ema-decay: the checkpoint holds no EMA weights")
            ema.module.load_state_dict(tensors["ema"])
            ema.n_averaged.fill_(resume["ema_n_averaged"])
        start_epoch, skip_steps = resume["epoch"], resume["step_in_epoch"]
        global_step = resume["global_step"]
        rng = resume["rng"]
        restore_rng(rng[ctx.rank] if len(rng) == ctx.world else rng[0])
        log.truncate(start_epoch)
        if ctx.main:
            logger.info("resumed %s at epoch %d step %d", resume["path"], start_epoch, skip_steps)
    else:
        torch.manual_seed(args.seed * 1000 + 1 + ctx.rank)

    meta = {
        "model": args.model,
        "num_classes": bundle.num_classes,
        "in_chans": in_chans,
        "image_size": bundle.image_size,
        "data": bundle.name,
        "width_factor": args.width_factor if args.width_factor is not None else "",
    }
    saved_args = {
        k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))
    }

    def checkpoint(epoch: int, step_in_epoch: int) -> Path | None:
        rng = [capture_rng()]
        if ctx.world > 1:
            rng = [None] * ctx.world
            dist.all_gather_object(rng, capture_rng())
        if not ctx.main:
            return None
        tensors = {"model": model.state_dict()}
        if ema is not None:
            tensors["ema"] = ema.module.state_dict()
        state = {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": global_step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "masking": masking.state_dict() if masking is not None else None,
            "ema_n_averaged": int(ema.n_averaged.item()) if ema is not None else 0,
            "rng": rng,
            "args": saved_args,
        }
        return save_checkpoint(output, tensors, {**meta, "epoch": epoch}, state)

    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if recipe.amp
        else contextlib.nullcontext()
    )
    chance = 100.0 / bundle.num_classes
    if ctx.main:
        logger.info(
            "training %s on %s: %d train / %d val images, %d classes, %d epochs x %d steps, "
            "batch %d x %d x %d, lr %.2e, output %s",
            args.model,
            bundle.name,
            len(train_set),
            len(bundle.val),
            bundle.num_classes,
            recipe.epochs,
            steps_per_epoch,
            batch,
            accum,
            ctx.world,
            lr,
            output,
        )
    state_path: Path | None = None
    metrics = ema_metrics = None
    for epoch in range(start_epoch, recipe.epochs):
        epoch_start = time.perf_counter()
        net.train()
        transform.train()
        done = skip_steps if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip=done * accum * batch)
        loss_sum = torch.zeros((), dtype=torch.float64)
        micro_batches = 0
        progress = tqdm(
            total=steps_per_epoch,
            initial=done,
            desc=f"epoch {epoch + 1}/{recipe.epochs}",
            disable=not ctx.main or args.no_progress,
            dynamic_ncols=True,
        )
        for micro, (images, labels) in enumerate(loader):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            x, targets = transform(images, labels)
            last_micro = (micro + 1) % accum == 0
            sync = contextlib.nullcontext()
            if ctx.world > 1 and not last_micro:
                sync = net.no_sync()
            with sync:
                with autocast:
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), targets)
                (loss / accum).backward()
            loss_sum += loss.detach().double().cpu()
            micro_batches += 1
            if not last_micro:
                continue
            if recipe.clip_grad > 0:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
            optimizer.step()
            if masking is not None:
                masking.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            global_step += 1
            done += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            every = args.checkpoint_every
            if every and global_step % every == 0 and done < steps_per_epoch:
                checkpoint(epoch, done)
        progress.close()
        if ctx.world > 1:
            totals = torch.tensor([loss_sum.item(), float(micro_batches)], dtype=torch.float64)
            dist.all_reduce(totals)
            loss_sum, micro_batches = totals[0], int(totals[1].item())
        metrics = evaluate_model(model, val, transform, device, recipe.amp)
        record = {
            "epoch": epoch + 1,
            "step": global_step,
            "lr": scheduler.get_last_lr()[0],
            "train_loss": loss_sum.item() / max(micro_batches, 1),
            "val_loss": metrics["loss"],
            "val_top1": metrics["top1"],
            "val_top5": metrics["top5"],
        }
        if ema is not None:
            ema_metrics = evaluate_model(ema.module, val, transform, device, recipe.amp)
            record.update(ema_top1=ema_metrics["top1"], ema_top5=ema_metrics["top5"])
        if masking is not None:
            record["density"] = masking.density()
        record.update(chance=chance, time=time.perf_counter() - epoch_start)
        state_path = checkpoint(epoch + 1, 0)
        if ctx.main:
            log.append(record)
            logger.info(
                "epoch %d/%d: train loss %.4f, val top-1 %.2f%% top-5 %.2f%%%s (%.0f s)",
                epoch + 1,
                recipe.epochs,
                record["train_loss"],
                record["val_top1"],
                record["val_top5"],
                f", EMA top-1 {record['ema_top1']:.2f}%" if ema is not None else "",
                record["time"],
            )

    if metrics is None:  # resumed a finished run: evaluate what it holds
        metrics = evaluate_model(model, val, transform, device, recipe.amp)
        if ema is not None:
            ema_metrics = evaluate_model(ema.module, val, transform, device, recipe.amp)
    final_weights = output / "model.safetensors"
    if ctx.main:
        tensors = {"model": model.state_dict()}
        if ema is not None:
            tensors["ema"] = ema.module.state_dict()
        save_weights(final_weights, tensors, {**meta, "epoch": recipe.epochs})
        if log.records:
            log.plot()
    return TrainResult(
        model=args.model,
        data=bundle.name,
        top1=metrics["top1"],
        top5=metrics["top5"],
        ema_top1=ema_metrics["top1"] if ema_metrics is not None else None,
        chance=chance,
        epochs=recipe.epochs,
        seconds=time.perf_counter() - started,
        output=str(output),
        checkpoint=str(state_path or output / "checkpoint.pt"),
        weights=str(final_weights),
        curve=str(log.png_path),
        log_csv=str(log.csv_path),
    )


def format_report(result: TrainResult) -> str:
    """The few lines ``shiftwise train`` prints at the end."""
    ema = f" (EMA {result.ema_top1:.2f}%)" if result.ema_top1 is not None else ""
    return "\n".join(
        [
            f"{result.model} on {result.data}: top-1 {result.top1:.2f}%{ema}, "
            f"top-5 {result.top5:.2f}% (chance {result.chance:.2f}%), "
            f"{result.epochs} epochs in {result.seconds:.0f} s",
            f"  training curve: {result.curve}",
            f"  log:            {result.log_csv}",
            f"  checkpoint:     {result.checkpoint}",
            f"  final weights:  {result.weights}",
        ]
    )


def run(args: argparse.Namespace) -> int:
    result = train(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_report(result))
    return 0
