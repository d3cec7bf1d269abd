"""The trainer as an API: ``shiftwise.train(config)`` (what ``shiftwise train`` runs), with
the config built from flat option names by :func:`config_from_options`."""

from shiftwise.training.config import TrainConfig, config_from_options
from shiftwise.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "config_from_options", "train"]
