"""Tools behind the command line: training, evaluation, benchmarks, conversion, export."""

from __future__ import annotations

from collections.abc import Iterable

from shiftwise.errors import UsageError

__all__ = ["check_model_names"]


def check_model_names(names: str | Iterable[str], option: str) -> None:
    """Raise :class:`UsageError` naming ``option`` when a name is not a registered model."""
    from shiftwise.models import list_models

    for name in [names] if isinstance(names, str) else names:
        if name not in list_models():
            raise UsageError(f"{option}: unknown model {name!r}, expected one of {list_models()}")
