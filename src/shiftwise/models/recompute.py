"""Selective recomputation: run a function saving only its input and its matrix products.

The MLP tail of the SW block (GELU, GRN, ``fc2``) would keep three ``4C``-channel activations
for its backward; recomputing the cheap element-wise ops from the tail's input instead keeps
one. Recomputation repeats the same deterministic ops on the same values, so the outputs and
gradients are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

__all__ = ["recompute_elementwise"]

_MATRIX_PRODUCTS = (
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
)


def _save_matrix_products(ctx: object, op: object, *args: object, **kwargs: object) -> object:
    """Selective checkpoint policy: keep matrix products, recompute everything else."""
    if op in _MATRIX_PRODUCTS:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _contexts() -> tuple[object, object]:
    return create_selective_checkpoint_contexts(_save_matrix_products)


def recompute_elementwise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
    """``fn(x)``; under autograd, its backward recomputes the non-GEMM ops of ``fn`` from ``x``.

    ``fn`` must be deterministic and free of side effects on module state (no BatchNorm in
    training mode, no dropout): it runs twice. Without autograd it simply runs once, and under
    ``torch.fx`` symbolic tracing (``x`` a Proxy) ``fn``'s ops are traced as they are: the
    recomputation is a memory schedule of eager autograd, not part of the graph.
    """
    if isinstance(x, torch.fx.Proxy) or not (torch.is_grad_enabled() and x.requires_grad):
        return fn(x)
    return checkpoint(fn, x, use_reentrant=False, context_fn=_contexts)
