"""Sparsity reports: overall and per-layer density, active SW pieces per stage (SW Table 2)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from shiftwise.layers import DepthwiseOperator
from shiftwise.sparse.masking import Masking
from shiftwise.sparse.targets import TargetSpec, select_targets, unwrap_model

__all__ = ["LayerDensity", "SparsityReport", "StageGroups", "sparsity_report"]

_STAGE = re.compile(r"(?:^|\.)(?:stages|stage|layers)\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class LayerDensity:
    """Kept entries of one masked tensor group (for SW: the paths together)."""

    name: str
    numel: int
    nonzero: int

    @property
    def density(self) -> float:
        return self.nonzero / self.numel if self.numel else 1.0


@dataclass(frozen=True)
class StageGroups:
    """Active small-conv pieces (SW "groups") of the operators made of pieces in one stage."""

    stage: str
    active: int
    total: int

    @property
    def fraction(self) -> float:
        return self.active / self.total if self.total else 1.0


@dataclass(frozen=True)
class SparsityReport:
    """Overall density of the masked weights, per-layer densities and active SW pieces per stage.

    ``model_nonzero`` / ``model_params`` count every parameter entry of the model (what the
    papers report as "#params" for sparse models is ``model_nonzero``).
    """

    density: float
    layers: tuple[LayerDensity, ...]
    stages: tuple[StageGroups, ...]
    model_nonzero: int
    model_params: int

    def to_dict(self) -> dict:
        """JSON-ready form, densities and fractions included."""
        return {
            "density": self.density,
            "model_nonzero": self.model_nonzero,
            "model_params": self.model_params,
            "layers": [asdict(layer) | {"density": layer.density} for layer in self.layers],
            "stages": [asdict(stage) | {"fraction": stage.fraction} for stage in self.stages],
        }

    def format(self) -> str:
        """A plain-text table: per-layer densities, then active SW pieces per stage."""
        lines = [
            f"overall density {self.density:.4f}; model non-zero parameters "
            f"{self.model_nonzero:,} of {self.model_params:,}"
        ]
        if self.layers:
            width = max(len(layer.name) for layer in self.layers)
            lines.append(f"{'layer':<{width}}  {'numel':>10}  {'density':>7}")
            lines += [
                f"{layer.name:<{width}}  {layer.numel:>10}  {layer.density:>7.4f}"
                for layer in self.layers
            ]
        if self.stages:
            lines.append("stage     active SW pieces")
            lines += [f"{s.stage:<8}  {s.active}/{s.total} ({s.fraction:.1%})" for s in self.stages]
        return "\n".join(lines)


def stage_of(name: str) -> str:
    """``"stage<i>"`` for a name containing ``stages.<i>.`` (or ``layers.<i>.``), else ``"all"``."""
    match = _STAGE.search(name)
    return f"stage{match.group(1)}" if match else "all"


def sparsity_report(
    source: Masking | nn.Module, targets: TargetSpec = "large_kernels"
) -> SparsityReport:
    """Sparsity of a :class:`Masking` (from its masks) or of a model (from its zero weights).

    For a model, the layers are those ``targets`` selects among its not-yet-deployed
    operators (SW paths counted together); the per-stage pieces come from every operator, in
    training or inference form, that counts pieces
    (:meth:`~shiftwise.layers.DepthwiseOperator.piece_counts`). For a Masking, layers and
    pieces come from the masks (a group mask's units are the pieces of its owner).
    """
    if isinstance(source, Masking):
        model = unwrap_model(source.model)
        layers = tuple(
            LayerDensity(t.name, t.numel, int(source.masks[t.name].sum()) * t.unit_size)
            for t in source.targets
        )
        alive = {
            t.owner: source.masks[t.name].flatten(1).any(1)
            for t in source.targets
            if t.owner is not None
        }
    elif isinstance(source, nn.Module):
        model = unwrap_model(source)
        try:
            chosen = select_targets(model, targets, "fine")
        except ValueError:
            chosen = []
        layers = tuple(
            LayerDensity(t.name, t.numel, sum(int(torch.count_nonzero(p)) for p in t.params))
            for t in chosen
        )
        alive = {}
    else:
        raise TypeError(f"source: expected a Masking or an nn.Module, got {type(source).__name__}")

    counts: dict[str, list[int]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, DepthwiseOperator):
            continue
        mask = alive.get(name)
        pieces = module.piece_counts() if mask is None else (int(mask.sum()), mask.numel())
        if pieces is None:
            continue
        entry = counts.setdefault(stage_of(name), [0, 0])
        entry[0] += pieces[0]
        entry[1] += pieces[1]
    stages = tuple(StageGroups(stage, a, t) for stage, (a, t) in sorted(counts.items()))

    total = sum(layer.numel for layer in layers)
    density = sum(layer.nonzero for layer in layers) / total if total else math.nan
    with torch.no_grad():
        params = list(model.parameters())
        nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    return SparsityReport(density, layers, stages, nonzero, sum(p.numel() for p in params))
