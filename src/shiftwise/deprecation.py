"""Deprecated public names: kept importable, with a ``DeprecationWarning`` naming the new one."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

__all__ = ["deprecated_names"]


def deprecated_names(module: str, renamed: Mapping[str, object]) -> Callable[[str], object]:
    """A module ``__getattr__`` resolving each old name of ``renamed`` (old name -> new object)
    to its new object with a warning; any other missing name raises ``AttributeError``."""

    def __getattr__(name: str) -> object:
        if name in renamed:
            new = renamed[name]
            warnings.warn(
                f"{module}.{name} is deprecated, use {new.__name__}",
                DeprecationWarning,
                stacklevel=2,
            )
            return new
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
