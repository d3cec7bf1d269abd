"""Every TrainConfig field is a run field, a resumed option or an execution detail; resumed
options come back from the checkpoint."""

from __future__ import annotations

import dataclasses

from shiftwise.training import TrainConfig
from shiftwise.training.config import RUN_FIELDS
from shiftwise.training.resumed_options import (
    NOT_RESUMED,
    RESUMED_OPTIONS,
    resumed_options,
    saved_options,
)

NON_DEFAULT = {
    "val_limit": 24,
    "checkpoint_every": 3,
    "max_skipped_steps": 7,
    "max_bad_images": 0.2,
}


def test_every_config_field_is_classified_exactly_once() -> None:
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    groups = [set(RUN_FIELDS), set(RESUMED_OPTIONS), set(NOT_RESUMED)]
    assert sorted(fields) == sorted(name for group in groups for name in group)
    assert set(NON_DEFAULT) == set(RESUMED_OPTIONS)  # the test below covers each one


def test_every_resumed_option_comes_back_from_a_non_default_value() -> None:
    first = resumed_options(TrainConfig(**NON_DEFAULT), None)
    saved = saved_options(first)
    assert all(saved[name] != default for name, default in RESUMED_OPTIONS.items())
    resumed = resumed_options(TrainConfig(resume="run"), saved)
    assert saved_options(resumed) == NON_DEFAULT
    given = resumed_options(TrainConfig(resume="run", val_limit=8), saved)
    assert given.val_limit == 8 and given.checkpoint_every == 3  # a given option wins
    fresh = resumed_options(TrainConfig(), None)
    assert saved_options(fresh) == RESUMED_OPTIONS
