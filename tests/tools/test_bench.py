"""Benchmark utilities: interleaving, statistics, memory, and ``bench --quick`` output."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from shiftwise.analysis.timing import (
    Stats,
    measure_interleaved,
    paired_ratio,
    peak_memory,
)
from shiftwise.benchmarking.operators import BASELINE, MODES, OPERATORS, operator_call
from shiftwise.benchmarking.roofline import shift_add_bytes
from shiftwise.benchmarking.suites import SUITES

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


# --- benchmarks/bench_targets.py and its helpers (benchmarks/machine_load.py, targets_report.py)


@pytest.fixture(scope="module")
def targets():
    """The ``bench_targets`` script and its sibling modules, imported from ``benchmarks/``."""
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    folder = str(Path(__file__).parents[2] / "benchmarks")
    sys.path.insert(0, folder)
    try:
        import bench_targets
        import machine_load
        import targets_report
    finally:
        sys.path.remove(folder)
    return SimpleNamespace(script=bench_targets, load=machine_load, report=targets_report)


def test_pairwise_ratios_are_throughput_ratios_of_paired_rounds(targets):
    stats = {
        "eager:sw": Stats((2.0, 4.0, 2.0)),
        "eager:convnext": Stats((1.0, 1.0, 1.5)),
        "onnxruntime:sw": Stats((1.0, 1.0, 4.0)),
    }
    ratios = targets.report.pairwise_ratios(stats)
    assert set(ratios) == {"eager:sw/convnext", "eager:convnext/sw", "sw:onnxruntime/eager"}
    # throughput of sw over convnext = time of convnext / time of sw, per round: .5 .25 .75
    assert ratios["eager:sw/convnext"] == {"median": 0.5, "q1": 0.25, "q3": 0.75}
    assert ratios["eager:convnext/sw"]["median"] == 2.0
    assert ratios["sw:onnxruntime/eager"] == {"median": 2.0, "q1": 0.5, "q3": 4.0}


def test_targets_are_those_of_the_issue(targets):
    """The targets table of issue 17, figure by figure."""
    figures = {(f.row, f.ratio): f for f in targets.report.FIGURES}
    assert len(figures) == len(targets.report.FIGURES)  # no figure twice
    assert {f.row for f in figures.values()} == set(targets.script.ROWS)
    expected = {}
    for batch in (1, 8):
        for runtime, target in (("eager", 0.90), ("compile", 0.90), ("onnxruntime", 0.85)):
            expected[f"deploy_b{batch}", f"{runtime}:sw/convnext"] = target
            expected[f"deploy_b{batch}", f"{runtime}:sw/slak"] = 1.5
    for size in (224, 128):
        expected[f"train_{size}", "eager:sw/convnext"] = 0.65
    expected["train_128", "compile:sw/convnext"] = 0.75
    expected["train_224_compile", "compile:sw/convnext"] = 0.75
    for row in ("train_atto_demo", "train_atto_fmnist"):
        expected[row, "eager:sw/convnext"] = 0.60
    expected["train_memory", "memory:sw/convnext"] = 1.25
    with_target = {key: f.target for key, f in figures.items() if f.target is not None}
    assert with_target == expected
    assert [f.higher_is_better for f in figures.values()].count(False) == 1
    assert figures["train_memory", "memory:sw/convnext"].met(1.25)
    assert not figures["train_memory", "memory:sw/convnext"].met(1.26)
    assert figures["deploy_b1", "eager:sw/convnext"].met(0.90)
    assert not figures["deploy_b1", "eager:sw/convnext"].met(0.89)


def _run_payload(commit: str, ratios: dict, load: list, other: float | None) -> dict:
    rows = {}
    for (row, name), value in ratios.items():
        rows.setdefault(row, {"load_average_before": load, "load_average_after": [2.0, 1, 1]})
        rows[row]["other_cpu_load"] = other
        rows[row].setdefault("ratios", {})[name] = value
    return {
        "environment": {"commit": commit, "dirty": False, "shiftwise_file": f"/{commit}/x.py",
                        "torch": "2.13.0", "threads": 2, "date": "d", "load_average": load},
        "settings": {"quick": False},
        "rows": rows,
    }  # fmt: skip


def test_compare_table_renders_both_runs_targets_and_loads(targets):
    before = _run_payload(
        "ea92dc5aaaa",
        {  # rows out of the table's order
            ("train_memory", "memory:sw/convnext"): {"median": 1.43},
            ("deploy_b1", "eager:sw/convnext"): {"median": 0.75, "q1": 0.7, "q3": 0.8},
        },
        [0.12, 0.2, 0.3],
        0.05,
    )
    after = _run_payload(
        "fffffffbbbb",
        {
            ("deploy_b1", "eager:sw/convnext"): {"median": 0.93, "q1": 0.9, "q3": 0.951},
            ("deploy_b1", "eager:sw/convnextv2"): {"median": 1.2, "q1": 1.1, "q3": 1.3},
            ("train_memory", "memory:sw/convnext"): {"median": 1.3},
        },
        [0.25, 0.2, 0.3],
        None,
    )
    before["warnings"] = ["deploy_b1: other processes kept ...", "train_memory: ..."]
    table = targets.report.render_table([("before", before), ("after", after)])
    lines = table.splitlines()
    assert "| figure | before | after | target | met? |" in lines
    assert (
        "| deploy 224 px, batch 1, eager: SW-T / ConvNeXt-T | 0.75 [0.70, 0.80] "
        "| 0.93 [0.90, 0.95] | ≥ 0.90 | yes |"
    ) in lines
    assert (
        "| deploy 224 px, batch 1, eager: SW-T / ConvNeXt V2-T | — | 1.20 [1.10, 1.30] | — | — |"
        in lines
    )
    assert (
        "| peak training memory 224 px, batch 8, no checkpointing: SW-T / ConvNeXt-T "
        "| 1.43 | 1.30 | ≤ 1.25 | **no** |"
    ) in lines
    # figures neither run measured are left out
    assert not any("SLaK-T" in line or "training step" in line for line in lines)
    assert any(
        line.startswith("- **before**: shiftwise ea92dc5 from `/ea92dc5aaaa/x.py`")
        and "load average at the start 0.12 / 0.20 / 0.30" in line
        for line in lines
    )
    assert lines[0].endswith(", **2 load warnings**") and "warnings" not in lines[1]
    load_rows = lines[lines.index("| row | before | after |") + 2 :]
    assert load_rows == [  # in the order of the targets table
        "| deploy_b1 | 0.12 → 2.00, other 0.05 | 0.25 → 2.00, other — |",
        "| train_memory | 0.12 → 2.00, other 0.05 | 0.25 → 2.00, other — |",
    ]


def test_compare_command_prints_and_writes_the_table(targets, tmp_path, capsys):
    ratio = {("train_128", "eager:sw/convnext"): {"median": 0.5, "q1": 0.4, "q3": 0.6}}
    paths = []
    for name in ("before", "after"):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(_run_payload(name, ratio, [0.1, 0.1, 0.1], 0.0)))
    targets.script.main(["--compare", *map(str, paths), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "out" / "targets_compare.md").read_text()
    assert (
        "| training step 128 px, batch 8, eager: SW-T / ConvNeXt-T | 0.50 [0.40, 0.60] " in printed
    )
    assert _png_size(tmp_path / "out" / "targets_compare.png")[0] > 0


def test_other_cpu_load_is_busy_time_less_our_own(targets):
    sample = targets.load.CpuSample
    start, end = sample(10.0, 1000, 400), sample(12.0, 1500, 800)
    # machine busy 500 ticks, ours 400: 100 ticks = 1 s of other work over 2 s
    assert targets.load.other_cpu_load(start, end, ticks_per_second=100) == 0.5
    assert targets.load.other_cpu_load(start, sample(12.0, 1300, 800), 100) == 0.0  # clamped
    assert targets.load.other_cpu_load(None, end) is None
    assert targets.load.other_cpu_load(end, end) is None


def test_cpu_sample_counts_this_process_cpu_time(targets):
    import os
    import time

    first = targets.load.cpu_sample()
    if first is None:
        pytest.skip("no /proc")
    begin = time.process_time()
    while time.process_time() - begin < 0.3:
        pass
    second = targets.load.cpu_sample()
    ticks = (time.process_time() - begin) * os.sysconf("SC_CLK_TCK")
    assert abs((second.own_ticks - first.own_ticks) - ticks) <= 3
    assert second.machine_busy_ticks - first.machine_busy_ticks >= ticks - 3


def test_load_warnings(targets):
    warnings = targets.load.load_warnings
    assert warnings("deploy_b1", {"other_cpu_load": 0.5, "load_average_before": [3, 3, 3]}) == []
    (text,) = warnings("deploy_b1", {"other_cpu_load": 0.8})
    assert text.startswith("deploy_b1: other processes kept 0.80 cores busy")
    # without the CPU counters: the load average before the row
    (text,) = warnings("train_128", {"other_cpu_load": None, "load_average_before": [0.6, 0, 0]})
    assert "1-minute load average 0.60 before the row" in text
    assert warnings("train_128", {"load_average_before": [0.4, 2, 2]}) == []
    assert targets.load.start_warnings([0.4, 1, 1]) == []
    assert targets.load.start_warnings(None) == []
    (text,) = targets.load.start_warnings([0.7, 0.5, 0.2])
    assert text.startswith("load average 0.70 / 0.50 / 0.20 at the start")


def test_settings_full_quick_and_explicit(targets):
    full = targets.script.settings(targets.script.parse_args([]))
    assert full["rows"] == [row for row in targets.script.ROWS if row != "train_224_compile"]
    assert full["runtimes"] == ["eager", "compile", "onnxruntime"]
    assert full["repeats"] == targets.script.REPEATS
    quick = targets.script.settings(targets.script.parse_args(["--quick", "--rows", "train_128"]))
    assert quick["runtimes"] == ["eager", "onnxruntime"] and quick["rows"] == ["train_128"]
    assert set(quick["repeats"].values()) == {3}
    chosen = targets.script.parse_args(["--quick", "--runtimes", "compile", "--repeats", "4"])
    assert targets.script.settings(chosen)["runtimes"] == ["compile"]
    assert set(targets.script.settings(chosen)["repeats"].values()) == {4}
    with pytest.raises(SystemExit):
        targets.script.parse_args(["--repeats", "0"])


def test_atto_rows_use_the_trainers_shapes(targets):
    """The atto rows stand for ``shiftwise demo`` / Fashion-MNIST training: same shapes."""
    from shiftwise.data.bundled import BundledConfig
    from shiftwise.training.config import default_recipe

    recipe = default_recipe("sw_atto")
    demo, fmnist = (targets.script.ATTO_SHAPES[r] for r in ("train_atto_demo", "train_atto_fmnist"))
    assert (demo.image_size, demo.in_chans) == (
        BundledConfig().image_size,
        BundledConfig().channels,
    )
    assert (fmnist.image_size, fmnist.in_chans, fmnist.num_classes) == (32, 1, 10)
    for shape in (demo, fmnist):
        assert shape.batch == recipe.optim.batch_size
        assert shape.label_smoothing == recipe.augment.smoothing
        assert not shape.channels_last  # the trainer feeds NCHW
    # 1 input channel, no drop path
    assert recipe.model.drop_path == 0.0 and recipe.augment.randaug_n == 0


def test_training_and_inference_calls_on_a_tiny_model(targets):
    shape = targets.script.Shape(2, 8, in_chans=1, num_classes=3, label_smoothing=0.1)
    assert shape.images().is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(shape.images(), shape.images())  # seeded
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )
    before = [p.detach().clone() for p in model.parameters()]
    targets.script.training_call(model, shape)()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    out = targets.script.inference_call(model, shape.images())()
    assert out.shape == (2, 3) and not out.requires_grad


def test_training_call_goes_through_the_given_forward(targets):
    """The compiled form is called, and used as given (``OptimizedModule`` has no ``bool``)."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))

    class Forward:  # stands for torch.compile(model)
        calls = 0

        def __call__(self, x):
            Forward.calls += 1
            return model(x)

        def __len__(self):
            raise TypeError("no len()")

    shape = targets.script.Shape(2, 2, in_chans=1, num_classes=3, channels_last=False)
    targets.script.training_call(model, shape, Forward())()
    assert Forward.calls == 1


def test_time_row_leaves_out_a_failing_variant_and_records_the_load(targets):
    calls = []

    def broken():
        raise RuntimeError("no kernel\nsecond line")

    builders = {
        "eager:sw": lambda: lambda: calls.append("sw"),
        "eager:convnext": lambda: lambda: calls.append("convnext"),
        "compile:sw": broken,
    }
    record = targets.script.time_row(builders, targets.script.Shape(4, 8), repeats=3)
    assert record["errors"] == {"compile:sw": "RuntimeError: no kernel\nsecond line"}
    assert calls.count("sw") == calls.count("convnext") == targets.script.WARMUP_CALLS + 3
    assert set(record["step"]) == {"eager:sw", "eager:convnext"}
    assert set(record["ratios"]) == {"eager:sw/convnext", "eager:convnext/sw"}
    assert record["images_per_s"]["eager:sw"] == 4 / record["step"]["eager:sw"]["median_s"]
    assert record["shape"]["batch"] == 4 and record["repeats"] == 3
    assert "other_cpu_load" in record
    # nothing left to time: an empty row, not a crash
    empty = targets.script.time_row({"compile:sw": broken}, targets.script.Shape(4, 8), 3)
    assert empty["step"] == {} and empty["ratios"] == {} and set(empty["errors"]) == {"compile:sw"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["models", "--batch", str(10**6)], "--batch: the models suite at batch 1000000 would"),
        (["ops", "--batch", str(10**9)], "--batch: the ops suite at batch 1000000000 would"),
        (["sweep", "--batch", str(10**9)], "--batch: the sweep suite at batch 1000000000 would"),
        (["models", "--image-size", "100000"], "--image-size: expected an integer in [32, 4096]"),
        (["ops", "--repeats", str(10**9)], "--repeats: expected an integer <= 1000"),
        (["ops", "--warmup", str(10**9)], "--warmup: expected an integer <= 100"),
        (["ops", "--threads", str(10**6)], "--threads: expected at most the"),
    ],
)
def test_huge_sizes_are_refused_before_the_work(argv, message, tmp_path, capsys, monkeypatch):
    from shiftwise.cli import main
    from shiftwise.tools import bench as bench_tool

    def no_work(*args, **kwargs):
        raise AssertionError("a suite started before the sizes were checked")

    monkeypatch.setattr(bench_tool, "run_suite", no_work)
    assert main(["bench", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_memory_estimate_grows_with_batch_and_size():
    from shiftwise.benchmarking.suites import memory_estimate

    cpu = torch.device("cpu")
    for suite in SUITES:
        assert memory_estimate(suite, cpu, 2) > memory_estimate(suite, cpu, 1) > 0
    assert memory_estimate("models", cpu, 1, 256) > memory_estimate("models", cpu, 1, 128)
    # the quick shapes are what the tests run: tiny
    assert max(memory_estimate(s, cpu, 2, None, quick=True) for s in SUITES) < 2**28
