"""Our models as detection / segmentation backbones, as frameworks consume them through timm.

mmpretrain/mmseg ``TIMMBackbone`` and detectron2-style wrappers call
``timm.create_model(name, features_only=True, out_indices=...)`` and read ``feature_info``
(``channels()``, ``reduction()``, ``module_name()``); they freeze stages and BatchNorm.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shiftwise.models import FeatureNet, create_model

timm = pytest.importorskip("timm")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def floor_sizes(size: int) -> list[int]:
    """ConvNeXt macro (stem 4x4/4, downsample 2x2/2, no padding): sizes round down."""
    sizes = [size // 4]
    for _ in range(3):
        sizes.append(sizes[-1] // 2)
    return sizes


def ceil_sizes(size: int) -> list[int]:
    """SW v2 macro (3x3 stride-2 convs, padding 1): every halving rounds up."""
    sizes, current = [], size
    for i in range(5):
        current = (current + 1) // 2
        if i >= 1:
            sizes.append(current)
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize(("name", "rule"), [("slak_atto", floor_sizes), ("sw_atto", ceil_sizes)])
def test_multiscale_features_at_detection_size(name: str, rule) -> None:
    """800x1333 (a detection input, 1333 not divisible by 32): strides 4-32 as documented."""
    backbone = timm.create_model(name, features_only=True).eval()
    info = backbone.feature_info
    assert info.reduction() == [4, 8, 16, 32]
    assert info.module_name() == [f"stages.{i}" for i in range(4)]
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 800, 1333))
        model = create_model(name).eval()
        maps = model.forward_intermediates(torch.randn(1, 3, 800, 1333), intermediates_only=True)
    heights, widths = rule(800), rule(1333)
    for i, feature in enumerate(features):
        assert feature.shape == (1, info.channels(i), heights[i], widths[i])
        assert maps[i].shape == feature.shape
    assert heights == [200, 100, 50, 25]


@pytest.mark.parametrize("name", ["sw_atto", "slak_atto", "convnext_atto", "sw_v1_tiny"])
def test_wrappers_read_feature_info(name: str) -> None:
    """What mmseg's TIMMBackbone / detectron2-style wrappers read, for a subset of stages."""
    kwargs = {} if name.endswith("atto") else {"depths": (1, 1, 1, 1)}
    factory = create_model if name.startswith("convnext") else timm.create_model
    backbone = factory(name, features_only=True, out_indices=(1, 2, 3), **kwargs).eval()
    model = create_model(name, **kwargs)
    info = backbone.feature_info
    assert info.channels() == model.dims[1:] and info.reduction() == [8, 16, 32]
    assert [d["index"] for d in info.get_dicts()] == [1, 2, 3]
    assert info.get_dicts(keys=["num_chs", "reduction"], idx=0) == {
        "num_chs": model.dims[1],
        "reduction": 8,
    }
    strides = {f"res{i + 3}": info.reduction(i) for i in range(len(info))}  # detectron2 names
    channels = {f"res{i + 3}": info.channels(i) for i in range(len(info))}
    assert strides == {"res3": 8, "res4": 16, "res5": 32}
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 96, 64))
    assert [o.shape[1] for o in out] == list(channels.values())
    assert [(o.shape[2], o.shape[3]) for o in out] == [(96 // r, 64 // r) for r in strides.values()]


def test_frozen_stages_and_norm_eval() -> None:
    torch.manual_seed(0)
    backbone = FeatureNet(create_model("sw_atto"), frozen_stages=1, norm_eval=True)
    frozen = [backbone.stem, backbone.stages[0]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in backbone.stages[1].parameters())
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    backbone.train()
    assert not any(m.training for m in frozen for m in m.modules())
    assert not any(m.training for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))
    for _ in range(2):
        loss = sum(f.square().mean() for f in backbone(torch.randn(2, 3, 64, 64)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = backbone.state_dict()
    for key, value in before.items():
        unchanged = torch.equal(after[key], value)
        if key.startswith(("stem.", "stages.0.")) or "running_" in key:
            assert unchanged, key  # frozen weights, frozen BN statistics
    assert not torch.equal(
        after["stages.1.blocks.0.fc1.weight"], before["stages.1.blocks.0.fc1.weight"]
    )
    with pytest.raises(ValueError, match=r"^frozen_stages: "):
        FeatureNet(create_model("sw_atto"), frozen_stages=5)


class TinyFPNSegmenter(nn.Module):
    """Backbone -> FPN (1x1 laterals, top-down sum, 3x3 smoothing) -> per-pixel classifier."""

    def __init__(self, backbone: nn.Module, width: int = 32, classes: int = 2) -> None:
        super().__init__()
        self.backbone = backbone
        channels = backbone.feature_info.channels()
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.smooth = nn.Conv2d(width, width, 3, padding=1)
        self.classifier = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        top = self.laterals[-1](features[-1])
        for lateral, feature in zip(self.laterals[-2::-1], features[-2::-1], strict=True):
            top = lateral(feature) + F.interpolate(top, size=feature.shape[-2:], mode="nearest")
        logits = self.classifier(F.relu(self.smooth(top)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def square_masks(
    n: int, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images holding one bright square each, and the square's mask ``[n, size, size]``."""
    images = 0.3 * torch.randn(n, 3, size, size, generator=generator)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        side = int(torch.randint(12, 28, (1,), generator=generator))
        top, left = torch.randint(0, size - side, (2,), generator=generator).tolist()
        masks[i, top : top + side, left : left + side] = 1
    images += masks[:, None].float()
    return images, masks


@pytest.mark.slow
def test_fpn_segmentation_on_our_backbone_learns() -> None:
    torch.manual_seed(0)
    backbone = timm.create_model("sw_atto", features_only=True, out_indices=(0, 1, 2))
    model = TinyFPNSegmenter(backbone)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    images, masks = square_masks(8, 64, torch.Generator().manual_seed(0))
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
