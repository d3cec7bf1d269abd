"""ShiftwiseConv (CVPR 2025): a large kernel from shifted and summed small depthwise convs.

Reading order: construction (tables drawn once), the two execution forms (``strips``: three
depthwise strip convolutions; ``reference``/``fused``: small convs to pieces, then a
shift-add), :meth:`ShiftWiseConv2d.inference_module` (the deploy forms, modules of
:mod:`shiftwise.layers.inference`) and the :class:`LargeKernelOperator` members. The geometry
(sizes, tables, strip assembly, folding) is pure functions in :mod:`shiftwise.ops.sw_geometry`;
the kernels are :mod:`shiftwise.ops.shift_add` and :mod:`shiftwise.ops.oriented_conv`.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from shiftwise.layers.conv_bn import bn_scale_shift, count_batch
from shiftwise.layers.inference import (
    DenseDepthwiseConv2d,
    ShiftAddPieces,
    StripDepthwiseConv2d,
    paper_macs,
    select_channels,
    with_ghost_channels,
)
from shiftwise.layers.interface import KernelWeights, LargeKernelOperator, check_deploy_form
from shiftwise.ops.conv_bn_sum import conv_bn_sum
from shiftwise.ops.oriented_conv import depthwise_conv2d, grad_needed, transpose_pays
from shiftwise.ops.shift_add import shift_add, shift_add_reference
from shiftwise.ops.sw_geometry import (
    ShiftTables,
    equivalent_kernel,
    fold_strips,
    full_channel_strips,
    ghost_split,
    rep_channel_count,
    shift_tables,
    strip_kernels,
    strip_padding,
    sw_geometry,
    term_offsets,
)
from shiftwise.ops.validation import check_depthwise_input, check_kernel_sizes, check_positive_int

__all__ = [
    "CHANNEL_ORDERS",
    "COMPACT_DENSITY",
    "STRATEGIES",
    "ShiftWiseConv2d",
    "resolve_strategy",
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
        n_paths: parallel small convs, summed (merged into one by :meth:`inference_module`).
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
            pruned pieces, by :meth:`inference_module`). Fixed for the module's life.
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

    # --- shared pieces ---------------------------------------------------------------------

    @property
    def tables(self) -> ShiftTables:
        """The shift tables (over all ``Cr * nk`` pieces)."""
        return ShiftTables(self.horizontal_index, self.vertical_index, self.identity_index)

    @property
    def n_paths(self) -> int:
        return len(self.paths)

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
        return torch.stack([path.weight for path in self.paths]).sum(0)

    def branch_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode per-branch scales ``[3, Cr]`` (h, v, identity) and summed shift ``[Cr]``."""
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

    def with_strategy(self, strategy: str) -> ShiftWiseConv2d:
        """A new operator, built with execution strategy ``strategy``, holding copies of this
        one's weights, tables and BN statistics (for comparisons and benchmarks; ``self`` is
        left unchanged). Same outputs and gradients: every strategy is exact."""
        with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten
            twin = ShiftWiseConv2d(
                self.channels,
                self.kernel_size,
                self.small_kernel,
                self.ghost_ratio,
                n_paths=len(self.paths),
                n_shuffles=self.n_shuffles,
                bn=self.bn_h is not None,
                channel_order=self.channel_order,
                strategy=strategy,
                ghost_rule=self.ghost_rule,
            )
        twin.to(self.device, self.paths[0].weight.dtype).load_state_dict(self.state_dict())
        return twin.train(self.training)

    # --- forward ---------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shift-wise convolution, ``[B, C, H, W] -> [B, C, H, W]``."""
        check_depthwise_input(x, self.channels)
        x_rep = select_channels(x, self.rep_index)
        strips = self.strategy == "strips"
        out = self._run_strips(x_rep) if strips else self._run_shift_add(x_rep)
        ghost = select_channels(x, self.ghost_index).to(out.dtype)
        out = torch.cat([out, ghost], dim=1)
        if self.channel_order == "input":
            out = select_channels(out, torch.argsort(torch.cat([self.rep_index, self.ghost_index])))
        return out

    def _run_strips(self, x_rep: torch.Tensor) -> torch.Tensor:
        """Rep output ``[B, Cr, H, W]`` of the training form by three strip convolutions.

        The wide horizontal strip runs as a tall conv on transposed data when autograd will
        differentiate it on CPU (:func:`~shiftwise.ops.oriented_conv.transpose_pays`). With
        training-mode BNs (outside autocast; BNs in eval mode, e.g. ``norm_eval``, and BN
        subclasses such as ``SyncBatchNorm`` or timm's ``SplitBatchNorm2d`` run as modules, with
        their own statistics) the branches, BNs and residual run as
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
        if self.bn_h is not None and all(
            n.training and type(n) is nn.BatchNorm2d  # not Sync/Split BN
            for n in norms
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
        """Rep output ``[B, Cr, H, W]``: small convs to pieces, then three shift-adds."""
        size = (x_rep.shape[-2], x_rep.shape[-1])
        padding = self.geometry.conv_padding
        tables = (self.horizontal_index, self.vertical_index, self.identity_index)
        y = F.conv2d(x_rep, self.piece_weight(), padding=padding, groups=self.n_rep)
        shift = shift_add if self.strategy == "fused" else shift_add_reference
        offsets = term_offsets(self.geometry, self.n_shuffles, x_rep.device)
        branches = tuple(
            shift(y, index, offset, size) for index, offset in zip(tables, offsets, strict=True)
        )
        return self._branch_sum(branches) + x_rep.to(branches[0].dtype)

    def _branch_sum(self, branches: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``BN_h(H) + BN_v(V) + BN_identity(I)``."""
        horizontal, vertical, identity = branches
        if self.bn_h is not None:
            return self.bn_h(horizontal) + self.bn_v(vertical) + self.bn_identity(identity)
        return horizontal + vertical + identity

    # --- inference forms -------------------------------------------------------------------

    deploy_forms = ("auto", "dense", "strips", "pieces")

    @torch.no_grad()
    def inference_module(
        self, form: str = "auto"
    ) -> StripDepthwiseConv2d | ShiftAddPieces | DenseDepthwiseConv2d:
        """A new module equal to this operator in eval mode, in deploy form ``form``.

        Paths are summed, the three eval-mode BNs folded, and pieces that are exactly zero
        (pruned by group-sparse training) dropped. ``"auto"`` resolves the operator's strategy
        again, knowing the active pieces (:func:`resolve_strategy`): ``strips`` gives
        ``"strips"``, ``fused``/``reference`` give ``"pieces"``.

        * ``"strips"``: :class:`~shiftwise.layers.inference.StripDepthwiseConv2d`, two strip
          kernels and a bias over all ``C`` channels in input order (the identity branch and
          the residual folded into the horizontal centre, a ghost channel a unit centre tap;
          :func:`~shiftwise.ops.sw_geometry.fold_strips`,
          :func:`~shiftwise.ops.sw_geometry.full_channel_strips`), reordered to ``[rep, ghost]``
          only with ``channel_order="official"``;
        * ``"pieces"``: :class:`~shiftwise.layers.inference.ShiftAddPieces`, the small conv of
          the active pieces then the shift-adds (the reference shift-add when the strategy is
          ``reference``, else the fused op);
        * ``"dense"``: :class:`~shiftwise.layers.inference.DenseDepthwiseConv2d`, the
          :meth:`equivalent_kernel` as one conv.
        """
        check_deploy_form(form, self.deploy_forms)
        pieces = self.piece_weight()
        scale, bias = self.branch_affine()
        active = pieces.flatten(1).ne(0).any(1).nonzero().flatten()
        if form == "auto":
            density = active.numel() / pieces.shape[0]
            strategy = resolve_strategy(self.requested_strategy, density, pieces.device.type)
            form = "strips" if strategy == "strips" else "pieces"
        official = self.channel_order == "official"
        if form == "dense":
            return DenseDepthwiseConv2d(*self.equivalent_kernel(), self._official_order())
        if form == "strips":
            kernels = strip_kernels(pieces, self.tables, self.geometry)
            horizontal, vertical = fold_strips(kernels, scale, self.geometry)
            horizontal, vertical, bias = full_channel_strips(
                horizontal, vertical, bias, self.rep_index, self.channels, self.geometry
            )
            return StripDepthwiseConv2d(
                horizontal.unsqueeze(1),
                vertical.unsqueeze(1),
                bias,
                self.geometry,
                (active.numel(), pieces.shape[0]),
                self._official_order() if official else None,
            )
        return ShiftAddPieces(
            pieces[active],
            active,
            scale,
            bias,
            self.tables,
            self.rep_index,
            self.ghost_index,
            self.geometry,
            self.n_shuffles,
            self.channel_order,
            reference=self.strategy == "reference",
        )

    def _official_order(self) -> torch.Tensor | None:
        """The ``[rep, ghost]`` output order with ``channel_order="official"``, else ``None``."""
        if self.channel_order == "input":
            return None
        return torch.cat([self.rep_index, self.ghost_index])

    # --- LargeKernelOperator ---------------------------------------------------------------

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode operator as one depthwise conv: ``(weight [C, 1, S, S], bias [C])``.

        In input channel order (ghost channels get a unit centre tap), ``S`` odd and the
        kernel centred: ``F.conv2d(x, weight, bias, padding=S // 2, groups=C)[:,
        self.output_order]`` equals ``self(x)`` (no reordering with the default
        ``channel_order="input"``).
        """
        scale, bias = self.branch_affine()
        rep = equivalent_kernel(self.strip_kernels(), scale, self.geometry)
        return with_ghost_channels(rep, bias, self.rep_index, self.ghost_index)

    def large_kernel_parameters(self) -> list[KernelWeights]:
        """The paths, masked together (summed at deploy); ``group`` masks whole pieces."""
        names = tuple(f"paths.{i}.weight" for i in range(len(self.paths)))
        return [KernelWeights("paths", names, groupable=True)]

    def macs(self, input_size: tuple[int, int]) -> int:
        """MACs of the small convs, counted as the official graph computes them.

        Each of the ``n_paths`` small-conv weights of ``Cr * nk`` pieces costs ``pieces * k *
        k`` per pixel of the padded ``(H + 2e) x (W + 2e)`` map (the inference modules count
        their ``A`` active pieces once). The ``strips`` strategy computes the same output with
        other (fewer) MACs; counting follows the paper.
        """
        pieces = len(self.paths) * self.n_rep * self.geometry.n_pieces
        return paper_macs(pieces, self.geometry, input_size)

    def constructed_buffers(self) -> tuple[str, ...]:
        """The ghost split and shift tables, drawn from ``seed`` (123: the official ones)."""
        return ("rep_index", "ghost_index", "horizontal_index", "vertical_index", "identity_index")

    def piece_counts(self) -> tuple[int, int]:
        """``(active, total)`` pieces, active when the summed filter is not all zero."""
        with torch.no_grad():
            active = self.piece_weight().flatten(1).ne(0).any(1)
        return int(active.sum()), active.numel()

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, small_kernel={self.small_kernel}, "
            f"ghost_ratio={self.ghost_ratio}, n_paths={self.n_paths}, "
            f"n_shuffles={self.n_shuffles}, rep_channels={self.n_rep}, "
            f"pieces={self.geometry.n_pieces}, channel_order={self.channel_order!r}, "
            f"strategy={self.strategy!r}"
        )
