"""Deploy throughput on CPU: SW-T against SLaK-T, each re-parameterised, side by side.

Variants (eval mode, no grad, ``shiftwise.reparameterize`` applied, float32, 224x224; both
networks' deployed blocks fold their layer scales and norms into the MLP GEMMs and keep the
residual stream channels-last; every model and input is converted to channels-last, as
timm's ``--channels-last``, so that oneDNN need not reorder the dense conv weights per call):

- ``sw_tiny``: deploy form, ``auto`` strategy (strips);
- ``sw_tiny fused``: deploy form with the small convs + fused shift-add (the official form);
- ``slak_tiny``: deploy form ``auto`` (BN-folded strips ``M x 5`` + ``5 x M``, channels-last);
- ``slak_tiny dense``: every SLaK operator merged into one dense ``M x M`` conv (what the
  official code's merge does; its A100 ``slak_general`` figures are for this form).

Timed interleaved (``measure_interleaved``), median of ``--repeats``, one intra-op thread by
default (stable on the shared machine). Reports images/s and the ratio SW-T / SLaK-T as the
median of the per-repeat (paired) ratios, with quartiles (the official A100 ratio, SW-T
378 img/s against SLaK-T merged with cutlass 638, is 0.59).
Writes ``benchmarks/results/deploy.json`` and ``.png``.
Every ``--batches`` size is measured in turn (all models interleaved within it).
Run: ``python benchmarks/bench_deploy.py [--batches 1 2 4] [--img-size 224] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import nn

from shiftwise.analysis.timing import measure_interleaved, paired_ratio
from shiftwise.benchmarking.environment import describe_environment, write_json
from shiftwise.models import create_model, reparameterize

RESULTS = Path(__file__).parent / "results"


def deployed(name: str, form: str = "auto") -> nn.Module:
    """Registered model ``name`` deployed with ``form`` (:data:`shiftwise.layers.DEPLOY_FORMS`)."""
    torch.manual_seed(0)
    model = reparameterize(create_model(name).eval(), form)
    return model.to(memory_format=torch.channels_last)


def inference(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.no_grad():
            return model(x)

    return call


def measure_batch(models: dict[str, nn.Module], batch: int, args: argparse.Namespace) -> dict:
    """Throughput of every model at one batch size and SW-T's paired ratios to the SLaK forms."""
    x = torch.randn(batch, 3, args.img_size, args.img_size)
    x = x.contiguous(memory_format=torch.channels_last)
    stats = measure_interleaved(
        {name: inference(model, x) for name, model in models.items()},
        torch.device("cpu"),
        repeats=args.repeats,
    )
    throughput = {name: batch / s.median for name, s in stats.items()}
    ratios = {
        baseline: paired_ratio(stats[baseline], stats["sw_tiny"])
        for baseline in ("slak_tiny", "slak_tiny dense")
        if baseline in stats
    }
    print(f"batch {batch}:")
    for name, value in throughput.items():
        print(f"  {name:18s} {value:8.2f} img/s  ({stats[name].median * 1e3:8.1f} ms/batch)")
    for baseline, paired in ratios.items():
        print(
            f"  SW-T / {baseline}: {paired['median']:.2f}x (paired repeats, quartiles "
            f"{paired['q1']:.2f}-{paired['q3']:.2f}; ratio of medians "
            f"{throughput['sw_tiny'] / throughput[baseline]:.2f}x)"
        )
    return {
        "images_per_s": throughput,
        "median_s": {name: s.median for name, s in stats.items()},
        "spread": {name: s.spread for name, s in stats.items()},
        "sw_over": ratios,
    }


def plot(results: dict[int, dict], path: Path) -> None:
    """Images/s against batch size, one line per model."""
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    batches = sorted(results)
    for name in results[batches[0]]["images_per_s"]:
        ax.plot(batches, [results[b]["images_per_s"][name] for b in batches], "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (CPU, deploy form)")
    ax.set_title(f"{torch.get_num_threads()} thread(s), 224 px")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-dense", action="store_true", help="leave out slak_tiny dense")
    parser.add_argument("--out", type=Path, default=RESULTS / "deploy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {
        "sw_tiny": deployed("sw_tiny"),
        "sw_tiny fused": deployed("sw_tiny", "pieces"),
        "slak_tiny": deployed("slak_tiny"),
    }
    if not args.skip_dense:
        models["slak_tiny dense"] = deployed("slak_tiny", "dense")
        x = torch.randn(1, 3, args.img_size, args.img_size)
        with torch.no_grad():
            error = float((models["slak_tiny dense"](x) - models["slak_tiny"](x)).abs().max())
        print(f"slak_tiny strips vs dense deploy: max abs difference {error:.2e}")
    results = {batch: measure_batch(models, batch, args) for batch in args.batches}
    print("official A100 ratio SW-T / SLaK-T: 0.59x")
    summary = {
        "setup": {
            "batches": args.batches,
            "img_size": args.img_size,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
        },
        "environment": describe_environment(torch.device("cpu")),
        "results": {str(batch): result for batch, result in results.items()},
    }
    write_json(args.out.with_suffix(".json"), summary)
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and .png")


if __name__ == "__main__":
    main()
