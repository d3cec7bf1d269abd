"""Networks of the ShiftwiseConv and SLaK papers and ConvNeXt baselines (timm conventions).

``create_model(name, ...)`` builds a registered configuration (``list_models()``),
``reparameterize(model)`` turns a whole model into its inference form and
``load_checkpoint(model, path)`` loads every weights file shiftwise writes (:mod:`shiftwise.io`).
"""

from shiftwise.deprecation import deprecated_names
from shiftwise.io import load_checkpoint
from shiftwise.models.features import FeatureInfo, FeatureNet
from shiftwise.models.network import MacroNet
from shiftwise.models.operators import build_operator, list_operators, register_operator
from shiftwise.models.registry import (
    MODEL_CONFIGS,
    Architecture,
    create_model,
    list_models,
    max_input_size,
    min_input_size,
)
from shiftwise.models.reparam import reparameterize
from shiftwise.models.timm_entrypoints import register_timm
from shiftwise.models.weights import model_from_weights, save_checkpoint

__all__ = [
    "MODEL_CONFIGS",
    "Architecture",
    "FeatureInfo",
    "FeatureNet",
    "MacroNet",
    "build_operator",
    "create_model",
    "list_models",
    "list_operators",
    "load_checkpoint",
    "max_input_size",
    "min_input_size",
    "model_from_weights",
    "register_operator",
    "reparameterize",
    "save_checkpoint",
]

register_timm()


__getattr__ = deprecated_names(__name__, {"LargeKernelNet": MacroNet, "ModelConfig": Architecture})
