"""The paper's "sparse-sw" network: the official ``SW_v1_slak.py`` ``ShiftWise_v1_tiny``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shiftwise.layers import ShiftWiseConv2d
from shiftwise.models import create_model, reparameterize
from shiftwise.models.blocks import GRN, ConvNeXtBlock, SqueezeExcite
from shiftwise.ops.sw_geometry import ghost_split, rep_channel_count


@pytest.mark.parametrize(
    ("name", "params", "dims"),
    [
        ("sw_v1_tiny", 30_097_864, [96, 192, 384, 768]),  # official class: 30.10 M
        ("sw_v1_tiny_1_3x", 49_772_890, [124, 249, 499, 998]),  # width_factor=1.3: 49.77 M
    ],
)
def test_parameter_count_and_structure_match_the_official_class(
    name: str, params: int, dims: list[int]
) -> None:
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.dims == dims and model.depths == [3, 3, 9, 3]
    assert model.kernel_sizes == [51, 49, 45, 13]
    assert not any(isinstance(m, SqueezeExcite | GRN) for m in model.modules())  # no SE
    for stage, channels in zip(model.stages, dims, strict=True):
        for block in stage.blocks:
            assert isinstance(block, ConvNeXtBlock)
            op = block.conv_dw
            assert isinstance(op, ShiftWiseConv2d)
            assert (op.small_kernel, op.n_paths, op.n_shuffles) == (5, 2, 4)
            assert op.n_rep == channels - int(channels * 0.23)  # Cg = int(C * 0.23), Cr odd ok
    assert model.stages[0].blocks[0].conv_dw.geometry.n_pieces == 11  # ceil(51 / 5)


def test_v1_ghost_rule() -> None:
    # v1: Cg = int(C * g), Cr = C - Cg (not forced even); v2 (default) rounds Cr down to even
    assert [rep_channel_count(c, 0.23, "v1") for c in (96, 124, 249)] == [74, 96, 192]
    assert [rep_channel_count(c, 0.23) for c in (96, 124, 249)] == [72, 94, 190]
    rep, ghost = ghost_split(249, 0.23, 123, "v1")
    expected = np.sort(np.random.RandomState(123).choice(249, 57, replace=False))
    assert ghost.tolist() == expected.tolist()
    assert sorted(rep.tolist() + ghost.tolist()) == list(range(249))
    assert ShiftWiseConv2d(96, 13, 5).n_rep == 72  # default unchanged
    with pytest.raises(ValueError, match=r"^ghost_rule: "):
        ShiftWiseConv2d(96, 13, 5, ghost_rule="v3")


def test_v1_reparameterize_keeps_logits() -> None:
    torch.manual_seed(0)
    model = create_model("sw_v1_tiny", depths=(1, 1, 1, 1), layer_scale_init=0.3, num_classes=10)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        after = reparameterize(model)(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
