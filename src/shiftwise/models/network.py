"""One generic four-stage network for SLaK, ShiftwiseConv and ConvNeXt (timm conventions).

The macro design follows the block type, as in the two papers:

* ``block="convnext"`` (SLaK, ConvNeXt): stem Conv 4x4 stride 4 + LN; downsample LN + Conv
  2x2 stride 2; :class:`~shiftwise.models.blocks.ConvNeXtBlock`.
* ``block="shiftwise"`` (ShiftwiseConv v2, UniRepLKNet macro): stem Conv 3x3 s2 (C0/2) + LN +
  GELU + Conv 3x3 s2 + LN; downsample Conv 3x3 s2 + LN;
  :class:`~shiftwise.models.blocks.ShiftWiseBlock`.

Both end with global average pooling, LayerNorm and a Linear classifier. The depthwise
operator of every block is chosen separately (``operator``, see
:mod:`shiftwise.models.operators`), with one kernel size per stage.

Module names (what ``state_dict`` keys, ``feature_info`` and checkpoint conversion use):
``stem.*``, ``stages.{i}.downsample.*`` (identity for stage 0), ``stages.{i}.blocks.{j}.*``
with the operator at ``conv_dw``, ``head.norm`` and ``head.fc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shiftwise.models.blocks import ConvNeXtBlock, LayerNorm2d, ShiftWiseBlock
from shiftwise.models.operators import build_operator
from shiftwise.ops.validation import check_positive_int

__all__ = ["BLOCKS", "ClassifierHead", "LargeKernelNet", "Stage"]

BLOCKS = {"convnext": ConvNeXtBlock, "shiftwise": ShiftWiseBlock}


class Stage(nn.Module):
    """Optional downsample followed by a sequence of blocks."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ClassifierHead(nn.Module):
    """Global average pool, LayerNorm, dropout and Linear: ``[B, C, H, W] -> [B, classes]``."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.norm = nn.LayerNorm(in_features, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean(dim=(2, 3)))
        if pre_logits:
            return x
        return self.fc(self.drop(x))


def _stem(block: str, in_chans: int, dim: int) -> nn.Sequential:
    if block == "shiftwise":
        return nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1),
            LayerNorm2d(dim // 2, eps=1e-6),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1),
            LayerNorm2d(dim, eps=1e-6),
        )
    return nn.Sequential(nn.Conv2d(in_chans, dim, 4, stride=4), LayerNorm2d(dim, eps=1e-6))


def _downsample(block: str, in_dim: int, out_dim: int) -> nn.Sequential:
    if block == "shiftwise":
        return nn.Sequential(
            nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1), LayerNorm2d(out_dim, eps=1e-6)
        )
    return nn.Sequential(LayerNorm2d(in_dim, eps=1e-6), nn.Conv2d(in_dim, out_dim, 2, stride=2))


def _check_stage_list(value: object, name: str) -> list[int]:
    if not isinstance(value, Sequence) or len(value) != 4:
        raise ValueError(f"{name}: expected 4 values (one per stage), got {value!r}")
    return [check_positive_int(v, name) for v in value]


class LargeKernelNet(nn.Module):
    """Four-stage ConvNeXt-style classifier with a large-kernel depthwise operator.

    Args:
        depths: blocks per stage (4 ints).
        dims: stage widths before ``width_factor`` (4 ints).
        kernel_sizes: big kernel of each stage's operator (4 ints).
        block: ``"convnext"`` (SLaK/ConvNeXt) or ``"shiftwise"`` (SW v2); sets the macro design.
        operator: ``"shiftwise"``, ``"slak"``, ``"dense"`` or ``"conv"``.
        operator_kwargs: extra arguments of the operator (e.g. ``small_kernel``).
        width_factor: every stage width is ``int(d * width_factor)``.
        num_classes: classifier outputs; 0 gives no classifier (pooled features).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
        layer_scale_init: initial value of the per-block ``gamma``.
        head_init_scale: factor on the initial classifier weight and bias.

    Input ``[B, in_chans, H, W]`` (stage ``i`` runs at ``H / 2**(i+2)``; sizes divisible by
    32 keep every stride exact); ``forward_features`` gives ``[B, C3, H/32, W/32]`` and
    ``forward`` ``[B, num_classes]``.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        kernel_sizes: Sequence[int] = (7, 7, 7, 7),
        block: str = "convnext",
        operator: str = "conv",
        operator_kwargs: dict[str, Any] | None = None,
        width_factor: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
        head_init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        depths = _check_stage_list(depths, "depths")
        kernel_sizes = _check_stage_list(kernel_sizes, "kernel_sizes")
        if block not in BLOCKS:
            raise ValueError(f"block: expected one of {sorted(BLOCKS)}, got {block!r}")
        if isinstance(width_factor, bool) or not isinstance(width_factor, int | float):
            raise TypeError(f"width_factor: expected a float, got {width_factor!r}")
        if width_factor <= 0:
            raise ValueError(f"width_factor: expected a positive value, got {width_factor}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes: expected an int >= 0, got {num_classes!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate: expected a value in [0, 1), got {drop_path_rate}")
        check_positive_int(in_chans, "in_chans")
        dims = [int(d * width_factor) for d in _check_stage_list(dims, "dims")]
        if min(dims) < 2:
            raise ValueError(f"width_factor: {width_factor} makes a stage width < 2: {dims}")

        self.depths, self.dims, self.kernel_sizes = depths, dims, kernel_sizes
        self.block, self.operator = block, operator
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = dims[-1]
        self.feature_info = [
            {"num_chs": dims[i], "reduction": 4 * 2**i, "module": f"stages.{i}"} for i in range(4)
        ]

        self.stem = _stem(block, in_chans, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        block_cls = BLOCKS[block]
        stages, first = [], 0
        for i in range(4):
            downsample = nn.Identity() if i == 0 else _downsample(block, dims[i - 1], dims[i])
            blocks = [
                block_cls(
                    dims[i],
                    build_operator(operator, dims[i], kernel_sizes[i], **(operator_kwargs or {})),
                    drop_path=rates[first + j],
                    layer_scale_init=layer_scale_init,
                )
                for j in range(depths[i])
            ]
            first += depths[i]
            stages.append(Stage(downsample, blocks))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(dims[-1], num_classes, drop_rate)

        self.apply(_init_weights)
        if isinstance(self.head.fc, nn.Linear):
            with torch.no_grad():
                self.head.fc.weight.mul_(head_init_scale)
                self.head.fc.bias.mul_(head_init_scale)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a fresh ``Linear(C3, num_classes)`` (0: identity)."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool: only 'avg' is supported, got {global_pool!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes: expected an int >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        fc.apply(_init_weights)
        self.head.fc = fc.to(self.head.norm.weight.device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W] -> [B, C3, H/32, W/32]`` (before pooling and head)."""
        _check_input(x, self.stem[0].in_channels)
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, norm and classify ``[B, C3, h, w]``; ``pre_logits`` stops before the Linear."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_input(x: object, in_chans: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x: expected a floating point tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"x: expected shape [B, {in_chans}, H, W], got {tuple(x.shape)}")


def _init_weights(module: nn.Module) -> None:
    """Official init: truncated normal (std 0.02) on conv and linear weights, zero biases."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
