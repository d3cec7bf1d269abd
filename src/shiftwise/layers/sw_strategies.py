"""Exact execution strategies of :class:`~shiftwise.layers.ShiftWiseConv2d`'s three branches.

Every branch of the shift-wise operator is linear in the small-conv weights, so each can be
computed in several exactly equal ways (forward and backward, training mode included: the
three branch outputs stay separate for their BatchNorms):

``reference``
    the official form: small convs to ``Cr * nk`` pieces, then
    :func:`~shiftwise.ops.shift_add.shift_add_reference` (slow, readable; the oracle).
``fused``
    small convs to the pieces, then the fused shift-add custom op
    (:func:`~shiftwise.ops.shift_add.shift_add`: the grouped CPU kernel, Triton on CUDA).
    A deployed operator with pruned pieces runs its compact form (active pieces only).
``strips``
    the pieces scattered (differentiably, :meth:`ShiftWiseConv2d.strip_kernels`) into a
    ``k x nk*k`` kernel ``K_H``, an ``nk*k x k`` kernel ``K_V`` and a ``k x k`` kernel
    ``K_I``, then three depthwise convolutions of the ``Cr`` rep channels. On CPU they run
    channels-last and, in training, the wide ``K_H`` as a tall conv on transposed data
    (:mod:`shiftwise.ops.oriented_conv`). No
    ``17x`` expanded piece tensor is ever built, and only standard ops appear (ONNX export).
``auto``
    :func:`choose_strategy`.

Use ``ShiftWiseConv2d(..., strategy=...)``, :func:`set_strategy` or :func:`use_strategy` to
force one for a whole model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from shiftwise.layers.sparse_deploy import CompactShiftAdd
from shiftwise.ops.oriented_conv import depthwise_conv2d
from shiftwise.ops.shift_add import shift_add, shift_add_reference

# Leaf of torch.fx symbolic tracing: its layout and tap-cropping choices read shapes and flags.
torch.fx.wrap("depthwise_conv2d")

if TYPE_CHECKING:
    from shiftwise.layers.shiftwise_conv import ShiftWiseConv2d

__all__ = [
    "STRATEGIES",
    "FoldedStrips",
    "check_strategy",
    "choose_strategy",
    "set_strategy",
    "strip_branches",
    "sw_branches",
    "use_strategy",
]

STRATEGIES = ("auto", "reference", "strips", "fused")

# Off CPU, below this fraction of active pieces a deployed, pruned operator runs its compact
# shift-add instead of the strips (see choose_strategy).
COMPACT_DENSITY = 0.25


def check_strategy(strategy: object) -> str:
    """Return ``strategy`` if it is one of :data:`STRATEGIES`, else raise naming it."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    return strategy


def choose_strategy(module: ShiftWiseConv2d, x_rep: torch.Tensor) -> str:
    """The strategy ``auto`` resolves to, from measurements (``benchmarks/bench_sw_strategies.py``).

    Rule:

    * ``strips`` — by default, on every device, training and deploy. On 2 CPU cores it was
      the fastest at all four SW-T stage shapes, forward and forward+backward, by a wide
      margin (see ``benchmarks/README.md``, section "ShiftwiseConv execution strategies"):
      the piece tensor of the other strategies is ``nk`` (17) times the input, and building
      it alone costs more than the strip convolutions. On CUDA the choice is not measured
      yet (no GPU was available); ``strips`` is also the form that exports to ONNX.
    * ``fused`` — off CPU, for a deployed operator whose pruned pieces were removed
      (:class:`~shiftwise.layers.sparse_deploy.CompactShiftAdd`) with fewer than
      ``COMPACT_DENSITY`` of its pieces active: its work scales with the active pieces while
      the strips cost the same at any density (unmeasured on GPU). On CPU the strips stay
      faster even at 90% group sparsity (stage-1 shape, batch 8: 21.9 ms against 29.2 ms;
      ``benchmarks/bench_group_sparsity.py``), so ``auto`` never picks ``fused`` there.
    """
    merged = module.merged
    if isinstance(merged, CompactShiftAdd) and x_rep.device.type != "cpu":
        total = module.n_rep * module.geometry.n_pieces
        if merged.n_active < COMPACT_DENSITY * total:
            return "fused"
    return "strips"


def sw_branches(
    module: ShiftWiseConv2d, x_rep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Horizontal, vertical and identity branch outputs ``[B, Cr, H, W]`` by ``module.strategy``."""
    strategy = module.strategy
    if strategy == "auto":
        strategy = choose_strategy(module, x_rep)
    if strategy == "strips":
        return strip_branches(module, x_rep)
    size = (x_rep.shape[-2], x_rep.shape[-1])
    if strategy == "fused" and isinstance(module.merged, CompactShiftAdd):
        return module.merged(x_rep, size)
    y = module.pieces(x_rep)
    shift = shift_add if strategy == "fused" else shift_add_reference
    return tuple(
        shift(y, getattr(module, f"{name}_index"), getattr(module, f"{name}_offsets"), size)
        for name in ("horizontal", "vertical", "identity")
    )


def strip_branches(
    module: ShiftWiseConv2d, x_rep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three branches as depthwise convs with the assembled strip kernels.

    ``H = conv(x, K_H)`` with ``K_H``'s column 0 at offset ``span[0]`` and its rows centred,
    ``V`` the transposed analogue, ``I`` a centred ``k x k`` conv; each ``[B, Cr, H, W]``.
    """
    horizontal, vertical, identity = module.strip_kernels()
    first, last = module.geometry.span
    half = module.small_kernel // 2
    along, across = (-first, last), (half, half)
    h = depthwise_conv2d(x_rep, horizontal.unsqueeze(1), padding=(*across, *along))
    v = depthwise_conv2d(x_rep, vertical.unsqueeze(1), padding=(*along, *across))
    i = depthwise_conv2d(x_rep, identity.unsqueeze(1), padding=(*across, *across))
    return h, v, i


class FoldedStrips(nn.Module):
    """A deployed operator's whole rep-channel output as two strip convs and one bias.

    ``out = conv(x, K_H') + conv(x, K_V') + bias`` where ``K_H' = s_h K_H`` with
    ``s_i K_I`` and the residual (``+1`` at the centre tap) added into its centre ``k x k``
    (the horizontal strip covers the centre), ``K_V' = s_v K_V``. This equals
    ``BN_h(H) + BN_v(V) + BN_identity(I) + x_rep`` in eval mode; built once by
    :meth:`ShiftWiseConv2d.reparameterize` and used by the ``strips`` strategy.

    Args:
        horizontal: ``K_H'`` ``[Cr, k, L]``, column 0 at offset ``span[0]``, rows centred.
        vertical: ``K_V'`` ``[Cr, L, k]``, the transposed analogue.
        bias: ``[Cr]``.
        span: ``(first, last)`` offsets of the strips' end taps around the centre.

    Shapes: input ``x_rep [B, Cr, H, W]``, output ``[B, Cr, H, W]``.
    """

    def __init__(
        self,
        horizontal: torch.Tensor,
        vertical: torch.Tensor,
        bias: torch.Tensor,
        span: tuple[int, int],
    ) -> None:
        super().__init__()
        self.register_buffer("horizontal", horizontal.detach().clone().unsqueeze(1))
        self.register_buffer("vertical", vertical.detach().clone().unsqueeze(1))
        self.register_buffer("bias", bias.detach().clone())
        self.span = span

    def forward(self, x_rep: torch.Tensor) -> torch.Tensor:
        first, last = self.span
        half = self.horizontal.shape[-2] // 2
        along, across = (-first, last), (half, half)
        h = depthwise_conv2d(x_rep, self.horizontal, self.bias, padding=(*across, *along))
        return h + depthwise_conv2d(x_rep, self.vertical, padding=(*along, *across))


def set_strategy(model: nn.Module, strategy: str) -> None:
    """Set the execution strategy of every ShiftWiseConv2d in ``model`` (in place)."""
    check_strategy(strategy)
    for module in _shiftwise_modules(model):
        module.strategy = strategy


@contextmanager
def use_strategy(model: nn.Module, strategy: str) -> Iterator[nn.Module]:
    """Run ``model``'s ShiftWiseConv2d modules with ``strategy`` inside the block, then restore."""
    check_strategy(strategy)
    modules = _shiftwise_modules(model)
    previous = [module.strategy for module in modules]
    try:
        for module in modules:
            module.strategy = strategy
        yield model
    finally:
        for module, old in zip(modules, previous, strict=True):
            module.strategy = old


def _shiftwise_modules(model: nn.Module) -> list[nn.Module]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    from shiftwise.layers.shiftwise_conv import ShiftWiseConv2d  # imports this module

    return [module for module in model.modules() if isinstance(module, ShiftWiseConv2d)]
