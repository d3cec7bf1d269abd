"""shiftwise: very large kernel effects from small convolutions (ShiftwiseConv and SLaK)."""

__version__ = "0.1.0"

from shiftwise.models import create_model, list_models, reparameterize

__all__ = ["__version__", "create_model", "list_models", "reparameterize"]
