"""Parameter and MAC counts against the official models (reference/facts.md), and the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from shiftwise import cli
from shiftwise.cli import main
from shiftwise.layers import ShiftWiseConv2d
from shiftwise.models import create_model, reparameterize
from shiftwise.tools.complexity import count_params, info_report, model_complexity


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch):
    # Only this tool's sub-command: the test does not depend on the other tools importing.
    monkeypatch.setattr(cli, "TOOL_MODULES", ("shiftwise.tools.complexity",))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _within(value: float, reference: float, tolerance: float = 0.01) -> bool:
    return abs(value - reference) <= tolerance * reference


@pytest.fixture(scope="module")
def sw_tiny_report() -> dict:
    return info_report("sw_tiny")


@pytest.fixture(scope="module")
def slak_tiny_report() -> dict:
    return info_report("slak_tiny", density=0.6)


def test_sw_tiny_counts_match_official(sw_tiny_report: dict) -> None:
    parts = {row["part"]: row for row in sw_tiny_report["parts"]}
    assert parts["total"]["params"] == 31_790_260  # official ShiftWise_v2_tiny, P = 2
    assert parts["stages.0"]["params"] == 223_740  # official stage 0 (no downsample)
    assert _within(parts["total"]["macs"], 5.34e9)  # training graph, 2 paths
    assert _within(parts["total"]["deploy_macs"], 5.02e9)  # paths merged
    # Deploy (strips form): each operator's 2 paths and 3 BNs become two folded strip kernels
    # [Cr, k, nk*k] and a bias (5 Cr fewer); blocks fold their norms and layer scales too.
    assert parts["total"]["deploy_params"] < parts["total"]["params"]
    op = ShiftWiseConv2d(80, 51).eval()
    op.reparameterize()
    assert sum(p.numel() for p in op.parameters()) == 2 * 60 * 17 * 3 * 3 + 60
    assert sum(parts[f"stages.{i}"]["macs"] for i in range(4)) < parts["total"]["macs"]


def test_slak_tiny_counts_match_official(slak_tiny_report: dict) -> None:
    total = slak_tiny_report["parts"][-1]
    assert total["params"] == 50_703_838  # official SLaK-T, width 1.3, dense
    assert _within(total["params_at_density"], 30.47e6)  # non-zeros at density 0.6
    assert _within(total["macs"], 8.70e9)
    assert _within(total["macs_at_density"], 0.6 * 8.70e9)
    # Deploy: BNs folded, the 5x5 kernel added into the tall strip (strips form).
    assert total["deploy_params"] < total["params"]
    assert total["deploy_macs"] < total["macs"]


def test_convnext_tiny_counts() -> None:
    total = model_complexity(create_model("convnext_tiny"))[-1]
    assert total.params == 28_589_128  # ConvNeXt-T
    assert _within(total.macs, 4.47e9)


def test_nonzero_counts_follow_actual_zeros() -> None:
    torch.manual_seed(0)
    model = create_model("convnext_atto", num_classes=10)
    dense = model_complexity(model, (64, 64))[-1]
    fc1 = model.stages[2].blocks[0].fc1.weight
    with torch.no_grad():
        fc1[::2].zero_()
    # Initial weights can be exactly zero too (rarely): count every zero of the masked scope.
    zeros = sum(int((p == 0).sum()) for p in model.parameters() if p.dim() in (2, 4))
    sparse = model_complexity(model, (64, 64), nonzero=True)[-1]
    assert zeros >= fc1.numel() // 2
    assert dense.params - sparse.params == zeros
    fc1_macs = fc1.numel() // 2 * 4 * 4  # a 4x4 map in stage 2 at 64 px
    assert dense.macs - sparse.macs == pytest.approx(fc1_macs, rel=1e-3)


def test_pruned_sw_pieces_leave_the_deploy_count() -> None:
    torch.manual_seed(0)
    model = create_model("sw_atto", operator_kwargs={"strategy": "fused"}).eval()
    dense_deploy = model_complexity(reparameterize(copy.deepcopy(model)), (64, 64))[-1]
    pieces = 0
    for module in model.modules():
        if isinstance(module, ShiftWiseConv2d):
            with torch.no_grad():
                for path in module.paths:
                    path.weight[::2] = 0  # group-sparse: whole pieces, shared by the paths
            pieces += module.paths[0].weight[::2].numel()
    sparse = model_complexity(model, (64, 64), nonzero=True)[-1]
    assert model_complexity(model, (64, 64))[-1].params - sparse.params == 2 * pieces
    deploy = model_complexity(reparameterize(model), (64, 64))[-1]
    assert deploy.macs < dense_deploy.macs  # pruned pieces are removed physically
    assert dense_deploy.params - deploy.params == pieces  # one merged path, pruned ones gone


def test_density_scope_is_conv_and_linear_weights() -> None:
    model = create_model("sw_atto")
    masked = sum(
        p.numel() for n, p in model.named_parameters() if p.dim() in (2, 4) and ".grn." not in n
    )
    total = sum(p.numel() for p in model.parameters())
    assert count_params(model, density=0.5)[-1].params == total - 0.5 * masked


def test_param_parts_add_up() -> None:
    parts = count_params(create_model("slak_atto"), density=0.5)
    assert sum(p.params for p in parts[:-1]) == pytest.approx(parts[-1].params)


def test_info_cli_json_and_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "sw_atto", "--img-size", "320", "256", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["img_size"] == [320, 256]
    assert [row["part"] for row in report["parts"]] == [
        "stem", "stages.0", "stages.1", "stages.2", "stages.3", "head", "total",
    ]  # fmt: skip
    assert main(["info", "convnext_atto"]) == 0
    assert "deploy MACs" in capsys.readouterr().out


BAD_ARGS = [
    ["info", "nope"],
    ["info", "sw_atto", "--density", "1.5"],
    ["info", "sw_atto", "--img-size", "1", "2", "3"],
]


@pytest.mark.parametrize("argv", BAD_ARGS)
def test_info_cli_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "params", "macs", "density"),
    [
        ("sw_small", 57_312_892, 9.81e9, None),
        ("sw_base", 100_250_380, 17.02e9, None),
        ("slak_small", 54.78e6, 0.6 * 16.6e9, 0.6),  # non-zeros at density 0.6
        ("slak_base", 94.91e6, 17.1e9, 0.6),
    ],
)
def test_small_base_counts(name: str, params: float, macs: float, density: float | None) -> None:
    total = model_complexity(create_model(name), density=density)[-1]
    assert _within(total.params, params, 1e-3)
    assert _within(total.macs, macs)
