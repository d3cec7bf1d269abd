"""Benchmark utilities: interleaving, statistics, memory, and ``bench --quick`` output."""

from __future__ import annotations

import json

import pytest
import torch

from shiftwise.tools.benchmarking.operators import operator_call
from shiftwise.tools.benchmarking.roofline import shift_add_bytes
from shiftwise.tools.benchmarking.timing import (
    Stats,
    measure_interleaved,
    paired_ratio,
    peak_memory,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_stats_median_quartiles_spread():
    stats = Stats((1.0, 2.0, 3.0, 4.0, 100.0))
    assert stats.median == 3.0
    assert stats.quartiles == (2.0, 4.0)
    assert stats.spread == pytest.approx(2.0 / 3.0)
    assert Stats((2.0, 4.0)).quartiles == (2.0, 4.0)


def test_measure_interleaved_rotates_order_and_counts_calls():
    calls: list[str] = []
    variants = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    stats = measure_interleaved(variants, torch.device("cpu"), repeats=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(s.times) == 3 for s in stats.values())
    with pytest.raises(ValueError, match="repeats"):
        measure_interleaved(variants, torch.device("cpu"), repeats=0)


def test_paired_ratio_is_median_of_per_repeat_ratios():
    ratio = paired_ratio(Stats((2.0, 4.0, 9.0)), Stats((1.0, 1.0, 3.0)))
    assert ratio["median"] == 3.0 and ratio["q1"] == 2.0 and ratio["q3"] == 4.0


def test_peak_memory_sees_a_large_allocation():
    peak = peak_memory(lambda: torch.ones(8 * 2**20).sum(), torch.device("cpu"))
    if peak is not None:  # None off Linux
        assert peak >= 0.9 * 32 * 2**20


def test_shift_add_byte_model():
    y = torch.zeros(1, 6, 10, 10)
    offsets = torch.tensor([[0, 0], [0, 3]])
    counts = shift_add_bytes(y, offsets, (1, 2, 8, 8))
    assert counts["ideal_bytes"] == 4 * (600 + 128)
    # padding: columns need 3 + 8 - 10 = 1 extra, rows none -> 6 x 10 x 11 padded
    assert counts["reference_bytes"] == 4 * (2 * 660 + 2 * 5 * 128)


def test_operator_call_modes_run_and_deploy_leaves_module_untouched():
    from shiftwise.layers import SLaKConv2d

    module = SLaKConv2d(4, 7)
    x = torch.randn(1, 4, 9, 9)
    for mode in ("fwd", "fwd_bwd", "deploy"):
        operator_call(module, x, mode)()
    assert not module.deployed
    with pytest.raises(ValueError, match="mode"):
        operator_call(module, x, "sideways")


def test_bench_quick_writes_valid_json_and_png(tmp_path):
    from shiftwise.cli import main

    code = main(["bench", "all", "--quick", "--repeats", "1", "--warmup", "0", "--out",
                 str(tmp_path)])  # fmt: skip
    assert code == 0
    for suite in ("ops", "sweep", "roofline", "models"):
        payload = json.loads((tmp_path / f"{suite}.json").read_text())
        assert payload["suite"] == suite and payload["quick"] is True
        assert "commit" in payload["environment"]
        assert (tmp_path / f"{suite}.png").read_bytes()[:8] == PNG_MAGIC
    ops = json.loads((tmp_path / "ops.json").read_text())["result"]
    fwd_bwd = ops["stages"][0]["modes"]["fwd_bwd"]
    assert set(fwd_bwd["operators"]) == {"shiftwise", "slak", "dense", "dw7"}
    assert fwd_bwd["sw_over_slak"]["median"] > 0
    sweep = json.loads((tmp_path / "sweep.json").read_text())["result"]
    assert set(sweep["growth"]["fwd_bwd"]) == {"shiftwise", "slak", "dense", "dw7"}
    roofline = json.loads((tmp_path / "roofline.json").read_text())["result"]
    stage = roofline["stages"][0]
    assert roofline["copy_gbps_median"] > 0 and stage["ideal_gbps"] > 0
    assert stage["speedup_over_reference"]["median"] > 0
    models = json.loads((tmp_path / "models.json").read_text())["result"]
    assert models["modes"]["deploy"]["convnext_atto"]["images_per_s"]["median"] > 0


def test_bench_rejects_missing_cuda_and_bad_repeats(tmp_path, capsys):
    from shiftwise.cli import main

    if not torch.cuda.is_available():
        assert main(["bench", "ops", "--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "--device" in capsys.readouterr().err
    assert main(["bench", "ops", "--repeats", "0", "--out", str(tmp_path)]) == 2
    assert "--repeats" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_models_onnxruntime_beside_torch(tmp_path):
    """``--runtime torch onnxruntime``: the exported deploy forms timed in onnxruntime,
    interleaved with PyTorch's, each with its ratio to PyTorch; JSON and PNG written."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from shiftwise.cli import main

    args = ["bench", "models", "--quick", "--repeats", "1", "--warmup", "0", "--threads", "1"]
    assert main([*args, "--runtime", "torch", "onnxruntime", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "models.json").read_text())["result"]
    assert result["runtimes"] == ["torch", "onnxruntime"] and result["threads"] == 1
    assert set(result["modes"]) == {"train", "deploy", "deploy_onnxruntime"}
    ort = result["modes"]["deploy_onnxruntime"]
    assert set(ort) == {"sw_atto", "slak_atto", "convnext_atto"}
    assert all(entry["throughput_ratio_to_torch"]["median"] > 0 for entry in ort.values())
    assert (tmp_path / "models.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is the no-GPU path")
def test_gpu_check_dry_run_without_gpu_says_so_and_exits_0():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "benchmarks" / "gpu_check.sh"
    result = subprocess.run(
        ["bash", str(script)],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "no CUDA GPU detected" in result.stdout
    assert "nothing was measured" in result.stdout
