"""The device a command or a training run uses: one check for every entry point, and the
memory it has left (:func:`available_memory`) against which work is refused before it starts
(:func:`check_memory`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from shiftwise.errors import UsageError

__all__ = ["available_memory", "check_device", "check_memory"]


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


def available_memory(device: torch.device | None = None) -> int:
    """Bytes a new allocation can take on ``device`` (default: CPU): a CUDA device's free
    memory; on CPU Linux's ``MemAvailable``, elsewhere the machine's physical memory."""
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


def _gib(nbytes: int) -> str:
    """``nbytes`` in GiB, 3 significant digits (a power of two past float range)."""
    if nbytes >= 2**1000:
        return f"2**{nbytes.bit_length() - 31} GiB"
    return f"{nbytes / 2**30:.3g} GiB"


def check_memory(
    needed: int,
    what: str,
    field: str,
    device: torch.device | None = None,
    also: Sequence[str] = (),
) -> None:
    """Refuse work that ``what`` describes when it would need ``needed`` bytes, more than
    :func:`available_memory` of ``device`` (default: CPU): one :class:`UsageError` whose
    ``field`` (and ``also``) name the value to change."""
    available = available_memory(device)
    if needed > available:
        where = "this machine" if device is None or device.type != "cuda" else str(device)
        raise UsageError(
            f"{what} would need about {_gib(needed)}, more than the {_gib(available)} of "
            f"memory available on {where}",
            field=field,
            also=also,
        )
