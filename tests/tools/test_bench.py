"""Benchmark utilities: interleaving, statistics, memory, and ``bench --quick`` output."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from shiftwise.tools.bench import SUITES
from shiftwise.tools.benchmarking.operators import BASELINE, MODES, OPERATORS, operator_call
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
    assert isinstance(module.tall.bn, torch.nn.BatchNorm2d)  # still the training form
    with pytest.raises(ValueError, match="mode"):
        operator_call(module, x, "sideways")


def _check_stats(stats: dict, repeats: int) -> None:
    """A recorded ``Stats`` dict is the summary of its own ``times_s``."""
    times = stats["times_s"]
    assert len(times) == repeats and all(t > 0 for t in times)
    assert stats["median_s"] == statistics.median(times)
    assert min(times) <= stats["q1_s"] <= stats["median_s"] <= stats["q3_s"] <= max(times)


def _check_ratio(ratio: dict, numerator: dict, denominator: dict) -> None:
    """A recorded ratio is the median (and quartiles) of the per-repeat time ratios."""
    paired = [a / b for a, b in zip(numerator["times_s"], denominator["times_s"], strict=True)]
    assert ratio["median"] == pytest.approx(statistics.median(paired), rel=1e-12)
    assert ratio["q1"] <= ratio["median"] <= ratio["q3"]
    if len(paired) == 1:  # one repeat: the ratio of the recorded medians
        assert ratio["median"] == pytest.approx(numerator["median_s"] / denominator["median_s"])


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.load()  # decodes the whole image
        return image.size


def test_bench_quick_json_is_consistent_and_pngs_decode(tmp_path, capsys) -> None:
    from shiftwise.cli import main
    from shiftwise.models import create_model

    code = main(["bench", "all", "--quick", "--repeats", "1", "--warmup", "0", "--out",
                 str(tmp_path)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    payloads = {s: json.loads((tmp_path / f"{s}.json").read_text()) for s in SUITES}
    for suite, payload in payloads.items():
        assert payload["suite"] == suite and payload["quick"] is True
        assert (payload["repeats"], payload["warmup"]) == (1, 0)
        environment = payload["environment"]
        assert {"commit", "torch", "device", "torch_threads"} <= set(environment)
        assert environment["device"] == "cpu" and environment["torch"] == torch.__version__

    ops = payloads["ops"]["result"]
    (stage,) = ops["stages"]
    assert (stage["channels"], stage["size"], stage["kernel_size"]) == (8, 8, 13)
    assert set(stage["modes"]) == set(MODES)
    for mode, entry in stage["modes"].items():
        times = entry["operators"]
        assert set(times) == set(OPERATORS)
        for name, stats in times.items():
            _check_stats(stats, 1)
            _check_ratio(entry["ratio_to_baseline"][name], stats, times[BASELINE])
        _check_ratio(entry["sw_over_slak"], times["shiftwise"], times["slak"])
        line = next(line for line in printed.splitlines() if f"K=13 {mode}: " in line)
        assert f"SW/SLaK {entry['sw_over_slak']['median']:.2f}x" in line
    assert _png_size(tmp_path / "ops.png") == (5 * len(MODES) * 110, 4 * 110)

    sweep = payloads["sweep"]["result"]
    assert [point["kernel_size"] for point in sweep["points"]] == [7, 13]
    first, last = sweep["points"][0]["modes"], sweep["points"][-1]["modes"]
    assert set(sweep["growth"]) == {"fwd", "fwd_bwd"}
    for mode, growth in sweep["growth"].items():
        assert set(growth) == {"shiftwise", "slak", "dense", "dw7"}
        for name, value in growth.items():
            end, start = last[mode]["operators"][name], first[mode]["operators"][name]
            assert value == pytest.approx(end["median_s"] / start["median_s"])
    assert _png_size(tmp_path / "sweep.png") == (5 * 2 * 110, 4 * 110)

    roofline = payloads["roofline"]["result"]
    (stage,) = roofline["stages"]
    for name in ("shift_add", "reference", "copy"):
        _check_stats(stage[name], 1)
    seconds = stage["shift_add"]["median_s"]
    assert stage["ideal_gbps"] == pytest.approx(stage["ideal_bytes"] / seconds / 1e9)
    copy_gbps = roofline["copy_bytes"] / stage["copy"]["median_s"] / 1e9
    assert stage["copy_gbps"] == pytest.approx(copy_gbps)
    assert roofline["copy_gbps_median"] == stage["copy_gbps"]  # the only stage
    assert stage["fraction_of_copy"] == pytest.approx(stage["ideal_gbps"] / copy_gbps)
    _check_ratio(stage["speedup_over_reference"], stage["reference"], stage["shift_add"])
    assert stage["reference_bytes"] >= stage["ideal_bytes"]  # padding only adds traffic
    assert _png_size(tmp_path / "roofline.png") == (7 * 110, 4 * 110)

    models = payloads["models"]["result"]
    names = ("sw_atto", "slak_atto", "convnext_atto")
    for name in names:
        model = create_model(name, kernel_sizes=(7, 7, 7, 7))
        assert models["parameters"][name] == sum(p.numel() for p in model.parameters())
    assert set(models["modes"]) == {"train", "deploy"}
    for entries in models["modes"].values():
        assert set(entries) == set(names)
        baseline = entries[models["baseline"]]["step"]
        assert entries[models["baseline"]]["throughput_ratio_to_baseline"]["median"] == 1.0
        for entry in entries.values():
            _check_stats(entry["step"], 1)
            speed = entry["images_per_s"]
            assert speed["median"] == pytest.approx(models["batch"] / entry["step"]["median_s"])
            assert speed["q1"] <= speed["median"] <= speed["q3"]
            _check_ratio(entry["throughput_ratio_to_baseline"], baseline, entry["step"])
    assert _png_size(tmp_path / "models.png") == (10 * 110, 4 * 110)


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
