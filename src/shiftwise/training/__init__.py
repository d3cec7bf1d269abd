"""The trainer as an API: ``shiftwise.train(TrainConfig(...))`` (what ``shiftwise train`` runs)."""

from shiftwise.training.config import TrainConfig
from shiftwise.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
