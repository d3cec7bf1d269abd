"""Parameter and MAC counts against the official models (reference/facts.md), and the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from shiftwise import cli
from shiftwise.analysis.complexity import count_params, info_report, model_complexity
from shiftwise.cli import main
from shiftwise.layers import ShiftWiseConv2d, SLaKConv2d
from shiftwise.models import create_model, reparameterize


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch):
    # Only this tool's sub-command: the test does not depend on the other tools importing.
    monkeypatch.setattr(cli, "TOOL_MODULES", (cli.complexity,))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _within(value: float, reference: float, tolerance: float = 0.01) -> bool:
    return abs(value - reference) <= tolerance * reference


def _check_parts_add_up(report: dict) -> None:
    """Every column of the per-part rows sums to the ``total`` row (the parts cover the model)."""
    *parts, total = report["parts"]
    assert [row["part"] for row in parts] == ["stem", *(f"stages.{i}" for i in range(4)), "head"]
    for column, value in total.items():
        if column != "part":
            assert sum(row[column] for row in parts) == pytest.approx(value, rel=1e-12)


def _small_branch_macs(model: torch.nn.Module, img_size: tuple[int, int]) -> float:
    """MACs of the ``s x s`` branches of the SLaK operators: ``C s^2 H W`` at each stage's map."""
    macs = 0
    for i, stage in enumerate(model.stages):
        height, width = img_size[0] // 2 ** (i + 2), img_size[1] // 2 ** (i + 2)
        for op in stage.modules():
            if isinstance(op, SLaKConv2d):
                macs += op.channels * op.small_kernel**2 * height * width
    return macs


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
    # [C, k, nk*k] and a bias [C] over all channels (ghost channels as identity taps); blocks
    # fold their norms and layer scales too.
    op = ShiftWiseConv2d(80, 51).eval().inference_module()
    assert sum(p.numel() for p in op.parameters()) == 2 * 80 * 17 * 3 * 3 + 80
    _check_parts_add_up(sw_tiny_report)


def test_slak_tiny_counts_match_official(slak_tiny_report: dict) -> None:
    total = slak_tiny_report["parts"][-1]
    assert total["params"] == 50_703_838  # official SLaK-T, width 1.3, dense
    assert _within(total["params_at_density"], 30.47e6)  # non-zeros at density 0.6
    assert _within(total["macs"], 8.70e9)
    assert _within(total["macs_at_density"], 0.6 * 8.70e9)
    # Deploy: BNs folded, the 5x5 kernel added into the tall strip (strips form).
    model = create_model("slak_tiny")
    assert total["macs"] - total["deploy_macs"] == _small_branch_macs(model, (224, 224))
    _check_parts_add_up(slak_tiny_report)


def test_convnext_tiny_counts() -> None:
    total = model_complexity(create_model("convnext_tiny"))[-1]
    assert total.params == 28_589_128  # ConvNeXt-T
    assert _within(total.macs, 4.47e9)


def test_convnext_atto_counts_by_hand_per_part() -> None:
    """Per-part MACs of a plain ConvNeXt against the convolution/linear formulas."""
    model = create_model("convnext_atto", num_classes=10)
    dims, depths, size = (32, 64, 128, 256), (2, 2, 4, 2), 64  # ATTO_DIMS, ATTO_DEPTHS
    rows = {row.name: row for row in model_complexity(model, (size, size))}
    assert rows["stem"].macs == 3 * dims[0] * 4 * 4 * (size // 4) ** 2
    for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
        pixels = (size // 2 ** (i + 2)) ** 2
        block = dim * 7 * 7 + 2 * dim * 4 * dim  # depthwise 7x7, then the two MLP layers
        downsample = dims[i - 1] * dim * 2 * 2 if i else 0
        assert rows[f"stages.{i}"].macs == (downsample + depth * block) * pixels
    assert rows["head"].macs == dims[-1] * 10
    assert rows["total"].params == sum(p.numel() for p in model.parameters())
    table = [{"part": r.name, "params": r.params, "macs": r.macs} for r in rows.values()]
    _check_parts_add_up({"parts": table})


def test_slak_deploy_drops_exactly_the_small_branch() -> None:
    torch.manual_seed(0)
    report = info_report("slak_atto")
    total = report["parts"][-1]
    model = create_model("slak_atto").eval()
    assert total["params"] == sum(p.numel() for p in model.parameters())
    assert total["macs"] - total["deploy_macs"] == _small_branch_macs(model, (64, 64))
    deployed = reparameterize(model)
    assert total["deploy_params"] == sum(p.numel() for p in deployed.parameters())
    _check_parts_add_up(report)


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
    pieces, pruned_macs = 0, 0
    for i, stage in enumerate(model.stages):
        side = 64 // 2 ** (i + 2)  # the stage's map
        for module in stage.modules():
            if isinstance(module, ShiftWiseConv2d):
                with torch.no_grad():
                    for path in module.paths:
                        path.weight[::2] = 0  # group-sparse: whole pieces, shared by the paths
                pruned = module.paths[0].weight[::2].numel()  # pruned pieces x k x k
                pieces += pruned
                # The deployed small conv runs on the map padded by extra_pad on each side.
                pruned_macs += pruned * (side + 2 * module.geometry.extra_pad) ** 2
    sparse = model_complexity(model, (64, 64), nonzero=True)[-1]
    assert model_complexity(model, (64, 64))[-1].params - sparse.params == 2 * pieces
    deploy = model_complexity(reparameterize(model), (64, 64))[-1]
    assert dense_deploy.macs - deploy.macs == pruned_macs  # pruned pieces removed physically
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
    _check_parts_add_up(report)
    total = report["parts"][-1]
    assert total["params"] == sum(p.numel() for p in create_model("sw_atto").parameters())
    assert main(["info", "convnext_atto"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "deploy MACs" in table[1]
    # The table shows the report's figures, in M params and G MACs.
    report = info_report("convnext_atto")
    for line, row in zip(table[2:], report["parts"], strict=True):
        shown = [row[c] / (1e6 if "params" in c else 1e9) for c in row if c != "part"]
        assert line.split() == [row["part"], *(f"{value:.3f}" for value in shown)]


def test_info_counts_a_model_with_another_registered_operator(capsys) -> None:
    assert main(["info", "convnext_atto", "--operator", "slak", "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["parts"][-1]
    model = create_model("convnext_atto", operator="slak")
    assert total["params"] == sum(p.numel() for p in model.parameters())
    assert total["params"] != sum(p.numel() for p in create_model("convnext_atto").parameters())


BAD_ARGS = [
    (["info", "nope"], "MODEL: unknown model 'nope'"),
    (["info", "sw_atto", "--density", "1.5"], "--density: expected a value in (0, 1]"),
    (["info", "sw_atto", "--density", "0"], "--density: expected a value in (0, 1], got 0.0"),
    (["info", "sw_atto", "--img-size", "1", "2", "3"], "--img-size: expected H or H W"),
    (["info", "sw_atto", "--num-classes", "-3"], "--num-classes: expected an integer >= 0"),
    (["info", "sw_atto", "--width-factor", "1e-9"], "--width-factor: expected a value in ["),
    (["info", "sw_atto", "--width-factor", "200"], "--width-factor: expected a value in ["),
    (["info", "sw_atto", "--num-classes", str(10**10)], "GiB of memory available"),
    (["info", "sw_atto", "--width-factor", "1e300"], "--width-factor: expected a value in ["),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGS)
def test_info_cli_errors(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


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
