"""Memory a piece of work would need, estimated before it starts, against this machine's.

The budget is the memory available now (:func:`available_memory`). The estimates are from
the architecture alone (no model is built): float32 parameters of a
:class:`~shiftwise.models.MacroNet` and the activations one image leaves for the backward
pass. The parameters are a lower bound (norms, biases and depthwise operators left out);
:func:`check_fits` turns an estimate over the budget into a one-line
:class:`~shiftwise.errors.UsageError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from shiftwise.errors import UsageError
from shiftwise.models.registry import get_config

__all__ = [
    "FLOAT_BYTES",
    "activation_bytes",
    "available_memory",
    "check_fits",
    "model_bytes",
    "parameter_count",
]

FLOAT_BYTES = 4
# Tensors of a block's width kept for the backward pass, per pixel (input, norm, the 4x MLP
# hidden before and after GELU, its output): about 12 channel-widths.
_SAVED_PER_BLOCK = 12


def available_memory(device: torch.device | None = None) -> int:
    """Bytes of memory available to a new allocation on ``device``: on CUDA the free memory
    of the GPU; on CPU Linux's ``MemAvailable``, elsewhere the machine's physical memory."""
    if device is not None and device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _dims(name: str, width_factor: float | None) -> list[int]:
    config = get_config(name)
    factor = config.width_factor if width_factor is None else width_factor
    return [max(int(d * factor), 1) for d in config.dims]


def parameter_count(
    depths: Sequence[int], dims: Sequence[int], num_classes: int, in_chans: int
) -> int:
    """Parameters of a network of these stages, at least: the 4x4 stem ``in_chans * d0 * 16``,
    per block the MLP ``8 d^2``, the 2x2 downsamplings ``4 d_prev d`` and the classifier
    ``d3 * num_classes`` (norms, biases and the depthwise operator, which varies, left out)."""
    total = in_chans * dims[0] * 16 + dims[-1] * num_classes
    for i, (depth, width) in enumerate(zip(depths, dims, strict=True)):
        total += depth * 8 * width * width
        if i:
            total += 4 * dims[i - 1] * width
    return total


def model_bytes(
    name: str, width_factor: float | None = None, num_classes: int = 1000, in_chans: int = 3
) -> int:
    """Float32 bytes of the parameters of the registered model ``name`` built with these
    arguments (:func:`parameter_count`)."""
    config = get_config(name)
    dims = _dims(name, width_factor)
    count = parameter_count(config.depths, dims, num_classes, in_chans)
    return FLOAT_BYTES * count


def activation_bytes(name: str, image_size: int, width_factor: float | None = None) -> int:
    """Float32 bytes one ``image_size`` input of model ``name`` keeps for its backward pass
    (stage ``i`` runs at ``image_size / 2**(i + 2)``)."""
    config = get_config(name)
    total = 3 * image_size * image_size
    for i, (depth, width) in enumerate(zip(config.depths, _dims(name, width_factor), strict=True)):
        side = max(image_size // 2 ** (i + 2), 1)
        total += depth * _SAVED_PER_BLOCK * width * side * side
    return FLOAT_BYTES * total


def check_fits(nbytes: int, option: str, what: str, device: torch.device | None = None) -> None:
    """Raise a :class:`UsageError` naming ``option`` when ``what`` would need ``nbytes``,
    more than the memory available on ``device`` (:func:`available_memory`; default CPU)."""
    memory = available_memory(device)
    if nbytes > memory:
        shown = f"{nbytes / 2**30:,.1f} GiB" if nbytes < 2**80 else "2**50 GiB"
        where = "this machine" if device is None or device.type != "cuda" else str(device)
        raise UsageError(
            f"{option}: {what} would need at least {shown} of memory, more than the "
            f"{memory / 2**30:,.1f} GiB available on {where}"
        )
