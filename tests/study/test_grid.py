"""Grid files: parsing, axes, and one-line errors naming the entry before any training."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiftwise.cli import main
from shiftwise.errors import UsageError
from shiftwise.study import check_grid, load_grid, matched_epochs, parse_grid
from shiftwise.study.builtin import GRIDS

HEADER = 'seeds = [0]\n[defaults]\ndata = "digits"\nwidth_factor = 0.25\ntrain_limit = 64\n'


def _write(tmp_path: Path, runs: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(HEADER + runs)
    return path


def test_lists_are_axes_and_defaults_apply(tmp_path: Path) -> None:
    grid = load_grid(
        str(_write(tmp_path, '[[runs]]\nname = "cmp"\nmodel = ["sw_atto", "convnext_atto"]\n'
                   "epochs = [1, 3]\n"))
    )  # fmt: skip
    assert grid.name == "grid"
    names = [e.name for e in grid.entries]
    assert names == ["cmp-sw_atto-1", "cmp-sw_atto-3", "cmp-convnext_atto-1", "cmp-convnext_atto-3"]
    assert grid.entry("cmp-convnext_atto-3").options == {
        "data": "digits", "width_factor": 0.25, "train_limit": 64,
        "model": "convnext_atto", "epochs": 3,
    }  # fmt: skip
    assert [e.run_id(s) for e, s in grid.runs()][:2] == [
        "cmp-sw_atto-1-seed0",
        "cmp-sw_atto-3-seed0",
    ]


def test_builtin_grids_check(monkeypatch) -> None:
    grids = {name: load_grid(name) for name in GRIDS}
    assert len(grids["papers"].runs()) == 24 and len(grids["ablations"].runs()) == 21
    assert all(len(e.seeds) >= 3 for name in ("papers", "ablations") for e in grids[name].entries)
    plans = check_grid(grids["quick"])
    assert plans["quick-convnext-matched"].epochs is None
    assert plans["quick-sw_atto"].train_images == 64


def test_matched_epochs_rule() -> None:
    assert matched_epochs([200.0, 220.0], [30.0, 40.0]) == 6  # 210 / 35
    assert matched_epochs([10.0], [100.0]) == 1


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ('[[runs]]\nname = "bad-model"\nmodel = "resnet50"\n',
         "entry 'bad-model': model: unknown model 'resnet50'"),
        ('[[runs]]\nname = "typo"\nmodel = "sw_atto"\nlearning_rate = 0.1\n',
         "entry 'typo': learning_rate: unknown training option"),
        ('[[runs]]\nname = "range"\nepochs = 0\n', "entry 'range': epochs: expected"),
        ('[[runs]]\nname = "kind"\nepochs = "2"\n', "entry 'kind': epochs: expected int"),
        ('[[runs]]\nname = "kw"\nmodel = "sw_atto"\nmodel_kwargs = { operator_kwargs = '
         "{ n_pathz = 1 } }\n", "entry 'kw':"),
        ('[[runs]]\nname = "nodata"\ndata = "/no/such/dir"\n', "entry 'nodata': data: expected"),
        ('[[runs]]\nname = "seeded"\nseed = 3\n', "entry 'seeded': seed: set by the study"),
        ('[[runs]]\nname = "m"\nmatch_time = { of = "later", per_epoch = "m" }\n',
         "entry 'm': match_time: 'later' is not an earlier entry"),
        ('[[runs]]\nname = "x"\n[[runs]]\nname = "x"\n', "entry 'x': name: used by two"),
    ],
)  # fmt: skip
def test_bad_grid_fails_before_training(tmp_path: Path, monkeypatch, capsys, runs, message) -> None:
    import shiftwise.training
    from shiftwise.cli import build_parser

    build_parser()  # every subcommand imported (binding the real ``train``) before the patch

    def no_training(config):
        raise AssertionError("trained despite a bad grid")

    monkeypatch.setattr(shiftwise.training, "train", no_training)
    output = tmp_path / "study"
    assert main(["study", str(_write(tmp_path, runs)), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not output.exists()


def test_not_a_grid(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="neither a built-in grid"):
        load_grid(str(tmp_path / "missing.toml"))
    (tmp_path / "broken.toml").write_text("seeds = [")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_grid(str(tmp_path / "broken.toml"))
    with pytest.raises(UsageError, match="unknown key 'run'"):
        parse_grid({"seeds": [0], "run": []})
    with pytest.raises(UsageError, match="seeds: expected distinct"):
        parse_grid({"seeds": [0, 0], "runs": [{"name": "a"}]})


def test_output_of_another_study_or_foreign_files_is_refused(tmp_path: Path) -> None:
    from shiftwise.study import run_study

    grid = load_grid(str(_write(tmp_path, '[[runs]]\nname = "a"\nmodel = "convnext_atto"\n')))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"not empty and holds no study\.json"):
        run_study(grid, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "study.json").write_text('{"name": "other"}')
    with pytest.raises(UsageError, match="holds a study of another grid"):
        run_study(grid, other)


def test_directory_left_with_only_the_lock_is_taken(tmp_path: Path) -> None:
    from shiftwise.study.runner import _LOCK_NAME, STUDY_NAME, _study_directory

    grid = parse_grid({"seeds": [0], "runs": [{"name": "a"}]})
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / _LOCK_NAME).touch()  # a study killed before it wrote study.json
    with (
        _study_directory(stale, stale / "runs", grid),
        pytest.raises(UsageError, match="another shiftwise study is running"),
        _study_directory(stale, stale / "runs", grid),
    ):
        pass
    assert (stale / STUDY_NAME).is_file()
