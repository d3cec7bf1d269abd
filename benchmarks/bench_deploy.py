"""Deploy throughput on CPU: SW-T against SLaK-T, each re-parameterised, side by side.

Variants (eval mode, no grad, ``shiftwise.reparameterize`` applied, float32, 224x224):

- ``sw_tiny``: deploy form, ``auto`` strategy (strips);
- ``sw_tiny fused``: deploy form with the small convs + fused shift-add (the official form);
- ``slak_tiny``: deploy form ``auto`` (BN-folded strips ``M x 5`` + ``5 x M``, wide run tall);
- ``slak_tiny dense``: every SLaK operator merged into one dense ``M x M`` conv (what the
  official code's merge does; its A100 ``slak_general`` figures are for this form).

Timed interleaved (``measure_interleaved``), median of ``--repeats``, one intra-op thread by
default (stable on the shared machine). Reports images/s and the ratio SW-T / SLaK-T as the
median of the per-repeat (paired) ratios, with quartiles (the official A100 ratio, SW-T
378 img/s against SLaK-T merged with cutlass 638, is 0.59).
Writes ``benchmarks/results/deploy.json`` and ``.png``.
Run: ``python benchmarks/bench_deploy.py [--batch 4] [--img-size 224] [--repeats 5]``.
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

from shiftwise.layers import SLaKConv2d
from shiftwise.layers.sw_strategies import set_strategy
from shiftwise.models import create_model, reparameterize
from shiftwise.tools.benchmarking.environment import describe_environment, write_json
from shiftwise.tools.benchmarking.timing import measure_interleaved, paired_ratio

RESULTS = Path(__file__).parent / "results"


def deployed(name: str, slak_form: str = "auto", strategy: str = "auto") -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name).eval()
    for module in model.modules():
        if isinstance(module, SLaKConv2d):
            module.reparameterize(slak_form)
    reparameterize(model)
    set_strategy(model, strategy)
    return model


def inference(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.no_grad():
            return model(x)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-dense", action="store_true", help="leave out slak_tiny dense")
    parser.add_argument("--out", type=Path, default=RESULTS / "deploy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    models = {
        "sw_tiny": deployed("sw_tiny"),
        "sw_tiny fused": deployed("sw_tiny", strategy="fused"),
        "slak_tiny": deployed("slak_tiny"),
    }
    if not args.skip_dense:
        models["slak_tiny dense"] = deployed("slak_tiny", slak_form="dense")
    with torch.no_grad():
        reference = models["slak_tiny"](x)
        if "slak_tiny dense" in models:
            error = float((models["slak_tiny dense"](x) - reference).abs().max())
            print(f"slak_tiny strips vs dense deploy: max abs difference {error:.2e}")
    stats = measure_interleaved(
        {name: inference(model, x) for name, model in models.items()},
        torch.device("cpu"),
        repeats=args.repeats,
    )
    throughput = {name: args.batch / s.median for name, s in stats.items()}
    for name, value in throughput.items():
        print(f"{name:18s} {value:8.2f} img/s  ({stats[name].median * 1e3:8.1f} ms/batch)")
    ratios = {
        baseline: paired_ratio(stats[baseline], stats["sw_tiny"])
        for baseline in ("slak_tiny", "slak_tiny dense")
        if baseline in stats
    }
    for baseline, paired in ratios.items():
        q1, q3 = paired.quartiles
        print(
            f"SW-T / {baseline} deploy throughput: {paired.median:.2f}x "
            f"(paired repeats, quartiles {q1:.2f}-{q3:.2f}; ratio of medians "
            f"{throughput['sw_tiny'] / throughput[baseline]:.2f}x)"
        )
    print("official A100 ratio SW-T / SLaK-T: 0.59x")
    result = {
        "setup": {
            "batch": args.batch,
            "img_size": args.img_size,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
        },
        "environment": describe_environment(torch.device("cpu")),
        "images_per_s": throughput,
        "median_s": {name: s.median for name, s in stats.items()},
        "spread": {name: s.spread for name, s in stats.items()},
        "sw_over_slak_paired": {name: paired.to_dict() for name, paired in ratios.items()},
        "sw_over_slak": throughput["sw_tiny"] / throughput["slak_tiny"],
    }
    write_json(args.out.with_suffix(".json"), result)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(list(throughput), list(throughput.values()), color="tab:blue")
    ax.set_xlabel("images / s (CPU, deploy form)")
    ax.set_title(f"batch {args.batch}, {args.img_size}px, {torch.get_num_threads()} thread(s)")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)
    plt.close(fig)
    print(f"wrote {args.out.with_suffix('.json')} and .png")


if __name__ == "__main__":
    main()
