"""``shiftwise demo`` (``make demo``): a large-kernel network against a 7x7 baseline.

Trains ``sw_atto`` and then ``convnext_atto`` with the same recipe on the bundled data set
(a task whose label is the direction between two marks more than 30 pixels apart, see
:mod:`shiftwise.data.bundled`), then prints their validation top-1 next to chance, with the
paths of each run's training curve, log and checkpoint. Sized for about ten minutes on two
CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from shiftwise.tools import train as train_tool

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

DEFAULT_MODELS = ("sw_atto", "convnext_atto")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train sw_atto and convnext_atto on the bundled data and compare",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width-factor", type=float, default=0.5)
    parser.add_argument("--train-limit", type=int, default=None, help="first N train images")
    parser.add_argument("--val-limit", type=int, default=None, help="first N val images")
    parser.add_argument("--data-dir", default=None, help="cache directory of the bundled set")
    parser.add_argument("--output", default=None, help="default runs/demo-<time>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def _train_args(args: argparse.Namespace, model: str, output: Path) -> argparse.Namespace:
    """The ``shiftwise train`` arguments of one demo run."""
    parser = argparse.ArgumentParser()
    train_tool.add_arguments(parser)
    argv = [
        "--model", model,
        "--data", "bundled",
        "--epochs", str(args.epochs),
        "--width-factor", str(args.width_factor),
        "--seed", str(args.seed),
        "--output", str(output / model),
    ]  # fmt: skip
    for option in ("train_limit", "val_limit", "data_dir"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    if args.no_progress:
        argv.append("--no-progress")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    runs = [_train_args(args, model, output) for model in args.models]
    results = []
    for train_args in runs:
        logger.info("demo: training %s", train_args.model)
        results.append(train_tool.train(train_args))
    summary = [
        {
            "model": r.model,
            "top1": r.top1,
            "chance": r.chance,
            "seconds": r.seconds,
            "curve": r.curve,
            "checkpoint": r.checkpoint,
        }
        for r in results
    ]
    (output / "demo.json").write_text(json.dumps(summary, indent=1))
    lines = [
        "",
        f"shiftwise demo: bundled long-range task, {args.epochs} epochs each "
        f"(chance {results[0].chance:.1f}%)",
        f"  {'model':<16}{'top-1':>8}{'time':>8}  training curve / checkpoint",
    ]
    for r in results:
        lines.append(f"  {r.model:<16}{r.top1:>7.2f}%{r.seconds:>7.0f}s  {r.curve}")
        lines.append(f"  {'':<32}  {r.checkpoint}")
    lines.append(f"  summary: {output / 'demo.json'}")
    print("\n".join(lines))
    return 0
