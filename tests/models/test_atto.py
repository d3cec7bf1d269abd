"""The CPU-sized models: build, per-sample forward, deploy and a training step."""

from __future__ import annotations

import copy

import pytest
import torch

import shiftwise
from shiftwise.models import create_model

ATTO = ["sw_atto", "slak_atto", "convnext_atto"]


PARAMS_10_CLASSES = {"sw_atto": 2_243_130, "slak_atto": 1_990_570, "convnext_atto": 1_902_954}


@pytest.mark.parametrize("name", ATTO)
def test_atto_forward_is_per_sample_and_survives_deploy(name: str) -> None:
    """Eval output of a sample does not depend on the rest of the batch, depends on its
    input, and the re-parameterised model gives the same logits."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    assert sum(p.numel() for p in model.parameters()) == PARAMS_10_CLASSES[name]
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (4, 10)
        torch.testing.assert_close(model(x[2:3]), logits[2:3], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(logits[0], logits[1])
        deployed = shiftwise.reparameterize(copy.deepcopy(model))
        torch.testing.assert_close(deployed(x), logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ATTO)
def test_atto_train_step_changes_weights(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, drop_path_rate=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, target = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    before = model.head.fc.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.head.fc.weight)


def test_same_macro_sizes_across_atto_variants() -> None:
    models = [create_model(name) for name in ATTO]
    assert {tuple(m.depths) for m in models} == {(2, 2, 4, 2)}
    assert {tuple(m.dims) for m in models} == {(32, 64, 128, 256)}


def test_top_level_exports() -> None:
    assert set(shiftwise.list_models()) >= {
        "sw_tiny", "sw_small", "sw_base", "slak_tiny", "slak_small", "slak_base",
        "sw_atto", "slak_atto", "convnext_atto", "convnext_tiny",
    }  # fmt: skip
    assert shiftwise.create_model is create_model
