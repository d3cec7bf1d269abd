"""The one validator of model arguments (shiftwise.models.arguments), the input sizes stored
with each registered model, and the hostile sizes of issue 26 refused in one line, before any
work, from create_model, a training option and a weights file's metadata."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from shiftwise import devices
from shiftwise import io as swio
from shiftwise.cli import main
from shiftwise.errors import CheckpointError, UsageError
from shiftwise.models import (
    create_model,
    list_models,
    max_input_size,
    min_input_size,
    model_from_weights,
    save_checkpoint,
)
from shiftwise.models.arguments import (
    ARGUMENTS,
    check_network,
    estimate_activation_bytes,
    estimate_parameters,
)
from shiftwise.models.registry import check_model_arguments

ATTO = {"num_classes": 10, "in_chans": 1, "width_factor": 0.25}

HOSTILE = [
    ({"depths": [100000, 1, 1, 1]}, "depths", "expected an integer in [1, 128], got 100000"),
    ({"operator_kwargs": {"n_paths": 100000}}, "operator_kwargs", "n_paths: expected an int"),
    ({"operator_kwargs": {"n_shuffles": 100000}}, "operator_kwargs", "n_shuffles: expected"),
    ({"kernel_sizes": [100001, 7, 7, 7]}, "kernel_sizes", "expected an odd integer in [1, 255]"),
    ({"width_factor": 1e300}, "width_factor", "expected a value in [0.025, 12.8]"),
    ({"layer_scale_init": 1e308}, "layer_scale_init", "expected a finite number in [0, 10]"),
    ({"drop_rate": math.nan}, "drop_rate", "expected a finite number in [0, 1), got nan"),
    ({"num_classes": 1e10}, "num_classes", "expected an integer >= 0, got 10000000000.0"),
    ({"num_classes": 10**10}, "num_classes", "GiB of memory available"),
    ({"in_chans": 0}, "in_chans", "expected an integer >= 1, got 0"),
    ({"operator_kwargs": {"n_pathz": 1}}, "operator_kwargs", "'n_pathz' is not an argument"),
]


@pytest.mark.parametrize(("kwargs", "field", "message"), HOSTILE, ids=lambda v: str(v)[:30])
def test_create_model_refuses_hostile_arguments_in_one_line(kwargs, field, message) -> None:
    with pytest.raises(UsageError) as raised:
        create_model("sw_tiny", **kwargs)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_every_macronet_argument_is_validated() -> None:
    import inspect

    from shiftwise.models import MacroNet

    assert set(ARGUMENTS) == set(inspect.signature(MacroNet).parameters)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_passes_its_own_validator(name: str) -> None:
    arguments = check_model_arguments(name)
    assert estimate_parameters(arguments) > 0
    check_network(arguments)


def test_the_parameter_estimate_is_close_to_the_real_count() -> None:
    for name in ("sw_atto", "slak_atto", "convnext_atto", "sw_tiny", "slak_tiny"):
        arguments = check_model_arguments(name, num_classes=10)
        real = sum(p.numel() for p in create_model(name, num_classes=10).parameters())
        assert 0.9 * real <= estimate_parameters(arguments) <= 1.5 * real, name


def test_the_input_sizes_are_stored_with_the_model() -> None:
    model = create_model("sw_atto", num_classes=3)
    assert min_input_size("sw_atto") == min_input_size(model) == 32
    assert model.pretrained_cfg["min_input_size"] == (3, 32, 32)  # timm's key
    assert max_input_size("sw_atto") == max_input_size(model) == 16 * 64
    assert max_input_size("sw_tiny") == 16 * 224
    with pytest.raises(TypeError):
        min_input_size(torch.nn.Linear(1, 1))


@pytest.mark.parametrize("name", ["sw_atto", "slak_atto", "convnext_atto"])
def test_an_input_below_the_minimum_is_one_error_naming_x(name: str) -> None:
    model = create_model(name, num_classes=3).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    for size in (3, 16, 31):
        with pytest.raises(UsageError, match=r"^x: expected H, W >= 32 .* got shape") as raised:
            model(torch.randn(1, 3, size, 32))
        assert raised.value.field == "x"


def _resign(path: Path, **changes: str) -> Path:
    """Rewrite ``path`` with metadata ``changes`` and a valid digest (a crafted file)."""
    tensors, metadata = swio.read_weights(path)
    metadata = {**metadata, **changes}
    metadata["sha256"] = swio.weights_digest(tensors, metadata)
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    return path


def _atto(tmp_path: Path, **metadata: str) -> Path:
    model = create_model("sw_atto", **ATTO)
    return _resign(save_checkpoint(model, tmp_path / "w.safetensors"), **metadata)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model_kwargs": json.dumps({**ATTO, "operator_kwargs": {"n_paths": 100000}})},
            "n_paths: expected an integer in [1, 16], got 100000",
        ),
        (
            {"model_kwargs": json.dumps({**ATTO, "operator_kwargs": {"n_shuffles": 100000}})},
            "n_shuffles: expected an integer in [1, 64], got 100000",
        ),
        ({"image_size": "6000"}, "image_size: sw_atto takes inputs of 32 to 1024 pixels"),
        ({"image_size": "100000"}, "got 100000"),
        ({"image_size": "big"}, "got 'big'"),
    ],
)
def test_hostile_metadata_is_one_error_before_any_work(changes, message, tmp_path) -> None:
    path = _atto(tmp_path, **changes)
    with pytest.raises(CheckpointError) as raised:
        model_from_weights(path, flag="--checkpoint")
    assert raised.value.field == "--checkpoint"
    assert str(raised.value).startswith("--checkpoint: the metadata of ")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_eval_refuses_a_hostile_image_size_from_the_file_and_the_option(tmp_path, capsys) -> None:
    path = _atto(tmp_path, image_size="6000")
    assert main(["eval", "--checkpoint", str(path), "--data", "digits", "--limit", "4"]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint: " in err and "image_size" in err and err.count("\n") == 1
    path = _atto(tmp_path, image_size="32")
    argv = ["eval", "--checkpoint", str(path), "--data", "digits", "--image-size", "100000"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--image-size: sw_atto takes inputs of 32 to 1024" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model-kwargs", '{"depths": [100000, 1, 1, 1]}'], "--model-kwargs: depths: expected"),
        (["--model-kwargs", '{"operator_kwargs": {"n_paths": 100000}}'], "n_paths: expected"),
        (["--width-factor", "1e300"], "--width-factor: expected a value in [0.0625, 32]"),
        (["--image-size", "100000"], "--image-size: sw_atto takes inputs of 32 to 1024"),
        (["--model-kwargs", '{"layer_scale_init": 1e308}'], "layer_scale_init: expected a"),
        (["--checkpoint-every", "1", "--resume-point-every", "0"], "--resume-point-every: given"),
    ],
)
def test_train_refuses_hostile_sizes_in_one_line(argv, message, tmp_path, capsys) -> None:
    output = tmp_path / "run"
    assert main(["train", "--data", "digits", "--output", str(output), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not output.exists()


def test_the_registry_entry_is_an_architecture_and_its_old_name_is_deprecated() -> None:
    import shiftwise.models as models
    from shiftwise.models import MODEL_CONFIGS, Architecture

    assert all(isinstance(entry, Architecture) for entry in MODEL_CONFIGS.values())
    with pytest.warns(DeprecationWarning, match="ModelConfig is deprecated, use Architecture"):
        assert models.ModelConfig is Architecture


def test_the_training_estimate_grows_with_batch_and_pixels() -> None:
    from shiftwise.models.arguments import estimate_training_bytes

    arguments = check_model_arguments("sw_atto", num_classes=10)
    small = estimate_training_bytes(arguments, 64, 8)
    assert estimate_training_bytes(arguments, 64, 16) - small == pytest.approx(
        small - estimate_training_bytes(arguments, 64, 0)
    )
    assert estimate_training_bytes(arguments, 128, 8) > 3 * (
        small - estimate_training_bytes(arguments, 64, 0)
    )
    assert estimate_training_bytes(arguments, 64, 0) == 16 * estimate_parameters(arguments)
    per_image = estimate_training_bytes(arguments, 64, 1) - estimate_training_bytes(
        arguments, 64, 0
    )
    assert per_image == estimate_activation_bytes(arguments, 64)


def test_work_over_the_available_memory_is_one_error_naming_its_field(monkeypatch) -> None:
    monkeypatch.setattr(devices, "available_memory", lambda device=None: 2**30)
    devices.check_memory(2**30, "a step", "optim.batch_size")
    with pytest.raises(UsageError) as caught:
        devices.check_memory(3 * 2**30, "a step", "optim.batch_size", also=["data.image_size"])
    error = caught.value
    assert str(error) == (
        "optim.batch_size: a step would need about 3 GiB, more than the 1 GiB of memory "
        "available on this machine"
    )
    assert error.also == ("data.image_size",)
    with pytest.raises(UsageError, match=r"^--n: a step would need about 2\*\*9969 GiB"):
        devices.check_memory(10**3010, "a step", "--n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "sw_atto", "--num-classes", str(10**10)], "GiB of memory available"),
        (["info", "sw_atto", "--width-factor", "1e300"], "expected a value in [0.0625, 32]"),
        (["erf", "--models", "sw_atto", "--layer-scale", "1e308"], "in [0, 10], got 1e+308"),
    ],
)
def test_other_commands_refuse_hostile_sizes_in_one_line(argv, message, tmp_path, capsys):
    extra = ["--out", str(tmp_path / "erf"), "--num-images", "1"] if argv[0] == "erf" else []
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
