"""The figures of ``bench_targets.py``: ratio math, the targets, and the markdown / PNG report.

A row's timed variants are named ``runtime:model`` (``eager:sw``, ``onnxruntime:convnext``).
:func:`pairwise_ratios` turns their timings into throughput ratios, each the median and
quartiles of the per-repeat paired ratios (variants of one repeat ran back to back):

* ``runtime:a/b``: throughput of model ``a`` over model ``b`` in one runtime
  (``eager:sw/convnext`` > 1 means SW-T is faster than ConvNeXt-T);
* ``a:runtime/eager``: throughput of model ``a`` in ``runtime`` over eager PyTorch.

:data:`FIGURES` picks the ratios the targets are about; :func:`render_table` lays out one or
more runs of the benchmark (``before``, ``after``) side by side with each target.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftwise.analysis.timing import Stats, paired_ratio

MODEL_LABELS = {
    "sw": "SW-T",
    "slak": "SLaK-T",
    "convnext": "ConvNeXt-T",
    "convnextv2": "ConvNeXt V2-T",
}
ATTO_LABELS = {"sw": "sw_atto", "slak": "slak_atto", "convnext": "convnext_atto"}
RUNTIME_LABELS = {"eager": "eager", "compile": "`torch.compile`", "onnxruntime": "onnxruntime"}


@dataclass(frozen=True)
class Figure:
    """One line of the targets table: ``ratio`` of ``row``, and its target if it has one."""

    label: str
    row: str
    ratio: str
    target: float | None = None
    higher_is_better: bool = True

    def met(self, value: float) -> bool | None:
        """Whether ``value`` meets the target (``None``: the figure has no target)."""
        if self.target is None:
            return None
        return value >= self.target if self.higher_is_better else value <= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "—"
        return f"{'≥' if self.higher_is_better else '≤'} {self.target:.2f}"


def _deploy_figures() -> list[Figure]:
    """Deploy 224 px, batch 1 and 8, in each runtime: SW-T against both references and SLaK-T;
    and each model's gain from ``torch.compile``."""
    convnext_targets = {"eager": 0.90, "compile": 0.90, "onnxruntime": 0.85}
    figures = []
    for batch, runtime in itertools.product((1, 8), RUNTIME_LABELS):
        prefix = f"deploy 224 px, batch {batch}, {RUNTIME_LABELS[runtime]}"
        row = f"deploy_b{batch}"
        figures += [
            Figure(
                f"{prefix}: SW-T / ConvNeXt-T",
                row,
                f"{runtime}:sw/convnext",
                convnext_targets[runtime],
            ),
            Figure(f"{prefix}: SW-T / ConvNeXt V2-T", row, f"{runtime}:sw/convnextv2"),
            Figure(f"{prefix}: SW-T / SLaK-T", row, f"{runtime}:sw/slak", 1.5),
        ]
        if runtime == "compile":  # what compiling gains each model (GRN fuses in V2-T)
            figures += [
                Figure(f"{prefix} / eager: {MODEL_LABELS[key]}", row, f"{key}:compile/eager")
                for key in ("sw", "convnext", "convnextv2")
            ]
    return figures


def _train_figures() -> list[Figure]:
    """Training step, batch 8, 224 and 128 px: SW-T against the references and SLaK-T; and
    what compiling gains SW-T and ConvNeXt-T."""
    figures = []
    for size, compiled_row in ((224, "train_224_compile"), (128, "train_128")):
        row = f"train_{size}"
        prefix = f"training step {size} px, batch 8"
        figures += [
            Figure(f"{prefix}, eager: SW-T / ConvNeXt-T", row, "eager:sw/convnext", 0.65),
            Figure(f"{prefix}, eager: SW-T / ConvNeXt V2-T", row, "eager:sw/convnextv2"),
            Figure(f"{prefix}, eager: SW-T / SLaK-T", row, "eager:sw/slak"),
            Figure(
                f"{prefix}, `torch.compile`: SW-T / ConvNeXt-T",
                compiled_row,
                "compile:sw/convnext",
                0.75,
            ),
        ]
    figures += [  # eager and compiled steps are timed side by side at 128 px only
        Figure(
            f"training step 128 px, batch 8, `torch.compile` / eager: {MODEL_LABELS[key]}",
            "train_128",
            f"{key}:compile/eager",
        )
        for key in ("sw", "convnext")
    ]
    return figures


def _atto_figures() -> list[Figure]:
    """Training step of the atto models at the demo's and the Fashion-MNIST runs' shapes."""
    figures = []
    for row, what in (
        ("train_atto_demo", "bundled data (`shiftwise demo`)"),
        ("train_atto_fmnist", "Fashion-MNIST"),
    ):
        prefix = f"atto training step, {what}"
        figures += [
            Figure(f"{prefix}: sw_atto / convnext_atto", row, "eager:sw/convnext", 0.60),
            Figure(f"{prefix}: slak_atto / convnext_atto", row, "eager:slak/convnext"),
        ]
    return figures


FIGURES: tuple[Figure, ...] = (
    *_deploy_figures(),
    *_train_figures(),
    *_atto_figures(),
    Figure(
        "peak training memory 224 px, batch 8, no checkpointing: SW-T / ConvNeXt-T",
        "train_memory",
        "memory:sw/convnext",
        1.25,
        higher_is_better=False,
    ),
)


def variant(runtime: str, model: str) -> str:
    """The name of one timed variant (``eager:sw``)."""
    return f"{runtime}:{model}"


def pairwise_ratios(stats: Mapping[str, Stats]) -> dict[str, dict[str, float]]:
    """Throughput ratios between the variants of ``stats`` (``runtime:model`` -> Stats), as
    the module docstring names them; ratios whose variants are missing are left out."""
    by_runtime: dict[str, list[str]] = {}
    for name in stats:
        runtime, model = name.split(":")
        by_runtime.setdefault(runtime, []).append(model)
    ratios = {}
    for runtime, models in by_runtime.items():
        for a, b in itertools.permutations(models, 2):
            faster, slower = stats[variant(runtime, a)], stats[variant(runtime, b)]
            ratios[f"{runtime}:{a}/{b}"] = paired_ratio(slower, faster)
    for runtime, models in by_runtime.items():
        if runtime == "eager":
            continue
        for model in models:
            if variant("eager", model) in stats:
                ratios[f"{model}:{runtime}/eager"] = paired_ratio(
                    stats[variant("eager", model)], stats[variant(runtime, model)]
                )
    return ratios


def figure_value(payload: Mapping[str, Any], figure: Figure) -> dict[str, float] | None:
    """``{"median", "q1", "q3"}`` (quartiles absent for one-off figures) of ``figure`` in one
    run's JSON ``payload``, or ``None`` when the run did not measure it."""
    row = payload.get("rows", {}).get(figure.row)
    if row is None:
        return None
    return row.get("ratios", {}).get(figure.ratio)


def format_ratio(value: Mapping[str, float] | None) -> str:
    """``0.93 [0.90, 0.95]`` (median [quartiles]), ``1.31`` without quartiles, ``—`` if absent."""
    if value is None:
        return "—"
    text = f"{value['median']:.2f}"
    if "q1" in value and "q3" in value:
        text += f" [{value['q1']:.2f}, {value['q3']:.2f}]"
    return text


def _met_text(figure: Figure, value: Mapping[str, float] | None) -> str:
    met = None if value is None else figure.met(value["median"])
    return {True: "yes", False: "**no**", None: "—"}[met]


def _load_text(load: Sequence[float] | None) -> str:
    return "—" if load is None else " / ".join(f"{value:.2f}" for value in load)


def _other_cpu_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def run_summary(name: str, payload: Mapping[str, Any]) -> str:
    """One line saying what a run measured: code, versions, threads, load at its start, and
    how many load warnings it gave."""
    env = payload.get("environment", {})
    commit = (env.get("commit") or "unknown")[:7] + (" (dirty)" if env.get("dirty") else "")
    parts = [
        f"- **{name}**: shiftwise {commit} from `{env.get('shiftwise_file', '?')}`",
        f"torch {env.get('torch', '?')}",
        f"{env.get('threads', '?')} threads",
        str(env.get("date", "?")),
        f"load average at the start {_load_text(env.get('load_average'))}",
    ]
    if payload.get("settings", {}).get("quick"):
        parts.append("quick")
    if payload.get("warnings"):
        parts.append(f"**{len(payload['warnings'])} load warnings**")
    return ", ".join(parts)


def render_table(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """The markdown targets table of ``runs`` (``(name, JSON payload)``, e.g. before and
    after): one column per run, ``met?`` judged on the last run; then the load of each row."""
    names = [name for name, _ in runs]
    lines = [run_summary(name, payload) for name, payload in runs]
    lines += [
        "",
        "Throughput ratios (memory: peak ratio), median [quartiles] of per-repeat paired ratios.",
        "",
        f"| figure | {' | '.join(names)} | target | met? |",
        f"|---|{'---|' * len(names)}---|---|",
    ]
    for figure in FIGURES:
        values = [figure_value(payload, figure) for _, payload in runs]
        if all(value is None for value in values):
            continue
        cells = " | ".join(format_ratio(value) for value in values)
        lines.append(
            f"| {figure.label} | {cells} | {figure.target_text} | {_met_text(figure, values[-1])} |"
        )
    lines += [
        "",
        "Load of each row: 1-minute load average before → after the row (the benchmark's own "
        "threads included), and the cores other processes kept busy while it was timed.",
        "",
        f"| row | {' | '.join(names)} |",
        f"|---|{'---|' * len(names)}",
    ]
    measured = {row for _, payload in runs for row in payload.get("rows", {})}
    in_order = [*dict.fromkeys(figure.row for figure in FIGURES), *sorted(measured)]
    row_names = [row for row in dict.fromkeys(in_order) if row in measured]
    for row in row_names:
        cells = []
        for _, payload in runs:
            record = payload.get("rows", {}).get(row)
            if record is None:
                cells.append("—")
                continue
            before, after = record.get("load_average_before"), record.get("load_average_after")
            cells.append(
                f"{before[0] if before else float('nan'):.2f} → "
                f"{after[0] if after else float('nan'):.2f}, "
                f"other {_other_cpu_text(record.get('other_cpu_load'))}"
            )
        lines.append(f"| {row} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def plot(runs: Sequence[tuple[str, Mapping[str, Any]]], path: Path) -> None:
    """Horizontal bars, one per run, for each figure measured (median, quartile error bars),
    with a black tick at the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [f for f in FIGURES if any(figure_value(p, f) is not None for _, p in runs)]
    height = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(figures) * max(1, len(runs)) ** 0.5 + 1.5))
    for k, (name, payload) in enumerate(runs):
        labelled = False
        for i, figure in enumerate(figures):
            value = figure_value(payload, figure)
            if value is None:
                continue
            median = value["median"]
            error = [[median - value.get("q1", median)], [value.get("q3", median) - median]]
            offset = height * (k + 0.5) - 0.4
            label = None if labelled else name
            ax.barh(i + offset, median, height=height, xerr=error, color=f"C{k}", label=label)
            labelled = True
    for i, figure in enumerate(figures):
        if figure.target is not None:
            ax.plot([figure.target] * 2, [i - 0.45, i + 0.45], color="black")
    ax.set_yticks(range(len(figures)))
    ax.set_yticklabels([figure.label.replace("`", "") for figure in figures], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ratio (median, quartiles); black tick = target")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
