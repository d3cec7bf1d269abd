"""Execution strategies of ShiftWiseConv2d at the SW-T stage shapes, against SLaK operators.

For each SW-T stage (C = 80/160/320/640 at 56/28/14/7 px, K = 51/49/47/13, k = 3, batch 8 by
default) every exact strategy of :class:`~shiftwise.layers.ShiftWiseConv2d` is timed

- ``fwd``: eval mode, no grad (the training form, not re-parameterised);
- ``fwd+bwd``: training mode (BN batch statistics), forward + backward of ``out.sum()``;

side by side with the SLaK operators of the same stage:

- ``slak plain``: three ``nn.Conv2d`` + BN branches (``M x 5``, ``5 x M``, ``5 x 5``), as the
  official code runs without its cutlass extension — at SW's ``C`` times SLaK's width factor
  1.3 (104/208/416/832 channels; SLaK-T's real widths 124/249/499/998 are larger still, so
  this baseline is conservative) and at the same ``C`` as SW;
- ``slak ours``: :class:`~shiftwise.layers.SLaKConv2d` (channels-last on CPU, and in
  training the wide branch run tall on transposed data) at ``1.3 C``.

SW variants: ``strips`` (``auto``'s choice), ``strips untransposed`` (the same forward written
out with ``transposed=False``: the wide strip never run tall, to show the orientation trick in
training), ``fused`` (small convs + the shift-add
custom op) and ``reference`` (small convs + the reference shift-add; slow, so it is timed
once, not interleaved, and only its forward at stage 1 unless ``--full-reference``).

Timed interleaved round-robin (``measure_interleaved``), median of ``--repeats``, with one
intra-op thread by default (``--threads``): on the shared 2-core machine two threads made
every parallel region wait for a descheduled thread (a 7x7 stage-4 call took 456 ms with 2
threads under load against 1.9 ms with 1). Prints the
table and ratios and writes ``benchmarks/results/strategies.json`` and ``.png``.
Run: ``python benchmarks/bench_sw_strategies.py [--batch 8] [--repeats 5] [--stages 1 2 3 4]``.
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

from shiftwise.analysis.timing import measure_interleaved
from shiftwise.benchmarking.environment import describe_environment, write_json
from shiftwise.layers import ShiftWiseConv2d, SLaKConv2d
from shiftwise.ops.oriented_conv import depthwise_conv2d
from shiftwise.ops.sw_geometry import strip_padding

RESULTS = Path(__file__).parent / "results"
SW_T_STAGES = ((80, 56, 51), (160, 28, 49), (320, 14, 47), (640, 7, 13))
SLAK_WIDTH = 1.3


class PlainSLaK(nn.Module):
    """The official SLaK operator without cutlass: three depthwise ``nn.Conv2d`` + BN, summed."""

    def __init__(self, channels: int, kernel: int, short: int = 5, small: int = 5) -> None:
        super().__init__()

        def branch(rows: int, cols: int) -> nn.Sequential:
            conv = nn.Conv2d(
                channels, channels, (rows, cols), padding=(rows // 2, cols // 2),
                groups=channels, bias=False,
            )  # fmt: skip
            return nn.Sequential(conv, nn.BatchNorm2d(channels))

        self.tall, self.wide = branch(kernel, short), branch(short, kernel)
        self.small = branch(small, small) if small < kernel else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tall(x) + self.wide(x)
        return out + self.small(x) if self.small is not None else out


def forward_call(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    module.eval()

    def call() -> object:
        with torch.no_grad():
            return module(x)

    return call


def train_call(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    module.train()
    x = x.clone().requires_grad_()

    def call() -> object:
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()

    return call


class UntransposedStrips(nn.Module):
    """``op``'s ``strips`` training forward, written out with the wide strip never transposed."""

    def __init__(self, op: ShiftWiseConv2d) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = self.op
        x_rep = x.index_select(1, op.rep_index)
        horizontal, vertical, identity = op.strip_kernels()
        pad_h, pad_v = strip_padding(op.geometry)
        half = op.small_kernel // 2
        h = depthwise_conv2d(x_rep, horizontal.unsqueeze(1), padding=pad_h, transposed=False)
        v = depthwise_conv2d(x_rep, vertical.unsqueeze(1), padding=pad_v)
        i = depthwise_conv2d(x_rep, identity.unsqueeze(1), padding=(half,) * 4)
        out = op.bn_h(h) + op.bn_v(v) + op.bn_identity(i) + x_rep
        return torch.cat([out, x.index_select(1, op.ghost_index)], dim=1)


def stage_variants(
    channels: int, size: int, kernel: int, batch: int, mode: str
) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """``(interleaved variants, once-only variants)`` of one stage and mode."""
    torch.manual_seed(0)
    make = forward_call if mode == "fwd" else train_call
    sw = ShiftWiseConv2d(channels, kernel)
    x = torch.randn(batch, channels, size, size)
    slak_channels = int(channels * SLAK_WIDTH)
    x_slak = torch.randn(batch, slak_channels, size, size)
    strips = sw.with_strategy("strips")
    variants = {
        "sw strips": make(strips, x),
        "sw strips untransposed": make(UntransposedStrips(strips), x),
        "sw fused": make(sw.with_strategy("fused"), x),
        "slak plain (1.3x C)": make(PlainSLaK(slak_channels, kernel), x_slak),
        "slak plain (same C)": make(PlainSLaK(channels, kernel), x),
        "slak ours (1.3x C)": make(SLaKConv2d(slak_channels, kernel), x_slak),
    }
    once = {"sw reference": make(sw.with_strategy("reference"), x)}
    return variants, once


def run(args: argparse.Namespace) -> dict:
    device = torch.device("cpu")
    rows = []
    for stage in args.stages:
        channels, size, kernel = SW_T_STAGES[stage - 1]
        for mode in ("fwd", "fwd+bwd"):
            variants, once = stage_variants(channels, size, kernel, args.batch, mode)
            stats = measure_interleaved(variants, device, repeats=args.repeats, warmup=1)
            if mode == "fwd" or stage > 1 or args.full_reference:
                stats |= measure_interleaved(once, device, repeats=1, warmup=0)
            row = {"stage": stage, "channels": channels, "size": size, "kernel": kernel}
            row |= {"mode": mode, "median_s": {k: s.median for k, s in stats.items()}}
            row["spread"] = {k: s.spread for k, s in stats.items()}
            rows.append(row)
            print_row(row)
    return {
        "setup": {
            "batch": args.batch,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "slak_width": SLAK_WIDTH,
        },
        "environment": describe_environment(device),
        "rows": rows,
    }


def print_row(row: dict) -> None:
    times = row["median_s"]
    base = times["sw strips"]
    print(
        f"stage {row['stage']} C={row['channels']} {row['size']}px K={row['kernel']} {row['mode']}"
    )
    for name, seconds in times.items():
        print(f"  {name:28s} {seconds * 1e3:10.1f} ms   {seconds / base:7.2f}x sw strips")


def plot(result: dict, path: Path) -> None:
    modes = ("fwd", "fwd+bwd")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, mode in zip(axes, modes, strict=True):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        names = list(rows[0]["median_s"]) if rows else []
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            values = [r["median_s"].get(name, float("nan")) * 1e3 for r in rows]
            positions = [j + i * width for j in range(len(rows))]
            ax.bar(positions, values, width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
        ax.set_xticklabels([f"stage {r['stage']}\nC{r['channels']} K{r['kernel']}" for r in rows])
        ax.set_yscale("log")
        ax.set_ylabel("ms per call (median)")
        ax.set_title(f"{mode}, batch {result['setup']['batch']}, CPU")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    parser.add_argument("--full-reference", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads (1: stable on a shared machine)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "strategies")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out.with_suffix(".json"), result)
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and .png")


if __name__ == "__main__":
    main()
