"""Test-only shim: lets ``import torchvision`` (hence ``import timm``) work next to a CPU torch.

The registry's torchvision 0.28 wheels are CUDA builds; with the CPU torch their import fails on
``operator torchvision::nms does not exist``. Defining the two op schemas torchvision registers
fake kernels for, before anything imports it, is enough for timm's model code (torchvision's
compiled ops still do not run). Where torchvision imports as is (a matching build), nothing is
defined: its own library registration must not collide with ours. Test-only: the library never
imports timm or torchvision.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch


def _torchvision_lacks_its_ops() -> bool:
    """Whether the installed torchvision is a CUDA build next to a CPU-only torch.

    Read from ``torchvision/version.py`` (``__version__ = '0.28.0+cu130'``) without importing
    it: a failed ``import torchvision`` would leave half-registered state behind.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None or torch.version.cuda is not None:
        return False
    version = Path(spec.origin).with_name("version.py")
    text = version.read_text() if version.is_file() else ""
    return re.search(r"__version__ = '[^']*\+cu\d+'", text) is not None


if _torchvision_lacks_its_ops():
    _TORCHVISION_SCHEMAS = torch.library.Library("torchvision", "DEF")  # kept alive
    for _name in ("nms", "qnms"):
        _TORCHVISION_SCHEMAS.define(
            f"{_name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        )
