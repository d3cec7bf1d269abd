"""Renamed public names stay importable, with a warning naming the new one."""

from __future__ import annotations

import pytest

import shiftwise.layers
import shiftwise.models
from shiftwise.layers import DenseDepthwiseConv2d, RepLKConv2d
from shiftwise.models import MacroNet


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        (shiftwise.layers, "LargeKernelConv2d", RepLKConv2d),
        (shiftwise.layers, "PermutedDepthwiseConv2d", DenseDepthwiseConv2d),
        (shiftwise.models, "LargeKernelNet", MacroNet),
    ],
)
def test_old_name_warns_and_is_the_new_object(module, old, new):
    with pytest.warns(DeprecationWarning, match=new.__name__):
        assert getattr(module, old) is new
    with pytest.raises(AttributeError, match="NoSuchName"):
        module.NoSuchName  # noqa: B018


def test_mask_target_sw_module_is_the_owner():
    from torch import nn

    from shiftwise.layers import ShiftWiseConv2d
    from shiftwise.sparse.targets import select_targets

    (target,) = select_targets(nn.Sequential(ShiftWiseConv2d(8, 7)))
    with pytest.warns(DeprecationWarning, match="owner"):
        assert target.sw_module == target.owner == "0"
