"""The smallest input side the analyses accept (complexity counting, ERF, ONNX export).

One function so that the rule has one home here; it is to come from the model itself (the
models reduce their input 32 times: four stages after a stride-4 stem).
"""

from __future__ import annotations

__all__ = ["min_input_size"]


def min_input_size() -> int:
    """Smallest height or width, in pixels, of an input the networks reduce 32 times."""
    return 32
