"""Exit codes of the command line: only the library's own errors become one line."""

from __future__ import annotations

import argparse

import pytest

from shiftwise import cli
from shiftwise.errors import EXIT_DIVERGED, DivergedError, UsageError, WriteError


def _parser_raising(error: BaseException) -> argparse.ArgumentParser:
    """A ``shiftwise`` parser whose only command ``boom`` raises ``error``."""

    def run(args: argparse.Namespace) -> int:
        raise error

    return _parser_calling(run)


def _parser_calling(run) -> argparse.ArgumentParser:
    """A ``shiftwise`` parser whose only command ``boom`` calls ``run(args)``."""
    parser = argparse.ArgumentParser(prog="shiftwise")
    parser.add_argument("-v", "--verbose", action="store_true")
    subparsers = parser.add_subparsers(dest="command", required=True)
    subparsers.add_parser("boom").set_defaults(func=run)
    return parser


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            UsageError("--x: expected\nsomething"),
            2,
            "shiftwise boom: error: --x: expected something",
        ),
        (DivergedError("training diverged: 5 steps"), EXIT_DIVERGED, "training diverged"),
        (KeyboardInterrupt(), 130, "shiftwise boom: interrupted"),
        (WriteError("cannot write 'x' (No space left on device)"), 2, "error: cannot write 'x'"),
    ],
)
def test_library_errors_map_to_exit_codes(error, code, line, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_raising(error))
    assert cli.main(["boom"]) == code
    err = capsys.readouterr().err
    assert line in err and err.count("\n") == 1


@pytest.mark.parametrize("error", [TypeError("a bug"), ValueError("a bug"), RuntimeError("bug")])
def test_other_exceptions_are_not_hidden(error, monkeypatch) -> None:
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_raising(error))
    with pytest.raises(type(error), match="bug"):
        cli.main(["boom"])


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--checkpoint", "MISSING", "--data", "digits"],
        ["export", "sw_atto", "--checkpoint", "MISSING", "-o", "OUT.onnx"],
        ["erf", "--models", "sw_atto", "--checkpoint", "sw_atto=MISSING", "--out", "OUT"],
    ],
)
def test_checkpoint_errors_name_the_option_passed(argv, tmp_path, capsys) -> None:
    argv = [a.replace("MISSING", str(tmp_path / "none.safetensors")) for a in argv]
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--checkpoint: " in err and "--resume" not in err and err.count("\n") == 1


def test_sigterm_is_handled_like_an_interruption(monkeypatch, capsys) -> None:
    import os
    import signal

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cli, "build_parser", lambda: _parser_calling(terminated))
    assert cli.main(["boom"]) == 143
    assert capsys.readouterr().err == "shiftwise boom: terminated (SIGTERM)\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """One epoch of a quarter-width convnext_atto on 32 digits (one step)."""
    output = tmp_path_factory.mktemp("run") / "tiny"
    argv = ["train", "--model", "convnext_atto", "--width-factor", "0.25", "--data", "digits"]
    argv += ["--train-limit", "32", "--val-limit", "16", "--batch-size", "32", "--epochs", "1"]
    assert cli.main([*argv, "--no-progress", "--output", str(output)]) == 0
    return output


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        (["--width-factor", "0.5"], "--width-factor"),
        (["--model", "slak_atto"], "--model"),
        (["--model-kwargs", '{"drop_rate": 0.1}'], "--model-kwargs"),
        (["--sparse"], "--sparse"),
    ],
)
def test_a_resume_that_changes_the_models_shape_is_one_line(tiny_run, change, flag, capsys):
    capsys.readouterr()
    argv = ["train", "--resume", str(tiny_run), "--epochs", "2", "--allow-config-change"]
    assert cli.main([*argv, *change]) == 2
    err = capsys.readouterr().err
    assert f"error: {flag}: a resume cannot change it" in err and err.count("\n") == 1, err


def test_an_error_knows_its_field_however_it_was_written() -> None:
    assert UsageError("expected > 0", field="optim.lr").field == "optim.lr"
    written = UsageError("optim.lr: expected > 0")
    assert (written.field, written.reason, str(written)) == (
        "optim.lr",
        "expected > 0",
        str(written),
    )
    assert str(written) == "optim.lr: expected > 0"
    for plain in ("cannot write 'x': full", "'/a b': missing", "no field here"):
        assert UsageError(plain).field is None and str(UsageError(plain)) == plain
    renamed = written.renamed(lambda field: "--lr")
    assert (str(renamed), renamed.field, type(renamed)) == (
        "--lr: expected > 0",
        "optim.lr",
        UsageError,
    )
