"""ShiftWiseConv2d: official tables, official forward formula, exact re-parameterisation."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from testing_utils import randomize_batchnorm

from shiftwise.layers import ShiftWiseConv2d
from shiftwise.ops.sw_geometry import ghost_split, shift_tables


def test_official_ghost_split_check_vectors():
    rep, ghost = ghost_split(80, 0.23, 123)
    assert (len(rep), len(ghost)) == (60, 20)
    assert ghost[:10].tolist() == [4, 8, 9, 23, 29, 31, 37, 43, 44, 53]
    rep, ghost = ghost_split(640, 0.23, 123)
    assert (len(rep), len(ghost)) == (492, 148)
    assert ghost[:10].tolist() == [5, 9, 11, 13, 31, 33, 34, 35, 36, 43]
    assert [len(ghost_split(c, 0.23, 123)[0]) for c in (160, 320)] == [122, 246]


def official_pad_table(horizontal_index, n_pieces, kernel_size, small_kernel, n_shuffles):
    """Official ``pad_H [Cr*nk, R]``: ``real_pad[m]`` for the piece placed at block ``m``."""
    real_pad = [kernel_size // 2 - m * small_kernel - (small_kernel - 1) for m in range(n_pieces)]
    table = torch.empty(horizontal_index.numel() // n_shuffles, n_shuffles, dtype=torch.long)
    for c in range(horizontal_index.shape[0]):
        for r in range(n_shuffles):
            for m in range(n_pieces):
                table[horizontal_index[c, r * n_pieces + m], r] = real_pad[m]
    return table


def test_official_shift_table_check_vectors():
    tables = shift_tables(60, 17, 4, 123)
    pad_h = official_pad_table(tables.horizontal, 17, 51, 3, 4)
    expected = [14, 17, 2, -7, 11, -16, -22, 8, -13, -25, -19, -4, -10, -1, 20, 23, 5]
    assert pad_h[:17, 0].tolist() == expected
    assert tables.identity[:3].tolist() == [[0, 12, 4, 13], [30, 29, 21, 24], [37, 43, 49, 44]]
    assert shift_tables(492, 5, 4, 123).identity[0].tolist() == [0, 3, 1, 0]


def official_forward(op: ShiftWiseConv2d, x: torch.Tensor) -> torch.Tensor:
    """Literal emulation of the official op: summed path convs, then the CUDA kernel's scatter.

    ``Hs[b, c, y - e, x' + pad_H[q, r]] += X[b, q, y, x']`` etc., out-of-range targets dropped.
    """
    k, nk, n_rep, n_groups = op.small_kernel, op.geometry.n_pieces, op.n_rep, op.n_shuffles
    e = k - 1 - k // 2
    x_rep = x[:, op.rep_index]
    pieces = sum(F.conv2d(x_rep, p.weight, padding=k - 1, groups=n_rep) for p in op.paths)
    pad_h = official_pad_table(op.horizontal_index, nk, op.kernel_size, k, n_groups)
    pad_v = official_pad_table(op.vertical_index, nk, op.kernel_size, k, n_groups)
    batch, _, height, width = x.shape
    outs = torch.zeros(3, batch, n_rep, height, width, dtype=x.dtype)
    for q in range(n_rep * nk):
        c = q // nk
        for r in range(n_groups):
            for y in range(height + 2 * e):
                for xx in range(width + 2 * e):
                    value = pieces[:, q, y, xx]
                    h, w = y - e, xx + int(pad_h[q, r])
                    if 0 <= h < height and 0 <= w < width:
                        outs[0, :, c, h, w] += value
                    h, w = y + int(pad_v[q, r]), xx - e
                    if 0 <= h < height and 0 <= w < width:
                        outs[1, :, c, h, w] += value
                    h, w = y - e, xx - e
                    if q == op.identity_index[c, r] and 0 <= h < height and 0 <= w < width:
                        outs[2, :, c, h, w] += value
    y = op.bn_h(outs[0]) + op.bn_v(outs[1]) + op.bn_identity(outs[2]) + x_rep
    return torch.cat([y, x[:, op.ghost_index]], dim=1)


@pytest.mark.parametrize(
    ("kernel_size", "small_kernel", "height", "width"), [(13, 3, 6, 9), (7, 3, 5, 4), (9, 5, 7, 6)]
)
@pytest.mark.parametrize("training", [False, True])
def test_matches_official_scatter_formula(kernel_size, small_kernel, height, width, training):
    torch.manual_seed(0)
    op = ShiftWiseConv2d(6, kernel_size, small_kernel, n_shuffles=2, channel_order="official")
    op = op.double()
    randomize_batchnorm(op)
    op.train(training)
    x = torch.randn(2, 6, height, width, dtype=torch.float64)
    torch.testing.assert_close(op(x), official_forward(op, x), atol=1e-10, rtol=0)


def dense_reference(
    op: torch.nn.Module, x: torch.Tensor, order: torch.Tensor | None = None
) -> torch.Tensor:
    """The operator's equivalent kernel as a plain conv, outputs in ``order`` (default: the
    operator's own ``output_order``)."""
    weight, bias = op.equivalent_kernel()
    out = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])
    return out.index_select(1, op.output_order if order is None else order)


@st.composite
def sw_case(draw):
    small = draw(st.sampled_from([1, 3, 5]))
    return {
        "channels": draw(st.integers(4, 9)),
        "kernel_size": draw(st.integers(small // 2, 8)) * 2 + 1,
        "small_kernel": small,
        "ghost_ratio": draw(st.sampled_from([0.0, 0.23, 0.5])),
        "n_paths": draw(st.integers(1, 3)),
        "n_shuffles": draw(st.integers(1, 4)),
        "seed": draw(st.integers(0, 1000)),
        "channel_order": draw(st.sampled_from(["input", "official"])),
    }


@settings(max_examples=40, deadline=None)
@given(case=sw_case(), height=st.integers(1, 12), width=st.integers(1, 12))
def test_eval_equals_equivalent_kernel_and_reparameterize(case, height, width):
    op = ShiftWiseConv2d(**case).double().eval()
    randomize_batchnorm(op)
    x = torch.randn(2, case["channels"], height, width, dtype=torch.float64)
    out = op(x)
    torch.testing.assert_close(out, dense_reference(op, x), atol=1e-10, rtol=0)
    for form in ("dense", "strips", "pieces"):
        deployed = op.inference_module(form)
        torch.testing.assert_close(deployed(x), out, atol=1e-10, rtol=0)
        reference = dense_reference(deployed, x, op.output_order)
        torch.testing.assert_close(reference, out, atol=1e-10, rtol=0)


def test_reparameterize_float32_official_size():
    torch.manual_seed(0)
    op = ShiftWiseConv2d(80, 51, 3).eval()
    randomize_batchnorm(op)
    x = torch.randn(2, 80, 32, 40)
    out = op(x)
    dense = dense_reference(op, x)
    assert (op.inference_module()(x) - out).abs().max() < 1e-4
    assert (dense - out).abs().max() < 1e-4


def test_kernel_geometry_of_official_sizes():
    # K=49 with k=3: 17 pieces cover offsets -24..26, so the centred kernel is 53 wide.
    op = ShiftWiseConv2d(8, 49, 3).eval()
    assert op.geometry.span == (-24, 26)
    assert op.equivalent_kernel()[0].shape == (8, 1, 53, 53)
    assert ShiftWiseConv2d(8, 51, 3).geometry.span == (-25, 25)
    assert ShiftWiseConv2d(8, 13, 3).geometry.span == (-6, 8)


def test_channels_last_and_bfloat16():
    torch.manual_seed(0)
    op = ShiftWiseConv2d(10, 9, 3).eval()
    x = torch.randn(2, 10, 7, 12)
    expected = op(x)
    deployed = op.inference_module()
    for module in (op, deployed):
        with torch.no_grad():
            out = module(x.to(memory_format=torch.channels_last))
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, expected)
    out = op.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0.05)


def test_gradcheck_through_module():
    torch.manual_seed(0)
    op = ShiftWiseConv2d(4, 7, 3, n_shuffles=2).double()
    x = torch.randn(2, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,))


def test_state_dict_round_trip_is_bit_identical():
    torch.manual_seed(0)
    source = ShiftWiseConv2d(12, 13, 3, seed=7).eval()
    randomize_batchnorm(source)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = ShiftWiseConv2d(12, 13, 3, seed=123).eval()
    target.load_state_dict(torch.load(buffer))
    x = torch.randn(2, 12, 9, 9)
    assert torch.equal(target(x), source(x))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_seed_changes_tables_and_official_order():
    a, b = ShiftWiseConv2d(16, 13, 3, seed=1), ShiftWiseConv2d(16, 13, 3, seed=2)
    assert not torch.equal(a.horizontal_index, b.horizontal_index)
    op = ShiftWiseConv2d(80, 13, 3, channel_order="official")
    assert op.output_order.tolist() == op.rep_index.tolist() + op.ghost_index.tolist()
    assert ShiftWiseConv2d(80, 13, 3).output_order.tolist() == list(range(80))
    assert "rep_channels=60" in repr(op) and "pieces=5" in repr(op)


def test_ghost_channels_pass_unchanged():
    op = ShiftWiseConv2d(10, 9, 3, ghost_ratio=0.5).eval()
    x = torch.randn(1, 10, 6, 6)
    assert torch.equal(op(x)[:, op.ghost_index], x[:, op.ghost_index])


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"channels": 0}, ValueError, "channels"),
        ({"channels": 2.5}, TypeError, "channels"),
        ({"kernel_size": 0}, ValueError, "kernel_size"),
        ({"kernel_size": 12}, ValueError, "kernel_size"),
        ({"channel_order": "rep_first"}, ValueError, "channel_order"),
        ({"strategy": "fast"}, ValueError, "strategy"),
        ({"small_kernel": 4}, ValueError, "small_kernel"),
        ({"small_kernel": 0}, ValueError, "small_kernel"),
        ({"kernel_size": 3, "small_kernel": 5}, ValueError, "small_kernel"),
        ({"ghost_ratio": 1.0}, ValueError, "ghost_ratio"),
        ({"ghost_ratio": -0.1}, ValueError, "ghost_ratio"),
        ({"ghost_ratio": "0.2"}, TypeError, "ghost_ratio"),
        ({"channels": 2, "ghost_ratio": 0.6}, ValueError, "ghost_ratio"),
        ({"n_paths": 0}, ValueError, "n_paths"),
        ({"n_shuffles": 0}, ValueError, "n_shuffles"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, name):
    args = {"channels": 8, "kernel_size": 13, "small_kernel": 3} | kwargs
    with pytest.raises(error, match=name):
        ShiftWiseConv2d(**args)


@pytest.mark.parametrize(
    ("x", "error"),
    [
        (torch.zeros(8, 5, 5), ValueError),
        (torch.zeros(1, 7, 5, 5), ValueError),
        (torch.zeros(1, 8, 5, 5, dtype=torch.long), TypeError),
        ([[1.0]], TypeError),
    ],
)
def test_bad_input(x, error):
    with pytest.raises(error, match="x"):
        ShiftWiseConv2d(8, 13, 3)(x)
