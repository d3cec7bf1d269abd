"""The device a command or a training run uses: one check for every entry point."""

from __future__ import annotations

import os

import torch

from shiftwise.errors import UsageError

__all__ = ["check_device", "memory_bytes"]


def check_device(name: str | None, field: str = "device") -> torch.device:
    """The device ``name`` (``None``: CUDA when available, else CPU), checked to exist.

    Accepts ``cpu``, ``cuda``, ``cuda:N`` (N below the number of CUDA devices) and ``mps``
    where available; anything else is a one-line :class:`UsageError` whose ``field`` is
    ``field``.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(
            f"{name!r} is not a device, expected cpu, cuda or cuda:N", field=field
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"{name!r} asked for CUDA, but no CUDA device is available", field=field
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"{name!r} does not exist ({torch.cuda.device_count()} CUDA devices)",
                field=field,
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{name!r} asked for MPS, which is not available", field=field)
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{name!r} is not supported, expected cpu, cuda or cuda:N", field=field)
    return device


def memory_bytes(device: torch.device) -> int:
    """The memory of ``device`` in bytes: a CUDA device's total, else this machine's
    physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
