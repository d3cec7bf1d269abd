"""The applications: one module per ``shiftwise`` sub-command (training, evaluation, info,
benchmarks, ERF, conversion, export, studies), each parsing its options, calling the library
(everything below this layer: ``analysis``, ``deploy``, ``benchmarking``, ``training``,
``study``, ...) and printing; plus the option checks they share."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from shiftwise.errors import UsageError

__all__ = ["check_model_names", "check_output_directory"]


def check_model_names(names: str | Iterable[str], option: str) -> None:
    """Raise :class:`UsageError` naming ``option`` when a name is not a registered model."""
    from shiftwise.models import list_models

    for name in [names] if isinstance(names, str) else names:
        if name not in list_models():
            raise UsageError(f"{option}: unknown model {name!r}, expected one of {list_models()}")


def check_output_directory(path: Path, option: str) -> None:
    """Create the output directory ``path`` (before any work is done), or raise one
    :class:`UsageError` naming ``option`` when it cannot be (e.g. it is under a file)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(
            f"{option}: cannot create the directory {str(path)!r} ({reason})"
        ) from None
