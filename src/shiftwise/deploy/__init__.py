"""Deployment (library layer): :mod:`~shiftwise.deploy.export` writes a re-parameterised
model to ONNX and checks the file in onnxruntime against PyTorch.

Layer: above ``analysis`` (its latency comparison uses :mod:`shiftwise.analysis.timing`),
below ``benchmarking`` (whose ``onnxruntime`` runtime exports through it) and the
applications; see ``tests/package/test_import_graph.py``.
"""
