"""What a model costs and what it sees, measured without training it (library layer).

* :mod:`~shiftwise.analysis.complexity`: parameters and multiply-accumulates per stage
  (``shiftwise info``, the study runner's records);
* :mod:`~shiftwise.analysis.erf`: effective receptive fields (``shiftwise erf``);
* :mod:`~shiftwise.analysis.timing`: timing and peak memory of calls on a shared machine
  (the export check and :mod:`shiftwise.benchmarking`);

Layer: above ``models``/``sparse``/``data``, below ``deploy``, ``benchmarking`` and the
applications (``tools``, ``cli``); see ``tests/package/test_import_graph.py``.
"""
