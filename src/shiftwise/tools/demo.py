"""``shiftwise demo`` (``make demo``): a large-kernel network against a 7x7 baseline.

Trains ``sw_atto`` and then ``convnext_atto`` with the same recipe on the bundled data set
(a task whose label is the direction between two marks more than 30 pixels apart, see
:mod:`shiftwise.data.bundled`), then prints their validation top-1 next to chance, with the
paths of each run's training curve, log and resume point. Sized for about ten minutes on two
CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from shiftwise.io import atomic_write
from shiftwise.tools import check_model_names
from shiftwise.tools.train import options_in_errors
from shiftwise.training import TrainConfig, config_from_options, train

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


def _train_config(args: argparse.Namespace, model: str, output: Path) -> TrainConfig:
    """The training configuration of one demo run."""
    options = {
        "model": model,
        "data": "bundled",
        "data_dir": args.data_dir,
        "epochs": args.epochs,
        "width_factor": args.width_factor,
        "seed": args.seed,
        "train_limit": args.train_limit,
        "val_limit": args.val_limit,
        "output": str(output / model),
        "progress": not args.no_progress,
    }
    return config_from_options({k: v for k, v in options.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    check_model_names(args.models, "--models")
    output = Path(args.output or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    with options_in_errors():
        configs = [_train_config(args, model, output) for model in args.models]
        results = []
        for model, config in zip(args.models, configs, strict=True):
            logger.info("demo: training %s", model)
            results.append(train(config))
    summary = [
        {
            "model": r.model,
            "top1": r.top1,
            "chance": r.chance,
            "seconds": r.seconds,
            "curve": r.curve,
            "resume_point": r.resume_point,
        }
        for r in results
    ]
    atomic_write(output / "demo.json", json.dumps(summary, indent=1).encode())
    lines = [
        "",
        f"shiftwise demo: bundled long-range task, {args.epochs} epochs each "
        f"(chance {results[0].chance:.1f}%)",
        f"  {'model':<16}{'top-1':>8}{'time':>8}  training curve / resume point",
    ]
    for r in results:
        lines.append(f"  {r.model:<16}{r.top1:>7.2f}%{r.seconds:>7.0f}s  {r.curve}")
        lines.append(f"  {'':<32}  {r.resume_point}")
    lines.append(f"  summary: {output / 'demo.json'}")
    print("\n".join(lines))
    return 0
