"""Base class of operators made of parallel depthwise conv+BN branches (SLaK, RepLKNet).

The branches run through :func:`shiftwise.ops.oriented_conv.depthwise_conv2d`: channels-last
on CPU and, when autograd will differentiate a wide kernel, as a tall conv on transposed data.
An operator made of strips deploys by default as strips (BNs and the small kernel folded in)
rather than one dense ``K x K`` kernel, which measured slower (``benchmarks/README.md``,
section "Deploy form of strip operators").
"""

from __future__ import annotations

import torch
from torch import nn

from shiftwise.layers.conv_bn import DepthwiseConvBN, center_pad_kernel
from shiftwise.layers.interface import KernelWeights, LargeKernelOperator
from shiftwise.ops.oriented_conv import depthwise_conv2d, grad_needed, transpose_pays
from shiftwise.ops.validation import check_depthwise_input

# Leaves of torch.fx symbolic tracing: they choose layouts from shapes, devices and grad flags.
torch.fx.wrap("depthwise_conv2d")
torch.fx.wrap("transpose_pays")
torch.fx.wrap("grad_needed")

__all__ = ["DEPLOY_FORMS", "DepthwiseConvSum", "ParallelBranchConv2d", "oriented_conv"]

DEPLOY_FORMS = ("auto", "dense", "strips")


def oriented_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a depthwise "same" conv, in the fastest layout and orientation."""
    pad_rows, pad_cols = conv.padding
    transposed = transpose_pays(x, conv.weight, grad_needed(x, conv.weight))
    padding = (pad_rows, pad_rows, pad_cols, pad_cols)
    return depthwise_conv2d(x, conv.weight, conv.bias, padding, transposed)


class DepthwiseConvSum(nn.Module):
    """Deploy form: a sum of depthwise "same" convolutions of odd, centred kernels.

    Args:
        kernels: ``[C, 1, kh_i, kw_i]`` each.
        bias: ``[C]``, added once (carried by the first conv).
    """

    def __init__(self, kernels: list[torch.Tensor], bias: torch.Tensor) -> None:
        super().__init__()
        channels = bias.shape[0]
        self.convs = nn.ModuleList()
        for i, kernel in enumerate(kernels):
            rows, cols = kernel.shape[-2:]
            conv = nn.Conv2d(
                channels,
                channels,
                (rows, cols),
                padding=(rows // 2, cols // 2),
                groups=channels,
                bias=i == 0,
            ).to(device=kernel.device, dtype=kernel.dtype)
            conv.weight.data.copy_(kernel)
            if i == 0:
                conv.bias.data.copy_(bias)
            self.convs.append(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the convolutions, ``[B, C, H, W] -> [B, C, H, W]``."""
        out = None
        for conv in self.convs:
            y = oriented_conv(x, conv)
            out = y if out is None else out + y
        return out

    def dense_kernel(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [C, 1, *size], bias [C])``: the sum as one conv."""
        weight = sum(center_pad_kernel(conv.weight, size) for conv in self.convs)
        return weight, self.convs[0].bias


class ParallelBranchConv2d(LargeKernelOperator):
    """Sum of depthwise conv+BN branches whose kernels all fit, centred, in ``K x K``.

    Subclasses create their branches as :class:`DepthwiseConvBN` attributes and list their
    names in ``branch_names`` (those whose weights sparse training masks by default in
    ``large_kernel_branches``). In eval mode the sum is one depthwise ``K x K`` convolution with
    bias (:meth:`equivalent_kernel`). :meth:`reparameterize` installs as ``reparam`` either
    that conv or, for strips, a :class:`DepthwiseConvSum` of the BN-folded branches.
    """

    branch_names: tuple[str, ...] = ()
    large_kernel_branches: tuple[str, ...] = ()

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.reparam: nn.Conv2d | DepthwiseConvSum | None = None

    def branches(self) -> list[DepthwiseConvBN]:
        """The training-time branches still present (none after :meth:`reparameterize`)."""
        return [getattr(self, name) for name in self.branch_names if hasattr(self, name)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Depthwise large-kernel convolution, ``[B, C, H, W] -> [B, C, H, W]``."""
        check_depthwise_input(x, self.channels)
        if isinstance(self.reparam, nn.Conv2d):
            return oriented_conv(x, self.reparam)
        if self.reparam is not None:
            return self.reparam(x)
        out = None
        for branch in self.branches():
            y = oriented_conv(x, branch.conv)
            if branch.bn is not None:
                y = branch.bn(y)
            out = y if out is None else out + y
        return out

    @property
    def deployed(self) -> bool:
        return self.reparam is not None

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [C, 1, K, K], bias [C])`` of the single conv equal to this module in eval."""
        size = (self.kernel_size, self.kernel_size)
        if isinstance(self.reparam, DepthwiseConvSum):
            return self.reparam.dense_kernel(size)
        if self.reparam is not None:
            return self.reparam.weight, self.reparam.bias
        weight, bias = 0, 0
        for branch in self.branches():
            branch_weight, branch_bias = branch.fused()
            weight = weight + center_pad_kernel(branch_weight, size)
            bias = bias + branch_bias
        return weight, bias

    @torch.no_grad()
    def reparameterize(self, form: str = "auto") -> None:
        """Replace the branches by their BN-folded inference form (eval output kept).

        Args:
            form: ``"dense"``: one ``K x K`` depthwise conv with bias; ``"strips"``: one conv
                per branch (BN folded; a branch contained in an earlier one is added into
                it, e.g. SLaK's small kernel into its tall strip), summed
                (:class:`DepthwiseConvSum`); ``"auto"``: ``"strips"`` when no branch is a
                full ``K x K`` kernel (SLaK), else ``"dense"`` (measured, module docstring).
        """
        if form not in DEPLOY_FORMS:
            raise ValueError(f"form: expected one of {DEPLOY_FORMS}, got {form!r}")
        if self.reparam is not None:
            return
        if form == "auto":
            full = (self.kernel_size, self.kernel_size)
            shapes = [tuple(branch.conv.weight.shape[-2:]) for branch in self.branches()]
            form = "dense" if full in shapes else "strips"
        if form == "strips":
            self._install(DepthwiseConvSum(*self._folded_strips()))
            return
        weight, bias = self.equivalent_kernel()
        conv = nn.Conv2d(
            self.channels,
            self.channels,
            self.kernel_size,
            padding=self.kernel_size // 2,
            groups=self.channels,
            bias=True,
        ).to(device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        self._install(conv)

    def large_kernel_parameters(self) -> list[KernelWeights]:
        """The weights of the ``large_kernel_branches``, each with its own element-wise mask."""
        if self.deployed:
            return []
        names = [f"{branch}.conv.weight" for branch in self.large_kernel_branches]
        return [KernelWeights(name, (name,)) for name in names]

    def macs(self, input_size: tuple[int, int]) -> int:
        """``C * kh * kw`` per output pixel for each convolution of the current form."""
        if isinstance(self.reparam, DepthwiseConvSum):
            convs = list(self.reparam.convs)
        elif self.reparam is not None:
            convs = [self.reparam]
        else:
            convs = [branch.conv for branch in self.branches()]
        taps = sum(conv.weight.shape[-2] * conv.weight.shape[-1] for conv in convs)
        return self.channels * taps * input_size[0] * input_size[1]

    def _install(self, reparam: nn.Module) -> None:
        for name in self.branch_names:
            if hasattr(self, name):
                delattr(self, name)
        self.reparam = reparam

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
