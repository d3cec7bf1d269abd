"""The ``shiftwise`` command line: argument parsing only, the work is done in ``tools``.

Each tool module exposes ``register(subparsers)``, which adds its sub-command and sets the
function to run as ``func`` on the parsed arguments. The library's own errors
(:class:`shiftwise.errors.ShiftwiseError`) become one line on stderr and their exit code
(2: usage or input error, 3: diverged training); Ctrl-C exits 130. Any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from shiftwise.errors import EXIT_INTERRUPTED, ShiftwiseError

__all__ = ["main"]

TOOL_MODULES = (
    "shiftwise.tools.demo",
    "shiftwise.tools.complexity",
    "shiftwise.tools.convert",
    "shiftwise.tools.train",
    "shiftwise.tools.evaluate",
    "shiftwise.tools.bench",
    "shiftwise.tools.erf",
    "shiftwise.tools.export",
    "shiftwise.tools.study",
)

EPILOG = "exit codes: 0 success, 2 usage or input error, 3 training diverged, 130 interrupted"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per tool module."""
    parser = argparse.ArgumentParser(
        prog="shiftwise",
        description="Large-kernel CNNs from small kernels: ShiftwiseConv and SLaK.",
        epilog=EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in TOOL_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("shiftwise").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        result = args.func(args)
    except ShiftwiseError as error:
        message = " ".join(str(error).split())
        print(f"shiftwise {args.command}: error: {message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"shiftwise {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
