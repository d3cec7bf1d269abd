"""``shiftwise::conv_bn_sum``: the training-mode branch sum equals the op-by-op computation."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd.graph import saved_tensors_hooks
from torch.utils.flop_counter import FlopCounterMode

from shiftwise.layers.conv_bn import count_batch
from shiftwise.ops.conv_bn_sum import conv_bn_sum, conv_bn_sum_op
from shiftwise.ops.oriented_conv import depthwise_conv2d

CHANNELS = 5


def _case(seed, shapes, momentum=0.1, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    kernels = [
        torch.randn(CHANNELS, 1, *shape, dtype=dtype, generator=generator).requires_grad_()
        for shape in shapes
    ]
    norms = []
    for _ in shapes:
        norm = nn.BatchNorm2d(CHANNELS, momentum=momentum).to(dtype)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5, generator=generator)
            norm.bias.uniform_(-1, 1, generator=generator)
            norm.running_mean.uniform_(-1, 1, generator=generator)
            norm.running_var.uniform_(0.5, 2, generator=generator)
        norms.append(norm)
    return kernels, norms


def _reference(x, kernels, paddings, transposed, norms):
    out = x
    for kernel, padding, flip, norm in zip(kernels, paddings, transposed, norms, strict=True):
        out = out + norm(depthwise_conv2d(x, kernel, padding=padding, transposed=flip))
    return out


def _fused(x, kernels, paddings, transposed, norms, recompute_from=0):
    """``conv_bn_sum`` as the SW operator calls it (``recompute_from=0``: the custom op)."""
    return conv_bn_sum(
        x,
        kernels,
        paddings,
        transposed,
        [norm.weight for norm in norms],
        [norm.bias for norm in norms],
        [norm.running_mean for norm in norms],
        [norm.running_var for norm in norms],
        count_batch(norms),
        norms[0].eps,
        recompute_from,
    )


def _run(forward, x, kernels, paddings, transposed, norms, weights):
    out = forward(x, kernels, paddings, transposed, norms)
    params = [x, *kernels, *(p for norm in norms for p in (norm.weight, norm.bias))]
    return out, torch.autograd.grad((out * weights).sum(), params)


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    long=st.sampled_from([3, 5, 9, 15]),
    flip=st.booleans(),
    momentum=st.sampled_from([0.1, None]),
    recompute_from=st.sampled_from([0, 2**62]),
)
def test_equals_op_by_op_forward_backward_and_running_statistics(
    seed, height, width, long, flip, momentum, recompute_from
):
    """Strips longer than the map (cropped taps), uneven spans, transposed or not, float64;
    by the custom op and below ``recompute_from`` op by op."""
    fused = functools.partial(_fused, recompute_from=recompute_from)
    kernels, norms = _case(seed, [(3, long), (long, 3), (3, 3)], momentum)
    first = -(long // 2) + (1 if long > 3 else 0)  # an uneven span, as SW's strips have
    paddings = [(1, 1, -first, long - 1 + first), (-first, long - 1 + first, 1, 1), (1, 1, 1, 1)]
    transposed = [flip, False, False]
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(3, CHANNELS, height, width, dtype=torch.float64, generator=generator)
    x.requires_grad_()
    weights = torch.randn(3, CHANNELS, height, width, dtype=torch.float64, generator=generator)
    reference_norms = copy.deepcopy(norms)
    for _ in range(2):  # the second step sees updated running statistics and batch counts
        got, got_grads = _run(fused, x, kernels, paddings, transposed, norms, weights)
        expected, expected_grads = _run(
            _reference, x, kernels, paddings, transposed, reference_norms, weights
        )
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        for grad, expected_grad in zip(got_grads, expected_grads, strict=True):
            torch.testing.assert_close(grad, expected_grad, rtol=1e-11, atol=1e-11)
        for norm, reference in zip(norms, reference_norms, strict=True):
            for name, buffer in reference.named_buffers():
                torch.testing.assert_close(
                    getattr(norm, name), buffer, rtol=1e-12, atol=1e-12, msg=name
                )


def test_gradcheck_and_opcheck():
    kernels, norms = _case(0, [(3, 5), (5, 3)])
    x = torch.randn(2, CHANNELS, 4, 6, dtype=torch.float64, requires_grad=True)
    weights = [norm.weight for norm in norms]
    biases = [norm.bias for norm in norms]

    def fn(x, k0, k1, w0, w1, b0, b1):
        return conv_bn_sum_op(x, [k0, k1], [1, 2, 2, 1], [True, False], [w0, w1], [b0, b1], 1e-5)[0]

    assert torch.autograd.gradcheck(fn, (x, *kernels, *weights, *biases))
    torch.library.opcheck(
        conv_bn_sum_op, (x, kernels, [1, 2, 2, 1], [True, False], weights, biases, 1e-5)
    )


@pytest.mark.parametrize("flip", [False, True])
def test_saves_the_input_not_the_branch_outputs(flip):
    """From ``recompute_from``, only ``x`` among the ``[B, C, H, W]`` activations is kept for
    the backward."""
    kernels, norms = _case(1, [(3, 7), (7, 3), (3, 3)])
    x = torch.randn(2, CHANNELS, 6, 8, dtype=torch.float64, requires_grad=True)
    paddings = [(1, 1, 3, 3), (3, 3, 1, 1), (1, 1, 1, 1)]
    saved = set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.shape[-2:] in ((6, 8), (8, 6)) and tensor.shape[0] == 2:
            saved.add(tensor.untyped_storage().data_ptr())
        return tensor

    with saved_tensors_hooks(pack, lambda tensor: tensor):
        _fused(x, kernels, paddings, [flip, False, False], norms).sum().backward()
    assert saved == {x.untyped_storage().data_ptr()}


def test_flop_counter_counts_the_convolutions():
    kernels, norms = _case(2, [(3, 7), (7, 3), (3, 3)])
    x = torch.randn(2, CHANNELS, 6, 8, dtype=torch.float64)
    paddings = [(1, 1, 3, 3), (3, 3, 1, 1), (1, 1, 1, 1)]
    counts = []
    for forward in (_fused, _reference):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            forward(x, kernels, paddings, [True, False, False], copy.deepcopy(norms))
        counts.append(counter.get_flop_counts()["Global"])
    conv = torch.ops.aten.convolution
    assert counts[0][torch.ops.shiftwise.conv_bn_sum] == counts[1][conv] == 2 * 2 * 5 * 48 * 51
