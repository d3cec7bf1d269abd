"""Which parameters a sparse-training run masks, and at which granularity.

A :class:`MaskTarget` is one mask and the parameters that share it. Most targets are one
weight tensor with an element-wise mask ("fine"). Each large-kernel operator says through
:meth:`~shiftwise.layers.LargeKernelOperator.large_kernel_parameters` which of its weights are
its large-kernel weights and which of them share one mask (:class:`~shiftwise.layers.
KernelWeights`): e.g. the small-conv paths of a ShiftWiseConv2d are summed into one kernel at
deploy, so their ``n_paths`` weights ``[Cr*nk, 1, k, k]`` always share one mask: element-wise
for granularity ``"fine"``, or one bit per piece (``[Cr*nk, 1, 1, 1]``, a whole ``k x k``
small-conv filter, the SW paper's "rep_coarse") for ``"group"`` (weights marked
``groupable``). Sharing the mask across paths always is deliberate: the official code lets the
path masks drift apart between "aligned" updates, so the merged kernel is denser than the
target.

Scopes (the ``targets`` argument of :func:`select_targets`):

- ``"large_kernels"`` (default): every operator's ``large_kernel_parameters()`` (SW path
  weights, SLaK ``tall``/``wide`` conv weights, RepLKNet ``large`` conv weight, ...);
- ``"all"``: every weight of a conv or linear layer (:func:`~shiftwise.layers.sparse_scope.
  sparse_scope`, the one rule complexity counts and weight decay share), the scope of SLaK's
  released models; weights an operator groups still share one mask;
- a sequence of ``fnmatch`` patterns matched against parameter names;
- a callable ``(name, parameter) -> bool``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from shiftwise.layers import LargeKernelOperator
from shiftwise.layers.sparse_scope import sparse_scope

__all__ = ["GRANULARITIES", "MaskTarget", "TargetSpec", "select_targets", "unwrap_model"]

GRANULARITIES = ("fine", "group")

TargetSpec = str | Sequence[str] | Callable[[str, nn.Parameter], bool]


@dataclass(frozen=True)
class MaskTarget:
    """One mask and the parameters it multiplies.

    Attributes:
        name: key of the mask (the parameter name, or ``"<operator>.<key>"`` for weights an
            operator groups, e.g. ``"<module>.paths"`` for SW paths).
        param_names: names of the masked parameters (relative to the unwrapped model).
        params: the parameters, all of one shape ``S``.
        mask_shape: shape of the mask, broadcastable to ``S`` (``S`` itself when fine).
        owner: name of the owning operator for ``groupable`` weights (whose mask units
            are whole filters, e.g. SW pieces), else ``None``.
    """

    name: str
    param_names: tuple[str, ...]
    params: tuple[nn.Parameter, ...]
    mask_shape: tuple[int, ...]
    owner: str | None = None

    @property
    def sw_module(self) -> str | None:
        """Deprecated name of :attr:`owner`."""
        warnings.warn(
            "MaskTarget.sw_module is deprecated, use MaskTarget.owner", DeprecationWarning, 2
        )
        return self.owner

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape ``S`` of each masked parameter."""
        return tuple(self.params[0].shape)

    @property
    def n_units(self) -> int:
        """Number of mask entries (weights, or SW pieces when group-wise)."""
        return math.prod(self.mask_shape)

    @property
    def unit_size(self) -> int:
        """Parameter entries switched by one mask entry, over all shared parameters."""
        return len(self.params) * math.prod(self.shape) // self.n_units

    @property
    def numel(self) -> int:
        """Parameter entries under this mask, over all shared parameters."""
        return self.n_units * self.unit_size

    def unit_sum(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum of ``|t|`` over the shared tensors and the broadcast dims: ``S -> mask_shape``."""
        total = torch.stack([t.detach().abs() for t in tensors]).sum(0)
        dims = tuple(
            i for i, size in enumerate(self.mask_shape) if size == 1 and total.shape[i] > 1
        )
        return total.sum(dim=dims, keepdim=True) if dims else total


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper, else ``model``."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def _operator_groups(model: nn.Module) -> dict[str, tuple[str, str, bool, tuple[str, ...]]]:
    """``{parameter name: (operator name, mask key, groupable, grouped names)}`` of the large-
    kernel weights of every (not yet deployed) operator in ``model``."""
    groups = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, LargeKernelOperator):
            continue
        prefix = f"{module_name}." if module_name else ""
        for weights in module.large_kernel_parameters():
            names = tuple(prefix + name for name in weights.names)
            for name in names:
                groups[name] = (module_name, prefix + weights.key, weights.groupable, names)
    return groups


def _predicate(
    model: nn.Module,
    groups: dict[str, tuple[str, str, bool, tuple[str, ...]]],
    targets: TargetSpec,
) -> Callable[[str, nn.Parameter], bool]:
    """Turn a scope (see the module docstring) into a ``(name, parameter) -> bool`` test."""
    if isinstance(targets, str):
        if targets == "large_kernels":
            return lambda name, _: name in groups
        if targets == "all":
            scope = sparse_scope(model)
            return lambda name, _: name in scope
        raise ValueError(
            "targets: expected 'large_kernels', 'all', name patterns or a callable, "
            f"got {targets!r}"
        )
    if callable(targets):
        return targets
    if isinstance(targets, Sequence) and all(isinstance(p, str) for p in targets):
        patterns = tuple(targets)
        return lambda name, _: any(fnmatchcase(name, p) for p in patterns)
    raise TypeError(
        "targets: expected 'large_kernels', 'all', a sequence of name patterns or a callable "
        f"(name, parameter) -> bool, got {type(targets).__name__}"
    )


def select_targets(
    model: nn.Module, targets: TargetSpec = "large_kernels", granularity: str = "fine"
) -> list[MaskTarget]:
    """The masks of a sparse-training run on ``model`` (DDP wrappers are looked through).

    Selecting any weight an operator groups masks all of the group with one shared mask.
    ``granularity="group"`` gives ``groupable`` weights (SW paths) one bit per filter; other
    selected parameters are always masked element-wise. Raises ``ValueError`` when nothing is
    selected, or when ``"group"`` is asked for and no groupable weight is selected.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity: expected one of {GRANULARITIES}, got {granularity!r}")
    model = unwrap_model(model)
    groups = _operator_groups(model)
    selected = _predicate(model, groups, targets)
    params = dict(model.named_parameters())

    result: list[MaskTarget] = []
    seen: set[str] = set()
    any_groupable = False
    for name, param in params.items():
        if not selected(name, param):
            continue
        if not param.is_floating_point():
            raise TypeError(f"targets: parameter {name!r} is not floating point ({param.dtype})")
        if name not in groups:
            result.append(MaskTarget(name, (name,), (param,), tuple(param.shape)))
            continue
        module_name, key, groupable, names = groups[name]
        if key in seen:
            continue
        seen.add(key)
        shape = tuple(param.shape)
        grouped = granularity == "group" and groupable
        any_groupable |= groupable
        mask_shape = (shape[0],) + (1,) * (len(shape) - 1) if grouped else shape
        owner = module_name if groupable else None
        members = tuple(params[n] for n in names)
        result.append(MaskTarget(key, names, members, mask_shape, owner))
    if not result:
        raise ValueError(f"targets: {targets!r} selects no parameter of the model")
    if granularity == "group" and not any_groupable:
        raise ValueError(
            "granularity: 'group' masks whole filters (ShiftWiseConv2d pieces), but the "
            f"selected parameters ({targets!r}) contain no groupable weight"
        )
    return result
