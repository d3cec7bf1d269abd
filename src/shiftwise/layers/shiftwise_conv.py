"""ShiftwiseConv (CVPR 2025): a large kernel from shifted and summed small depthwise convs.

Reading order: construction (tables drawn once), the two execution forms (``strips``: three
depthwise strip convolutions; ``reference``/``fused``: small convs to pieces, then a
shift-add), :meth:`ShiftWiseConv2d.reparameterize` and the :class:`LargeKernelOperator`
members. The geometry (sizes, tables, strip assembly, folding) is pure functions in
:mod:`shiftwise.ops.sw_geometry`; the kernels are :mod:`shiftwise.ops.shift_add` and
:mod:`shiftwise.ops.oriented_conv`.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from shiftwise.layers.conv_bn import bn_scale_shift, count_batch, is_autocast
from shiftwise.layers.interface import KernelWeights, LargeKernelOperator
from shiftwise.ops.conv_bn_sum import conv_bn_sum
from shiftwise.ops.oriented_conv import depthwise_conv2d, grad_needed, transpose_pays
from shiftwise.ops.shift_add import shift_add, shift_add_reference
from shiftwise.ops.sw_geometry import (
    ShiftTables,
    SWGeometry,
    equivalent_kernel,
    fold_strips,
    full_channel_strips,
    ghost_split,
    rep_channel_count,
    shift_tables,
    strip_kernels,
    strip_padding,
    strips_kernel,
    sw_geometry,
    term_offsets,
)
from shiftwise.ops.validation import check_depthwise_input, check_kernel_sizes, check_positive_int

__all__ = [
    "CHANNEL_ORDERS",
    "COMPACT_DENSITY",
    "STRATEGIES",
    "PermutedDepthwiseConv2d",
    "ShiftWiseConv2d",
    "resolve_strategy",
    "with_strategy",
]

STRATEGIES = ("auto", "reference", "strips", "fused")
CHANNEL_ORDERS = ("input", "official")
# Off CPU, below this fraction of active pieces a deployed, pruned operator runs the shift-add
# over its active pieces instead of the strips (see resolve_strategy).
COMPACT_DENSITY = 0.25

# Leaves of torch.fx symbolic tracing: they choose layouts from shapes, devices and grad flags.
torch.fx.wrap("depthwise_conv2d")
torch.fx.wrap("transpose_pays")
torch.fx.wrap("grad_needed")
torch.fx.wrap("select_channels")
torch.fx.wrap("conv_bn_sum")


def resolve_strategy(strategy: str, density: float = 1.0, device: str = "cpu") -> str:
    """The execution strategy ``strategy`` stands for, ``auto`` resolved by the measured rule.

    ``auto`` is ``strips`` (three strip convs; fastest on CPU at every SW-T stage shape,
    training and deploy, see ``benchmarks/README.md``, "ShiftwiseConv execution strategies"; it
    is also the form that exports to ONNX), except ``fused`` for an operator whose pieces were
    pruned to below ``COMPACT_DENSITY`` of them off CPU (its shift-add work follows the active
    pieces, the strips cost the same at any density; unmeasured on GPU). ``density`` is the
    fraction of active pieces, ``device`` the weights' device type.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if strategy != "auto":
        return strategy
    return "fused" if device != "cpu" and density < COMPACT_DENSITY else "strips"


class ShiftWiseConv2d(LargeKernelOperator):
    """The shift-wise operator "SW v2" of the official ShiftwiseConv release.

    A ``K x K`` receptive field from ``k x k`` convolutions. Of the ``C`` input channels, ``Cr``
    "rep" channels go through the operator and the other ("ghost") channels pass unchanged.
    Each rep channel ``c`` gets ``nk = ceil(K / k)`` small filters ("pieces"), computed by
    ``n_paths`` parallel depthwise convs that are summed. In each of ``n_shuffles`` groups
    the pieces of a channel are placed, in a random order, side by side along a horizontal
    strip and along a vertical strip (a ``k x nk*k`` and an ``nk*k x k`` kernel), and one
    random piece at the centre; the groups are summed. Then::

        out_rep = BN_h(H) + BN_v(V) + BN_identity(I) + x_rep
        out = cat([out_rep, x_ghost], dim=1), back in input channel order

    Args:
        channels: ``C``, input = output channels.
        kernel_size: nominal big kernel ``K`` (odd); the strips cover ``nk * k`` taps, from
            ``-(K // 2)`` to ``nk * k - 1 - K // 2`` around the centre.
        small_kernel: ``k`` (odd, ``<= K``).
        ghost_ratio: fraction of channels that skip the operator, in ``[0, 1)``;
            ``Cr = floor(floor(C * (1 - ghost_ratio)) / 2) * 2``.
        n_paths: parallel small convs, summed (merged into one by :meth:`reparameterize`).
        n_shuffles: shuffled groups ``R``.
        bn: BatchNorm on each of the three branches.
        seed: seed of the ghost split (NumPy legacy RNG) and shuffles (torch generator);
            123 reproduces the official tables exactly. Tables are stored as buffers.
        channel_order: ``"input"`` (default): output channel ``c`` is input channel ``c``'s
            result, as for any depthwise conv; ``"official"``: rep channels first then ghost
            channels (both sorted), the order of the official code and its checkpoints.
        strategy: how the branches are executed, all exact (forward and backward):
            ``"strips"`` (the pieces assembled into a ``k x nk*k``, an ``nk*k x k`` and a
            ``k x k`` kernel, three depthwise convs; only standard ops), ``"fused"`` (small
            convs to the ``Cr * nk`` pieces, then the fused shift-add custom op),
            ``"reference"`` (the same with the readable reference shift-add, the oracle) or
            ``"auto"`` (:func:`resolve_strategy`, resolved here and again, knowing the
            pruned pieces, by :meth:`reparameterize`). Fixed for the module's life.
        ghost_rule: how ``Cr`` follows from ``ghost_ratio``: ``"v2"`` (above, the released
            SW v2 networks) or ``"v1"``, ``Cr = C - floor(C * ghost_ratio)`` (not forced even),
            the rule of the official ``SW_v1_slak.py`` (``sw_v1_*`` models).

    Shapes: input ``[B, C, H, W]`` (any ``H, W >= 1``), output ``[B, C, H, W]``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 51,
        small_kernel: int = 3,
        ghost_ratio: float = 0.23,
        n_paths: int = 2,
        n_shuffles: int = 4,
        bn: bool = True,
        seed: int = 123,
        channel_order: str = "input",
        strategy: str = "auto",
        ghost_rule: str = "v2",
    ) -> None:
        super().__init__()
        check_kernel_sizes(channels, kernel_size, small_kernel)
        if isinstance(ghost_ratio, bool) or not isinstance(ghost_ratio, int | float):
            raise TypeError(f"ghost_ratio: expected a float, got {type(ghost_ratio).__name__}")
        if not 0.0 <= ghost_ratio < 1.0:
            raise ValueError(f"ghost_ratio: expected a value in [0, 1), got {ghost_ratio}")
        check_positive_int(n_paths, "n_paths")
        check_positive_int(n_shuffles, "n_shuffles")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(
                f"channel_order: expected one of {CHANNEL_ORDERS}, got {channel_order!r}"
            )
        n_rep = rep_channel_count(channels, ghost_ratio, ghost_rule)
        if n_rep == 0:
            raise ValueError(
                f"ghost_ratio: {ghost_ratio} leaves no rep channel for channels={channels} "
                "(need floor(channels * (1 - ghost_ratio)) >= 2)"
            )

        self.channels = channels
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        self.ghost_ratio = float(ghost_ratio)
        self.ghost_rule = ghost_rule
        self.n_shuffles = n_shuffles
        self.n_rep = n_rep
        self.channel_order = channel_order
        self.requested_strategy = strategy
        self.strategy = resolve_strategy(strategy)
        self.geometry = sw_geometry(kernel_size, small_kernel)
        nk = self.geometry.n_pieces

        rep_index, ghost_index = ghost_split(channels, ghost_ratio, seed, ghost_rule)
        tables = shift_tables(n_rep, nk, n_shuffles, seed)
        self.register_buffer("rep_index", rep_index)
        self.register_buffer("ghost_index", ghost_index)
        self.register_buffer("horizontal_index", tables.horizontal)
        self.register_buffer("vertical_index", tables.vertical)
        self.register_buffer("identity_index", tables.identity)

        # Training form: n_paths small convs (summed) and a BN per branch.
        self.paths = nn.ModuleList(
            nn.Conv2d(
                n_rep,
                n_rep * nk,
                small_kernel,
                padding=self.geometry.conv_padding,
                groups=n_rep,
                bias=False,
            )
            for _ in range(n_paths)
        )
        self.bn_h = nn.BatchNorm2d(n_rep) if bn else None
        self.bn_v = nn.BatchNorm2d(n_rep) if bn else None
        self.bn_identity = nn.BatchNorm2d(n_rep) if bn else None
        # Inference form, one of two chosen by the strategy at reparameterize (docstring there).
        self.deploy_form: str | None = None
        self.deployed_pieces: int | None = None  # active pieces, for the MAC count
        self.register_parameter("horizontal", None)
        self.register_parameter("vertical", None)
        self.register_parameter("bias", None)
        self.register_parameter("weight", None)
        self.register_buffer("active_index", None)
        self.register_parameter("branch_scale", None)
        self.register_parameter("branch_bias", None)

    # --- shared pieces ---------------------------------------------------------------------

    @property
    def tables(self) -> ShiftTables:
        """The shift tables (over all ``Cr * nk`` pieces)."""
        return ShiftTables(self.horizontal_index, self.vertical_index, self.identity_index)

    @property
    def n_paths(self) -> int:
        return 1 if self.deployed else len(self.paths)

    @property
    def output_order(self) -> torch.Tensor:
        """``[C]``: output channel ``i`` is computed from input channel ``output_order[i]``."""
        if self.channel_order == "input":
            return torch.arange(self.channels, device=self.device)
        return torch.cat([self.rep_index, self.ghost_index])

    @property
    def device(self) -> torch.device:
        """The device of the operator's weights and tables."""
        return next(itertools.chain(self.parameters(), self.buffers())).device

    def piece_weight(self) -> torch.Tensor:
        """Summed small-conv weight of all ``Cr * nk`` pieces, ``[Cr * nk, 1, k, k]``."""
        self._check_pieces_kept()
        if not self.deployed:
            return torch.stack([path.weight for path in self.paths]).sum(0)
        if self.active_index is None:
            return self.weight
        full = self.weight.new_zeros(self.n_rep * self.geometry.n_pieces, *self.weight.shape[1:])
        return full.index_copy(0, self.active_index, self.weight)

    def _check_pieces_kept(self) -> None:
        if self.deploy_form == "strips":
            raise RuntimeError(
                "this ShiftWiseConv2d was deployed as folded strips: its pieces and branch "
                "scales are gone (choose another strategy before reparameterize())"
            )

    def branch_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode per-branch scales ``[3, Cr]`` (h, v, identity) and summed shift ``[Cr]``."""
        self._check_pieces_kept()
        if self.deployed:
            return self.branch_scale, self.branch_bias
        if self.bn_h is None:
            ones = self.piece_weight().new_ones(3, self.n_rep)
            return ones, ones.new_zeros(self.n_rep)
        affine = [bn_scale_shift(bn) for bn in (self.bn_h, self.bn_v, self.bn_identity)]
        scale = torch.stack([s for s, _ in affine])
        return scale, sum(shift for _, shift in affine)

    def strip_kernels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``horizontal [Cr, k, nk*k]``, ``vertical [Cr, nk*k, k]``, ``identity [Cr, k, k]``
        (:func:`~shiftwise.ops.sw_geometry.strip_kernels` of :meth:`piece_weight`)."""
        return strip_kernels(self.piece_weight(), self.tables, self.geometry)

    # --- forward ---------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shift-wise convolution, ``[B, C, H, W] -> [B, C, H, W]``."""
        check_depthwise_input(x, self.channels)
        if self.deploy_form == "strips":
            return self._run_full_strips(x)
        x_rep = select_channels(x, self.rep_index)
        strips = self.strategy == "strips"
        out = self._run_strips(x_rep) if strips else self._run_shift_add(x_rep)
        ghost = select_channels(x, self.ghost_index).to(out.dtype)
        out = torch.cat([out, ghost], dim=1)
        if self.channel_order == "input":
            out = select_channels(out, torch.argsort(torch.cat([self.rep_index, self.ghost_index])))
        return out

    def _run_full_strips(self, x: torch.Tensor) -> torch.Tensor:
        """Deployed output ``[B, C, H, W]``: two strip convs over all channels plus the bias.

        Ghost channels pass through their unit centre tap, so no channel is split off or
        gathered; only ``channel_order="official"`` reorders the output.
        """
        pad_h, pad_v = strip_padding(self.geometry)
        transposed = transpose_pays(x, self.horizontal, grad_needed(x, self.horizontal))
        out = depthwise_conv2d(x, self.horizontal, self.bias, pad_h, transposed)
        out = out + depthwise_conv2d(x, self.vertical, padding=pad_v)
        if self.channel_order == "official":
            out = select_channels(out, self.output_order)
        return out

    def _run_strips(self, x_rep: torch.Tensor) -> torch.Tensor:
        """Rep output ``[B, Cr, H, W]`` of the training form by three strip convolutions.

        The wide horizontal strip runs as a tall conv on transposed data when autograd will
        differentiate it on CPU (:func:`~shiftwise.ops.oriented_conv.transpose_pays`). With
        training-mode BNs (outside autocast; BNs in eval mode, e.g. ``norm_eval``, run as
        modules) the branches, BNs and residual run as
        :func:`~shiftwise.ops.conv_bn_sum.conv_bn_sum`, which on large maps keeps only
        ``x_rep`` for the backward instead of the three branch outputs.
        """
        pad_h, pad_v = strip_padding(self.geometry)
        pieces = self.piece_weight()
        kernels = [
            kernel.unsqueeze(1) for kernel in strip_kernels(pieces, self.tables, self.geometry)
        ]
        paddings = (pad_h, pad_v, (self.small_kernel // 2,) * 4)
        transposed = (transpose_pays(x_rep, kernels[0], grad_needed(x_rep, pieces)), False, False)
        norms = (self.bn_h, self.bn_v, self.bn_identity)
        if (
            self.bn_h is not None
            and all(n.training for n in norms)
            and not is_autocast(self.device.type)
        ):
            return conv_bn_sum(
                x_rep,
                kernels,
                paddings,
                transposed,
                [norm.weight for norm in norms],
                [norm.bias for norm in norms],
                [norm.running_mean for norm in norms],
                [norm.running_var for norm in norms],
                count_batch(norms),
                self.bn_h.eps,
            )
        branches = tuple(
            depthwise_conv2d(x_rep, kernel, padding=padding, transposed=flip)
            for kernel, padding, flip in zip(kernels, paddings, transposed, strict=True)
        )
        return self._branch_sum(branches) + x_rep.to(branches[0].dtype)

    def _run_shift_add(self, x_rep: torch.Tensor) -> torch.Tensor:
        """Rep output ``[B, Cr, H, W]``: small convs to pieces, then three shift-adds.

        A deployed operator with pruned pieces convolves its active pieces only (each with its
        rep channel); terms reading a pruned piece read an appended zero piece.
        """
        size = (x_rep.shape[-2], x_rep.shape[-1])
        padding = self.geometry.conv_padding
        tables = (self.horizontal_index, self.vertical_index, self.identity_index)
        if self.active_index is None:
            y = F.conv2d(x_rep, self.piece_weight(), padding=padding, groups=self.n_rep)
        else:
            y = _active_pieces_conv(x_rep, self.weight, self.active_index, self.geometry)
            slot = _piece_slots(self.active_index, self.n_rep * self.geometry.n_pieces)
            tables = tuple(slot[index] for index in tables)
        shift = shift_add if self.strategy == "fused" else shift_add_reference
        offsets = term_offsets(self.geometry, self.n_shuffles, x_rep.device)
        branches = tuple(
            shift(y, index, offset, size) for index, offset in zip(tables, offsets, strict=True)
        )
        return self._branch_sum(branches) + x_rep.to(branches[0].dtype)

    def _branch_sum(self, branches: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``BN_h(H) + BN_v(V) + BN_identity(I)`` (the folded affine once deployed)."""
        horizontal, vertical, identity = branches
        if self.deployed:
            scale = self.branch_scale.reshape(3, 1, -1, 1, 1)
            out = horizontal * scale[0] + vertical * scale[1] + identity * scale[2]
            return out + self.branch_bias.reshape(1, -1, 1, 1)
        if self.bn_h is not None:
            return self.bn_h(horizontal) + self.bn_v(vertical) + self.bn_identity(identity)
        return horizontal + vertical + identity

    # --- inference form --------------------------------------------------------------------

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Switch in place to the inference form; eval output unchanged, idempotent.

        Paths are summed, the three eval-mode BNs folded, and pieces that are exactly zero
        (pruned by group-sparse training) dropped. An ``auto`` strategy is resolved again,
        knowing the active pieces, and decides the one inference form:

        * ``strips``: two strip kernels and a bias over all ``C`` channels in input order,
          ``horizontal [C, 1, k, L]`` (the identity branch and the residual folded into its
          centre; a ghost channel is a unit centre tap), ``vertical [C, 1, L, k]``, ``bias
          [C]`` (:func:`~shiftwise.ops.sw_geometry.fold_strips`,
          :func:`~shiftwise.ops.sw_geometry.full_channel_strips`): two depthwise convs, no
          channel split. The shift tables are dropped, and with ``channel_order="input"`` the
          ghost split too: they no longer shape the output;
        * ``fused``/``reference``: ``weight [A, 1, k, k]`` of the ``A`` active pieces
          (``active_index [A]`` says which, ``None`` when none was pruned), the branch scales
          ``branch_scale [3, Cr]`` and ``branch_bias [Cr]``; the small conv of the active
          pieces then the shift-adds.

        Every parameter and buffer left shapes the output.
        """
        if self.deployed:
            return
        pieces = self.piece_weight()
        scale, bias = self.branch_affine()
        active = pieces.flatten(1).ne(0).any(1).nonzero().flatten()
        density = active.numel() / pieces.shape[0]
        self.strategy = resolve_strategy(self.requested_strategy, density, pieces.device.type)
        self.deployed_pieces = active.numel()
        if self.strategy == "strips":
            kernels = strip_kernels(pieces, self.tables, self.geometry)
            horizontal, vertical = fold_strips(kernels, scale, self.geometry)
            horizontal, vertical, bias = full_channel_strips(
                horizontal, vertical, bias, self.rep_index, self.channels, self.geometry
            )
            self.horizontal = nn.Parameter(horizontal.unsqueeze(1).contiguous())
            self.vertical = nn.Parameter(vertical.unsqueeze(1).contiguous())
            self.bias = nn.Parameter(bias.detach().clone())
            for name in ("horizontal_index", "vertical_index", "identity_index"):
                delattr(self, name)
            if self.channel_order == "input":
                self._drop_ghost_split()
        else:
            if active.numel() < pieces.shape[0]:
                self.active_index = active
                pieces = pieces[active]
            self.weight = nn.Parameter(pieces.detach().clone())
            self.branch_scale = nn.Parameter(scale.detach().clone())
            self.branch_bias = nn.Parameter(bias.detach().clone())
        del self.paths
        self.bn_h = self.bn_v = self.bn_identity = None
        self.deploy_form = "strips" if self.strategy == "strips" else "pieces"

    # --- LargeKernelOperator ---------------------------------------------------------------

    @property
    def deployed(self) -> bool:
        return self.deploy_form is not None

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode operator as one depthwise conv: ``(weight [C, 1, S, S], bias [C])``.

        In input channel order (ghost channels get a unit centre tap), ``S`` odd and the
        kernel centred: ``F.conv2d(x, weight, bias, padding=S // 2, groups=C)[:,
        self.output_order]`` equals ``self(x)`` (no reordering with the default
        ``channel_order="input"``).
        """
        if self.deploy_form == "strips":
            kernel = strips_kernel(self.horizontal[:, 0], self.vertical[:, 0], self.geometry)
            return kernel.unsqueeze(1), self.bias
        scale, bias = self.branch_affine()
        rep = equivalent_kernel(self.strip_kernels(), scale, self.geometry)
        size = rep.shape[-1]
        ghost = rep.new_zeros(self.channels - self.n_rep, size, size)
        ghost[:, size // 2, size // 2] = 1.0
        kernel = rep.new_zeros(self.channels, size, size)
        kernel = kernel.index_copy(0, self.rep_index, rep).index_copy(0, self.ghost_index, ghost)
        full_bias = bias.new_zeros(self.channels).index_copy(0, self.rep_index, bias)
        return kernel.unsqueeze(1), full_bias

    @torch.no_grad()
    def absorb_output_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Fold a per-channel affine of the output into the deployed strips, in place.

        Afterwards ``self(x)`` equals ``scale * before(x) + shift`` (``scale``, ``shift``:
        ``[C]``, indexed by output channel), e.g. the eval-mode BatchNorm that follows the
        operator. Only for the ``strips`` inference form (a ghost channel then stops being a
        plain identity, which only the full-channel strips can express).
        """
        self._check_full_strips("absorb_output_affine")
        order = self.output_order
        scale = scale.new_empty(self.channels).index_copy(0, order, scale)
        shift = shift.new_empty(self.channels).index_copy(0, order, shift)
        self.horizontal.mul_(scale[:, None, None, None])
        self.vertical.mul_(scale[:, None, None, None])
        self.bias.copy_(self.bias * scale + shift)

    def release_output_order(self) -> torch.Tensor:
        """Switch the deployed strips to input channel order; the permutation it applied.

        Returns the former :attr:`output_order` ``[C]`` (output channel ``i`` was input
        channel ``order[i]``) for the caller to fold into what reads the output (e.g. the
        columns of the next linear layer); afterwards ``channel_order`` is ``"input"`` and the
        ghost split, which no longer shapes the output, is dropped.
        """
        self._check_full_strips("release_output_order")
        order = self.output_order
        if self.channel_order == "official":
            self.channel_order = "input"
            self._drop_ghost_split()
        return order

    def _check_full_strips(self, caller: str) -> None:
        if self.deploy_form != "strips":
            raise RuntimeError(
                f"{caller}: needs a ShiftWiseConv2d deployed as strips (reparameterize() with "
                f"the strips strategy), this one is {self.deploy_form or 'not deployed'}"
            )

    def _drop_ghost_split(self) -> None:
        for name in ("rep_index", "ghost_index"):
            delattr(self, name)
            self.register_buffer(name, None)

    def large_kernel_parameters(self) -> list[KernelWeights]:
        """The paths, masked together (summed at deploy); ``group`` masks whole pieces."""
        if self.deployed:
            return []
        names = tuple(f"paths.{i}.weight" for i in range(len(self.paths)))
        return [KernelWeights("paths", names, groupable=True)]

    def macs(self, input_size: tuple[int, int]) -> int:
        """MACs of the small convs, counted as the official graph computes them.

        Each small-conv weight (``n_paths`` of ``Cr * nk`` pieces in training, one of the
        ``A`` active pieces once deployed) costs ``pieces * k * k`` per pixel of the padded
        ``(H + 2e) x (W + 2e)`` map. The ``strips`` strategy computes the same output with
        other (fewer) MACs; counting follows the paper.
        """
        height, width = input_size
        extra = self.geometry.extra_pad
        area = (height + 2 * extra) * (width + 2 * extra)
        if self.deployed:
            pieces = self.deployed_pieces
        else:
            pieces = len(self.paths) * self.n_rep * self.geometry.n_pieces
        return pieces * self.small_kernel**2 * area

    @torch.no_grad()
    def to_dense(self) -> PermutedDepthwiseConv2d:
        """One depthwise ``S x S`` convolution equal to this operator in eval mode."""
        weight, bias = self.equivalent_kernel()
        return PermutedDepthwiseConv2d(weight.detach(), bias.detach(), self.output_order)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, small_kernel={self.small_kernel}, "
            f"ghost_ratio={self.ghost_ratio}, n_paths={self.n_paths}, "
            f"n_shuffles={self.n_shuffles}, rep_channels={self.n_rep}, "
            f"pieces={self.geometry.n_pieces}, channel_order={self.channel_order!r}, "
            f"strategy={self.strategy!r}, deployed={self.deployed}"
        )


def select_channels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[:, index]`` for ``x [B, C, H, W]``, in ``x``'s memory format (channels-last stays so)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return x.permute(0, 2, 3, 1).index_select(3, index).permute(0, 3, 1, 2)
    return x.index_select(1, index)


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


def with_strategy(model: nn.Module, strategy: str) -> nn.Module:
    """A deep copy of ``model`` whose ShiftWiseConv2d operators all run ``strategy``.

    For comparisons and benchmarks; ``model`` itself is left unchanged. ``auto`` is resolved
    as the operator's constructor and :meth:`~ShiftWiseConv2d.reparameterize` do. A deployed
    operator can switch only between ``fused`` and ``reference`` (its inference form holds
    either folded strips or pieces).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    resolve_strategy(strategy)
    copy_ = copy.deepcopy(model)
    for module in copy_.modules():
        if isinstance(module, ShiftWiseConv2d):
            device = module.device.type
            if module.deployed:
                density = module.deployed_pieces / (module.n_rep * module.geometry.n_pieces)
                resolved = resolve_strategy(strategy, density, device)
                if (resolved == "strips") != (module.deploy_form == "strips"):
                    raise ValueError(
                        f"strategy: {strategy!r} needs the other inference form than the one "
                        "this deployed ShiftWiseConv2d holds; choose it before reparameterize()"
                    )
            else:
                resolved = resolve_strategy(strategy)
            module.requested_strategy = strategy
            module.strategy = resolved
    return copy_


class PermutedDepthwiseConv2d(nn.Module):
    """Depthwise "same" conv with bias, output channels reordered: ``conv(x)[:, output_order]``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, output_order: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.register_buffer("output_order", output_order.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_depthwise_input(x, self.weight.shape[0])
        rows, cols = self.weight.shape[-2] // 2, self.weight.shape[-1] // 2
        out = depthwise_conv2d(x, self.weight, self.bias, (rows, rows, cols, cols))
        return select_channels(out, self.output_order)
