"""What a config field means and accepts: :class:`Option`, kept in the field's metadata.

The training config (:mod:`shiftwise.training.config`) and the config classes of lower layers
(:class:`shiftwise.data.AugmentConfig`) declare their fields with :func:`option`, so one
class serves both the library and the command line generated from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["Option", "option", "with_defaults"]


@dataclass(frozen=True)
class Option:
    """What one config field means and accepts.

    ``name``: the flat option name ("" = the field's name). ``low``/``high``: the closed range
    (``low_open``/``high_open`` exclude the end); numbers must be finite. ``choices``: the
    allowed values, or a function returning them. ``default``: the value when neither the user,
    the recipe nor (when resuming) the saved config gives one. ``defines_run``: compared when
    resuming. ``fixed``: shapes the saved weights or masks, so no resume changes it.
    ``reschedules``: a change on resume rebuilds the learning-rate schedule.
    ``resumed``: not compared, but taken from the saved config when resuming and not given
    (it shapes what the run logs or writes). ``deprecated``: former option names, still
    accepted with a :class:`DeprecationWarning`.
    """

    help: str
    name: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: Sequence[str] | Callable[[], Sequence[str]] = ()
    default: Any = None
    defines_run: bool = True
    fixed: bool = False
    reschedules: bool = False
    resumed: bool = False
    deprecated: tuple[str, ...] = ()

    def allowed(self) -> Sequence[str]:
        """The choices (called when given as a function)."""
        return self.choices() if callable(self.choices) else self.choices

    def bounds(self) -> str:
        """``">= 1"``, ``"> 0"``, ``"in [0, 1)"``...: the range in words."""
        low = 0 if self.low is None else self.low
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        high = self.high if isinstance(self.high, int) else format(self.high, "g")
        return f"in {left}{low:g}, {high}{right}"

    def expected_range(self, integer: bool) -> str:
        """``"an integer >= 1"``, ``"a value in [0, 1)"``...: what the range accepts."""
        kind = "an integer" if integer and self.high is None else "a value"
        return f"{kind} {self.bounds()}"

    def contains(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return math.isfinite(value) and low_ok and high_ok


def option(help: str, **option: Any) -> Any:
    """A config field (default ``None``: not given) described by ``Option(help, **option)``."""
    return field(default=None, metadata={"option": Option(help, **option)})


def with_defaults(config: Any) -> Any:
    """The dataclass ``config`` with every field not given (``None``) set to its
    :attr:`Option.default`."""
    defaults = {
        f.name: f.metadata["option"].default
        for f in fields(config)
        if getattr(config, f.name) is None
    }
    return replace(config, **defaults)
