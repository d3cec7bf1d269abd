"""Reusable benchmarking pieces behind ``shiftwise bench``.

``timing`` (interleaved repeats, median/IQR, CUDA events, peak memory), ``operators``
(operator suite and kernel-size sweep), ``roofline`` (shift-add GB/s vs a tensor copy),
``models`` (img/s and peak memory), ``plots`` (PNG figures), ``environment`` (commit,
versions, device).
"""

from shiftwise.tools.benchmarking.timing import Stats, measure_interleaved, peak_memory, time_call

__all__ = ["Stats", "measure_interleaved", "peak_memory", "time_call"]
