"""The ``shiftwise`` command line: argument parsing only, the work is done in ``tools``.

Layer: the top of the package (nothing imports it); see ``tests/package/test_import_graph.py``.
Each tool module exposes ``register(subparsers)``, which adds its sub-command and sets the
function to run as ``func`` on the parsed arguments. The library's own errors
(:class:`shiftwise.errors.ShiftwiseError`) become one line on stderr and their exit code
(2: usage or input error, or a file that could not be written; 3: diverged training); Ctrl-C
exits 130 and SIGTERM 143, each with one line (the ``finally`` clauses run, so a run
directory's lock is released and temporary files removed). Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from shiftwise.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, ShiftwiseError
from shiftwise.tools import (
    bench,
    complexity,
    convert,
    demo,
    erf,
    evaluate,
    export,
    predict,
    study,
    train,
)

__all__ = ["main"]

TOOL_MODULES = (demo, complexity, convert, train, evaluate, predict, bench, erf, export, study)
"""The sub-commands, in the order of ``shiftwise --help``."""

EPILOG = (
    "exit codes: 0 success, 2 usage or input error or a failed write, 3 training diverged, "
    "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)"
)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so it unwinds like Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per tool module."""
    parser = argparse.ArgumentParser(
        prog="shiftwise",
        description="Large-kernel CNNs from small kernels: ShiftwiseConv and SLaK.",
        epilog=EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for tool in TOOL_MODULES:
        tool.register(subparsers)
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
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        result = args.func(args)
    except ShiftwiseError as error:
        message = " ".join(str(error).split())
        print(f"shiftwise {args.command}: error: {message}", file=sys.stderr)
        return error.exit_code
    except Terminated:
        print(f"shiftwise {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"shiftwise {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
