"""Official checkpoints (key names and shapes from the reference listings) to ours, and back in."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from testing_utils import official_state_dict as official_listing_state_dict

from shiftwise import cli
from shiftwise.models import create_model, load_checkpoint
from shiftwise.tools.convert import convert_checkpoint, convert_state_dict, map_key

# Key and shape listings of the official models (measured from the official classes).
LISTINGS = {
    "sw_tiny": "official_sw_tiny_state_dict.tsv",
    "sw_small": "official_sw_s_state_dict.tsv",
    "sw_base": "official_sw_b_state_dict.tsv",
    "slak_tiny": "official_slak_tiny_state_dict.tsv",
    "slak_small": "official_slak_s_state_dict.tsv",
    "slak_base": "official_slak_b_state_dict.tsv",
}
# (official key, our key) pairs whose values must be equal after conversion.
SW_PAIRS = [
    ("stages.0.0.large_kernel.LoRAs.0.weight", "stages.0.blocks.0.conv_dw.paths.0.weight"),
    ("stages.2.17.large_kernel.LoRAs.1.weight", "stages.2.blocks.17.conv_dw.paths.1.weight"),
    ("stages.1.2.large_kernel.bn_lora2.running_var", "stages.1.blocks.2.conv_dw.bn_v.running_var"),
    ("stages.3.0.act.1.gamma", "stages.3.blocks.0.grn.gamma"),
    ("stages.3.0.pwconv2.2.weight", "stages.3.blocks.0.norm2.weight"),
    ("downsample_layers.0.3.weight", "stem.3.weight"),
]
SLAK_PAIRS = [
    ("stages.0.0.large_kernel.LoRA1.conv.weight", "stages.0.blocks.0.conv_dw.tall.conv.weight"),
    ("stages.2.8.large_kernel.LoRA2.bn.bias", "stages.2.blocks.8.conv_dw.wide.bn.bias"),
    (
        "stages.3.2.large_kernel.small_conv.conv.weight",
        "stages.3.blocks.2.conv_dw.small.conv.weight",
    ),
    ("stages.1.1.pwconv2.weight", "stages.1.blocks.1.fc2.weight"),
    ("downsample_layers.2.1.weight", "stages.2.downsample.1.weight"),
]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cli, "TOOL_MODULES", (cli.convert,))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def official_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the official key names and shapes of model ``name``."""
    return official_listing_state_dict(LISTINGS[name], seed)


def _write_official(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    """Save as the official training scripts do: under 'model', with an argparse Namespace."""
    args = argparse.Namespace(model="official", kernel_size=[51, 49, 47, 13, 3])
    wrapped = {f"module.{k}": v for k, v in state_dict.items()}
    torch.save({"model": wrapped, "epoch": 299, "args": args}, path)
    return path


@pytest.mark.parametrize("name", ["sw_tiny", "slak_tiny"])
def test_round_trip_file_loads_strict(name: str, tmp_path: Path) -> None:
    official = official_state_dict(name)
    source = name.split("_")[0]
    checkpoint = _write_official(tmp_path / "official.pth", official)
    out = tmp_path / "ours.safetensors"
    assert convert_checkpoint(source, checkpoint, out) == name
    model = load_checkpoint(create_model(name), out)
    ours = model.state_dict()
    if source == "sw":
        pairs = list(SW_PAIRS)
        # The ghost split of the official code (seed 123), first ten for C = 80 and C = 640.
        ghost0 = ours["stages.0.blocks.0.conv_dw.ghost_index"][:10].tolist()
        ghost3 = ours["stages.3.blocks.0.conv_dw.ghost_index"][:10].tolist()
        assert ghost0 == [4, 8, 9, 23, 29, 31, 37, 43, 44, 53]
        assert ghost3 == [5, 9, 11, 13, 31, 33, 34, 35, 36, 43]
    else:
        pairs = list(SLAK_PAIRS)
    pairs += [("norm.weight", "head.norm.weight"), ("head.bias", "head.fc.bias")]
    for official_key, our_key in pairs:
        assert torch.equal(ours[our_key], official[official_key]), our_key
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(1, 3, 64, 64))).all()


def test_map_key_examples() -> None:
    assert map_key("downsample_layers.2.0.bias", "sw") == "stages.2.downsample.0.bias"
    assert map_key("stages.0.1.se.up.weight", "sw") == "stages.0.blocks.1.se.up.weight"
    assert map_key("stages.0.1.large_kernel.LoRA.weight", "sw") == (
        "stages.0.blocks.1.conv_dw.paths.0.weight"
    )
    assert map_key("stages.0.1.pwconv1.weight", "slak") == "stages.0.blocks.1.fc1.weight"
    assert map_key("stages.0.1.large_kernel.LoRA1.conv.weight", "sw") is None
    with pytest.raises(ValueError, match="source: expected"):
        map_key("head.weight", "replknet")


def test_merged_sw_checkpoint_builds_one_path() -> None:
    official = official_state_dict("sw_tiny")
    for key in [k for k in official if "LoRAs.1." in k]:
        del official[key]
    official = {k.replace("LoRAs.0.", "LoRA."): v for k, v in official.items()}
    name, ours = convert_state_dict(official, "sw")
    model = create_model(name, operator_kwargs={"n_paths": 1})
    model.load_state_dict(ours, strict=True)


def test_errors_name_the_problem(tmp_path: Path) -> None:
    official = official_state_dict("sw_tiny")
    with pytest.raises(ValueError, match="wrong --from"):
        convert_state_dict(official, "slak")
    with pytest.raises(ValueError, match="shape mismatches"):
        convert_state_dict(official, "sw", model_name="sw_small")
    broken = dict(official)
    del broken["stages.1.0.se.up.bias"]
    with pytest.raises(ValueError, match=r"missing keys: stages\.1\.blocks\.0\.se\.up\.bias"):
        convert_state_dict(broken, "sw")
    with pytest.raises(FileNotFoundError, match="IN: "):
        convert_checkpoint("sw", tmp_path / "absent.pth", tmp_path / "out.safetensors")
    out = tmp_path / "slak.safetensors"
    _, ours = convert_state_dict(official_state_dict("slak_tiny"), "slak")
    from shiftwise.models import save_checkpoint

    save_checkpoint(ours, out, metadata={"model": "slak_tiny"})
    with pytest.raises(ValueError, match="weights for model 'slak_tiny', not 'sw_tiny'"):
        load_checkpoint(create_model("sw_tiny"), out)
    with pytest.raises(FileNotFoundError, match="path: "):
        load_checkpoint(create_model("sw_atto"), tmp_path / "none.safetensors")


def _official_atto(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """An sw_atto and its weights under the official names, as ``atto.pth``."""
    model = create_model("sw_atto", num_classes=10)
    official = {}
    for key, value in model.state_dict().items():  # our atto under official names
        if key.rsplit(".", 1)[-1] not in ("rep_index", "ghost_index") and "_index" not in key:
            official[_to_official(key)] = value
    checkpoint = tmp_path / "atto.pth"
    torch.save({"state_dict": official}, checkpoint)
    return model, checkpoint


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, checkpoint = _official_atto(tmp_path)
    out = tmp_path / "atto.safetensors"
    argv = ["convert", "--from", "sw", str(checkpoint), str(out), "--model", "sw_atto"]
    assert cli.main(argv) == 0
    assert "sw_atto" in capsys.readouterr().out
    loaded = load_checkpoint(create_model("sw_atto", num_classes=10), out)
    assert torch.equal(loaded.head.fc.weight, model.head.fc.weight)
    assert cli.main(["convert", "--from", "sw", str(checkpoint), str(out)]) == 0  # inferred
    assert cli.main(["convert", "--from", "slak", str(checkpoint), str(out)]) == 2
    assert "wrong --from" in capsys.readouterr().err


def _to_official(key: str) -> str:
    """Inverse of the SW renames, enough for the CLI test."""
    for ours, official in [
        (r"^stem\.", "downsample_layers.0."),
        (r"^stages\.(\d)\.downsample\.", r"downsample_layers.\1."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.", r"stages.\1.\2."),
        (r"conv_dw\.paths\.", "large_kernel.LoRAs."),
        (r"conv_dw\.bn_h\.", "large_kernel.bn_lora1."),
        (r"conv_dw\.bn_v\.", "large_kernel.bn_lora2."),
        (r"conv_dw\.bn_identity\.", "large_kernel.bn_small."),
        (r"\.fc1\.", ".pwconv1.1."),
        (r"\.grn\.", ".act.1."),
        (r"\.fc2\.", ".pwconv2.0."),
        (r"\.norm2\.", ".pwconv2.2."),
        (r"^head\.norm\.", "norm."),
        (r"^head\.fc\.", "head."),
    ]:
        key = re.sub(ours, official, key)
    return key


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sw_small", "slak_base"])  # one of each family and width
def test_small_base_listings_convert(name: str) -> None:
    found, ours = convert_state_dict(official_state_dict(name), name.split("_")[0])
    assert found == name
    create_model(name).load_state_dict(ours, strict=True)


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_convert_refuses_to_write_onto_its_input(
    link: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``convert a.pth a.pth`` (or an output linked to the input) would replace the official
    checkpoint: one line, exit 2, the input unchanged."""
    _, checkpoint = _official_atto(tmp_path)
    before = checkpoint.read_bytes()
    out = tmp_path / "out.safetensors"
    if link == "same":
        out = tmp_path / "." / checkpoint.name
    elif link == "symlink":
        out.symlink_to(checkpoint)
    else:
        out.hardlink_to(checkpoint)
    argv = ["convert", "--from", "sw", str(checkpoint), str(out), "--model", "sw_atto"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "OUT: " in err and "would replace the input" in err and err.count("\n") == 1
    assert checkpoint.read_bytes() == before
