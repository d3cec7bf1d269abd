"""Masks are identical on every DDP rank (2 processes, gloo, CPU).

Each rank gets its own engine seed and its own SNIP batch on purpose, so the masks would
differ without the broadcast from rank 0.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from shiftwise.layers import ShiftWiseConv2d, SLaKConv2d
from shiftwise.sparse import Masking

WORLD_SIZE = 2
STEPS = 6


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sw = ShiftWiseConv2d(8, 7, 3)
        self.slak = SLaKConv2d(8, 7, short_side=3, small_kernel=3)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.slak(self.sw(x)).mean((2, 3)))


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(100 + rank)  # different init per rank: DDP broadcasts rank 0's
        model = nn.parallel.DistributedDataParallel(_Net())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        generator = torch.Generator().manual_seed(rank)
        inputs = torch.randn(4, 8, 9, 9, generator=generator)
        labels = torch.randint(0, 3, (4,), generator=generator)
        masking = Masking(
            model, optimizer, density=0.5, init="snip", growth="random", update_freq=2,
            total_steps=100, granularity="group", targets="all", snip_data=(inputs, labels),
            seed=rank,
        )  # fmt: skip
        initial = {name: mask.clone() for name, mask in masking.masks.items()}
        for _ in range(STEPS):
            loss = nn.functional.cross_entropy(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            masking.step()
        torch.save(
            {
                "initial": initial,
                "final": masking.masks,
                "weights": {n: p.detach() for n, p in model.module.named_parameters()},
                "density": masking.density(),
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_masks_and_weights_identical_on_every_rank(tmp_path):
    """SW paths group-wise, SLaK strips and the head element-wise ("all" scope)."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    first, second = results
    assert first["density"] == second["density"]
    for key in ("initial", "final"):
        assert first[key].keys() == second[key].keys()
        for name, mask in first[key].items():
            assert torch.equal(mask, second[key][name]), (key, name)
    changed = any(not torch.equal(first["initial"][n], first["final"][n]) for n in first["final"])
    assert changed, "the updates should have moved some units"
    for name, weight in first["weights"].items():
        assert torch.equal(weight, second["weights"][name]), name
