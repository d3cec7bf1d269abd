"""``shiftwise export``: ONNX export of the deploy form, checked in onnxruntime."""

from __future__ import annotations

import json

import pytest

from shiftwise.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sw_tiny", "slak_tiny"])
def test_export_matches_pytorch_in_onnxruntime(model, tmp_path, capsys):
    """64x64 input (not 224) keeps the test fast on 2 cores: tracing time does not depend on
    the size, and every stage, kernel and operator of the model is exported all the same."""
    out = tmp_path / f"{model}.onnx"
    code = main(["export", model, "-o", str(out), "--img-size", "64", "--repeats", "1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out.is_file()
    assert report["max_abs_error"] <= 1e-4
    assert "Conv" in report["op_types"]
    assert report["torch_ms"] > 0 and report["onnxruntime_ms"] > 0


@pytest.mark.slow
def test_checkpoint_round_trip_and_errors(tmp_path, capsys):
    """Weights from a checkpoint are the ones exported; bad arguments give exit code 2."""
    import torch

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
