"""The structured training config: options from field metadata, validation naming fields,
resolution from recipes and saved configs, structured resume differences, the CLI mapping."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import pytest

from shiftwise.errors import UsageError
from shiftwise.tools.train import add_arguments, config_from_args, options_in_errors
from shiftwise.training import TrainConfig, config_from_options
from shiftwise.training.config import (
    CPU,
    PAPER,
    RECIPES,
    Difference,
    config_from_dict,
    config_to_dict,
    default_recipe,
    iter_options,
    reschedules,
    resolve,
    validate,
)
from shiftwise.training.run_directory import saved_config


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_every_field_is_one_uniquely_named_option() -> None:
    options = list(iter_options())
    sections = {f.name for f in dataclasses.fields(TrainConfig)}
    assert sections == {"model", "data", "optim", "augment", "sparse", "run"}
    fields = sum(len(dataclasses.fields(getattr(TrainConfig(), s))) for s in sections)
    assert len(options) == fields == len({name for name, *_ in options})
    # every recipe is a valid partial config
    for recipe in RECIPES.values():
        assert isinstance(recipe, TrainConfig) and validate(recipe, devices=False) == recipe


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
        ({"recipe": "imagenet"}, "run.recipe: expected one of ['cpu', 'finetune', 'paper']"),
        ({"density": 0.5}, "sparse.density: only applies to sparse training"),
        ({"image_size": 16}, "data.image_size: sw_atto takes inputs of 32 to 1024 pixels"),
        ({"image_size": 100000}, "data.image_size: sw_atto takes inputs of 32 to 1024 pixels"),
        ({"lrr": 1}, "lrr: unknown training option"),
        ({"model_kwargs": {"n_pathz": 1}}, "model.kwargs: n_pathz: not an argument of"),
        (
            {"model_kwargs": {"depths": [100000, 1, 1, 1]}},
            "model.kwargs: depths: expected an integer in [1, 128], got 100000",
        ),
        (
            {"model_kwargs": {"operator_kwargs": {"n_paths": 100000}}},
            "model.kwargs: operator_kwargs: n_paths: expected an integer in [1, 16]",
        ),
        (
            {"model_kwargs": {"operator_kwargs": {"n_shuffles": 100000}}},
            "model.kwargs: operator_kwargs: n_shuffles: expected an integer in [1, 64]",
        ),
        (
            {"model_kwargs": {"layer_scale_init": 1e308}},
            "model.kwargs: layer_scale_init: expected a finite number in [0, 10]",
        ),
        ({"model_kwargs": {"drop_rate": math.nan}}, "model.kwargs: drop_rate: expected a finite"),
        ({"width_factor": 1e300}, "model.width_factor: expected a value in [0.0625, 32]"),
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
    assert config.optim.epochs == RECIPES["cpu"].optim.epochs  # the atto recipe
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
    change = {"lr": 0.5, "data": "digits"}
    with pytest.raises(UsageError, match=r"^run.resume: .*\(data.name: bundled -> digits; optim"):
        resolve(config_from_options(change), stored)
    change["allow_config_change"] = True
    changed, differences = resolve(config_from_options(change), stored)
    assert differences == [
        Difference("data.name", "bundled", "digits"),
        Difference("optim.lr", saved.optim.lr, 0.5),
    ]
    assert str(differences[1]) == f"optim.lr: {saved.optim.lr} -> 0.5"
    assert reschedules(differences) and not reschedules(differences[:1])
    assert changed.optim.lr == 0.5


def test_the_cli_names_options_where_the_library_names_fields() -> None:
    error = UsageError(
        "too high; try a lower optim.lr or run.resume; file '/x/optim.lr'",
        field="optim.lr",
        also=["run.resume"],
    )
    assert error.field == "optim.lr" and str(error).startswith("optim.lr: too high")
    with pytest.raises(UsageError) as raised, options_in_errors():
        raise error
    assert (
        str(raised.value) == "--lr: too high; try a lower optim.lr or --resume; file '/x/optim.lr'"
    )
    assert raised.value.field == "optim.lr"  # the field survives the respelling
    with pytest.raises(UsageError, match=r"^--sparse-init: only applies .*; add --sparse$"):
        config_from_args(_parse(["--sparse-init", "uniform"]))
    with pytest.raises(UsageError, match=r"^model: not a config field"), options_in_errors():
        raise UsageError("not a config field", field="model")  # not a field path: unchanged


def test_a_deprecated_option_name_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="'checkpoint_every' is deprecated"):
        config = config_from_options({"checkpoint_every": 3})
    assert config.run.resume_point_every == 3


def test_an_option_given_by_both_its_names_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^run.resume_point_every: given twice") as raised:
        config_from_options({"checkpoint_every": 1, "resume_point_every": 0})
    assert raised.value.field == "run.resume_point_every"
    args = _parse(["--checkpoint-every", "1", "--resume-point-every", "0"])
    with pytest.raises(UsageError, match=r"^--resume-point-every: given twice"):
        config_from_args(args)


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
        "recipe": {**config_to_dict(CPU)["optim"], **config_to_dict(CPU)["augment"], "lr": 0.5},
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


@pytest.mark.parametrize(
    "change",
    [
        {"width_factor": 0.5},
        {"model": "slak_atto"},
        {"model_kwargs": {"operator_kwargs": {"n_paths": 1}}},
        {"sparse": True},
    ],
)
def test_a_resume_never_changes_the_models_shape_even_when_allowed(change) -> None:
    saved, _ = resolve(config_from_options({"model": "convnext_atto"}))
    requested = config_from_options({**change, "allow_config_change": True})
    with pytest.raises(UsageError, match="a resume cannot change it") as raised:
        resolve(requested, saved)
    assert raised.value.field.startswith(("model.", "sparse."))
    args = _parse(["--allow-config-change"])
    vars(args).update(change)
    cannot = r"^--[\w-]+: a resume cannot change it"
    with pytest.raises(UsageError, match=cannot), options_in_errors():
        resolve(config_from_args(args), saved)


def test_recipes_are_chosen_by_the_registry_entry_and_merged_as_configs() -> None:
    assert default_recipe("sw_atto") == CPU and default_recipe("convnext_tiny") == PAPER
    sw = default_recipe("sw_tiny")  # the family's override of the paper recipe
    assert sw.model.drop_path == 0.2 and sw.optim == PAPER.optim
    assert default_recipe("sw_atto", "paper").model.drop_path == 0.2
    with pytest.raises(
        UsageError, match=r"^run\.recipe: expected one of \['cpu', 'finetune', 'paper'\]"
    ):
        default_recipe("sw_atto", "imagenet")
    # a recipe leaves what it does not set to the defaults and the user
    config, _ = resolve(config_from_options({"model": "sw_atto", "lr": 0.5}))
    assert config.optim.lr == 0.5 and config.optim.epochs == CPU.optim.epochs
    assert config.data.name == "bundled" and config.optim.accum_steps == 1


def test_a_training_step_that_cannot_fit_the_memory_is_refused_before_any_work() -> None:
    huge = config_from_options({"model": "sw_atto", "image_size": 1024, "batch_size": 100000})
    with pytest.raises(UsageError, match=r"^optim\.batch_size: a training step of 100000 images"):
        validate(huge)
    validate(dataclasses.replace(huge, optim=dataclasses.replace(huge.optim, batch_size=2)))
    validate(huge, devices=False)  # no device named: the device decides later
