"""Base class of operators made of parallel depthwise conv+BN branches (SLaK, RepLKNet).

The branches run through :func:`shiftwise.ops.oriented_conv.depthwise_conv2d`: channels-last
on CPU and, when autograd will differentiate a wide kernel, as a tall conv on transposed data.
An operator made of strips deploys by default as strips (BNs and the small kernel folded in)
rather than one dense ``K x K`` kernel, which measured slower (``benchmarks/README.md``,
section "Deploy form of strip operators").
"""

from __future__ import annotations

import torch

from shiftwise.layers.conv_bn import DepthwiseConvBN, center_pad_kernel
from shiftwise.layers.inference import DenseDepthwiseConv2d, DepthwiseConvSum, oriented_conv
from shiftwise.layers.interface import KernelWeights, LargeKernelOperator, check_deploy_form
from shiftwise.ops.validation import check_depthwise_input

__all__ = ["ParallelBranchConv2d"]


class ParallelBranchConv2d(LargeKernelOperator):
    """Sum of depthwise conv+BN branches whose kernels all fit, centred, in ``K x K``.

    Subclasses create their branches as :class:`DepthwiseConvBN` attributes and list their
    names in ``branch_names`` (those whose weights sparse training masks by default in
    ``large_kernel_branches``). In eval mode the sum is one depthwise ``K x K`` convolution with
    bias (:meth:`equivalent_kernel`); :meth:`inference_module` builds either that conv or, for
    strips, a :class:`~shiftwise.layers.inference.DepthwiseConvSum` of the BN-folded branches.
    """

    branch_names: tuple[str, ...] = ()
    large_kernel_branches: tuple[str, ...] = ()
    deploy_forms = ("auto", "dense", "strips")

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size

    def branches(self) -> list[DepthwiseConvBN]:
        """The branches that are present (an optional small one may be absent)."""
        return [getattr(self, name) for name in self.branch_names if hasattr(self, name)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Depthwise large-kernel convolution, ``[B, C, H, W] -> [B, C, H, W]``."""
        check_depthwise_input(x, self.channels)
        out = None
        for branch in self.branches():
            y = oriented_conv(x, branch.conv)
            if branch.bn is not None:
                y = branch.bn(y)
            out = y if out is None else out + y
        return out

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [C, 1, K, K], bias [C])`` of the single conv equal to this module in eval."""
        size = (self.kernel_size, self.kernel_size)
        weight, bias = 0, 0
        for branch in self.branches():
            branch_weight, branch_bias = branch.fused()
            weight = weight + center_pad_kernel(branch_weight, size)
            bias = bias + branch_bias
        return weight, bias

    @torch.no_grad()
    def inference_module(self, form: str = "auto") -> DenseDepthwiseConv2d | DepthwiseConvSum:
        """The BN-folded inference module (eval output kept).

        Args:
            form: ``"dense"``: one ``K x K`` depthwise conv with bias
                (:class:`~shiftwise.layers.inference.DenseDepthwiseConv2d`); ``"strips"``: one
                conv per branch (BN folded; a branch contained in an earlier one is added into
                it, e.g. SLaK's small kernel into its tall strip), summed
                (:class:`~shiftwise.layers.inference.DepthwiseConvSum`); ``"auto"``:
                ``"strips"`` when no branch is a full ``K x K`` kernel (SLaK), else ``"dense"``
                (measured, module docstring).
        """
        check_deploy_form(form, self.deploy_forms)
        if form == "auto":
            full = (self.kernel_size, self.kernel_size)
            shapes = [tuple(branch.conv.weight.shape[-2:]) for branch in self.branches()]
            form = "dense" if full in shapes else "strips"
        if form == "strips":
            return DepthwiseConvSum(*self._folded_strips())
        return DenseDepthwiseConv2d(*self.equivalent_kernel())

    def large_kernel_parameters(self) -> list[KernelWeights]:
        """The weights of the ``large_kernel_branches``, each with its own element-wise mask."""
        names = [f"{branch}.conv.weight" for branch in self.large_kernel_branches]
        return [KernelWeights(name, (name,)) for name in names]

    def macs(self, input_size: tuple[int, int]) -> int:
        """``C * kh * kw`` per output pixel for each branch convolution."""
        convs = [branch.conv for branch in self.branches()]
        taps = sum(conv.weight.shape[-2] * conv.weight.shape[-1] for conv in convs)
        return self.channels * taps * input_size[0] * input_size[1]

    def _folded_strips(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """BN-folded branch kernels (a branch that fits in an earlier one is added to it), bias."""
        kernels: list[torch.Tensor] = []
        bias = 0
        for branch in self.branches():
            weight, branch_bias = branch.fused()
            bias = bias + branch_bias
            rows, cols = weight.shape[-2:]
            for i, kernel in enumerate(kernels):
                if kernel.shape[-2] >= rows and kernel.shape[-1] >= cols:
                    kernels[i] = kernel + center_pad_kernel(weight, tuple(kernel.shape[-2:]))
                    break
            else:
                kernels.append(weight)
        return kernels, bias
