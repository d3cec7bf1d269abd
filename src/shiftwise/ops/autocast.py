"""How the custom ops run under ``torch.autocast``: which inputs are cast to which dtype.

PyTorch's autocast runs convolutions and matrix products in the lower-precision dtype
(bfloat16 by default on CPU, float16 on CUDA) and norms and reductions in float32. A custom
op is opaque to autocast, so each op of :mod:`shiftwise.ops` states its rule the same way:
:func:`register_autocast` registers, for the ``AutocastCPU`` and ``AutocastCUDA`` dispatch
keys, a kernel that casts the op's inputs by the op's rule and runs the op with autocast off
(the casts are recorded by autograd, so the gradients reach the float32 parameters in their
own dtype). The rules, stated in each op's docstring:

================================= ======================================================
op                                under autocast
================================= ======================================================
``shiftwise::shift_add`` and      its input's dtype, kept (autocast leaves gathers and
``shiftwise::shift_add_adjoint``  sums alone; fed by a convolution, that is the autocast
                                  dtype)
``shiftwise::conv_bn_sum``        input and kernels in the autocast dtype (the convs),
                                  BatchNorm affine parameters and batch statistics in
                                  float32; output in the autocast dtype
``shiftwise::gelu_grn_linear``    input and projection weight in the autocast dtype (the
                                  matrix product), GRN parameters and norms in float32;
                                  output in the autocast dtype
================================= ======================================================

Inputs of dtype float64 are never cast (as autocast leaves them). The backward formulas run
with autocast off (:func:`without_autocast`), so a ``.backward()`` called inside an
autocast region computes in the dtypes the forward chose.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

__all__ = ["AUTOCAST_DEVICES", "register_autocast", "to_dtype", "without_autocast"]

AUTOCAST_DEVICES = ("cpu", "cuda")


def to_dtype(value, dtype: torch.dtype):
    """``value`` (a tensor or a list of tensors) cast to ``dtype`` where it is a floating
    point tensor other than float64 (autocast's eligibility rule); anything else unchanged."""
    if isinstance(value, list):
        return [to_dtype(v, dtype) for v in value]
    eligible = isinstance(value, torch.Tensor) and value.is_floating_point()
    return value.to(dtype) if eligible and value.dtype != torch.float64 else value


def register_autocast(qualname: str, cast: Callable[..., tuple]) -> None:
    """Run custom op ``qualname`` (``"shiftwise::name"``) under autocast (CPU and CUDA) on
    ``cast(dtype, *args)``.

    ``cast`` receives the autocast dtype of the device (``torch.get_autocast_dtype``) and the
    op's arguments and returns the arguments to run the op on; the op then runs with autocast
    disabled for that device, so its own kernels see exactly the dtypes ``cast`` chose.
    """
    for device_type in AUTOCAST_DEVICES:
        key = "Autocast" + ("CPU" if device_type == "cpu" else "CUDA")
        torch.library.impl(qualname, key, _autocast_kernel(qualname, cast, device_type))


def _autocast_kernel(qualname: str, cast: Callable[..., tuple], device_type: str):
    namespace, name = qualname.split("::")
    op = getattr(getattr(torch.ops, namespace), name).default

    def kernel(*args):
        args = cast(torch.get_autocast_dtype(device_type), *args)
        with torch.autocast(device_type, enabled=False):
            return op(*args)

    return kernel


def without_autocast(backward: Callable) -> Callable:
    """A custom op's backward formula ``backward(ctx, *grads)`` run with autocast off on the
    device of its first gradient."""

    @functools.wraps(backward)
    def run(ctx, grad: torch.Tensor, *grads):
        with torch.autocast(grad.device.type, enabled=False):
            return backward(ctx, grad, *grads)

    return run
