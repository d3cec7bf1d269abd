"""``model.kwargs`` reaches create_model, and the weights record it so the model rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import shiftwise
from shiftwise.errors import UsageError
from shiftwise.layers import ShiftWiseConv2d
from shiftwise.models import model_from_weights
from shiftwise.training import config_from_options

TINY = {
    "model": "sw_atto",
    "width_factor": 0.25,
    "data": "digits",
    "train_limit": 32,
    "val_limit": 16,
    "batch_size": 32,
    "epochs": 1,
    "progress": False,
}


@pytest.mark.slow
def test_model_kwargs_are_used_and_saved_with_the_weights(tmp_path: Path) -> None:
    kwargs = {"operator_kwargs": {"n_paths": 1}}
    config = config_from_options({**TINY, "model_kwargs": kwargs, "output": str(tmp_path)})
    result = shiftwise.train(config)
    model, metadata = model_from_weights(result.weights)
    assert json.loads(metadata["model_kwargs"])["operator_kwargs"] == {"n_paths": 1}
    operators = [m for m in model.modules() if isinstance(m, ShiftWiseConv2d)]
    assert operators and all(op.n_paths == 1 for op in operators)


def test_a_value_the_model_refuses_names_model_kwargs_before_any_work(tmp_path: Path) -> None:
    options = {**TINY, "model_kwargs": {"operator_kwargs": {"n_pathz": 1}}, "output": str(tmp_path)}
    with pytest.raises(UsageError, match=r"^model\.kwargs: operator_kwargs: 'n_pathz' is not"):
        config_from_options(options)
    assert not any(tmp_path.iterdir())
