"""A new operator is a drop-in: defined and registered in this file alone (no edit in
``src/``), it trains (sparse, through the trainer), is counted, re-parameterised and exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shiftwise.analysis.complexity import count_macs, model_complexity
from shiftwise.benchmarking.operators import make_operator, operator_call
from shiftwise.layers import DenseDepthwiseConv2d, KernelWeights, LargeKernelOperator
from shiftwise.models import (
    build_operator,
    create_model,
    list_operators,
    model_from_weights,
    register_operator,
    reparameterize,
)


@register_operator("toy_depthwise")
class ToyDepthwise(LargeKernelOperator):
    """A plain depthwise ``K x K`` conv with bias behind the operator interface."""

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv.weight, self.conv.bias

    def macs(self, input_size: tuple[int, int]) -> int:
        return self.conv.weight.numel() * input_size[0] * input_size[1]

    def large_kernel_parameters(self) -> list[KernelWeights]:
        return [KernelWeights("conv.weight", ("conv.weight",))]

    def inference_module(self, form: str = "auto") -> DenseDepthwiseConv2d:
        return DenseDepthwiseConv2d(*self.equivalent_kernel())


def _toy_model(**kwargs: object) -> nn.Module:
    return create_model("convnext_atto", operator="toy_depthwise", **kwargs)


def test_the_registry_builds_the_new_operator_by_name():
    assert list_operators()[:4] == ["shiftwise", "slak", "dense", "conv"]
    assert "toy_depthwise" in list_operators()
    assert isinstance(build_operator("toy_depthwise", 8, 5), ToyDepthwise)
    assert register_operator("toy_depthwise", ToyDepthwise) is ToyDepthwise  # same: a no-op
    with pytest.raises(ValueError, match="already registered"):
        register_operator("toy_depthwise", nn.Conv2d)
    with pytest.raises(ValueError, match="toy_depthwise"):  # the error lists it
        build_operator("unknown", 8, 5)
    model = _toy_model()
    operators = [m for m in model.modules() if isinstance(m, ToyDepthwise)]
    assert len(operators) == sum(model.depths)
    assert [op.conv.kernel_size[0] for op in operators[:2]] == [model.kernel_sizes[0]] * 2


def test_the_new_operator_is_counted_by_its_own_macs():
    model = _toy_model(num_classes=10)
    toy = count_macs(model, (64, 64))[-1].macs
    plain = count_macs(create_model("convnext_atto", operator="conv", num_classes=10), (64, 64))
    # same network, same depthwise weights shapes: the operator's own count equals the
    # counter's count of the plain conv
    assert toy == pytest.approx(plain[-1].macs, rel=1e-12)
    deployed = model_complexity(reparameterize(model.eval()), (64, 64))[-1]
    assert deployed.macs == pytest.approx(toy, rel=1e-12)


def test_reparameterised_model_equals_the_trained_form():
    torch.manual_seed(0)
    model = _toy_model(num_classes=10).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        deployed = reparameterize(model)
        assert not any(isinstance(m, ToyDepthwise) for m in deployed.modules())
        torch.testing.assert_close(deployed(x), expected, atol=1e-10, rtol=0)


def test_the_operator_benchmark_times_the_new_operator():
    op = make_operator("toy_depthwise", 8, 7)
    x = torch.randn(1, 8, 16, 16)
    for mode in ("fwd", "fwd_bwd", "deploy"):
        operator_call(op, x, mode)()


@pytest.mark.slow
def test_the_new_operator_trains_sparse_and_exports(tmp_path: Path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from shiftwise.deploy.export import deploy_form, export_checked
    from shiftwise.training import config_from_options, train

    options = {
        "model": "convnext_atto",
        "model_kwargs": {"operator": "toy_depthwise"},
        "width_factor": 0.25,
        "data": "digits",
        "train_limit": 64,
        "val_limit": 32,
        "batch_size": 32,
        "epochs": 1,
        "sparse": True,
        "density": 0.5,
        "progress": False,
        "output": str(tmp_path / "run"),
    }
    result = train(config_from_options(options))
    record = json.loads((tmp_path / "run" / "log.json").read_text())[-1]
    assert record["density"] == pytest.approx(0.5, abs=0.02)
    model, _ = model_from_weights(result.weights)
    toys = [m for m in model.modules() if isinstance(m, ToyDepthwise)]
    assert toys and all(bool((op.conv.weight == 0).any()) for op in toys)  # masked

    deployed = deploy_form(model)
    example = torch.randn(1, 1, 32, 32)
    report = export_checked(deployed, tmp_path / "toy.onnx", example, repeats=1)
    assert report.max_abs_error <= 1e-4
    assert "Conv" in report.op_types
    with torch.no_grad():
        assert F.mse_loss(deployed(example), model.eval()(example)) < 1e-10
