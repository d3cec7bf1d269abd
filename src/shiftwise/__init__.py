"""shiftwise: very large kernel effects from small convolutions (ShiftwiseConv and SLaK)."""

from shiftwise.models import create_model, list_models, reparameterize
from shiftwise.version import __version__

__all__ = [
    "TrainConfig",
    "TrainResult",
    "__version__",
    "create_model",
    "list_models",
    "reparameterize",
    "train",
]


def __getattr__(name: str):
    """``shiftwise.train`` / ``TrainConfig`` / ``TrainResult``, imported on first use (the
    trainer pulls in the data and logging stack, which ``import shiftwise`` does not need)."""
    if name in ("TrainConfig", "TrainResult", "train"):
        import shiftwise.training

        return getattr(shiftwise.training, name)
    raise AttributeError(f"module 'shiftwise' has no attribute {name!r}")
