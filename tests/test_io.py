"""``shiftwise.io``: one weights format, verified loads, atomic writes, no code execution."""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import re
import stat
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from shiftwise import io as swio
from shiftwise.cli import main
from shiftwise.errors import CheckpointError, DivergedError, UnsafeFileError, UsageError, WriteError
from shiftwise.models import (
    create_model,
    load_checkpoint,
    model_from_weights,
    reparameterize,
    save_checkpoint,
)

ATTO = {"num_classes": 10, "in_chans": 1, "width_factor": 0.25}


class _Payload:
    """Unpickling this calls ``os.system`` (creates ``marker``): the attack weights_only stops."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path, wrap=lambda payload: {"model": payload}) -> Path:
    torch.save(wrap(_Payload(marker)), path)
    return path


def _atto_weights(tmp_path: Path, name: str = "slak_atto") -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = create_model(name, **ATTO)
    path = tmp_path / "model.safetensors"
    swio.save_weights(model.state_dict(), path, model=name, model_kwargs=ATTO)
    return model, path


def test_weights_round_trip_rebuilds_the_model_from_the_file_alone(tmp_path: Path) -> None:
    model, path = _atto_weights(tmp_path)
    rebuilt, metadata = model_from_weights(path)
    assert metadata["model"] == "slak_atto" and metadata["num_classes"] == "10"
    assert metadata["in_chans"] == "1" and metadata["width_factor"] == "0.25"
    assert metadata["shiftwise_version"] and len(metadata["sha256"]) == 64
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)
    # the plain loader: keys without prefix
    target = load_checkpoint(create_model("slak_atto", **ATTO), path)
    assert torch.equal(target.head.fc.weight, model.head.fc.weight)


def test_save_checkpoint_of_a_module_records_its_architecture(tmp_path: Path) -> None:
    model = create_model("sw_atto", num_classes=7, in_chans=1, width_factor=0.5)
    save_checkpoint(model, tmp_path / "m.safetensors")
    rebuilt, metadata = model_from_weights(tmp_path / "m.safetensors")
    assert (metadata["num_classes"], metadata["in_chans"], metadata["width_factor"]) == (
        "7",
        "1",
        "0.5",
    )
    assert rebuilt.head.fc.weight.shape == model.head.fc.weight.shape == (7, 128)


def test_mismatch_is_one_error_naming_keys_and_shapes(tmp_path: Path) -> None:
    _, path = _atto_weights(tmp_path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(create_model("slak_atto", num_classes=10, in_chans=1), path)
    message = str(error.value)
    assert "\n" not in message and "shape mismatches" in message
    assert "stem.0.weight: (8, 1, 4, 4) in the file, (32, 1, 4, 4) in the model" in message
    state = swio.read_weights(path)[0]
    state["extra.weight"] = torch.zeros(1)
    del state["head.fc.bias"]
    swio.save_weights(state, tmp_path / "odd.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys: head\.fc\.bias.*unexpected keys"):
        load_checkpoint(create_model("slak_atto", **ATTO), tmp_path / "odd.safetensors")


def test_flipped_and_truncated_weights_are_named(tmp_path: Path) -> None:
    _, path = _atto_weights(tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor data
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"flipped\.safetensors' is damaged"):
        swio.read_weights(tmp_path / "flipped.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors' is not a readable safetensors"):
        swio.read_weights(tmp_path / "cut.safetensors")


def test_non_finite_weights_are_never_written(tmp_path: Path) -> None:
    state = {"w": torch.tensor([1.0, float("nan")]), "n": torch.tensor([3])}
    with pytest.raises(DivergedError, match="NaN or infinity"):
        swio.save_weights(state, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_uses_the_umask_and_leaves_no_temp(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        swio.atomic_write(tmp_path / "a.bin", b"abc")
        swio.save_weights({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    for name in ("a.bin", "w.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "w.safetensors"]

    def fail(handle) -> None:
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        swio.atomic_write(tmp_path / "a.bin", fail)
    assert (tmp_path / "a.bin").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "w.safetensors"]


def _state_file(path: Path, inner: bytes) -> None:
    """A checkpoint.pt whose (valid) digest covers ``inner``."""
    outer = {
        "format": swio.STATE_FORMAT,
        "sha256": hashlib.sha256(inner).hexdigest(),
        "payload": torch.frombuffer(bytearray(inner), dtype=torch.uint8),
    }
    torch.save(outer, path)


def test_official_extras_load_through_the_allow_list(tmp_path: Path) -> None:
    path = tmp_path / "official.pth"
    state = {"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=4e-3), "epoch": 3}
    state["max_accuracy"] = np.float64(82.5)
    torch.save(state, path)
    loaded = swio.safe_torch_load(path, "IN")
    assert loaded["args"].lr == 4e-3 and float(loaded["max_accuracy"]) == 82.5


def _load_paths(tmp_path: Path, evil: Path) -> list[list[str]]:
    """Every command that reads a pickle, pointed at ``evil``."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    return [
        ["convert", "--from", "sw", str(evil), str(tmp_path / "out.safetensors")],
        ["train", "--model", "slak_atto", "--resume", str(evil)],
        ["eval", "--checkpoint", str(evil), "--data", "digits"],
        ["export", "slak_atto", "--checkpoint", str(evil), "-o", str(tmp_path / "m.onnx")],
        [
            *("erf", "--models", "slak_atto", "--checkpoint", f"slak_atto={evil}"),
            *("--out", str(tmp_path / "erf"), "--num-images", "1", "--size", "32"),
        ],
    ]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda payload: {"model": payload},
        lambda payload: {"state_dict": {"w": torch.ones(1)}, "args": payload},
        lambda payload: payload,
    ],
    ids=["state", "extra", "top"],
)
def test_malicious_pickles_are_refused_on_every_load_path(tmp_path: Path, wrap, capsys) -> None:
    marker = tmp_path / "pwned"
    evil = _malicious(tmp_path / "checkpoint.pt", marker, wrap)
    for argv in _load_paths(tmp_path, evil):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "posix.system" in err and "not an allowed global" in err, (argv, err)
        assert err.count("\n") == 1 and not marker.exists(), argv
    for call in (
        lambda: load_checkpoint(create_model("slak_atto"), evil),
        lambda: model_from_weights(evil),
        lambda: swio.find_resumable(tmp_path),
        lambda: swio.safe_torch_load(evil),
    ):
        with pytest.raises(UnsafeFileError, match=r"posix\.system"):
            call()
    assert not marker.exists()


def test_malicious_payload_inside_a_valid_state_file_is_refused(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    buffer = BytesIO()
    torch.save({"weights": {}, "args": _Payload(marker)}, buffer)
    run = tmp_path / "run"
    run.mkdir()
    _state_file(run / "checkpoint.pt", buffer.getvalue())
    assert main(["train", "--model", "slak_atto", "--resume", str(run)]) == 2
    assert "posix.system" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run), "--data", "digits"]) == 2
    assert "--checkpoint: " in capsys.readouterr().err
    assert not marker.exists()


def test_state_file_digest_detects_flipped_bytes(tmp_path: Path) -> None:
    buffer = BytesIO()
    torch.save({"weights": {}, "epoch": 1}, buffer)
    inner = bytearray(buffer.getvalue())
    _state_file(tmp_path / "checkpoint.pt", bytes(inner))
    assert swio.load_training_state(tmp_path / "checkpoint.pt")["epoch"] == 1
    outer = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    outer["payload"][len(inner) // 2] ^= 0x01
    torch.save(outer, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt' is damaged"):
        swio.load_training_state(tmp_path / "checkpoint.pt")


def test_legacy_prefixed_files_still_load(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = create_model("slak_atto", **ATTO)
    flat = {f"model.{k}": v.clone().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": swio.LEGACY_WEIGHTS_FORMAT, "model": "slak_atto"}
    meta.update({k: str(v) for k, v in ATTO.items()})
    save_file(flat, str(tmp_path / "old.safetensors"), metadata=meta)
    loaded = load_checkpoint(create_model("slak_atto", **ATTO), tmp_path / "old.safetensors")
    assert torch.equal(loaded.head.fc.weight, model.head.fc.weight)
    assert (
        json.loads(swio.read_weights(tmp_path / "old.safetensors")[1].get("model_kwargs", "{}"))
        == {}
    )


# ---------------------------------------------------------------------------------------------
# Issue 18: metadata is covered by the digest and validated; only regular files are read;
# failed writes are one error and leave nothing


def _resign(path: Path, **changes: str) -> Path:
    """Rewrite ``path`` with metadata ``changes`` and a valid digest (a crafted file)."""
    tensors, metadata = swio.read_weights(path)
    metadata = {**metadata, **changes}
    metadata["sha256"] = swio.weights_digest(tensors, metadata)
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    return path


def test_the_digest_covers_the_metadata(tmp_path: Path) -> None:
    _, path = _atto_weights(tmp_path)
    tensors, metadata = swio.read_weights(path)
    changed = {**metadata, "model_kwargs": metadata["model_kwargs"].replace("10", "11")}
    path.write_bytes(save_safetensors(tensors, metadata=changed))  # sha256 kept: not re-signed
    with pytest.raises(CheckpointError, match="is damaged"):
        swio.read_weights(path)


def test_files_of_the_previous_format_still_load_with_a_warning(tmp_path: Path, caplog) -> None:
    model, path = _atto_weights(tmp_path)
    tensors, metadata = swio.read_weights(path)
    metadata.update(format="shiftwise-weights-2", sha256=swio.tensor_digest(tensors))
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    rebuilt, _ = model_from_weights(path)
    assert torch.equal(rebuilt.head.fc.weight, model.head.fc.weight)
    assert "does not cover its metadata" in caplog.text


CRAFTED = [
    ({"model_kwargs": "[1, 2]"}, "model_kwargs must be a JSON object"),
    ({"model_kwargs": '{"block": "os.system"}'}, "does not describe a model create_model"),
    ({"model_kwargs": '{"checkpoint_path": "/etc/passwd"}'}, "is not an architecture argument"),
    ({"model_kwargs": '{"num_classes": 10'}, "model_kwargs is not JSON"),
    ({"num_classes": "abc"}, "num_classes must be a number, got 'abc'"),
    ({"num_classes": "-5"}, "num_classes must be an integer >= 0, got -5"),
    ({"width_factor": "nan"}, "width_factor must be a finite number >= 0, got nan"),
    ({"model_kwargs": '{"drop_rate": NaN}'}, "drop_rate must be a finite number"),
    # would allocate 5 GB / 160 GB before any shape was checked
    ({"width_factor": "200"}, "has more than"),
    ({"model_kwargs": '{"dims": [100000, 100000, 100000, 100000]}'}, "has more than"),
]


@pytest.mark.parametrize(("changes", "message"), CRAFTED, ids=lambda v: str(v)[:40])
def test_crafted_metadata_is_one_error_before_any_large_allocation(
    changes, message, tmp_path: Path
) -> None:
    _, path = _atto_weights(tmp_path)
    _resign(path, **changes)
    with pytest.raises(CheckpointError, match=re.escape(message)) as error:
        model_from_weights(path)
    assert str(error.value).startswith("path: ") and "\n" not in str(error.value)


def test_integer_tensors_do_not_load_into_float_parameters(tmp_path: Path) -> None:
    model = create_model("slak_atto", **ATTO)
    tensors = {
        k: v.to(torch.int32) if v.is_floating_point() else v for k, v in model.state_dict().items()
    }
    path = tmp_path / "int.safetensors"
    metadata = {"format": "shiftwise-weights-2"}  # an older format: no digest needed
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    with pytest.raises(CheckpointError, match="dtype mismatches"):
        load_checkpoint(create_model("slak_atto", **ATTO), path)


def test_a_deployed_model_is_rebuilt_from_its_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = reparameterize(create_model("sw_atto", **ATTO).eval())
    save_checkpoint(model, tmp_path / "deployed.safetensors")
    rebuilt, metadata = model_from_weights(tmp_path / "deployed.safetensors")
    assert metadata["form"] == "deployed"
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    fifo = tmp_path / "x.safetensors"
    os.mkfifo(fifo)
    for read in (swio.read_weights, swio.safe_torch_load, swio.read_regular_file):
        with pytest.raises(UsageError, match=r"path: '.*x.safetensors' is a FIFO, expected"):
            read(fifo)
    with pytest.raises(UsageError, match="is a directory"):
        swio.read_regular_file(tmp_path)


def test_a_failed_write_is_one_error_and_leaves_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.bin"
    swio.atomic_write(path, b"old")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(swio.os, "fsync", disk_full)
    with pytest.raises(WriteError) as error:
        swio.atomic_write(path, b"new")
    assert str(error.value) == (
        f"cannot write {str(path)!r} (No space left on device); its previous version is unchanged"
    )
    assert error.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]
    with pytest.raises(WriteError) as error:
        swio.atomic_write(tmp_path / "b.bin", b"new")
    assert str(error.value).endswith("(No space left on device); no file was left")
    assert sorted(tmp_path.iterdir()) == [path]


def test_digest_of_an_empty_buffer_with_zero_strides(tmp_path):
    """An empty index buffer (e.g. the ghost split of ``ghost_ratio=0``) may carry any strides."""
    from shiftwise.io import tensor_digest

    empty = torch.empty(0, dtype=torch.long).expand(0)
    strided = torch.empty_strided((0,), (0,), dtype=torch.long)
    assert tensor_digest({"a": strided}) == tensor_digest({"a": empty})
    assert tensor_digest({"a": strided}) != tensor_digest({"a": torch.zeros(1, dtype=torch.long)})


# ---------------------------------------------------------------------------------------------
# Issue 26: verification cannot be switched off by the file


def _rewrite(path: Path, tensors, metadata) -> Path:
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    return path


def _flip_a_weight(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    tensors = dict(tensors)
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] += 1.0
    return tensors


@pytest.mark.parametrize("rename", ["sha256", "format"])
def test_a_file_without_its_digest_or_format_is_refused(tmp_path: Path, rename: str) -> None:
    """Renaming the ``sha256`` key (or the ``format`` key that says a digest is due) and
    flipping a weight: refused, not loaded unverified."""
    _, path = _atto_weights(tmp_path)
    tensors, metadata = swio.read_weights(path)
    metadata[rename.upper()] = metadata.pop(rename)
    _rewrite(path, _flip_a_weight(tensors), metadata)
    expected = "has no sha256" if rename == "sha256" else "is not a shiftwise weights file"
    with pytest.raises(CheckpointError, match=expected) as error:
        swio.read_weights(path)
    assert "\n" not in str(error.value)
    argv = ["eval", "--checkpoint", str(path), "--data", "digits", "--limit", "8"]
    assert main(argv) == 2


def test_a_file_without_any_metadata_is_refused(tmp_path: Path) -> None:
    path = _rewrite(tmp_path / "plain.safetensors", {"w": torch.ones(2)}, None)
    with pytest.raises(CheckpointError, match=r"\(no format in its metadata, expected one of"):
        swio.read_weights(path)


@pytest.mark.parametrize("fmt", ["shiftwise-weights-2", swio.LEGACY_WEIGHTS_FORMAT])
def test_older_formats_without_a_digest_load_with_a_warning(
    tmp_path: Path, fmt: str, caplog
) -> None:
    model, path = _atto_weights(tmp_path)
    tensors, metadata = swio.read_weights(path)
    del metadata["sha256"]
    metadata["format"] = fmt
    if fmt == swio.LEGACY_WEIGHTS_FORMAT:
        tensors = {f"model.{k}": v for k, v in tensors.items()}
    _rewrite(path, tensors, metadata)
    loaded = load_checkpoint(create_model("slak_atto", **ATTO), path)
    assert torch.equal(loaded.head.fc.weight, model.head.fc.weight)
    assert "without a digest: it cannot be verified" in caplog.text


# ---------------------------------------------------------------------------------------------
# Issue 26: no command writes onto one of its inputs


def test_check_output_not_input_compares_files_not_names(tmp_path: Path) -> None:
    source = tmp_path / "in.pth"
    source.write_bytes(b"official")
    (tmp_path / "sub").mkdir()
    alias = tmp_path / "sub" / ".." / "in.pth"
    link = tmp_path / "link.pth"
    link.symlink_to(source)
    hard = tmp_path / "hard.pth"
    hard.hardlink_to(source)
    for output in (source, alias, link, hard):
        with pytest.raises(UsageError, match=r"^OUT: .* is the input .*would replace the input"):
            swio.check_output_not_input(output, [tmp_path / "other", source], "OUT")
    other = tmp_path / "other.pth"
    other.write_bytes(b"official")  # equal bytes, another file
    for output in (other, tmp_path / "absent.safetensors"):
        swio.check_output_not_input(output, [source, tmp_path / "absent.pth"], "OUT")
