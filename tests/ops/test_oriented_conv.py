"""depthwise_conv2d's layout and orientation plan: channels-last on CPU, transposed only for
wide kernels that need gradients; every plan gives the same output and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shiftwise.ops.oriented_conv import depthwise_conv2d, grad_needed, transpose_pays


def test_wide_kernels_run_transposed_only_when_gradients_are_needed():
    x = torch.randn(1, 2, 6, 6)
    wide, tall = torch.randn(2, 1, 3, 7), torch.randn(2, 1, 7, 3)
    assert not grad_needed(x, wide) and not transpose_pays(x, wide, needs_grad=False)
    assert grad_needed(x.requires_grad_(), wide) and transpose_pays(x, wide, needs_grad=True)
    assert grad_needed(x.detach(), wide.requires_grad_())
    assert not transpose_pays(x, tall, needs_grad=True)
    assert not transpose_pays(x.to("meta"), wide, needs_grad=True)  # measured on CPU only
    with torch.no_grad():
        assert not grad_needed(x, wide)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (5, 5)])
def test_every_plan_matches_plain_conv(channels_last, shape):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(3, 1, *shape, dtype=torch.float64, requires_grad=True)
    padding = (shape[0] // 2, shape[0] // 2, shape[1] // 2 + 1, shape[1] // 2 - 1)
    plain = F.conv2d(F.pad(x, (padding[2], padding[3], padding[0], padding[1])), weight, groups=3)
    want = torch.autograd.grad(plain.square().sum(), [x, weight])
    for transposed in (False, True):
        out = depthwise_conv2d(x, weight, None, padding, transposed=transposed)
        torch.testing.assert_close(out, plain, atol=1e-12, rtol=0)
        got = torch.autograd.grad(out.square().sum(), [x, weight])
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    with torch.no_grad():
        out = depthwise_conv2d(x, weight, None, padding)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, plain, atol=1e-12, rtol=0)
    uncropped = depthwise_conv2d(x, weight, None, padding, crop=False)
    torch.testing.assert_close(uncropped, plain, atol=1e-12, rtol=0)
