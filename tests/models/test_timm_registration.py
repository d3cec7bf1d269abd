"""Registration in timm's registry, checked against a stand-in ``timm`` (timm needs torchvision)."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest
import torch

from shiftwise.models import list_models
from shiftwise.models.timm_entrypoints import register_timm


@pytest.fixture
def fake_timm(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable]:
    """A ``timm`` whose registry already holds its own ``convnext_tiny``."""
    registry: dict[str, Callable] = {"convnext_tiny": lambda **kwargs: None}
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    models.is_model = lambda name: name in registry
    models.model_entrypoint = registry.__getitem__

    def register_model(fn: Callable) -> Callable:
        registry[fn.__name__] = fn
        return fn

    models.register_model = register_model
    timm.models = models
    monkeypatch.setitem(sys.modules, "timm", timm)
    monkeypatch.setitem(sys.modules, "timm.models", models)
    return registry


def test_registers_our_names_without_overriding_timm(fake_timm: dict[str, Callable]) -> None:
    timm_own = fake_timm["convnext_tiny"]
    registered = register_timm()
    assert set(registered) == set(list_models()) - {"convnext_tiny"}
    assert fake_timm["convnext_tiny"] is timm_own
    # timm's create_model passes its cfg arguments to every entry point.
    model = fake_timm["sw_atto"](pretrained=False, num_classes=3, pretrained_cfg=None)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert register_timm() == []  # already there: nothing registered twice


def test_no_timm_registers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    assert register_timm() == []
