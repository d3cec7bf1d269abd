"""Inference forms of the large-kernel operators, each its own module.

:meth:`~shiftwise.layers.LargeKernelOperator.inference_module` returns one of these, and
:func:`shiftwise.reparameterize` installs it in place of the training module:

* :class:`DenseDepthwiseConv2d`: one depthwise "same" conv with bias (RepLKNet's deploy form,
  any operator's ``"dense"`` form), output channels optionally reordered;
* :class:`DepthwiseConvSum`: a sum of depthwise "same" convs of centred kernels (SLaK's
  ``"strips"`` form);
* :class:`StripDepthwiseConv2d`: ShiftwiseConv's ``"strips"`` form, two strip convs over all
  channels plus a bias, output channels optionally reordered;
* :class:`ShiftAddPieces`: ShiftwiseConv's ``"pieces"`` form, the small convs of its active
  pieces then the shift-adds.

Each holds only what shapes its output: no ``None`` parameters, no flags switching forms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shiftwise.layers.conv_bn import center_pad_kernel
from shiftwise.layers.interface import DepthwiseOperator
from shiftwise.ops.oriented_conv import depthwise_conv2d, grad_needed, transpose_pays
from shiftwise.ops.shift_add import shift_add, shift_add_reference
from shiftwise.ops.sw_geometry import (
    ShiftTables,
    SWGeometry,
    equivalent_kernel,
    strip_kernels,
    strip_padding,
    strips_kernel,
    term_offsets,
)
from shiftwise.ops.validation import check_depthwise_input

# Leaves of torch.fx symbolic tracing: they choose layouts from shapes, devices and grad flags.
torch.fx.wrap("depthwise_conv2d")
torch.fx.wrap("transpose_pays")
torch.fx.wrap("grad_needed")
torch.fx.wrap("select_channels")

__all__ = [
    "DenseDepthwiseConv2d",
    "DepthwiseConvSum",
    "ShiftAddPieces",
    "StripDepthwiseConv2d",
    "oriented_conv",
    "paper_macs",
    "select_channels",
    "with_ghost_channels",
]


def select_channels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[:, index]`` for ``x [B, C, H, W]``, in ``x``'s memory format (channels-last stays so)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return x.permute(0, 2, 3, 1).index_select(3, index).permute(0, 3, 1, 2)
    return x.index_select(1, index)


def oriented_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a depthwise "same" conv, in the fastest layout and orientation."""
    pad_rows, pad_cols = conv.padding
    transposed = transpose_pays(x, conv.weight, grad_needed(x, conv.weight))
    padding = (pad_rows, pad_rows, pad_cols, pad_cols)
    return depthwise_conv2d(x, conv.weight, conv.bias, padding, transposed)


def _centred_padding(kernel: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = kernel.shape[-2] // 2, kernel.shape[-1] // 2
    return (rows, rows, cols, cols)


class _ReorderedOutput(DepthwiseOperator):
    """An inference module whose output channels may be reordered (``output_order [C]``:
    output ``i`` is channel ``output_order[i]``), which it can stop doing on request."""

    def _keep_output_order(self, output_order: torch.Tensor | None) -> None:
        self.reorders = output_order is not None
        if output_order is not None:
            self.register_buffer("output_order", output_order.clone())

    def _reordered(self, out: torch.Tensor) -> torch.Tensor:
        return select_channels(out, self.output_order) if self.reorders else out

    def release_output_order(self) -> torch.Tensor | None:
        """Stop reordering the output; the order it applied (``[C]``), ``None`` if none."""
        if not self.reorders:
            return None
        order = self.output_order
        del self.output_order
        self.reorders = False
        return order


class DenseDepthwiseConv2d(_ReorderedOutput):
    """Depthwise "same" conv with bias, output channels reordered: ``conv(x)[:, output_order]``.

    Args:
        weight: ``[C, 1, S, S]`` (``S`` odd).
        bias: ``[C]``.
        output_order: ``[C]`` or ``None`` (input order, no reordering).
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor, output_order: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.channels = weight.shape[0]
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())
        self._keep_output_order(output_order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_depthwise_input(x, self.channels)
        transposed = transpose_pays(x, self.weight, grad_needed(x, self.weight))
        out = depthwise_conv2d(x, self.weight, self.bias, _centred_padding(self.weight), transposed)
        return self._reordered(out)

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.bias

    def macs(self, input_size: tuple[int, int]) -> int:
        """``C * S * S`` per output pixel."""
        return self.weight[:, 0].numel() * input_size[0] * input_size[1]

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={tuple(self.weight.shape[-2:])}"


class DepthwiseConvSum(DepthwiseOperator):
    """A sum of depthwise "same" convolutions of odd, centred kernels.

    Args:
        kernels: ``[C, 1, kh_i, kw_i]`` each.
        bias: ``[C]``, added once (carried by the first conv).
    """

    def __init__(self, kernels: list[torch.Tensor], bias: torch.Tensor) -> None:
        super().__init__()
        self.channels = bias.shape[0]
        self.convs = nn.ModuleList()
        for i, kernel in enumerate(kernels):
            rows, cols = kernel.shape[-2:]
            conv = nn.Conv2d(
                self.channels,
                self.channels,
                (rows, cols),
                padding=(rows // 2, cols // 2),
                groups=self.channels,
                bias=i == 0,
            ).to(device=kernel.device, dtype=kernel.dtype)
            conv.weight.data.copy_(kernel)
            if i == 0:
                conv.bias.data.copy_(bias)
            self.convs.append(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the convolutions, ``[B, C, H, W] -> [B, C, H, W]``."""
        check_depthwise_input(x, self.channels)
        out = None
        for conv in self.convs:
            y = oriented_conv(x, conv)
            out = y if out is None else out + y
        return out

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [C, 1, S, S], bias [C])``, ``S`` the largest side of any kernel."""
        side = max(max(conv.weight.shape[-2:]) for conv in self.convs)
        weight = sum(center_pad_kernel(conv.weight, (side, side)) for conv in self.convs)
        return weight, self.convs[0].bias

    def macs(self, input_size: tuple[int, int]) -> int:
        """``C * kh * kw`` per output pixel for each convolution."""
        taps = sum(conv.weight.shape[-2] * conv.weight.shape[-1] for conv in self.convs)
        return self.channels * taps * input_size[0] * input_size[1]


def paper_macs(pieces: int, geometry: SWGeometry, input_size: tuple[int, int]) -> int:
    """ShiftwiseConv's MACs as the paper counts them: ``pieces * k * k`` per padded pixel."""
    extra = geometry.extra_pad
    area = (input_size[0] + 2 * extra) * (input_size[1] + 2 * extra)
    return pieces * geometry.small_kernel**2 * area


class StripDepthwiseConv2d(_ReorderedOutput):
    """ShiftwiseConv deployed as strips: two strip depthwise convs plus a bias, all channels.

    ``out = conv(x, horizontal) + conv(x, vertical) + bias``, output channels reordered by
    ``output_order`` when one is given. The identity branch and the residual are folded into
    the centre of ``horizontal`` (a ghost channel is a unit centre tap), so no channel is split
    off or gathered.

    Args:
        horizontal: ``[C, 1, k, L]``; vertical: ``[C, 1, L, k]``; bias: ``[C]``
            (:func:`~shiftwise.ops.sw_geometry.full_channel_strips`).
        geometry: the operator's :class:`~shiftwise.ops.sw_geometry.SWGeometry` (strip padding).
        pieces: ``(active, total)`` small-conv pieces of the operator it came from (the
            paper's MAC count, :meth:`piece_counts`).
        output_order: ``[C]`` or ``None`` (input order).
    """

    def __init__(
        self,
        horizontal: torch.Tensor,
        vertical: torch.Tensor,
        bias: torch.Tensor,
        geometry: SWGeometry,
        pieces: tuple[int, int],
        output_order: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.channels = horizontal.shape[0]
        self.geometry = geometry
        self.pieces = tuple(pieces)
        self.horizontal = nn.Parameter(horizontal.detach().clone().contiguous())
        self.vertical = nn.Parameter(vertical.detach().clone().contiguous())
        self.bias = nn.Parameter(bias.detach().clone())
        self._keep_output_order(output_order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        check_depthwise_input(x, self.channels)
        pad_h, pad_v = strip_padding(self.geometry)
        transposed = transpose_pays(x, self.horizontal, grad_needed(x, self.horizontal))
        out = depthwise_conv2d(x, self.horizontal, self.bias, pad_h, transposed)
        out = out + depthwise_conv2d(x, self.vertical, padding=pad_v)
        return self._reordered(out)

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [C, 1, S, S], bias [C])`` in input channel order, ``S`` odd, centred."""
        kernel = strips_kernel(self.horizontal[:, 0], self.vertical[:, 0], self.geometry)
        return kernel.unsqueeze(1), self.bias

    def macs(self, input_size: tuple[int, int]) -> int:
        """Counted as the paper counts the operator's small convs (:class:`ShiftAddPieces`)."""
        return paper_macs(self.pieces[0], self.geometry, input_size)

    def piece_counts(self) -> tuple[int, int]:
        return self.pieces

    @torch.no_grad()
    def absorb_output_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> bool:
        """Fold ``scale * out + shift`` (``[C]`` each, by output channel) in place; ``True``."""
        if self.reorders:
            order = self.output_order
            scale = scale.new_empty(self.channels).index_copy(0, order, scale)
            shift = shift.new_empty(self.channels).index_copy(0, order, shift)
        self.horizontal.mul_(scale[:, None, None, None])
        self.vertical.mul_(scale[:, None, None, None])
        self.bias.copy_(self.bias * scale + shift)
        return True

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.geometry.kernel_size}, "
            f"small_kernel={self.geometry.small_kernel}, strip_length="
            f"{self.horizontal.shape[-1]}, reorders={self.reorders}"
        )


class ShiftAddPieces(DepthwiseOperator):
    """ShiftwiseConv deployed as pieces: the small convs of its active pieces, then shift-adds.

    ``out_rep = s_h * H + s_v * V + s_i * I + bias + x_rep``, where ``H, V, I`` are the three
    shift-adds of the pieces (a pruned piece reads as zero), then ``cat([out_rep, x_ghost])``
    and back to input channel order unless ``channel_order == "official"``.

    Args:
        weight: ``[A, 1, k, k]``, the active pieces' summed small-conv filters.
        active_index: ``[A]``, which of the ``Cr * nk`` pieces they are.
        branch_scale: ``[3, Cr]`` (h, v, identity); branch_bias: ``[Cr]``.
        tables: the shift tables over all ``Cr * nk`` pieces.
        rep_index, ghost_index: the ghost split (``[Cr]``, ``[C - Cr]``).
        geometry: the operator's geometry; n_shuffles: its shuffled groups ``R``.
        channel_order: ``"input"`` or ``"official"`` (``[rep, ghost]``).
        reference: run the readable reference shift-add (the oracle) instead of the fused op.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        active_index: torch.Tensor,
        branch_scale: torch.Tensor,
        branch_bias: torch.Tensor,
        tables: ShiftTables,
        rep_index: torch.Tensor,
        ghost_index: torch.Tensor,
        geometry: SWGeometry,
        n_shuffles: int,
        channel_order: str = "input",
        reference: bool = False,
    ) -> None:
        super().__init__()
        self.n_rep = rep_index.numel()
        self.channels = self.n_rep + ghost_index.numel()
        self.geometry = geometry
        self.n_shuffles = n_shuffles
        self.channel_order = channel_order
        self.reference = reference
        self.pruned = active_index.numel() < self.n_rep * geometry.n_pieces
        self.weight = nn.Parameter(weight.detach().clone())
        self.branch_scale = nn.Parameter(branch_scale.detach().clone())
        self.branch_bias = nn.Parameter(branch_bias.detach().clone())
        self.register_buffer("active_index", active_index.clone())
        self.register_buffer("horizontal_index", tables.horizontal.clone())
        self.register_buffer("vertical_index", tables.vertical.clone())
        self.register_buffer("identity_index", tables.identity.clone())
        self.register_buffer("rep_index", rep_index.clone())
        self.register_buffer("ghost_index", ghost_index.clone())

    @property
    def tables(self) -> ShiftTables:
        return ShiftTables(self.horizontal_index, self.vertical_index, self.identity_index)

    def shift_add_inputs(
        self, x_rep: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        """What the three shift-adds read, for rep input ``x_rep [B, Cr, H, W]``.

        Returns the pieces ``y [B, A (+1), H + 2e, W + 2e]`` (the small convs of the active
        pieces; a last zero piece when some are pruned), the gather tables (h, v, identity)
        into ``y``, and the term offsets ``[3, T, 2]``
        (:func:`~shiftwise.ops.sw_geometry.term_offsets`).
        """
        tables = (self.horizontal_index, self.vertical_index, self.identity_index)
        if self.pruned:
            y = _active_pieces_conv(x_rep, self.weight, self.active_index, self.geometry)
            slot = _piece_slots(self.active_index, self.n_rep * self.geometry.n_pieces)
            tables = tuple(slot[index] for index in tables)
        else:
            padding = self.geometry.conv_padding
            y = F.conv2d(x_rep, self.weight, padding=padding, groups=self.n_rep)
        return y, tables, term_offsets(self.geometry, self.n_shuffles, x_rep.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        check_depthwise_input(x, self.channels)
        x_rep = select_channels(x, self.rep_index)
        size = (x_rep.shape[-2], x_rep.shape[-1])
        y, tables, offsets = self.shift_add_inputs(x_rep)
        shift = shift_add_reference if self.reference else shift_add
        horizontal, vertical, identity = (
            shift(y, index, offset, size) for index, offset in zip(tables, offsets, strict=True)
        )
        scale = self.branch_scale.reshape(3, 1, -1, 1, 1)
        out = horizontal * scale[0] + vertical * scale[1] + identity * scale[2]
        out = out + self.branch_bias.reshape(1, -1, 1, 1) + x_rep.to(out.dtype)
        out = torch.cat([out, select_channels(x, self.ghost_index).to(out.dtype)], dim=1)
        if self.channel_order == "input":
            out = select_channels(out, torch.argsort(torch.cat([self.rep_index, self.ghost_index])))
        return out

    def piece_weight(self) -> torch.Tensor:
        """``[Cr * nk, 1, k, k]``: every piece's filter, zero where pruned."""
        full = self.weight.new_zeros(self.n_rep * self.geometry.n_pieces, *self.weight.shape[1:])
        return full.index_copy(0, self.active_index, self.weight)

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [C, 1, S, S], bias [C])`` in input channel order (ghost: unit centre tap)."""
        kernels = strip_kernels(self.piece_weight(), self.tables, self.geometry)
        rep = equivalent_kernel(kernels, self.branch_scale, self.geometry)
        return with_ghost_channels(rep, self.branch_bias, self.rep_index, self.ghost_index)

    def macs(self, input_size: tuple[int, int]) -> int:
        """``A * k * k`` per pixel of the padded ``(H + 2e) x (W + 2e)`` map (as the paper)."""
        return paper_macs(self.active_index.numel(), self.geometry, input_size)

    def piece_counts(self) -> tuple[int, int]:
        return self.active_index.numel(), self.n_rep * self.geometry.n_pieces

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.geometry.kernel_size}, "
            f"small_kernel={self.geometry.small_kernel}, rep_channels={self.n_rep}, "
            f"active_pieces={self.active_index.numel()}, channel_order={self.channel_order!r}, "
            f"reference={self.reference}"
        )


def with_ghost_channels(
    rep: torch.Tensor, rep_bias: torch.Tensor, rep_index: torch.Tensor, ghost_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rep kernels ``[Cr, S, S]`` and bias ``[Cr]`` completed to all ``C`` channels in input
    order (a ghost channel is a unit centre tap with zero bias): ``([C, 1, S, S], [C])``."""
    size = rep.shape[-1]
    channels = rep_index.numel() + ghost_index.numel()
    ghost = rep.new_zeros(ghost_index.numel(), size, size)
    ghost[:, size // 2, size // 2] = 1.0
    kernel = rep.new_zeros(channels, size, size)
    kernel = kernel.index_copy(0, rep_index, rep).index_copy(0, ghost_index, ghost)
    bias = rep_bias.new_zeros(channels).index_copy(0, rep_index, rep_bias)
    return kernel.unsqueeze(1), bias


def _active_pieces_conv(
    x_rep: torch.Tensor, weight: torch.Tensor, active: torch.Tensor, geometry: SWGeometry
) -> torch.Tensor:
    """Pieces ``[B, A + 1, H + 2e, W + 2e]`` of the active filters, plus a last zero piece.

    Active piece ``a`` is filter ``weight[a]`` on rep channel ``active[a] // nk``.
    """
    padding = geometry.conv_padding
    source = torch.div(active, geometry.n_pieces, rounding_mode="floor")
    if active.numel():
        y = F.conv2d(x_rep.index_select(1, source), weight, padding=padding, groups=active.numel())
    else:
        grow = 2 * padding - geometry.small_kernel + 1
        y = x_rep.new_zeros(x_rep.shape[0], 0, x_rep.shape[-2] + grow, x_rep.shape[-1] + grow)
    return F.pad(y, (0, 0, 0, 0, 0, 1))


def _piece_slots(active: torch.Tensor, n_pieces: int) -> torch.Tensor:
    """``[P]``: the slot of each piece among the active ones, ``A`` (the zero piece) if pruned."""
    slot = torch.full((n_pieces,), active.numel(), dtype=torch.long, device=active.device)
    return slot.index_copy(0, active, torch.arange(active.numel(), device=active.device))
