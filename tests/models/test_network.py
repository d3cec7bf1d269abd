"""timm-style API, features_only, re-parameterisation and errors of the networks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from testing_utils import randomize_batchnorm
from torch import nn

from shiftwise.models import FeatureNet, create_model, list_models, reparameterize
from shiftwise.models.blocks import GRN


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: the CI machine is shared and oversubscribed threads run slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, layer scales and GRN parameters (init leaves them inert)."""
    generator = torch.Generator().manual_seed(seed)
    randomize_batchnorm(model, generator)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("gamma") and parameter.dim() == 1:
                parameter.copy_(torch.rand(parameter.shape, generator=generator) * 0.2 + 0.05)
        for module in model.modules():
            if isinstance(module, GRN):
                module.gamma.copy_(torch.randn(module.gamma.shape, generator=generator) * 0.1)
                module.beta.copy_(torch.randn(module.beta.shape, generator=generator) * 0.1)


@pytest.mark.parametrize("name", ["sw_tiny", "slak_tiny"])
def test_reparameterize_keeps_eval_logits(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=100)
    _randomize(model)
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        reparameterize(model)
        after = model(x)
    assert before.abs().max() > 1e-3  # the blocks do contribute
    assert (after - before).abs().max() <= 1e-4 * before.abs().max()
    assert not any(hasattr(m, "paths") or hasattr(m, "tall") for m in model.modules())


@pytest.mark.parametrize(
    "name",
    [
        "sw_atto",
        "slak_atto",
        "convnext_atto",
        "slak_tiny",
        pytest.param("sw_tiny", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("size", [(224, 224), (320, 256)])
def test_features_only(name: str, size: tuple[int, int]) -> None:
    backbone = create_model(name, features_only=True).eval()
    assert isinstance(backbone, FeatureNet)
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, *size))
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    assert backbone.feature_info.module_name() == [f"stages.{i}" for i in range(4)]
    for feature, channels, reduction in zip(
        features, backbone.feature_info.channels(), backbone.feature_info.reduction(), strict=True
    ):
        assert feature.shape == (1, channels, size[0] // reduction, size[1] // reduction)


def test_features_only_out_indices_and_keys() -> None:
    model = create_model("convnext_atto")
    backbone = create_model("convnext_atto", features_only=True, out_indices=(1, -1))
    assert backbone.feature_info.channels() == [64, 256]
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in out] == [64, 256]
    head_free = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    backbone.load_state_dict(head_free)  # same keys as the classifier, minus its head
    shallow = create_model("convnext_atto", features_only=True, out_indices=(0,))
    assert len(shallow.stages) == 1


def test_timm_style_api() -> None:
    model = create_model("slak_atto", num_classes=7, drop_rate=0.1).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 256, 2, 3)
        assert model.forward_head(features, pre_logits=True).shape == (2, 256)
        assert model.forward_head(features).shape == (2, 7)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        assert model(x).shape == (2, 256)
    assert model.num_features == 256
    assert model.pretrained_cfg["input_size"] == (3, 64, 64)
    assert model.pretrained_cfg["classifier"] == "head.fc"
    assert model.default_cfg is model.pretrained_cfg
    assert [info["reduction"] for info in model.feature_info] == [4, 8, 16, 32]


def test_width_factor_and_overrides() -> None:
    assert create_model("slak_tiny", width_factor=1.0, depths=(1, 1, 1, 1)).dims == [
        96, 192, 384, 768,
    ]  # fmt: skip
    model = create_model("slak_atto", width_factor=1.3)
    assert model.dims == [41, 83, 166, 332]
    swapped = create_model("convnext_atto", operator="shiftwise", operator_kwargs={"n_paths": 1})
    assert swapped.stages[0].blocks[0].conv_dw.n_paths == 1
    single = create_model("sw_atto", operator_kwargs={"n_paths": 1})
    assert single.stages[0].blocks[0].conv_dw.ghost_ratio == 0.23


def test_init_follows_official_code() -> None:
    model = create_model("sw_atto", head_init_scale=0.5)
    block = model.stages[0].blocks[0]
    assert torch.all(block.gamma == 1e-6)
    assert torch.all(block.fc1.bias == 0)
    assert block.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert block.fc1.weight.abs().max() <= 2.0
    assert model.head.fc.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_state_dict_round_trip_is_exact() -> None:
    torch.manual_seed(0)
    model = create_model("sw_atto").eval()
    clone = create_model("sw_atto", operator_kwargs={"seed": 7}).eval()
    clone.load_state_dict(model.state_dict())  # tables are buffers: the seed is restored too
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))


def test_drop_path_is_train_only() -> None:
    model = create_model("convnext_atto", drop_path_rate=0.5)
    rates = [b.drop_path.drop_prob for s in model.stages for b in s.blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.5)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "resnet50"}, ValueError),
        ({"name": "sw_atto", "pretrained": True}, ValueError),
        ({"name": "sw_atto", "depths": (1, 1, 1)}, ValueError),
        ({"name": "sw_atto", "block": "vit"}, ValueError),
        ({"name": "sw_atto", "operator": "fft"}, ValueError),
        ({"name": "sw_atto", "width_factor": -1.0}, ValueError),
        ({"name": "sw_atto", "features_only": True, "out_indices": (4,)}, ValueError),
        ({"name": "sw_atto", "drop_path_rate": 1.0}, ValueError),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"\w+: "):
        create_model(**kwargs)


def test_bad_input() -> None:
    model = create_model("convnext_atto")
    with pytest.raises(ValueError, match="x: expected shape"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(TypeError, match="x: "):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.long))


def test_list_models_pattern() -> None:
    assert list_models("sw_*") == [
        "sw_atto", "sw_base", "sw_small", "sw_tiny", "sw_v1_tiny", "sw_v1_tiny_1_3x",
    ]  # fmt: skip
