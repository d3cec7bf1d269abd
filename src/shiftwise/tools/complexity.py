"""``shiftwise info``: parameters and MACs of a registered model, per stage, training vs deploy.

The counting is :mod:`shiftwise.analysis.complexity`; this module parses the options, checks
them and prints the report.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from shiftwise.analysis.complexity import format_report, info_report
from shiftwise.devices import available_memory, check_memory
from shiftwise.errors import UsageError
from shiftwise.models.arguments import FLOAT_BYTES, estimate_parameters
from shiftwise.models.operators import list_operators
from shiftwise.models.registry import check_model_arguments
from shiftwise.tools import check_model_names

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="parameters and MACs of a model, per stage, training vs deploy"
    )
    parser.add_argument("model", help="registered model name (see shiftwise.list_models())")
    parser.add_argument(
        "--img-size",
        type=int,
        nargs="+",
        default=None,
        metavar="H [W]",
        help="input size (default: the model's, 224 for the paper models)",
    )
    parser.add_argument(
        "--density", type=float, default=None, help="also count at this weight density (SLaK)"
    )
    parser.add_argument(
        "--operator",
        choices=list_operators(),
        default=None,
        help="count the model with this registered token mixer instead of its own",
    )
    parser.add_argument("--width-factor", type=float, default=None, help="stage width factor")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_model_names(args.model, "MODEL")
    if args.num_classes < 0:
        raise UsageError(f"--num-classes: expected an integer >= 0, got {args.num_classes}")
    try:
        arguments = check_model_arguments(
            args.model, width_factor=args.width_factor, num_classes=args.num_classes
        )
    except UsageError as error:
        raise error.renamed(lambda field: f"--{field.replace('_', '-')}") from None
    _check_model_fits(args.model, arguments)
    if args.density is not None and not 0.0 < args.density <= 1.0:
        raise UsageError(f"--density: expected a value in (0, 1], got {args.density}")
    img_size = None
    if args.img_size is not None:
        if len(args.img_size) not in (1, 2):
            raise UsageError(f"--img-size: expected H or H W, got {args.img_size}")
        img_size = (args.img_size[0], args.img_size[-1])
    report = info_report(
        args.model,
        img_size,
        args.density,
        width_factor=args.width_factor,
        num_classes=args.num_classes,
        **({} if args.operator is None else {"operator": args.operator}),
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


# The model, its deploy form and a counting clone of each are alive at once.
_COPIES = 4


def _check_model_fits(name: str, arguments: dict[str, Any]) -> None:
    """Refuse, before building anything, a model (``arguments`` of
    :func:`~shiftwise.models.registry.check_model_arguments`) whose copies cannot fit in
    memory; the option blamed is ``--num-classes`` when the model without a classifier would
    fit."""
    copies = _COPIES * FLOAT_BYTES
    without_head = copies * estimate_parameters({**arguments, "num_classes": 0})
    check_memory(
        copies * estimate_parameters(arguments),
        f"counting {name} (width factor {arguments['width_factor']:g}, "
        f"{arguments['num_classes']} classes)",
        "--width-factor" if without_head > available_memory() else "--num-classes",
    )
