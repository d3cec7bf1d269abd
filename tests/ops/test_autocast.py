"""bfloat16 autocast through every custom op: the dtype each runs in, forward and backward.

The rules (``shiftwise.ops.autocast``): matrix products and convolutions in the autocast
dtype, norms and batch statistics in float32, the shift-add in its input's dtype. Each op is
compared with float32 arithmetic on the operands autocast rounds to bfloat16.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shiftwise
from shiftwise.layers.conv_bn import count_batch
from shiftwise.ops import decompose_kernel, shift_add, shift_add_reference, shift_wise_conv2d
from shiftwise.ops.conv_bn_sum import conv_bn_sum, conv_bn_sum_op
from shiftwise.ops.grn_mlp import gelu_grn_linear, gelu_grn_linear_op, gelu_grn_linear_reference
from shiftwise.ops.oriented_conv import depthwise_conv2d

BF16 = torch.bfloat16


def _close(got: torch.Tensor, expected: torch.Tensor, msg: str = "") -> None:
    """Equal to bfloat16 precision: 8 significant bits, so a relative error of 2^-8 per
    rounding, a few roundings deep, relative to the largest value (sums cancel)."""
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=1e-2 * scale, msg=msg)


def _autocast(device: str = "cpu"):
    return torch.autocast(device, dtype=BF16)


def _rounded(t: torch.Tensor) -> torch.Tensor:
    """``t`` as autocast hands it to a bfloat16 kernel, back in float32 (differentiable)."""
    return t.to(BF16).float()


def _leaves(*shapes, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=generator).to(device).requires_grad_() for s in shapes]


def _grads(out: torch.Tensor, inputs, seed=1) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(out.shape, generator=generator).to(out.device)
    return torch.autograd.grad((out.float() * weights).sum(), inputs)


def _shiftwise_ops() -> list[str]:
    import shiftwise.models  # noqa: F401  (imports every op module)

    return sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("shiftwise::"))


def test_the_op_list_is_complete() -> None:
    assert _shiftwise_ops() == [
        "shiftwise::conv_bn_sum",
        "shiftwise::gelu_grn_linear",
        "shiftwise::shift_add",
        "shiftwise::shift_add_adjoint",
    ]


@pytest.mark.parametrize("op", _shiftwise_ops())
@pytest.mark.parametrize("key", ["AutocastCPU", "AutocastCUDA"])
def test_every_custom_op_has_an_autocast_rule(op: str, key: str) -> None:
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


# --- gelu_grn_linear: the projection in bfloat16, the GRN in float32 ------------------------


def _grn_leaves(device="cpu"):
    hidden, gamma, beta, weight = _leaves((2, 5, 6, 16), (1, 1, 1, 16), (1, 1, 1, 16), (8, 16))
    return [t.detach().to(device).requires_grad_() for t in (hidden, gamma, beta, weight)]


def test_gelu_grn_linear_runs_the_projection_in_bf16_and_the_grn_in_float32() -> None:
    args = _grn_leaves()
    with _autocast():
        out = gelu_grn_linear(*args)
        norms = gelu_grn_linear_op(*args)[1]
    assert (out.dtype, norms.dtype) == (BF16, torch.float32)
    grads = _grads(out, args)
    assert [g.dtype for g in grads] == [torch.float32] * 4
    hidden, gamma, beta, weight = args
    expected = gelu_grn_linear_reference(_rounded(hidden), gamma, beta, _rounded(weight))
    _close(out, expected)
    for name, grad, expected_grad in zip(
        ("hidden", "gamma", "beta", "weight"), grads, _grads(expected, args), strict=True
    ):
        _close(grad, expected_grad, msg=name)


def test_gelu_grn_linear_backward_ignores_an_enclosing_autocast() -> None:
    """A float32 forward differentiated inside an autocast region keeps float32 gradients."""
    args = _grn_leaves()
    expected = _grads(gelu_grn_linear(*args), args)
    out = gelu_grn_linear(*args)
    with _autocast():
        got = _grads(out, args)
    for grad, expected_grad in zip(got, expected, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


# --- conv_bn_sum: convolutions in bfloat16, batch statistics in float32 ---------------------


def _conv_bn_case():
    x, *kernels = _leaves((2, 4, 6, 7), (4, 1, 1, 5), (4, 1, 5, 1), (4, 1, 3, 3))
    norms = []
    for i in range(3):
        norm = nn.BatchNorm2d(4)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(i))
            norm.bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(10 + i))
        norms.append(norm)
    paddings = ((0, 0, 2, 2), (2, 2, 0, 0), (1, 1, 1, 1))
    return x, kernels, paddings, norms


def _conv_bn_sum(x, kernels, paddings, norms, recompute_from):
    return conv_bn_sum(
        x,
        kernels,
        paddings,
        (True, False, False),
        [n.weight for n in norms],
        [n.bias for n in norms],
        [n.running_mean for n in norms],
        [n.running_var for n in norms],
        count_batch(norms),
        norms[0].eps,
        recompute_from,
    )


def _params(x, kernels, norms):
    return [x, *kernels, *(p for n in norms for p in (n.weight, n.bias))]


def test_conv_bn_sum_op_equals_the_op_by_op_autocast_computation() -> None:
    """The custom op under autocast: bf16 in and out, float32 statistics, and the same
    outputs, gradients and running statistics as the branches run op by op under autocast
    (PyTorch's own rules for conv and BatchNorm)."""
    x, kernels, paddings, norms = _conv_bn_case()
    twins = copy.deepcopy(norms)
    with _autocast():
        fused = _conv_bn_sum(x, kernels, paddings, norms, recompute_from=0)
        op_by_op = _conv_bn_sum(x, kernels, paddings, twins, recompute_from=2**62)
        weights = [n.weight for n in norms]
        statistics = conv_bn_sum_op(
            x, kernels, [0, 2, 2, 0, 1, 1], [True, False, False], weights, weights, 1e-5
        )[1]
    assert (fused.dtype, op_by_op.dtype, statistics.dtype) == (BF16, BF16, torch.float32)
    _close(fused, op_by_op)
    for norm, twin in zip(norms, twins, strict=True):
        torch.testing.assert_close(norm.running_mean, twin.running_mean)
        torch.testing.assert_close(norm.running_var, twin.running_var)
    grads = _grads(fused, _params(x, kernels, norms))
    assert all(g.dtype == torch.float32 and g.isfinite().all() for g in grads)
    expected = _grads(op_by_op, _params(x, kernels, twins))
    for grad, expected_grad in zip(grads, expected, strict=True):
        _close(grad, expected_grad)


def test_conv_bn_sum_backward_ignores_an_enclosing_autocast() -> None:
    x, kernels, paddings, norms = _conv_bn_case()
    out = _conv_bn_sum(x, kernels, paddings, norms, recompute_from=0)
    expected = _grads(out, _params(x, kernels, norms))
    out = _conv_bn_sum(x, kernels, paddings, norms, recompute_from=0)
    with _autocast():
        got = _grads(out, _params(x, kernels, norms))
    for grad, expected_grad in zip(got, expected, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


# --- shift_add: the input's dtype ------------------------------------------------------------


def _shift_add_case(dtype):
    y = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(3)).to(dtype)
    index = torch.tensor([[0, 2, 1, 3], [1, 1, 0, 2], [3, 0, 0, 1]])
    offsets = torch.tensor([[1, -2], [0, 3], [1, -2], [-1, 1]])
    return y.requires_grad_(), index, offsets


@pytest.mark.parametrize("dtype", [BF16, torch.float32])
def test_shift_add_keeps_its_input_dtype_under_autocast(dtype) -> None:
    y, index, offsets = _shift_add_case(dtype)
    with _autocast():
        out = shift_add(y, index, offsets, (4, 5))
    expected = shift_add_reference(y, index, offsets, (4, 5))
    assert out.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(out, expected)
    else:
        _close(out, expected)
    (grad,) = _grads(out, [y])
    assert grad.dtype == dtype
    torch.testing.assert_close(grad, _grads(expected, [y])[0])


def test_shift_wise_conv2d_takes_a_bf16_input_under_autocast() -> None:
    """In a model under autocast the operator's input is the previous layer's bfloat16
    output while its weights stay float32."""
    x, weight = _leaves((2, 3, 9, 8), (3, 1, 7, 5))
    pieces = decompose_kernel(weight, 3)
    with _autocast():
        out = shift_wise_conv2d(x.to(BF16), pieces)
    assert out.dtype == BF16
    expected = F.conv2d(_rounded(x), _rounded(weight), padding="same", groups=3)
    _close(out, expected)


def test_depthwise_conv2d_follows_conv2d_under_autocast() -> None:
    x, weight, bias = _leaves((2, 3, 6, 9), (3, 1, 1, 7), (3,))
    with _autocast():
        out = depthwise_conv2d(x, weight, bias, padding=(0, 0, 3, 3), transposed=True)
    assert out.dtype == BF16
    expected = F.conv2d(_rounded(x), _rounded(weight), _rounded(bias), padding=(0, 3), groups=3)
    _close(out, expected)
    assert [g.dtype for g in _grads(out, [x, weight, bias])] == [torch.float32] * 3


# --- the models built on them ---------------------------------------------------------------


def _train_step_under_autocast(name: str, size: int, batch: int, device: str = "cpu") -> None:
    model = shiftwise.create_model(name, num_classes=10).to(device).train()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    with _autocast(device):
        logits = model(x)
        loss = F.cross_entropy(logits, torch.arange(batch, device=device) % 10)
    assert logits.dtype == BF16 and loss.isfinite()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and g.isfinite().all() for g in grads)


@pytest.mark.parametrize("name", ["sw_atto", "slak_atto", "convnext_atto"])
def test_atto_models_train_under_autocast(name: str) -> None:
    _train_step_under_autocast(name, 32, 2)


@pytest.mark.slow
def test_sw_tiny_trains_under_autocast_at_224() -> None:
    _train_step_under_autocast("sw_tiny", 224, 1)


# --- CUDA -----------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("name", ["sw_atto", "slak_atto"])
def test_atto_models_train_under_cuda_autocast(name: str) -> None:
    _train_step_under_autocast(name, 32, 2, "cuda")


@cuda
@pytest.mark.parametrize("dtype", [BF16, torch.float16])
def test_ops_on_cuda_follow_the_autocast_dtype(dtype) -> None:
    args = _grn_leaves("cuda")
    with torch.autocast("cuda", dtype=dtype):
        out, norms = gelu_grn_linear_op(*args)
        y = torch.randn(2, 4, 5, 6, device="cuda", dtype=dtype, requires_grad=True)
        index = torch.tensor([[0, 2], [1, 3]], device="cuda")
        offsets = torch.tensor([[1, -2], [0, 3]], device="cuda")
        shifted = shift_add(y, index, offsets, (4, 5))
    assert (out.dtype, norms.dtype, shifted.dtype) == (dtype, torch.float32, dtype)
    grads = _grads(out, args)
    assert all(g.dtype == torch.float32 and g.isfinite().all() for g in grads)
    assert _grads(shifted, [y])[0].dtype == dtype
