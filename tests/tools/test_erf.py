"""ERF procedure: area-ratio math on maps with known answers, a 7x7 conv net's ERF, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from shiftwise.analysis.erf import (
    accumulate_erf,
    area_ratios,
    erf_of_image,
    iter_images,
    normalise_erf,
)


def test_area_ratio_of_a_point_is_one_pixel():
    attribution = np.zeros((11, 11))
    attribution[5, 5] = 1.0
    for entry in area_ratios(attribution).values():
        assert entry == {"side": 1, "ratio": 1 / 121}


def test_area_ratio_of_uniform_map_matches_square_areas():
    # uniform 101x101: a centred square of side s holds s^2 / 101^2 of the total, so the
    # smallest side exceeding t is the smallest odd s with s^2 > t * 101^2.
    attribution = np.ones((101, 101))
    result = area_ratios(attribution, thresholds=(0.2, 0.5, 0.99))
    for t, key in ((0.2, "20%"), (0.5, "50%"), (0.99, "99%")):
        side = next(s for s in range(1, 102, 2) if s * s > t * 101 * 101)
        assert result[key] == {"side": side, "ratio": side * side / 101**2}


def test_area_ratio_of_ring_and_centre():
    # 30% of the mass at the centre pixel, 70% on the border ring of a 21x21 map:
    # t = 20% is met by the centre alone, t = 50% only by the whole map.
    attribution = np.zeros((21, 21))
    attribution[10, 10] = 0.3
    ring = np.ones((21, 21), dtype=bool)
    ring[1:-1, 1:-1] = False
    attribution[ring] = 0.7 / ring.sum()
    result = area_ratios(attribution, thresholds=(0.2, 0.5))
    assert result["20%"] == {"side": 1, "ratio": 1 / 441}
    assert result["50%"] == {"side": 21, "ratio": 1.0}


def test_area_ratio_even_map_clips_to_image():
    attribution = np.ones((8, 8))
    result = area_ratios(attribution, thresholds=(0.99,))
    assert result["99%"]["ratio"] == 1.0


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4)), -np.ones((4, 4)), np.ones(4), np.full((3, 3), np.nan)]
)
def test_area_ratio_rejects_bad_maps(bad):
    with pytest.raises(ValueError, match="attribution"):
        area_ratios(bad)


def test_normalise_is_log_then_max():
    values = np.array([[0.0, 9.0], [99.0, 999.0]])
    np.testing.assert_allclose(normalise_erf(values), [[0, 1 / 3], [2 / 3, 1]])


def test_erf_of_single_7x7_conv_is_confined_to_its_square():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 7, padding=3).double()
    with torch.no_grad():
        conv.weight.abs_()  # positive weights: every tap contributes positively
        conv.bias.fill_(1.0)
    x = torch.randn(1, 3, 33, 33, dtype=torch.float64)
    contribution = erf_of_image(conv, x)
    assert contribution.shape == (33, 33)
    support = contribution > 0
    expected = torch.zeros(33, 33, dtype=torch.bool)
    expected[16 - 3 : 16 + 4, 16 - 3 : 16 + 4] = True
    assert torch.equal(support, expected)
    torch.testing.assert_close(
        contribution[13:20, 13:20], conv.weight.sum((0, 1)), rtol=1e-12, atol=1e-12
    )
    ratios = area_ratios(normalise_erf(contribution), thresholds=(0.99,))
    assert ratios["99%"]["side"] <= 7


def test_two_stacked_convs_widen_the_erf_and_average_over_images():
    torch.manual_seed(0)
    one = nn.Sequential(nn.Conv2d(3, 4, 7, padding=3), nn.ReLU()).double()
    two = nn.Sequential(one, nn.Conv2d(4, 4, 7, padding=3)).double()
    images = [torch.randn(1, 3, 41, 41, dtype=torch.float64) for _ in range(3)]
    mean_one, count = accumulate_erf(one, images)
    mean_two, _ = accumulate_erf(two, images)
    assert count == 3
    assert (mean_one > 0).sum() <= 49 < (mean_two > 0).sum() <= 13 * 13
    expected = sum(erf_of_image(one, image) for image in images) / 3
    torch.testing.assert_close(mean_one, expected)


def test_erf_rejects_pooled_features():
    with pytest.raises(ValueError, match="features"):
        erf_of_image(lambda x: x.mean((2, 3)), torch.randn(1, 3, 8, 8))


def test_iter_images_from_directory_and_noise(tmp_path):
    for i in range(2):
        Image.fromarray(np.full((20, 30, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    images = list(iter_images(str(tmp_path), count=5, size=32))
    assert len(images) == 2 and images[0].shape == (1, 3, 32, 32)
    noise = list(iter_images("noise", count=3, size=32))
    assert len(noise) == 3 and not torch.equal(noise[0], noise[1])
    with pytest.raises(FileNotFoundError, match="--images"):
        list(iter_images(str(tmp_path / "missing"), count=1, size=32))


def test_cli_writes_png_and_table(tmp_path):
    from shiftwise.cli import main

    code = main(
        [
            "erf",
            "--models", "convnext_atto", "slak_atto",
            "--images", "noise", "--num-images", "1", "--size", "64",
            "--layer-scale", "1", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert code == 0
    payload = json.loads((tmp_path / "erf.json").read_text())
    assert set(payload["area_ratios"]) == {"convnext_atto", "slak_atto"}
    assert set(payload["area_ratios"]["slak_atto"]) == {"20%", "30%", "50%", "99%"}
    assert payload["weights"]["slak_atto"] == "random init"
    assert (tmp_path / "erf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_bad_checkpoint_argument(tmp_path, capsys):
    from shiftwise.cli import main

    code = main(
        ["erf", "--models", "convnext_atto", "--checkpoint", "oops", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_an_unreadable_picture_is_one_line(tmp_path, capsys):
    from shiftwise.cli import main

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(pictures / "a.png")
    (pictures / "b.jpg").write_text("not a picture")
    argv = ["erf", "--models", "convnext_atto", "--images", str(pictures), "--size", "32"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"--images: '{pictures / 'b.jpg'}' is not a readable picture" in err
    assert err.count("\n") == 1


def test_an_out_under_a_file_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    from shiftwise.cli import main
    from shiftwise.tools import erf as erf_module

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before --out was checked")

    monkeypatch.setattr(erf_module, "iter_images", no_work)
    (tmp_path / "file").write_text("")
    argv = ["erf", "--models", "convnext_atto", "--images", "noise"]
    assert main([*argv, "--out", str(tmp_path / "file" / "out")]) == 2
    err = capsys.readouterr().err
    assert "--out: cannot create the directory" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-images", "100000000"], "--num-images: expected an integer in [1, 10000]"),
        (["--num-images", "0"], "--num-images: expected an integer in [1, 10000]"),
        (["--seed", str(10**23)], "--seed: expected an integer in [0, 2**63 - 1]"),
        (["--seed", "-1"], "--seed: expected an integer in [0, 2**63 - 1]"),
        (["--size", "100000"], "--size: expected an integer in [32, 4096]"),
        (["--size", "4096", "--num-images", "10000"], "--num-images: 10000 images of 4096x4096"),
    ],
)
def test_sizes_are_refused_before_the_work(argv, message, tmp_path, capsys, monkeypatch):
    from shiftwise.cli import main
    from shiftwise.tools import erf as erf_module

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the sizes were checked")

    monkeypatch.setattr(erf_module, "iter_images", no_work)
    base = ["erf", "--models", "convnext_atto", "--images", "noise", "--out", str(tmp_path / "o")]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_an_output_that_is_an_input_picture_is_refused(tmp_path, capsys):
    from shiftwise.cli import main

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(pictures / "erf.png")
    before = (pictures / "erf.png").read_bytes()
    argv = ["erf", "--models", "convnext_atto", "--images", str(pictures), "--size", "32"]
    assert main([*argv, "--out", str(pictures)]) == 2
    err = capsys.readouterr().err
    assert f"--out: {str(pictures / 'erf.png')!r} is the input" in err
    assert err.count("\n") == 1 and (pictures / "erf.png").read_bytes() == before
