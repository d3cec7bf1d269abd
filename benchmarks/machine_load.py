"""How busy the machine was around a measurement: load average and other processes' CPU use.

A benchmark's figures count only when nothing else ran. Two records tell:

* the load average (``os.getloadavg``, 1, 5 and 15 minutes) before and after each row. It
  counts every runnable thread, the benchmark's own included: a row timing a 2-thread model
  for a minute ends with a 1-minute load average near 2 on an idle machine, so the value
  *after* a row says little about other jobs; the value before the first row does;
* the CPU time other processes took while a row was being timed, in cores
  (:func:`other_cpu_load`): machine-wide busy time (``/proc/stat``, steal included: a
  hypervisor that lends our cores to another guest slows us too) minus this process's own
  (``/proc/self/stat``, its threads and waited-for children), over the elapsed time. It is the
  load average with the benchmark's own share taken out. ``None`` off Linux.

:func:`load_warnings` turns both into the warnings a reader must see.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOAD_THRESHOLD = 0.5

_PROC_STAT = Path("/proc/stat")
_PROC_SELF_STAT = Path("/proc/self/stat")


@dataclass(frozen=True)
class CpuSample:
    """CPU time counters at one instant, in clock ticks (``os.sysconf("SC_CLK_TCK")``)."""

    seconds: float  # time.monotonic()
    machine_busy_ticks: int  # all CPUs: user + nice + system + irq + softirq + steal
    own_ticks: int  # this process: user + system, with its waited-for children


def load_average() -> list[float] | None:
    """``[1 min, 5 min, 15 min]`` load average, or ``None`` where the platform has none."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(value, 3) for value in os.getloadavg()]


def cpu_sample() -> CpuSample | None:
    """The machine's and this process's CPU counters now (``None`` without ``/proc``)."""
    try:
        machine = _PROC_STAT.read_text().splitlines()[0].split()
        own = _PROC_SELF_STAT.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # /proc/stat "cpu" line: user nice system idle iowait irq softirq steal [guest guest_nice];
    # guest time is already counted in user and nice.
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in machine[1:9])
    # /proc/self/stat after the command name: state is field 3, utime..cstime are 14..17
    utime, stime, cutime, cstime = (int(v) for v in own[11:15])
    return CpuSample(
        seconds=time.monotonic(),
        machine_busy_ticks=user + nice + system + irq + softirq + steal,
        own_ticks=utime + stime + cutime + cstime,
    )


def other_cpu_load(
    start: CpuSample | None, end: CpuSample | None, ticks_per_second: float | None = None
) -> float | None:
    """Average number of cores other processes kept busy between ``start`` and ``end``."""
    if start is None or end is None or end.seconds <= start.seconds:
        return None
    ticks_per_second = ticks_per_second or os.sysconf("SC_CLK_TCK")
    machine = end.machine_busy_ticks - start.machine_busy_ticks
    own = end.own_ticks - start.own_ticks
    return max(0.0, (machine - own) / ticks_per_second / (end.seconds - start.seconds))


@contextmanager
def recording_other_cpu(record: dict[str, Any]) -> Iterator[None]:
    """Store in ``record["other_cpu_load"]`` the cores other processes used inside the block."""
    start = cpu_sample()
    try:
        yield
    finally:
        value = other_cpu_load(start, cpu_sample())
        record["other_cpu_load"] = None if value is None else round(value, 3)


def load_warnings(
    label: str, record: dict[str, Any], threshold: float = LOAD_THRESHOLD
) -> list[str]:
    """Warnings for one row's ``record`` (keys of :func:`recording_other_cpu` and
    ``load_average_before`` / ``load_average_after``): other processes used more than
    ``threshold`` cores while it was timed, or, where that is unknown, the 1-minute load
    average before the row was above ``threshold``."""
    other = record.get("other_cpu_load")
    if other is not None:
        if other <= threshold:
            return []
        return [
            f"{label}: other processes kept {other:.2f} cores busy while it was timed "
            f"(above {threshold}); its figures are not those of an idle machine"
        ]
    before = record.get("load_average_before")
    if before is not None and before[0] > threshold:
        return [
            f"{label}: 1-minute load average {before[0]:.2f} before the row (above "
            f"{threshold}); its figures are not those of an idle machine"
        ]
    return []


def start_warnings(load: list[float] | None, threshold: float = LOAD_THRESHOLD) -> list[str]:
    """A warning when the 1-minute load average at the start of the run is above ``threshold``."""
    if load is None or load[0] <= threshold:
        return []
    return [
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start (above "
        f"{threshold}): the machine is not idle; measure alone for figures that count"
    ]
