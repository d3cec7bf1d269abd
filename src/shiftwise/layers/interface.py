"""The one interface every large-kernel operator implements (SW, SLaK, LargeKernel, yours).

The tools see operators only through :class:`LargeKernelOperator`: sparse training
(:mod:`shiftwise.sparse.targets`) asks which weights to mask, complexity counting
(:mod:`shiftwise.analysis.complexity`) asks for the MACs, re-parameterisation
(:mod:`shiftwise.models.reparam`) and export install
:meth:`~LargeKernelOperator.inference_module`.
A new operator subclasses it and registers its class under a name
(:func:`shiftwise.models.register_operator`), which the blocks, ``create_model(operator=...)``,
the benchmarks and ``shiftwise info`` build from; it needs no edit anywhere else.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "DEPLOY_FORMS",
    "DepthwiseOperator",
    "KernelWeights",
    "LargeKernelOperator",
    "check_deploy_form",
]

# The one vocabulary of deploy forms: "dense" one depthwise conv, "strips" a few strip convs,
# "pieces" small convs then shift-adds (ShiftwiseConv), "auto" the operator's measured choice.
DEPLOY_FORMS = ("auto", "dense", "strips", "pieces")


def check_deploy_form(form: str, supported: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``form`` is one of the operator's ``supported`` forms."""
    if form not in supported:
        raise ValueError(f"form: expected one of {supported}, got {form!r}")


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


class DepthwiseOperator(nn.Module, metaclass=ABCMeta):
    """A depthwise ``[B, C, H, W] -> [B, C, H, W]`` operator ("same" size), in any form.

    In eval mode it must equal ``F.conv2d(x, *self.equivalent_kernel(), padding=S // 2,
    groups=C)`` up to the output channel order of the operator (identity unless the operator
    documents otherwise). The optional capabilities at the end answer "no" by default.
    """

    channels: int

    @abstractmethod
    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode operator as one depthwise conv: ``(weight [C, 1, S, S], bias [C])``,
        ``S`` odd, in input channel order (output channel ``c`` reads input channel ``c``).
        """

    @abstractmethod
    def macs(self, input_size: tuple[int, int]) -> int:
        """Multiply-accumulates of one forward at batch 1 for an ``H x W`` input.

        Convolutions only (additions, norms and the shift-add are not counted), at the full
        kernel sizes (as the papers count them) and dense (sparsity is the caller's business).
        """

    def absorb_output_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> bool:
        """Capability: fold ``scale * out + shift`` (``[C]`` each, by output channel) into the
        operator in place and return ``True``; ``False`` (nothing changed) if it cannot."""
        return False

    def release_output_order(self) -> torch.Tensor | None:
        """Capability: stop reordering output channels and return the order ``[C]`` applied so
        far (output ``i`` was input channel ``order[i]``), for the caller to fold into what
        reads the output; ``None`` when the operator does not reorder (or cannot stop)."""
        return None

    def piece_counts(self) -> tuple[int, int] | None:
        """Capability: ``(active, total)`` small-conv pieces of an operator made of pieces (SW
        "groups", a piece active when its filter is not all zero); ``None`` for others."""
        return None


class LargeKernelOperator(DepthwiseOperator):
    """A trainable large-kernel depthwise operator (SW, SLaK, the dense RepLKNet-style one).

    Besides the :class:`DepthwiseOperator` members it says which weights sparse training masks
    and builds its inference module (timm's ``fuse()`` habit: a module cannot replace itself,
    :func:`shiftwise.reparameterize` installs what this returns).
    """

    deploy_forms: tuple[str, ...] = ("auto", "dense")
    """The :data:`DEPLOY_FORMS` :meth:`inference_module` accepts."""

    @abstractmethod
    def large_kernel_parameters(self) -> list[KernelWeights]:
        """The weights sparse training masks by default."""

    @abstractmethod
    def inference_module(self, form: str = "auto") -> DepthwiseOperator:
        """A new module equal to this one in eval mode, in deploy form ``form`` (one of
        :attr:`deploy_forms`; ``"auto"`` picks the measured fastest)."""

    def constructed_buffers(self) -> tuple[str, ...]:
        """Names of the buffers drawn at construction (seeded tables, not learned), which
        checkpoints of other code bases may lack; none by default."""
        return ()

    def preferred_inference_module(self, form: str) -> DepthwiseOperator:
        """:meth:`inference_module` in ``form`` if the operator has it, else in ``"auto"``
        (how a whole model is deployed with one form for operators of several kinds)."""
        return self.inference_module(form if form in self.deploy_forms else "auto")
