"""Parameters and multiply-accumulates (MACs) of a model, per stage (``shiftwise info``).

MACs are forward multiply-accumulates at batch 1 (``FlopCounterMode`` FLOPs / 2, the unit the
papers call "FLOPs"): convolutions and matrix products only (norms, activations and the
shift-add, which has no multiplications, are not counted). Counting runs on the ``meta``
device, so it is instant at any input size and needs no data. Depthwise operators (any
:class:`~shiftwise.layers.DepthwiseOperator`: the large-kernel operators and their inference
modules) are not run: each reports its own count
(:meth:`~shiftwise.layers.DepthwiseOperator.macs`), with kernels at their full size as the
papers count them, even where some taps only ever meet the zero padding (a 47-wide kernel on
a 14-pixel map; the operators skip those taps when they run). ShiftwiseConv counts as the
official graph computes it: ``n_paths`` small convolutions on the padded map in the training
form, one (of the active pieces) after :func:`shiftwise.reparameterize`.

Sparsity (SLaK counts non-zero weights): with ``density=d`` every weight of the sparse scope
(:func:`~shiftwise.layers.sparse_scope.sparse_scope`: conv and linear weights, what masking
with ``targets="all"`` masks; GRN's scales are not weights and stay dense) keeps the fraction
``d`` of its entries, so parameters are ``sum(outside) + d * sum(scope)`` and each conv/linear
layer's MACs scale by ``d``.
With ``nonzero=True`` the actual zeros of a sparse-trained model are counted instead
(per-layer density = non-zeros / entries).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from shiftwise.errors import UsageError
from shiftwise.layers import DepthwiseOperator
from shiftwise.layers.sparse_scope import sparse_scope
from shiftwise.models import create_model, min_input_size, reparameterize

__all__ = [
    "PartCount",
    "count_macs",
    "count_params",
    "format_report",
    "info_report",
    "model_complexity",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartCount:
    """Parameters and MACs of one part (``stem``, ``stages.i``, ``head``) or the ``total``."""

    name: str
    params: float
    macs: float


def _parts(model: nn.Module) -> list[str]:
    """Top-level parts of ``model``, with ``stages`` split into ``stages.0``, ``stages.1``, ..."""
    names = []
    for name, child in model.named_children():
        if name == "stages":
            names.extend(f"stages.{i}" for i in range(len(child)))
        else:
            names.append(name)
    return names


def _check_density(density: float | None) -> None:
    if density is None:
        return
    if isinstance(density, bool) or not isinstance(density, int | float):
        raise TypeError(f"density: expected a float in (0, 1], got {density!r}")
    if not 0.0 < density <= 1.0:
        raise UsageError(f"density: expected a value in (0, 1], got {density}")


def _param_count(parameter: torch.Tensor, density: float | None, nonzero: bool) -> float:
    """Entries of a sparse-scope ``parameter`` counted (see module docstring)."""
    if nonzero:
        return float(torch.count_nonzero(parameter.detach()))
    return parameter.numel() * (1.0 if density is None else density)


def count_params(
    model: nn.Module, density: float | None = None, nonzero: bool = False
) -> list[PartCount]:
    """Parameters per part and ``total`` (MACs left at 0), dense or at ``density``/non-zero."""
    _check_density(density)
    parts = _parts(model)
    totals = dict.fromkeys(parts, 0.0)
    total = 0.0
    scope = sparse_scope(model)
    for name, parameter in model.named_parameters():
        count = _param_count(parameter, density, nonzero) if name in scope else parameter.numel()
        total += float(count)
        for part in parts:
            if name.startswith(part + "."):
                totals[part] += count
                break
    return [PartCount(p, totals[p], 0.0) for p in parts] + [PartCount("total", total, 0.0)]


class _OperatorMacs(nn.Module):
    """Stand-in for a large-kernel operator: returns its input, adds up the operator's MACs.

    The operator stays a sub-module (``op``) so its weights count for ``density``/``nonzero``.
    """

    def __init__(self, op: DepthwiseOperator) -> None:
        super().__init__()
        self.op = op
        self.counted = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.counted += x.shape[0] * self.op.macs((x.shape[-2], x.shape[-1]))
        return x


def _kept_entries(
    model: nn.Module, density: float | None, nonzero: bool
) -> dict[str, tuple[int, float]]:
    """``{parameter name: (entries, kept entries)}`` over the sparse scope of ``model``."""
    return {
        name: (parameter.numel(), _param_count(parameter, density, nonzero))
        for name, parameter in sparse_scope(model).items()
    }


def count_macs(
    model: nn.Module,
    img_size: tuple[int, int] = (224, 224),
    density: float | None = None,
    nonzero: bool = False,
    in_chans: int = 3,
) -> list[PartCount]:
    """Forward MACs at batch 1 for an ``img_size`` input, per part and ``total`` (params 0).

    See the module docstring for what is counted. With ``density``/``nonzero``, the MACs a
    module computes itself (not through sub-modules that count their own) scale by the kept
    fraction of the in-scope weights it owns: exact when its convolutions share one output
    size, as all of ours do (e.g. the three branches of a SLaK operator).
    """
    _check_density(density)
    height, width = _check_img_size(img_size, _smallest_input(model))
    clone = copy.deepcopy(model).eval()
    for name, module in list(clone.named_modules()):
        if isinstance(module, DepthwiseOperator):
            parent, _, attr = name.rpartition(".")
            setattr(clone.get_submodule(parent), attr, _OperatorMacs(module))
    kept = _kept_entries(clone, density, nonzero)
    clone = clone.to("meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        clone(torch.empty(1, in_chans, height, width, device="meta"))
    counts = {key: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}
    root = type(clone).__name__

    def flops(name: str) -> float:
        return float(counts.get(f"{root}.{name}" if name else root, 0))

    own = {
        name: flops(name) - sum(flops(_join(name, child)) for child, _ in module.named_children())
        for name, module in clone.named_modules()
    }
    for name, module in clone.named_modules():
        if isinstance(module, _OperatorMacs):
            own[name] += 2 * module.counted  # FLOPs, as the counter reports them
    owners = [name for name, value in own.items() if value > 0]
    parts = _parts(model)
    macs = dict.fromkeys(parts, 0.0)
    total = 0.0
    for owner in owners:
        inner = [o for o in owners if o != owner and _inside(o, owner)]
        mine = [
            entry
            for param, entry in kept.items()
            if _inside(param, owner) and not any(_inside(param, o) for o in inner)
        ]
        entries = sum(n for n, _ in mine)
        fraction = sum(k for _, k in mine) / entries if entries else 1.0
        value = own[owner] * fraction
        total += value
        for part in parts:
            if _inside(owner, part):
                macs[part] += value
                break
    return [PartCount(p, 0.0, macs[p] / 2) for p in parts] + [PartCount("total", 0.0, total / 2)]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _inside(name: str, prefix: str) -> bool:
    """Whether the qualified ``name`` is ``prefix`` itself or lies under it."""
    return not prefix or name == prefix or name.startswith(prefix + ".")


def _smallest_input(model: nn.Module) -> int:
    """The smallest input side ``model`` records (a shiftwise model), else 1 (any module)."""
    try:
        return min_input_size(model)
    except TypeError:
        return 1


def _check_img_size(img_size: object, smallest: int) -> tuple[int, int]:
    if isinstance(img_size, int) and not isinstance(img_size, bool):
        img_size = (img_size, img_size)
    if (
        not isinstance(img_size, tuple | list)
        or len(img_size) != 2
        or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= smallest for v in img_size
        )
    ):
        raise UsageError(f"img_size: expected (H, W) with H, W >= {smallest}, got {img_size!r}")
    return int(img_size[0]), int(img_size[1])


def model_complexity(
    model: nn.Module,
    img_size: tuple[int, int] = (224, 224),
    density: float | None = None,
    nonzero: bool = False,
    in_chans: int = 3,
) -> list[PartCount]:
    """Parameters and MACs per part and ``total`` (see :func:`count_params`, :func:`count_macs`)."""
    params = count_params(model, density, nonzero)
    macs = count_macs(model, img_size, density, nonzero, in_chans)
    return [PartCount(p.name, p.params, m.macs) for p, m in zip(params, macs, strict=True)]


def info_report(
    name: str,
    img_size: tuple[int, int] | None = None,
    density: float | None = None,
    **model_kwargs: object,
) -> dict:
    """Training / at-density / deploy counts of the registered model ``name``, as a dict.

    ``img_size`` defaults to the model's ``pretrained_cfg`` input size (224, or 64 for atto).
    """
    model = create_model(name, **model_kwargs).eval()
    if img_size is None:
        img_size = tuple(model.pretrained_cfg["input_size"][1:])
    in_chans = model.stem[0].in_channels
    training = model_complexity(model, img_size, in_chans=in_chans)
    sparse = model_complexity(model, img_size, density, in_chans=in_chans) if density else None
    deploy = model_complexity(reparameterize(model), img_size, in_chans=in_chans)
    rows = []
    for i, part in enumerate(training):
        row = {"part": part.name, "params": part.params, "macs": part.macs}
        if sparse is not None:
            row |= {"params_at_density": sparse[i].params, "macs_at_density": sparse[i].macs}
        row |= {"deploy_params": deploy[i].params, "deploy_macs": deploy[i].macs}
        rows.append(row)
    return {"model": name, "img_size": list(img_size), "density": density, "parts": rows}


def format_report(report: dict) -> str:
    """The :func:`info_report` dict as an aligned text table (M params, G MACs)."""
    columns = [key for key in report["parts"][0] if key != "part"]
    headers = {
        "params": "params (M)",
        "macs": "MACs (G)",
        "params_at_density": f"params@{report['density']} (M)",
        "macs_at_density": f"MACs@{report['density']} (G)",
        "deploy_params": "deploy params (M)",
        "deploy_macs": "deploy MACs (G)",
    }
    height, width = report["img_size"]
    lines = [f"{report['model']} at {height}x{width} (MACs = multiply-accumulates, batch 1)"]
    lines.append(f"{'part':<10}" + "".join(f"{headers[c]:>20}" for c in columns))
    for row in report["parts"]:
        cells = [f"{row[c] / (1e6 if 'params' in c else 1e9):>20.3f}" for c in columns]
        lines.append(f"{row['part']:<10}" + "".join(cells))
    return "\n".join(lines)
