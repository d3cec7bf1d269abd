"""The one interface every large-kernel operator implements (SW, SLaK, LargeKernel, yours).

The tools see operators only through :class:`LargeKernelOperator`: sparse training
(:mod:`shiftwise.sparse.targets`) asks which weights to mask, complexity counting
(:mod:`shiftwise.tools.complexity`) asks for the MACs, re-parameterisation
(:mod:`shiftwise.models.reparam`) and export call :meth:`~LargeKernelOperator.reparameterize`.
A new operator subclasses it and needs no edit anywhere else.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["KernelWeights", "LargeKernelOperator"]


@dataclass(frozen=True)
class KernelWeights:
    """Large-kernel weights that sparse training masks together, with one shared mask.

    Attributes:
        key: name of the mask, relative to the operator (e.g. ``"paths"``, ``"tall.conv.weight"``).
        names: names of the parameters, relative to the operator, all of one shape
            ``[N, ...]``; several names share one mask (e.g. SW's parallel paths, which
            are summed at deploy).
        groupable: whether ``granularity="group"`` may mask whole filters (one bit per index
            of dim 0, e.g. SW's ``k x k`` pieces); else the mask is always element-wise.
    """

    key: str
    names: tuple[str, ...]
    groupable: bool = False


class LargeKernelOperator(nn.Module, metaclass=ABCMeta):
    """A depthwise ``[B, C, H, W] -> [B, C, H, W]`` large-kernel operator ("same" size).

    Subclasses implement the abstract members below. In eval mode the operator must equal
    ``F.conv2d(x, *self.equivalent_kernel(), padding=S // 2, groups=C)`` up to the output
    channel order of the operator (identity unless the operator documents otherwise).
    """

    channels: int

    @abstractmethod
    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode operator as one depthwise conv: ``(weight [C, 1, S, S], bias [C])``,
        ``S`` odd, in input channel order (output channel ``c`` reads input channel ``c``).
        """

    @abstractmethod
    def reparameterize(self) -> None:
        """Switch in place to the inference form (eval output unchanged; idempotent)."""

    @property
    @abstractmethod
    def deployed(self) -> bool:
        """Whether :meth:`reparameterize` has run."""

    @abstractmethod
    def large_kernel_parameters(self) -> list[KernelWeights]:
        """The weights sparse training masks by default (empty once deployed)."""

    @abstractmethod
    def macs(self, input_size: tuple[int, int]) -> int:
        """Multiply-accumulates of one forward at batch 1 for an ``H x W`` input.

        Convolutions only (additions, norms and the shift-add are not counted), at the full
        kernel sizes (as the papers count them) and dense (sparsity is the caller's business).
        """
