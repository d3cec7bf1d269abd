"""Training-mode ``x + sum_i BN_i(conv_i(x))`` over depthwise branches, saving only ``x``.

The SW operator's rep path in training is three depthwise convolutions of one input, each
followed by a training-mode BatchNorm, summed, plus the input. Run op by op, autograd keeps
every branch output for the BatchNorm backward (and, for a branch run on transposed data, a
transposed copy of the input). The custom op ``shiftwise::conv_bn_sum`` saves the input,
the kernels and the per-branch batch statistics only, and recomputes the branch outputs in
its backward: a depthwise forward costs a small fraction of its backward on CPU.
:func:`conv_bn_sum` runs it on maps large enough for the memory to matter
(:data:`RECOMPUTE_FROM`), and the same computation op by op below.

Forward and backward call the same ATen kernels autograd would (``F.conv2d``,
``native_batch_norm``, ``native_batch_norm_backward``, ``convolution_backward``) on the same
values, so outputs and gradients are those of the op-by-op computation
(:func:`~shiftwise.ops.oriented_conv.depthwise_conv2d` then ``nn.BatchNorm2d``), which the
operator's other strategies run.

Dtypes: the convolutions run in ``x``'s dtype (the kernels must share it), the BatchNorms
normalise in it with their affine parameters and batch statistics in those parameters'
dtype; the output has ``x``'s dtype. Under ``torch.autocast``
(:mod:`shiftwise.ops.autocast`) ``x`` and the kernels are cast to the autocast dtype (the
convolutions, as autocast runs a conv) and the BatchNorm parameters to float32 (the batch
statistics, as autocast keeps a norm's): bfloat16 in and out, float32 statistics, in the op
and op by op alike. The backward keeps the same dtypes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from shiftwise.ops.autocast import register_autocast, to_dtype, without_autocast
from shiftwise.ops.oriented_conv import conv_kernel, depthwise_conv2d, oriented_input

__all__ = ["RECOMPUTE_FROM", "conv_bn_sum"]

# From this many elements per branch output (1 MiB in float32) the branches run as the custom
# op that recomputes them in the backward; below, op by op (a custom op's fixed cost outweighs
# the memory it saves on small maps).
RECOMPUTE_FROM = 2**18


def conv_bn_sum(
    x: torch.Tensor,
    kernels: Sequence[torch.Tensor],
    paddings: Sequence[tuple[int, int, int, int]],
    transposed: Sequence[bool],
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    running_means: Sequence[torch.Tensor],
    running_vars: Sequence[torch.Tensor],
    momentum: float,
    eps: float,
    recompute_from: int = RECOMPUTE_FROM,
) -> torch.Tensor:
    """``x + sum_i BN_i(conv_i(x))`` with training-mode BatchNorms, ``[B, C, H, W]``.

    Branch ``i`` is :func:`~shiftwise.ops.oriented_conv.depthwise_conv2d` of ``x`` with
    ``kernels[i] [C, 1, kh, kw]``, ``paddings[i] (top, bottom, left, right)`` and
    ``transposed[i]``, then ``F.batch_norm`` in training mode with ``weights[i]``,
    ``biases[i]`` (``[C]``), updating ``running_means[i]`` and ``running_vars[i]`` in place
    by ``momentum`` (the factor ``nn.BatchNorm2d`` would use; counting the batch in
    ``num_batches_tracked`` is the caller's). From ``recompute_from`` elements in ``x``, and
    always under ``torch.compile``, the custom op runs (branch outputs recomputed in the
    backward, not kept); below, in eager mode, the same computation op by op. (Inductor in
    torch 2.13 generated a CPU kernel fusing the op-by-op BatchNorm backward with the channel
    gather's ``index_add`` that corrupted the heap in SW-T's compiled training step.)
    """
    if x.numel() < recompute_from and not torch.compiler.is_compiling():
        out = None
        for i, kernel in enumerate(kernels):
            y = depthwise_conv2d(x, kernel, padding=paddings[i], transposed=transposed[i])
            y = F.batch_norm(
                y, running_means[i], running_vars[i], weights[i], biases[i], True, momentum, eps
            )
            out = y if out is None else out + y
        return out + x.to(out.dtype)
    size = (x.shape[-2], x.shape[-1])
    plans = [
        conv_kernel(kernel, padding, size, flip)
        for kernel, padding, flip in zip(kernels, paddings, transposed, strict=True)
    ]
    out, statistics = conv_bn_sum_op(
        x,
        [kernel for kernel, _ in plans],
        [side for _, padding in plans for side in padding],
        list(transposed),
        list(weights),
        list(biases),
        eps,
    )
    _update_running_statistics(
        running_means, running_vars, statistics, eps, momentum, x.numel() // x.shape[1]
    )
    return out


def _update_running_statistics(
    running_means: Sequence[torch.Tensor],
    running_vars: Sequence[torch.Tensor],
    statistics: torch.Tensor,
    eps: float,
    momentum: float,
    count: int,
) -> None:
    """Move the running statistics towards the batch's, as ``F.batch_norm`` does in training.

    ``statistics [2 * n, C]``: batch means and inverse standard deviations, interleaved, of
    ``count`` values per channel; the running variance follows the unbiased batch variance.
    """
    with torch.no_grad():
        variances = (statistics[1::2].pow(-2) - eps) * (count / max(count - 1, 1))
        for i, (mean, variance) in enumerate(zip(statistics[0::2], variances, strict=True)):
            running_means[i].lerp_(mean, momentum)
            running_vars[i].lerp_(variance, momentum)


def _branch_conv(
    x: torch.Tensor, kernel: torch.Tensor, padding: tuple[int, int], transposed: bool
) -> torch.Tensor:
    out = F.conv2d(oriented_input(x, transposed), kernel, padding=padding, groups=x.shape[1])
    return out.transpose(-1, -2) if transposed else out


@torch.library.custom_op("shiftwise::conv_bn_sum", mutates_args=())
def conv_bn_sum_op(
    x: torch.Tensor,
    kernels: list[torch.Tensor],
    paddings: list[int],
    transposed: list[bool],
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x + sum_i BN_i(conv_i(x)), statistics [2 * n, C])``: the batch means and inverse
    standard deviations of the ``n`` branches, kept for the backward."""
    out = torch.empty_like(x)
    statistics = []
    for i, kernel in enumerate(kernels):
        y = _branch_conv(x, kernel, (paddings[2 * i], paddings[2 * i + 1]), transposed[i])
        normed, mean, invstd = torch.native_batch_norm(
            y, weights[i], biases[i], None, None, True, 0.0, eps
        )
        if i == 0:
            out.copy_(normed)
        else:
            out.add_(normed)
        statistics += [mean, invstd]
    return out.add_(x), torch.stack(statistics)


@conv_bn_sum_op.register_fake
def _conv_bn_sum_fake(
    x, kernels, paddings, transposed, weights, biases, eps
) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(x.dtype, weights[0].dtype)
    return torch.empty_like(x), x.new_empty(2 * len(kernels), x.shape[1], dtype=dtype)


def _autocast_inputs(dtype, x, kernels, paddings, transposed, weights, biases, eps) -> tuple:
    """The convolutions' operands in the autocast dtype, the BatchNorms' in float32."""
    return (
        to_dtype(x, dtype),
        to_dtype(kernels, dtype),
        paddings,
        transposed,
        to_dtype(weights, torch.float32),
        to_dtype(biases, torch.float32),
        eps,
    )


register_autocast("shiftwise::conv_bn_sum", _autocast_inputs)


def _setup_context(ctx, inputs, output) -> None:
    x, kernels, paddings, transposed, weights, *_ = inputs
    ctx.save_for_backward(x, *kernels, *weights, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.paddings, ctx.transposed, ctx.eps = paddings, transposed, inputs[6]


@without_autocast
def _backward(ctx, grad: torch.Tensor, grad_statistics: torch.Tensor | None):
    """Per branch: recompute the conv output, then BatchNorm's and the conv's backward."""
    n = len(ctx.transposed)
    x, *rest = ctx.saved_tensors
    kernels, weights, statistics = rest[:n], rest[n : 2 * n], rest[2 * n]
    grad = grad.to(x.dtype)
    grad_x = grad.clone()
    grad_kernels, grad_weights, grad_biases = [], [], []
    for i in range(n):
        padding, transposed = (ctx.paddings[2 * i], ctx.paddings[2 * i + 1]), ctx.transposed[i]
        y = _branch_conv(x, kernels[i], padding, transposed)
        grad_y, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad,
            y,
            weights[i],
            None,
            None,
            statistics[2 * i],
            statistics[2 * i + 1],
            True,
            ctx.eps,
            [True, True, True],
        )
        grad_in, grad_kernel, _ = torch.ops.aten.convolution_backward(
            oriented_input(grad_y, transposed),
            oriented_input(x, transposed),
            kernels[i],
            None,
            [1, 1],
            list(padding),
            [1, 1],
            False,
            [0, 0],
            x.shape[1],
            [True, True, False],
        )
        grad_x.add_(grad_in.transpose(-1, -2) if transposed else grad_in)
        grad_kernels.append(grad_kernel)
        grad_weights.append(grad_weight)
        grad_biases.append(grad_bias)
    return grad_x, grad_kernels, None, None, grad_weights, grad_biases, None


conv_bn_sum_op.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.shiftwise.conv_bn_sum)
def _conv_bn_sum_flops(x_shape, kernel_shapes, *_, **__) -> int:
    """FLOPs of the depthwise convolutions (``2 * B * C * H * W * kh * kw`` each, "same"
    outputs), as ``FlopCounterMode`` counts a convolution."""
    batch, channels, height, width = x_shape
    taps = sum(shape[-2] * shape[-1] for shape in kernel_shapes)
    return 2 * batch * channels * height * width * taps
