"""The arguments of a network: one validator for every source of them.

:func:`create_model`, a training config's ``model.kwargs`` and a weights file's metadata all
go through :func:`check_arguments` (each argument on its own: its kind and range) and
:func:`check_network` (the network they describe together: its stage widths and an estimate
of its memory), before anything is built. Sizes are bounded by what the models are made for:

==================== ================================================================
argument             accepted
==================== ================================================================
``depths``           4 integers in [1, :data:`MAX_STAGE_DEPTH`] (deepest registered: 27)
``dims``             4 integers in [1, :data:`MAX_WIDTH`]; times ``width_factor`` every
                     stage width in [2, :data:`MAX_WIDTH`] (widest registered: 1331)
``kernel_sizes``     4 odd integers in [1, :data:`MAX_KERNEL`] (largest registered: 51)
``n_paths``          integer in [1, :data:`MAX_PATHS`] (released: 2)
``n_shuffles``       integer in [1, :data:`MAX_SHUFFLES`] (released: 4)
``num_classes``      integer >= 0; ``in_chans`` integer >= 1 (both bounded by memory)
``drop_rate``,       in [0, 1)
``drop_path_rate``
``layer_scale_init`` in [0, :data:`MAX_SCALE`]; ``head_init_scale`` likewise
==================== ================================================================

The parameters of the network (:func:`estimate_parameters`) must fit the memory available
(:func:`shiftwise.devices.check_memory`); :func:`estimate_activation_bytes` and
:func:`estimate_training_bytes` are the other estimates work is refused by before it starts.
Errors are one :class:`UsageError` whose ``field`` is the argument (``operator_kwargs`` for
an operator's own argument); callers that know the argument under another name
(``model.kwargs``, ``--checkpoint``) re-raise with it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from shiftwise.devices import check_memory
from shiftwise.errors import UnknownArgumentError, UsageError
from shiftwise.models.network import BLOCKS, POOL_TYPES
from shiftwise.models.operators import list_operators, operator_builder

__all__ = [
    "ARGUMENTS",
    "FLOAT_BYTES",
    "MAX_KERNEL",
    "MAX_PATHS",
    "MAX_SCALE",
    "MAX_SHUFFLES",
    "MAX_STAGE_DEPTH",
    "MAX_WIDTH",
    "OPERATOR_ARGUMENTS",
    "check_arguments",
    "check_network",
    "estimate_activation_bytes",
    "estimate_parameters",
    "estimate_training_bytes",
]

MAX_STAGE_DEPTH = 128
MAX_WIDTH = 8192
MAX_KERNEL = 255
MAX_PATHS = 16
MAX_SHUFFLES = 64
MAX_SCALE = 10.0
_MAX_SEED = 2**63 - 1
FLOAT_BYTES = 4  # float32 parameters and activations
# Training keeps the weights, their gradients and AdamW's two moments, EMA aside.
_TRAINING_COPIES = 4
# Float32 values a training block keeps per channel and pixel for its backward (norm, the
# 4x MLP before and after its activation, the operator's branches).
_SAVED_PER_CHANNEL = 12

Check = Callable[[str, Any], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(low: int, high: int | None = None, odd: bool = False) -> Check:
    """An integer in ``[low, high]`` (odd when ``odd``)."""
    expected = f"an {'odd ' if odd else ''}integer " + (
        f">= {low}" if high is None else f"in [{low}, {high}]"
    )

    def check(name: str, value: Any) -> int:
        if (
            not _is_int(value)
            or value < low
            or (high is not None and value > high)
            or (odd and value % 2 == 0)
        ):
            raise UsageError(f"expected {expected}, got {value!r}", field=name)
        return value

    return check


def _number(low: float, high: float | None = None, high_open: bool = False) -> Check:
    """A finite number in ``[low, high]`` (``[low, high)`` when ``high_open``)."""
    right = ")" if high_open else "]"
    expected = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}{right}"

    def check(name: str, value: Any) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise UsageError(f"expected a number {expected}, got {value!r}", field=name)
        inside = high is None or (value < high if high_open else value <= high)
        if not (math.isfinite(value) and value >= low and inside):
            raise UsageError(f"expected a finite number {expected}, got {value!r}", field=name)
        return float(value)

    return check


def _stages(item: Check) -> Check:
    """4 values (one per stage), each accepted by ``item``; returned as a tuple."""

    def check(name: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list | tuple) or len(value) != 4:
            raise UsageError(f"expected 4 values (one per stage), got {value!r}", field=name)
        return tuple(item(name, v) for v in value)

    return check


def _choice(choices: Sequence[str]) -> Check:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise UsageError(f"expected one of {sorted(choices)}, got {value!r}", field=name)
        return value

    return check


def _plain(name: str, value: Any) -> Any:
    """A string, bool, ``None`` or finite number (an operator's other options; the operator
    checks them further)."""
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if not (finite or isinstance(value, str | bool | type(None))):
        raise UsageError(f"expected a string, boolean or finite number, got {value!r}", field=name)
    return value


def _operator_kwargs(name: str, value: Any) -> dict[str, Any]:
    """The operator's own arguments, each checked (the operator is checked in
    :func:`check_network`, which knows which one it is)."""
    if not isinstance(value, Mapping):
        raise UsageError(f"expected a mapping of argument names, got {value!r}", field=name)
    checked = {}
    for key, item in value.items():
        check = OPERATOR_ARGUMENTS.get(key, _plain)
        try:
            checked[key] = check(key, item)
        except UsageError as error:
            raise UsageError(f"{key}: {error.reason}", field=name) from None
    return checked


# Every argument of MacroNet, with its check.
ARGUMENTS: dict[str, Check] = {
    "depths": _stages(_integer(1, MAX_STAGE_DEPTH)),
    "dims": _stages(_integer(1, MAX_WIDTH)),
    "kernel_sizes": _stages(_integer(1, MAX_KERNEL, odd=True)),
    "block": _choice(tuple(BLOCKS)),
    "operator": lambda name, value: _choice(list_operators())(name, value),  # registered now
    "operator_kwargs": _operator_kwargs,
    "width_factor": _number(0),
    "num_classes": _integer(0),
    "in_chans": _integer(1),
    "global_pool": _choice(POOL_TYPES),
    "drop_rate": _number(0, 1, high_open=True),
    "drop_path_rate": _number(0, 1, high_open=True),
    "layer_scale_init": _number(0, MAX_SCALE),
    "head_init_scale": _number(0, MAX_SCALE),
}

# The operators' arguments with a range (the others are strings or booleans).
OPERATOR_ARGUMENTS: dict[str, Check] = {
    "small_kernel": _integer(1, MAX_KERNEL, odd=True),
    "short_side": _integer(1, MAX_KERNEL, odd=True),
    "ghost_ratio": _number(0, 1, high_open=True),
    "n_paths": _integer(1, MAX_PATHS),
    "n_shuffles": _integer(1, MAX_SHUFFLES),
    "seed": _integer(0, _MAX_SEED),
}


def _operator_parameters(operator: str) -> list[str]:
    """The named arguments the registered ``operator`` takes besides its channels and kernel
    size (from its class's or function's signature)."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = inspect.signature(operator_builder(operator)).parameters.values()
    return [
        p.name for p in parameters if p.kind in named and p.name not in ("channels", "kernel_size")
    ]


def check_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` (names of :data:`ARGUMENTS`) each checked on its own; returns them with
    stage lists as tuples and floats as floats. One :class:`UsageError` naming the first bad
    argument as its ``field``."""
    checked = {}
    for name, value in arguments.items():
        if name not in ARGUMENTS:
            raise UnknownArgumentError(
                f"not an argument of the network, expected one of {sorted(ARGUMENTS)}",
                field=name,
            )
        checked[name] = ARGUMENTS[name](name, value)
    return checked


def stage_widths(dims: Sequence[int], width_factor: float) -> list[int]:
    """Every stage's channels: ``int(d * width_factor)`` (as :class:`MacroNet` builds them)."""
    return [int(d * width_factor) for d in dims]


def estimate_parameters(arguments: Mapping[str, Any]) -> int:
    """An estimate of the parameters of :class:`MacroNet` ``(**arguments)`` (every argument
    given), without building it: the stem, per block ``9 d**2`` (an MLP of ratio 4 and the
    rest of the block) and a dense ``k x k`` depthwise kernel, the downsamplings and the
    head. For the registered models it is within 10% below and 50% above the real count."""
    dims = stage_widths(arguments["dims"], arguments["width_factor"])
    total = arguments["in_chans"] * dims[0] * 16 + 4 * dims[0]
    for i, (depth, dim, kernel) in enumerate(
        zip(arguments["depths"], dims, arguments["kernel_sizes"], strict=True)
    ):
        if i > 0:
            total += dims[i - 1] * dim * 4 + dim + 2 * dims[i - 1]
        total += depth * (9 * dim * dim + dim * kernel * kernel + 16 * dim)
    return total + (dims[-1] + 1) * arguments["num_classes"] + 2 * dims[-1]


def estimate_activation_bytes(arguments: Mapping[str, Any], image_size: int) -> int:
    """An estimate of the memory (bytes) one ``image_size`` image leaves in :class:`MacroNet`
    ``(**arguments)`` for the backward pass: ``_SAVED_PER_CHANNEL`` float32 values per
    channel and pixel of every block (stage ``i`` runs at ``image_size / 2**(i + 2)``)."""
    dims = stage_widths(arguments["dims"], arguments["width_factor"])
    saved = sum(
        depth * dim * max(image_size // 2 ** (i + 2), 1) ** 2
        for i, (depth, dim) in enumerate(zip(arguments["depths"], dims, strict=True))
    )
    return saved * _SAVED_PER_CHANNEL * FLOAT_BYTES


def estimate_training_bytes(arguments: Mapping[str, Any], image_size: int, batch: int) -> int:
    """An estimate of the memory (bytes) one training step of :class:`MacroNet`
    ``(**arguments)`` takes on ``batch`` images of ``image_size`` pixels: the weights, their
    gradients and optimizer moments, and each image's activations
    (:func:`estimate_activation_bytes`)."""
    activations = batch * estimate_activation_bytes(arguments, image_size)
    return activations + _TRAINING_COPIES * FLOAT_BYTES * estimate_parameters(arguments)


def check_network(arguments: Mapping[str, Any], device: torch.device | None = None) -> None:
    """Check what ``arguments`` (every :class:`MacroNet` argument, each already accepted by
    :func:`check_arguments`) describe together: the operator's own arguments, stage widths
    in [2, :data:`MAX_WIDTH`], and parameters that fit the memory available on ``device``
    (default: CPU). Raises one :class:`UsageError` naming the argument to change."""
    accepted = _operator_parameters(arguments["operator"])
    for key in arguments["operator_kwargs"]:
        if key not in accepted:
            raise UnknownArgumentError(
                f"{key!r} is not an argument of operator {arguments['operator']!r}, expected "
                f"one of {accepted}",
                field="operator_kwargs",
            )
    dims, factor = arguments["dims"], arguments["width_factor"]
    widths = stage_widths(dims, factor)
    if min(widths) < 2 or max(widths) > MAX_WIDTH:
        low = math.ceil(2 / min(dims) * 1e6) / 1e6
        high = math.floor(MAX_WIDTH / max(dims) * 1e6) / 1e6
        raise UsageError(
            f"expected a value in [{low:g}, {high:g}] for stage widths {list(dims)} (every "
            f"width in [2, {MAX_WIDTH}] channels), got {factor:g}",
            field="width_factor",
        )
    parameters = estimate_parameters(arguments)
    parts = {
        "num_classes": (widths[-1] + 1) * arguments["num_classes"],
        "in_chans": arguments["in_chans"] * widths[0] * 16,
    }
    parts["depths"] = parameters - sum(parts.values())
    check_memory(
        parameters * FLOAT_BYTES,
        "the network's parameters",
        max(parts, key=parts.__getitem__),
        device,
    )
