"""Speed benchmarks (library layer) behind ``shiftwise bench`` and ``benchmarks/``.

``suites`` (the ``ops``, ``sweep``, ``roofline`` and ``models`` suites, each written as JSON and
PNG), ``operators`` (operator suite and kernel-size sweep), ``roofline`` (shift-add GB/s vs a
tensor copy), ``models`` (img/s and peak memory, in PyTorch and onnxruntime), ``plots`` (PNG
figures), ``environment`` (commit, versions, device). The timing itself (interleaved repeats,
median/IQR, CUDA events, peak memory) is :mod:`shiftwise.analysis.timing`.

Layer: above ``analysis`` and ``deploy`` (the onnxruntime runtime exports through
:mod:`shiftwise.deploy.export`), below the applications (``tools``, ``cli``,
``benchmarks/``); see ``tests/package/test_import_graph.py``.
"""

from shiftwise.analysis.timing import Stats, measure_interleaved, peak_memory, time_call

__all__ = ["Stats", "measure_interleaved", "peak_memory", "time_call"]
