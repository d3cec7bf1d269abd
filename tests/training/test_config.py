"""The structured training config: options from field metadata, validation naming fields,
resolution from recipes and saved configs, structured resume differences, the CLI mapping."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import pytest

from shiftwise.errors import UsageError
from shiftwise.tools.train import add_arguments, config_from_args, flags_for_fields
from shiftwise.training import TrainConfig, config_from_options
from shiftwise.training.config import (
    Difference,
    config_from_dict,
    config_to_dict,
    iter_options,
    reschedules,
    resolve,
)
from shiftwise.training.recipe import RECIPES
from shiftwise.training.run_directory import saved_config


def test_every_field_is_one_uniquely_named_option() -> None:
    options = list(iter_options())
    sections = {f.name for f in dataclasses.fields(TrainConfig)}
    assert sections == {"model", "data", "optim", "augment", "sparse", "run"}
    fields = sum(len(dataclasses.fields(getattr(TrainConfig(), s))) for s in sections)
    assert len(options) == fields == len({name for name, *_ in options})
    # every recipe value is a field of its section
    paths = {path for _, path, _, _ in options}
    for recipe in RECIPES.values():
        for section, values in recipe.items():
            assert {f"{section}.{name}" for name in values} <= paths


def test_the_command_line_has_every_option_and_reads_back_the_same_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--model", "slak_atto", "--lr", "0.01", "--epochs", "3", "--sparse"]
    argv += ["--sparse-init", "snip", "--no-amp", "--model-kwargs", '{"drop_rate": 0.1}']
    config = config_from_args(parser.parse_args(argv))
    assert config == config_from_options(
        {
            "model": "slak_atto",
            "lr": 0.01,
            "epochs": 3,
            "sparse": True,
            "sparse_init": "snip",
            "amp": False,
            "model_kwargs": {"drop_rate": 0.1},
        }
    )
    assert (config.optim.lr, config.sparse.init, config.model.kwargs) == (
        0.01,
        "snip",
        {"drop_rate": 0.1},
    )
    flags = {action.dest for action in parser._actions}
    assert {name for name, *_ in iter_options()} <= flags
    with pytest.raises(SystemExit):  # choices come from shiftwise.sparse
        parser.parse_args(["--growth", "sideways"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lr": math.inf}, "optim.lr: expected a finite value > 0, got inf"),
        ({"lr": 0}, "optim.lr: expected a value > 0, got 0.0"),
        ({"smoothing": 1.0}, "augment.smoothing: expected a value in [0, 1), got 1.0"),
        ({"epochs": 2.5}, "optim.epochs: expected int, got 2.5"),
        ({"sparse": 1}, "sparse.enabled: expected bool, got 1"),
        ({"growth": "sideways"}, "sparse.growth: expected one of ['random', 'gradient']"),
        ({"model": "resnet50"}, "model.name: unknown model 'resnet50'"),
        ({"recipe": "imagenet"}, "run.recipe: expected one of ['cpu', 'paper']"),
        ({"density": 0.5}, "sparse.density: only applies to sparse training"),
        ({"image_size": 16}, "data.image_size: the models reduce their input 32 times"),
        ({"lrr": 1}, "lrr: unknown training option"),
        ({"model_kwargs": {"n_pathz": 1}}, "model.kwargs: unknown create_model argument 'n_pathz'"),
        ({"model_kwargs": {"num_classes": 3}}, "model.kwargs: 'num_classes' is set by the run"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_field(options, message) -> None:
    with pytest.raises(UsageError) as caught:
        config_from_options(options)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_ints_are_accepted_for_float_fields() -> None:
    assert config_from_options({"lr": 1}).optim.lr == 1.0
    assert isinstance(config_from_options({"lr": 1}).optim.lr, float)


def test_a_fresh_run_takes_defaults_then_the_recipe_then_what_is_given() -> None:
    config, differences = resolve(config_from_options({"model": "convnext_atto", "lr": 0.01}))
    assert differences == []
    assert config.optim.lr == 0.01  # given
    assert config.optim.epochs == RECIPES["cpu"]["optim"]["epochs"]  # the atto recipe
    assert (config.sparse.density, config.run.seed, config.data.name) == (0.6, 0, "bundled")
    assert config.model.kwargs == {} and config.data.image_size is None
    paper, _ = resolve(config_from_options({"model": "convnext_atto", "recipe": "paper"}))
    assert paper.optim.epochs == 300 and paper.augment.mixup == 0.8


def test_a_resume_keeps_the_saved_run_and_lists_what_changes() -> None:
    saved, _ = resolve(config_from_options({"model": "convnext_atto", "seed": 3, "workers": 2}))
    stored = config_from_dict(json.loads(json.dumps(config_to_dict(saved))))
    assert stored == saved

    same, differences = resolve(config_from_options({"output": "elsewhere"}), stored)
    assert differences == [] and same.run.seed == 3 and same.model.name == "convnext_atto"
    assert same.data.workers is None  # not a run-defining field: not taken from the saved run
    changed, differences = resolve(config_from_options({"lr": 0.5, "data": "digits"}), stored)
    assert differences == [
        Difference("data.name", "bundled", "digits"),
        Difference("optim.lr", saved.optim.lr, 0.5),
    ]
    assert str(differences[1]) == f"optim.lr: {saved.optim.lr} -> 0.5"
    assert reschedules(differences) and not reschedules(differences[:1])
    assert changed.optim.lr == 0.5


def test_the_cli_names_options_where_the_library_names_fields() -> None:
    message = "optim.lr: too high; try a lower optim.lr or run.resume; file '/x/optim.lr'"
    assert (
        flags_for_fields(message)
        == "--lr: too high; try a lower --lr or --resume; file '/x/optim.lr'"
    )
    assert flags_for_fields("model.kwargs: bad, sparse.enabled") == "--model-kwargs: bad, --sparse"


def test_a_deprecated_option_name_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="'checkpoint_every' is deprecated"):
        config = config_from_options({"checkpoint_every": 3})
    assert config.run.resume_point_every == 3


def test_a_resume_point_of_the_flat_format_still_resumes() -> None:
    current, _ = resolve(config_from_options({"model": "slak_atto", "sparse": True, "lr": 0.5}))
    flat = {
        "model": "slak_atto",
        "data": "bundled",
        "image_size": None,
        "width_factor": None,
        "accum_steps": 1,
        "seed": 0,
        "train_limit": None,
        "sparse": True,
        "density": 0.6,
        "sparse_init": "erk",
        "growth": "random",
        "update_freq": 100,
        "prune_rate": 0.3,
        "granularity": None,
        "recipe": {**RECIPES["cpu"]["optim"], **RECIPES["cpu"]["augment"], "lr": 0.5},
    }
    flat["recipe"]["drop_path"] = 0.0
    saved = saved_config({"path": "x/checkpoint.pt", "run": flat})
    assert resolve(TrainConfig(), saved) == (current, [])
    assert saved_config({"path": "p", "config": config_to_dict(current)}) == current
    with pytest.raises(UsageError, match="records no run configuration"):
        saved_config({"path": "p"})


def test_options_that_shape_logs_and_writes_come_back_on_resume_unless_given() -> None:
    first = {"val_limit": 24, "resume_point_every": 3, "max_skipped_steps": 7}
    saved, _ = resolve(config_from_options({**first, "max_bad_images": 0.2}))
    resumed, differences = resolve(config_from_options({"resume": "run"}), saved)
    assert differences == []  # resumed options are not compared
    assert (resumed.data.val_limit, resumed.run.resume_point_every) == (24, 3)
    assert (resumed.run.max_skipped_steps, resumed.data.max_bad_images) == (7, 0.2)
    given, _ = resolve(config_from_options({"resume": "run", "val_limit": 8}), saved)
    assert given.data.val_limit == 8 and given.run.resume_point_every == 3
    fresh, _ = resolve(TrainConfig())
    assert (fresh.data.val_limit, fresh.run.max_skipped_steps, fresh.run.device) == (None, 5, None)
