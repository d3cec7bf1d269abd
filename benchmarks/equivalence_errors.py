"""Largest error of every exactness claim of the operators, on random paper-sized inputs.

Run: ``python benchmarks/equivalence_errors.py`` — prints a table and writes
``benchmarks/results/equivalence_errors.json``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shiftwise.layers import RepLKConv2d, ShiftWiseConv2d, SLaKConv2d
from shiftwise.ops import decompose_kernel, shift_wise_conv2d

RESULTS = Path(__file__).parent / "results"


def randomize_batchnorm(module: nn.Module) -> None:
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            with torch.no_grad():
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(-1, 1)
                bn.bias.uniform_(-1, 1)


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def eq_slak_error() -> float:
    """eq-SLaK in float64 over odd and even kernel sides."""
    worst = 0.0
    for rows, cols, small in [(51, 5, 3), (5, 51, 3), (50, 6, 3), (31, 31, 5), (8, 13, 4)]:
        x = torch.randn(2, 8, 40, 33, dtype=torch.float64)
        weight = torch.randn(8, 1, rows, cols, dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dense = F.conv2d(x, weight, padding="same", groups=8)
        worst = max(worst, max_error(shift_wise_conv2d(x, decompose_kernel(weight, small)), dense))
    return worst


def operator_errors(op: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(eval vs equivalent kernel, eval vs reparameterized) for one operator."""
    op.eval()
    randomize_batchnorm(op)
    out = op(x)
    weight, bias = op.equivalent_kernel()
    dense = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])
    return max_error(dense, out), max_error(op.inference_module()(x), out)


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    rows = {"eq-SLaK decompose + shift_wise_conv2d vs F.conv2d (float64)": eq_slak_error()}
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        for label, op in [
            ("ShiftWiseConv2d(80, 51, 3)", ShiftWiseConv2d(80, 51, 3)),
            ("ShiftWiseConv2d(320, 47, 3)", ShiftWiseConv2d(320, 47, 3)),
            ("SLaKConv2d(124, 51, 5, 5)", SLaKConv2d(124, 51, 5, 5)),
            ("RepLKConv2d(80, 31, 5)", RepLKConv2d(80, 31, 5)),
        ]:
            x = torch.randn(2, op.channels, 56, 48, dtype=dtype)
            kernel_error, reparam_error = operator_errors(op.to(dtype), x)
            rows[f"{label} eval vs equivalent_kernel ({name})"] = kernel_error
            rows[f"{label} eval vs reparameterize() ({name})"] = reparam_error
    width = max(map(len, rows))
    for label, error in rows.items():
        print(f"{label:<{width}}  {error:.3e}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "equivalence_errors.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
