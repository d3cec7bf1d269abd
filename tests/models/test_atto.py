"""The CPU-sized models: build, forward, shapes, speed and a training step."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch

import shiftwise
from shiftwise.models import create_model

ATTO = ["sw_atto", "slak_atto", "convnext_atto"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: the CI machine is shared and oversubscribed threads run slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ATTO)
def test_atto_forward_shapes_and_speed(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(8, 3, 64, 64)
    best, logits = _best_forward_time(model, x)
    assert logits.shape == (8, 10)
    assert torch.isfinite(logits).all()
    assert best < 1.0, f"{name} forward at batch 8, 64x64 took {best:.2f} s"


def _best_forward_time(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        model(x)  # warm-up
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            logits = model(x)
            best = min(best, time.perf_counter() - start)
    return best, logits


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
