"""The one rule for which parameters are weights that sparse training may mask.

Masking (``targets="all"`` in :mod:`shiftwise.sparse.targets`), sparse complexity counts
(:mod:`shiftwise.analysis.complexity`) and weight decay (``no_weight_decay`` of the networks)
all ask :func:`sparse_scope`, so they cannot disagree.
"""

from __future__ import annotations

from torch import nn

from shiftwise.layers.interface import LargeKernelOperator

__all__ = ["sparse_scope"]


def sparse_scope(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` of every weight of ``model``'s convolutions and linear layers.

    That is the ``weight`` of each ``nn.Conv2d`` / ``nn.Linear`` (the official "all" masking
    scope of SLaK's released models) and the large-kernel weights each operator declares
    (:meth:`~shiftwise.layers.LargeKernelOperator.large_kernel_parameters`). Biases, norm
    affines and per-channel scales stored with singleton dimensions (GRN's ``[1, 1, 1, C]``
    ``gamma``/``beta``) are not weights: they stay dense and are not weight-decayed.
    """
    params = dict(model.named_parameters())
    scope = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        names = []
        if isinstance(module, nn.Conv2d | nn.Linear):
            names.append("weight")
        if isinstance(module, LargeKernelOperator):
            names.extend(name for group in module.large_kernel_parameters() for name in group.names)
        for name in names:
            if prefix + name in params:
                scope[prefix + name] = params[prefix + name]
    return {name: param for name, param in params.items() if name in scope}
