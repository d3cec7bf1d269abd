"""Test-only shim: lets ``import torchvision`` (hence ``import timm``) work next to a CPU torch.

The registry's torchvision 0.28 wheels are CUDA builds; with the CPU torch their import fails on
``operator torchvision::nms does not exist``. Defining the two op schemas torchvision registers
fake kernels for, before anything imports it, is enough for timm's model code (torchvision's
compiled ops still do not run). Test-only: the library never imports timm or torchvision.
"""

from __future__ import annotations

import torch

_TORCHVISION_SCHEMAS = torch.library.Library("torchvision", "DEF")  # kept alive: module level
for _name in ("nms", "qnms"):
    try:
        _TORCHVISION_SCHEMAS.define(
            f"{_name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        )
    except RuntimeError:  # already defined (a real CPU torchvision build is installed)
        pass
