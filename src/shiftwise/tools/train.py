"""``shiftwise train``: parses its options into a :class:`~shiftwise.training.TrainConfig`
and runs :func:`shiftwise.training.train` (see there for what training does)."""

from __future__ import annotations

import argparse
import dataclasses
import os

from shiftwise.training import TrainConfig, TrainResult, train
from shiftwise.training.config import RECIPE_FIELDS
from shiftwise.training.recipe import RECIPES

__all__ = ["add_arguments", "config_from_args", "format_report", "register", "run"]

_RECIPE_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``shiftwise train``; every default is ``None`` ("not given": the
    recipe's value, or when resuming, the checkpoint's)."""
    parser.add_argument("--model", default=None, help="model name (default sw_atto)")
    parser.add_argument(
        "--data",
        default=None,
        help="bundled (default), fashion-mnist, digits or an ImageFolder root with train/ val/",
    )
    parser.add_argument("--data-dir", default=None, help="cache directory of the bundled set")
    parser.add_argument("--image-size", type=int, default=None, help="input side (pixels)")
    parser.add_argument("--output", default=None, help="run directory (default runs/...)")
    parser.add_argument(
        "--resume",
        default=None,
        help="run directory (newest checkpoint that verifies) or a checkpoint.pt",
    )
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="let --resume change options that define the run (listed in a warning)",
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None)
    for name in RECIPE_FIELDS:
        if name == "amp":
            continue
        kind = int if "int" in str(_RECIPE_TYPES[name]) else float
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--accum-steps", type=int, default=None, help="gradient accumulation")
    parser.add_argument("--width-factor", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None, help="default 0")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: best)")
    parser.add_argument("--train-limit", type=int, default=None, help="first N train images")
    parser.add_argument("--val-limit", type=int, default=None, help="first N val images")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="also checkpoint every N steps (default 0: at epoch ends only)",
    )
    parser.add_argument(
        "--max-skipped-steps",
        type=int,
        default=None,
        help="stop as diverged after N consecutive non-finite steps (default 5)",
    )
    parser.add_argument(
        "--max-bad-images",
        type=float,
        default=None,
        help="share of unreadable training images skipped before stopping (default 0.01)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    sparse = parser.add_argument_group("sparse training (shiftwise.sparse.Masking)")
    sparse.add_argument("--sparse", action="store_true", default=None, help="dynamic sparse")
    sparse.add_argument("--density", type=float, default=None, help="default 0.6")
    sparse.add_argument("--sparse-init", default=None, choices=("erk", "snip", "uniform"))
    sparse.add_argument("--growth", default=None, choices=("random", "gradient"))
    sparse.add_argument("--update-freq", type=int, default=None, help="default 100")
    sparse.add_argument("--prune-rate", type=float, default=None, help="default 0.3")
    sparse.add_argument(
        "--granularity", choices=("fine", "group"), default=None, help="default: group for sw_*"
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``shiftwise train`` options."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return TrainConfig(**values, progress=not args.no_progress)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (bundled data by default)",
        description="Train an image classifier; with torchrun it runs data-parallel (DDP).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def format_report(result: TrainResult) -> str:
    """The few lines ``shiftwise train`` prints at the end."""
    ema = f" (EMA {result.ema_top1:.2f}%)" if result.ema_top1 is not None else ""
    faults = []
    if result.skipped_steps:
        faults.append(f"{result.skipped_steps} non-finite steps skipped")
    if result.bad_images:
        faults.append(f"{result.bad_images} unreadable images skipped")
    return "\n".join(
        [
            f"{result.model} on {result.data}: top-1 {result.top1:.2f}%{ema}, "
            f"top-5 {result.top5:.2f}% (chance {result.chance:.2f}%), "
            f"{result.epochs} epochs in {result.seconds:.0f} s"
            + (f" ({', '.join(faults)})" if faults else ""),
            f"  training curve: {result.curve}",
            f"  log:            {result.log_csv}",
            f"  checkpoint:     {result.checkpoint}",
            f"  final weights:  {result.weights}",
        ]
    )


def run(args: argparse.Namespace) -> int:
    result = train(config_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_report(result))
    return 0
