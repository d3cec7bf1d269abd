"""Validation of a model: top-1/top-5 and loss over a loader; under DDP each rank scores a
disjoint share of the images and the counts are summed."""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from shiftwise.data import BatchTransform, DataBundle

__all__ = ["evaluate_model", "val_loader"]


def val_loader(
    bundle: DataBundle,
    batch_size: int,
    workers: int,
    limit: int | None = None,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """Loader over this rank's share (every ``world``-th image) of the first ``limit``
    validation images, in order."""
    count = len(bundle.val) if limit is None else min(limit, len(bundle.val))
    subset = Subset(bundle.val, range(rank, count, world))
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers)


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    transform: BatchTransform,
    device: torch.device,
    amp: bool = False,
) -> dict[str, float]:
    """Top-1, top-5 (in %) and mean cross-entropy of ``model`` over ``loader``.

    The model and transform are put in eval mode (and left so). Returns ``{"top1", "top5",
    "loss", "count"}``; with a process group the sums over all ranks are used.
    """
    model.eval()
    transform.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # correct@1, correct@5, loss sum, count
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    )
    for images, labels in loader:
        readable = labels >= 0  # unreadable images (label -1) are skipped, see ImageFolderDataset
        if not bool(readable.all()):
            images, labels = images[readable], labels[readable]
            if labels.numel() == 0:
                continue
        images, labels = images.to(device), labels.to(device)
        x, labels = transform(images, labels)
        with autocast:
            logits = model(x).float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top == labels[:, None]
        totals[0] += hits[:, 0].sum().item()
        totals[1] += hits.any(dim=1).sum().item()
        totals[2] += F.cross_entropy(logits, labels, reduction="sum").item()
        totals[3] += labels.shape[0]
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    count = max(totals[3].item(), 1.0)
    return {
        "top1": 100.0 * totals[0].item() / count,
        "top5": 100.0 * totals[1].item() / count,
        "loss": totals[2].item() / count,
        "count": int(totals[3].item()),
    }
