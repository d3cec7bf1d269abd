"""Batched, on-device preprocessing: resize, kornia augmentation, normalisation, MixUp/CutMix.

DataLoader workers only decode images to uint8; :class:`BatchTransform` turns a whole batch
into model input on the training device, so augmentation costs one batched kernel per step.
All randomness comes from torch's global generator, which checkpoints save and restore.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.augmentation.auto import RandAugment
from torch import nn

from shiftwise.errors import UsageError

__all__ = ["AugmentConfig", "BatchTransform"]


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (timm names): ``crop_scale`` is RandomResizedCrop's minimum area
    (1.0 = no crop), ``randaug_n``/``randaug_m`` RandAugment's op count and magnitude (0 = off),
    ``reprob`` RandomErasing's probability, ``mixup``/``cutmix`` their probabilities (one of
    the two per batch when both are on), ``smoothing`` the label smoothing."""

    crop_scale: float = 1.0
    hflip: float = 0.0
    randaug_n: int = 0
    randaug_m: int = 9
    reprob: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    smoothing: float = 0.0


def _per_channel(values: tuple[float, ...], channels: int) -> torch.Tensor:
    """Per-channel statistics [1, channels, 1, 1]; one value is repeated for every channel."""
    tensor = torch.tensor(values, dtype=torch.float32)
    if tensor.numel() == 1:
        tensor = tensor.repeat(channels)
    if tensor.numel() != channels:
        raise UsageError(f"mean/std must have 1 or {channels} values, got {len(values)}")
    return tensor.view(1, channels, 1, 1)


class BatchTransform(nn.Module):
    """uint8 [B, C, H, W] batches -> normalised float [B, in_chans, S, S] (+ soft targets).

    In eval mode only resizing and normalisation happen and labels pass through. In train
    mode labels become soft targets [B, num_classes] (label smoothing, MixUp/CutMix mixing).
    Grayscale data is repeated to ``in_chans`` channels when the model expects 3.
    ``crops_in_workers``: the images were already randomly cropped and flipped per image
    (ImageFolder data, :class:`~shiftwise.data.transforms.TrainCrop`), so ``crop_scale`` and
    ``hflip`` add nothing here.
    """

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        num_classes: int,
        in_chans: int,
        augment: AugmentConfig = AugmentConfig(),
        crops_in_workers: bool = False,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.augment = augment
        if augment.randaug_n > 0 and in_chans != 3:
            raise UsageError(f"RandAugment needs in_chans=3, got in_chans={in_chans}")
        self.register_buffer("mean", _per_channel(mean, in_chans), persistent=False)
        self.register_buffer("std", _per_channel(std, in_chans), persistent=False)
        size = (image_size, image_size)
        geometric: list[nn.Module] = []
        if augment.crop_scale < 1.0 and not crops_in_workers:
            geometric.append(K.RandomResizedCrop(size, scale=(augment.crop_scale, 1.0)))
        if augment.hflip > 0 and not crops_in_workers:
            geometric.append(K.RandomHorizontalFlip(p=augment.hflip))
        if augment.randaug_n > 0:
            geometric.append(RandAugment(n=augment.randaug_n, m=augment.randaug_m))
        self.geometric = nn.Sequential(*geometric)
        self.erasing = K.RandomErasing(p=augment.reprob) if augment.reprob > 0 else None
        self.mixup = K.RandomMixUpV2(p=1.0, data_keys=["input", "class"])
        self.cutmix = K.RandomCutMixV2(p=1.0, data_keys=["input", "class"], use_correct_lambda=True)

    def _mix(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maybe MixUp or CutMix the batch; soft targets [B, num_classes] (smoothed)."""
        smooth = self.augment.smoothing

        def soft(classes: torch.Tensor) -> torch.Tensor:
            one_hot = F.one_hot(classes.long(), self.num_classes).to(x.dtype)
            return one_hot * (1.0 - smooth) + smooth / self.num_classes

        targets = soft(labels)
        mixup, cutmix = self.augment.mixup, self.augment.cutmix
        draw = torch.rand(()).item()
        if draw >= max(mixup, cutmix):
            return x, targets
        use_cutmix = cutmix > 0 and (mixup == 0 or torch.rand(()).item() < 0.5)
        x, mix = (self.cutmix if use_cutmix else self.mixup)(x, labels)
        mix = mix.reshape(-1, x.shape[0], 3)[-1]
        # Weight of the partner's label: MixUp's lambda is the partner's share of the image;
        # CutMix's (paper convention, use_correct_lambda) is the share the image keeps.
        lam = mix[:, 2:3].to(x.dtype)
        lam = 1.0 - lam if use_cutmix else lam
        return x, soft(mix[:, 0]) * (1.0 - lam) + soft(mix[:, 1]) * lam

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float().div_(255.0)
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        if self.training:
            x = self.geometric(x) if len(self.geometric) else x
        x = (x - self.mean) / self.std
        if not self.training:
            return x.contiguous(), labels
        if self.erasing is not None:
            x = self.erasing(x)
        return self._mix(x.contiguous(), labels)
