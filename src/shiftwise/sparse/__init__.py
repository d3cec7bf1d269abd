"""Dynamic sparse training: the masking engine, layer-wise densities and sparsity reports."""

from shiftwise.sparse.densities import erk_densities, snip_keep, uniform_densities, unit_counts
from shiftwise.sparse.masking import GROWTH_MODES, INIT_MODES, Masking
from shiftwise.sparse.report import LayerDensity, SparsityReport, StageGroups, sparsity_report
from shiftwise.sparse.schedule import cosine_prune_rate
from shiftwise.sparse.targets import GRANULARITIES, MaskTarget, select_targets

__all__ = [
    "GRANULARITIES",
    "GROWTH_MODES",
    "INIT_MODES",
    "LayerDensity",
    "MaskTarget",
    "Masking",
    "SparsityReport",
    "StageGroups",
    "cosine_prune_rate",
    "erk_densities",
    "select_targets",
    "snip_keep",
    "sparsity_report",
    "uniform_densities",
    "unit_counts",
]
