"""One generic four-stage network for SLaK, ShiftwiseConv and ConvNeXt (timm conventions).

The macro design follows the block type, as in the two papers:

* ``block="convnext"`` (SLaK, ConvNeXt): stem Conv 4x4 stride 4 + LN; downsample LN + Conv
  2x2 stride 2; :class:`~shiftwise.models.blocks.ConvNeXtBlock`.
* ``block="shiftwise"`` (ShiftwiseConv v2, UniRepLKNet macro): stem Conv 3x3 s2 (C0/2) + LN +
  GELU + Conv 3x3 s2 + LN; downsample Conv 3x3 s2 + LN;
  :class:`~shiftwise.models.blocks.ShiftWiseBlock`.

Both end with global pooling (average by default), LayerNorm and a Linear classifier. The depthwise
operator of every block is chosen separately (``operator``, see
:mod:`shiftwise.models.operators`), with one kernel size per stage.

Module names (what ``state_dict`` keys, ``feature_info`` and checkpoint conversion use):
``stem.*``, ``stages.{i}.downsample.*`` (identity for stage 0), ``stages.{i}.blocks.{j}.*``
with the operator at ``conv_dw``, ``head.norm`` and ``head.fc``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.utils.checkpoint import checkpoint

from shiftwise.deprecation import deprecated_names
from shiftwise.errors import UsageError
from shiftwise.layers.sparse_scope import sparse_scope
from shiftwise.models.blocks import ConvNeXtBlock, LayerNorm2d, ShiftWiseBlock
from shiftwise.models.operators import build_operator
from shiftwise.ops.validation import check_positive_int

__all__ = ["BLOCKS", "POOL_TYPES", "ClassifierHead", "MacroNet", "Stage"]

BLOCKS = {"convnext": ConvNeXtBlock, "shiftwise": ShiftWiseBlock}


class Stage(nn.Module):
    """Optional downsample followed by a sequence of blocks.

    With ``grad_checkpointing`` set (:meth:`MacroNet.set_grad_checkpointing`) and
    gradients enabled, each block is run under non-reentrant activation checkpointing: only its
    input is kept, the block is recomputed in the backward pass (same RNG state, and BatchNorm
    running statistics left alone during the recomputation, so training is unchanged; under
    ``torch.compile`` the compiled backward's recomputation has no such side effect, and
    ``torch.compile`` takes no ``context_fn`` but its own dispatch modes).
    """

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if torch.jit.is_scripting():  # TorchScript skips the branch below (not scriptable)
            return self.blocks(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not is_fx_symbolic_tracing():
            for block in self.blocks:
                if torch.compiler.is_compiling():  # its recomputation updates no BN statistics
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    contexts = partial(_checkpoint_contexts, block)
                    x = checkpoint(block, x, use_reentrant=False, context_fn=contexts)
            return x
        return self.blocks(x)


def _checkpoint_contexts(block: nn.Module) -> tuple[AbstractContextManager, AbstractContextManager]:
    """Forward and recomputation contexts of a checkpointed ``block``: nothing, then
    :func:`frozen_batchnorm_statistics` (the forward already updated them once)."""
    return nullcontext(), frozen_batchnorm_statistics(block)


@contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Within this context the BatchNorms of ``module`` normalise as usual but do not update
    their running statistics (momentum 0; ``num_batches_tracked`` restored on exit)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
        for m in norms
    ]
    try:
        for m in norms:
            m.momentum = 0.0
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


POOL_TYPES = ("", "avg", "max", "avgmax")


def pool_features(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """Pool ``[B, C, H, W]`` over ``H, W`` to ``[B, C]``: ``avg``, ``max`` or mean ``avgmax``."""
    if pool_type == "avg":
        return x.mean(dim=(2, 3))
    if pool_type == "max":
        return x.amax(dim=(2, 3))
    return 0.5 * (x.mean(dim=(2, 3)) + x.amax(dim=(2, 3)))


class ClassifierHead(nn.Module):
    """Global pool, LayerNorm, dropout and Linear: ``[B, C, H, W] -> [B, classes]``.

    ``pool_type`` is one of :data:`POOL_TYPES`; ``""`` keeps the map: norm and Linear then act
    on every position's channels, ``[B, C, H, W] -> [B, classes, H, W]`` (``[B, C, H, W]``
    with ``num_classes=0``).
    """

    def __init__(
        self, in_features: int, num_classes: int, drop_rate: float = 0.0, pool_type: str = "avg"
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.pool_type = check_pool_type(pool_type)
        self.norm = nn.LayerNorm(in_features, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not self.pool_type:
            x = self.norm(x.permute(0, 2, 3, 1))
            if not pre_logits:
                x = self.fc(self.drop(x))
            return x.permute(0, 3, 1, 2)
        x = self.norm(pool_features(x, self.pool_type))
        if pre_logits:
            return x
        return self.fc(self.drop(x))


def check_pool_type(pool_type: object, name: str = "global_pool") -> str:
    """Return ``pool_type`` if it is one of :data:`POOL_TYPES`, else raise naming ``name``."""
    if pool_type not in POOL_TYPES:
        raise ValueError(f"{name}: expected one of {POOL_TYPES}, got {pool_type!r}")
    return pool_type


def take_indices(n_stages: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: the stages to return and the last one to run.

    ``None`` takes all ``n_stages``, an int ``n`` the last ``n``, a sequence the listed stages
    (negative counts from the end). Returns ``(absolute indices, max index)``.
    """
    if indices is None:
        indices = n_stages
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= n_stages:
            raise ValueError(f"indices: expected a count in [1, {n_stages}], got {indices}")
        taken = list(range(n_stages - indices, n_stages))
    else:
        if not isinstance(indices, Sequence) or not indices:
            raise ValueError(f"indices: expected an int or stage numbers, got {indices!r}")
        taken = []
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int):
                raise ValueError(f"indices: expected stage numbers, got {indices!r}")
            if not -n_stages <= index < n_stages:
                raise ValueError(f"indices: stage {index} outside [-{n_stages}, {n_stages})")
            taken.append(index % n_stages)
    return taken, max(taken)


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


class MacroNet(nn.Module):
    """Four-stage ConvNeXt-style classifier with a large-kernel depthwise operator.

    Args:
        depths: blocks per stage (4 ints).
        dims: stage widths before ``width_factor`` (4 ints).
        kernel_sizes: big kernel of each stage's operator (4 ints).
        block: ``"convnext"`` (SLaK/ConvNeXt) or ``"shiftwise"`` (SW v2); sets the macro design.
        operator: a registered operator name (``list_operators()``: ``"shiftwise"``,
            ``"slak"``, ``"dense"``, ``"conv"`` and any :func:`register_operator` added).
        operator_kwargs: extra arguments of the operator (e.g. ``small_kernel``).
        width_factor: every stage width is ``int(d * width_factor)``.
        num_classes: classifier outputs; 0 gives no classifier (pooled features).
        in_chans: input channels.
        global_pool: pooling before the head, one of :data:`POOL_TYPES` (``""``: none).
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
        global_pool: str = "avg",
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
        self.num_classes, self.in_chans = num_classes, in_chans  # timm reads both (model traits)
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
        self.head = ClassifierHead(dims[-1], num_classes, drop_rate, global_pool)

        self.apply(_init_weights)
        if isinstance(self.head.fc, nn.Linear):
            with torch.no_grad():
                self.head.fc.weight.mul_(head_init_scale)
                self.head.fc.bias.mul_(head_init_scale)

    def get_classifier(self) -> nn.Module:
        """The classifier ``head.fc`` (an identity when ``num_classes == 0``)."""
        return self.head.fc

    def reset_classifier(
        self, num_classes: int, global_pool: str | None = None, reset_other: bool = False
    ) -> None:
        """Replace the classifier by a fresh ``Linear(num_features, num_classes)`` (0: identity).

        ``global_pool`` (one of :data:`POOL_TYPES`, ``None`` keeps the current one): ``""``
        removes pooling, so ``forward`` returns the map ``[B, classes or C, H, W]``.
        ``reset_other`` also removes the head's LayerNorm (timm's meaning).
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes: expected an int >= 0, got {num_classes!r}")
        if global_pool is not None:
            self.head.pool_type = check_pool_type(global_pool)
        if reset_other:
            self.head.norm = nn.Identity()
        self.num_classes = num_classes
        self.head.in_features = self.num_features
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        fc.apply(_init_weights)
        self.head.fc = fc.to(self.stem[0].weight.device)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Run every block under activation checkpointing while gradients are enabled.

        Outputs and gradients are unchanged; activation memory drops to the block inputs plus
        one block's activations, at the cost of a second forward of each block in backward.
        """
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter-group regexes of timm (layer-wise lr decay): stem, then stages or blocks.

        ``coarse``: one group per stage; else the downsample of stage ``i`` joins block 0 of
        stage ``i``'s group (as timm's ConvNeXt). The head falls in the last group.
        """
        return {
            "stem": r"^stem",
            "blocks": r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)],
        }

    def no_weight_decay(self) -> set[str]:
        """Names of parameters to train without weight decay, besides 1-D ones and biases.

        timm's optimizer factory (and ``shiftwise train``) already skip every parameter with
        ``ndim <= 1``; the others outside the sparse scope
        (:func:`~shiftwise.layers.sparse_scope.sparse_scope`: GRN's ``gamma``/``beta``, stored
        ``[1, 1, 1, C]`` as in the official code) are listed here.
        """
        scope = sparse_scope(self)
        return {
            name
            for name, parameter in self.named_parameters()
            if parameter.ndim > 1 and name not in scope
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W] -> [B, C3, H/32, W/32]`` (before pooling and head)."""
        if not torch.jit.is_scripting():  # TorchScript types x as a tensor already
            _check_input(x, self.stem[0].in_channels, self.feature_info[-1]["reduction"])
        return self.stages(self.stem(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs as timm's ``forward_intermediates``.

        Args:
            x: ``[B, in_chans, H, W]``.
            indices: stages to return: ``None`` all, an int ``n`` the last ``n``, or a list
                of stage numbers (negative from the end).
            norm: accepted for timm; no norm applies to feature maps here (the final
                LayerNorm acts after pooling, as in timm's ConvNeXt), so it changes nothing.
            stop_early: do not run the stages after the last requested one.
            output_fmt: ``"NCHW"`` (the only layout).
            intermediates_only: return only the list.

        Returns the list of ``[B, C_i, H / 2**(i+2), W / 2**(i+2)]`` maps (sizes rounded as the
        strided convs round them), and first the output of the last stage run (equal to
        ``forward_features(x)`` when every stage ran).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt: only 'NCHW' is supported, got {output_fmt!r}")
        taken, last = take_indices(len(self.stages), indices)
        _check_input(x, self.stem[0].in_channels, self.feature_info[-1]["reduction"])
        x = self.stem(x)
        stages = self.stages[: last + 1] if stop_early else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in taken:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the head), in place.

        As timm: when stages are dropped, or ``prune_head``, the head becomes an identity with
        no pooling and no norm (``prune_norm`` drops the norm too); ``num_features`` is then
        the last kept stage's width. Returns the kept indices (absolute).
        """
        taken, last = take_indices(len(self.stages), indices)
        prune_end = last < len(self.stages) - 1
        self.stages = self.stages[: last + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "", reset_other=True)
        elif prune_norm:
            self.head.norm = nn.Identity()
        return taken

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, norm and classify ``[B, C3, h, w]``; ``pre_logits`` stops before the Linear."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_input(x: object, in_chans: int, min_size: int) -> None:
    """Raise unless ``x`` is a floating point ``[B, in_chans, H, W]`` tensor with ``H, W >=
    min_size`` (the network's reduction; a Proxy passes)."""
    if isinstance(x, torch.fx.Proxy):
        return
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x: expected a floating point tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"x: expected shape [B, {in_chans}, H, W], got {tuple(x.shape)}")
    if min(x.shape[2:]) < min_size:
        raise UsageError(
            f"expected H, W >= {min_size} (the network reduces its input {min_size} times), "
            f"got shape {tuple(x.shape)}",
            field="x",
        )


def _init_weights(module: nn.Module) -> None:
    """Official init: truncated normal (std 0.02) on conv and linear weights, zero biases."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


__getattr__ = deprecated_names(__name__, {"LargeKernelNet": MacroNet})
