"""``shiftwise export``: ONNX export of the deploy form, checked in onnxruntime."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from shiftwise.cli import main
from shiftwise.ops.oriented_conv import depthwise_conv2d

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from shiftwise.deploy.export import (
    computed_conv_weights,
    export_onnx,
    input_shape,
    verify_onnx,
)


class UnevenStrip(nn.Module):
    """One depthwise 3x51 strip conv padded unevenly (10 left, 40 right), as a deployed SW
    operator's strip: its zero taps are added to the weight (a Pad on the weight in the graph).
    64 x 3 x 51 = 9792 weight elements, more than onnxscript folds by default (8192)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(64, 1, 3, 51, generator=_generator()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, padding=(1, 1, 10, 40))


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_weight_pad_is_folded_and_runs_at_two_batch_sizes(tmp_path):
    """The root cause of the 224 px failure, at a small size: a Pad on a conv weight left in
    the graph is fused by onnxruntime's PadFusion into the conv's input, leaving the weight
    dangling. The export folds it, and one file serves batch 1 and 4."""
    model = UnevenStrip().eval()
    path = export_onnx(model, tmp_path / "strip.onnx", torch.randn(1, 64, 48, 48))
    assert computed_conv_weights(path) == []
    assert input_shape(path) == ["batch", 64, 48, 48]
    error, _, _ = verify_onnx(model, path, torch.randn(2, 64, 48, 48), repeats=1)
    assert error <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "size"), [("sw_atto", 96), ("slak_atto", 80), ("convnext_atto", 72)]
)
def test_atto_models_export_at_other_sizes(model, size, tmp_path, capsys):
    """Sizes where some kernels are cropped and some padded unevenly; batch 1 and 4 checked."""
    out = tmp_path / f"{model}.onnx"
    args = ["export", model, "-o", str(out), "--img-size", str(size), "--repeats", "1", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["input_shape"] == ["batch", 3, size, size]
    assert report["max_abs_error"] <= 1e-4
    assert computed_conv_weights(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sw_tiny", "slak_tiny"])
def test_export_at_224_matches_pytorch_in_onnxruntime(model, tmp_path, capsys):
    """The papers' resolution (where onnxruntime used to reject the SW graph), checked at
    batch 1 and 4 from one file (tracing time does not depend on the input size)."""
    out = tmp_path / f"{model}.onnx"
    code = main(["export", model, "-o", str(out), "--img-size", "224", "--repeats", "1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["input_shape"] == ["batch", 3, 224, 224]
    assert report["checked_batch_sizes"] == [1, 4]
    assert report["max_abs_error"] <= 1e-4
    assert "Conv" in report["op_types"] and "Pad" not in report["op_types"]
    assert computed_conv_weights(out) == []
    assert report["torch_ms"] > 0 and report["onnxruntime_ms"] > 0


@pytest.mark.slow
def test_checkpoint_round_trip_and_errors(tmp_path, capsys):
    """Weights from a checkpoint are the ones exported; bad arguments give exit code 2."""
    from shiftwise.io import save_weights
    from shiftwise.models import create_model

    torch.manual_seed(0)
    model = create_model("sw_atto", num_classes=5)
    weights = tmp_path / "w.safetensors"
    save_weights(model.state_dict(), weights, model="sw_atto", model_kwargs={"num_classes": 5})
    out = tmp_path / "atto.onnx"
    args = ["export", "sw_atto", "--checkpoint", str(weights), "-o", str(out), "--img-size", "32"]
    assert main([*args, "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["max_abs_error"] <= 1e-4

    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 32, 32)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, model.eval()(x), atol=1e-4, rtol=0)

    assert main(["export", "slak_atto", "--checkpoint", str(weights), "-o", str(out)]) == 2
    assert main(["export", "sw_atto", "-o", str(tmp_path / "x.txt")]) == 2
    assert main(["export", "sw_atto", "--checkpoint", str(tmp_path / "none"), "-o", str(out)]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failed_check_leaves_the_existing_onnx_byte_identical(tmp_path, capsys, monkeypatch):
    from shiftwise.deploy import export as export_module

    out = tmp_path / "good.onnx"
    out.write_bytes(b"a good model")
    monkeypatch.setattr(export_module, "verify_onnx", lambda *a, **k: (1.0, 0.0, 0.0))
    argv = ["export", "convnext_atto", "-o", str(out), "--img-size", "32", "--repeats", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--atol: onnxruntime output differs" in err and "existing file is unchanged" in err
    assert out.read_bytes() == b"a good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.onnx"]  # no temporary left


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--img-size", "1", "--img-size: expected an integer in [32, 4096]"),
        ("--img-size", "100000", "--img-size: expected an integer in [32, 4096]"),
        ("--opset", "1", "--opset: expected an integer in [18, "),
    ],
)
def test_bad_sizes_and_opsets_are_one_line(option, value, message, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main(["export", "convnext_atto", "-o", str(out), option, value]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--in-chans", "0"], "--in-chans: expected an integer >= 1, got 0"),
        (["--num-classes", "-1"], "--num-classes: expected an integer >= 0, got -1"),
        (["--atol", "nan"], "--atol: expected a finite number >= 0, got nan"),
        (["--atol", "-1"], "--atol: expected a finite number >= 0, got -1.0"),
        (["--repeats", "0"], "--repeats: expected an integer in [1, 1000], got 0"),
        (["--num-classes", str(10**10)], "--num-classes: exporting convnext_atto (3 input"),
        (["--in-chans", str(10**9)], "--in-chans: exporting convnext_atto (1000000000 input"),
        (["--batch-size", str(10**9), "--img-size", "64"], "--batch-size: exporting convnext"),
    ],
)
def test_bad_options_are_refused_before_the_work(argv, message, tmp_path, capsys, monkeypatch):
    from shiftwise.tools import export as export_tool

    def no_work(*args, **kwargs):
        raise AssertionError("the model was built before the options were checked")

    monkeypatch.setattr(export_tool, "build_model", no_work)
    out = tmp_path / "x.onnx"
    assert main(["export", "convnext_atto", "-o", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def _one_channel_weights(path):
    from shiftwise.io import save_weights
    from shiftwise.models import create_model

    model = create_model("convnext_atto", in_chans=1, num_classes=3)
    kwargs = {"in_chans": 1, "num_classes": 3}
    save_weights(model.state_dict(), path, model="convnext_atto", model_kwargs=kwargs)
    return path


def test_in_chans_that_disagrees_with_the_checkpoint_is_refused(tmp_path, capsys):
    weights = _one_channel_weights(tmp_path / "w.safetensors")
    argv = ["export", "convnext_atto", "--checkpoint", str(weights), "--in-chans", "3"]
    assert main([*argv, "-o", str(tmp_path / "x.onnx"), "--img-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "--in-chans: " in err and "records a model with 1 input channels, got 3" in err
    assert err.count("\n") == 1 and not (tmp_path / "x.onnx").exists()


def test_an_output_that_is_the_checkpoint_is_refused(tmp_path, capsys):
    weights = _one_channel_weights(tmp_path / "w.onnx")
    before = weights.read_bytes()
    (tmp_path / "link.onnx").symlink_to(weights)
    for out in (weights, tmp_path / "link.onnx"):
        argv = ["export", "convnext_atto", "--checkpoint", str(weights), "-o", str(out)]
        assert main([*argv, "--img-size", "32", "--repeats", "1"]) == 2
        err = capsys.readouterr().err
        assert f"--output: {str(out)!r} is the input" in err and err.count("\n") == 1
    assert weights.read_bytes() == before
