"""The masking engine of dynamic sparse training (SLaK's prune-and-regrow, SW's group sparsity).

Usage (one call of :meth:`Masking.step` per optimizer step, AMP or not)::

    masking = Masking(model, optimizer, density=0.6, init="erk", growth="random",
                      update_freq=100, total_steps=T, granularity="fine")
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()               # or scaler.scale(loss).backward()
        optimizer.step()              # or scaler.step(optimizer); scaler.update()
        masking.step()                # BEFORE optimizer.zero_grad(): growth="gradient" reads .grad
        optimizer.zero_grad()

Resuming: build the model, the optimizer and the ``Masking`` (whatever its ``init``), then
load the model, optimizer and ``masking.load_state_dict(...)`` states. The masks, the step
counter (hence the prune-rate schedule and the update phase) and the random generator are
restored, so the run continues exactly as if it had not stopped.

Differences from the official SLaK/ShiftwiseConv code, on purpose (each fixes a problem of
theirs: masks lost on resume, AMP runs silently turning dense, regrowth failing off CUDA, SW
path masks drifting apart): masks are saved; ``step()`` is called by the user after the
optimizer step, so it works under AMP; everything runs on CPU; SW paths share one mask at
every update; regrowth adds back exactly as many units as were pruned, so the density is
constant (the official random growth restores the count only in expectation); optimizer
state (SGD momentum, Adam moments, any state shaped like the parameter) is masked too, so
regrown weights start at exactly zero with clean optimizer state; under DDP the masks are
broadcast from rank 0 at
initialisation and after each update (the official code broadcasts every step).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from shiftwise.sparse.densities import erk_densities, snip_keep, uniform_densities, unit_counts
from shiftwise.sparse.schedule import cosine_prune_rate
from shiftwise.sparse.targets import MaskTarget, TargetSpec, select_targets, unwrap_model

__all__ = ["GROWTH_MODES", "INIT_MODES", "Masking"]

logger = logging.getLogger(__name__)

INIT_MODES = ("erk", "snip", "uniform", "dense")
GROWTH_MODES = ("random", "gradient")

SnipData = tuple[torch.Tensor, torch.Tensor] | Callable[[nn.Module], torch.Tensor]


class Masking:
    """Constant-density dynamic sparse training over any model and optimizer.

    Args:
        model: the network (a DDP wrapper is looked through; mask names carry no ``module.``).
        optimizer: its optimizer; state tensors shaped like a masked parameter are masked.
        density: fraction of the masked parameter entries kept, in ``(0, 1]``.
        init: initial layer-wise densities: ``"erk"`` (Erdős–Rényi-Kernel with dense
            fallback), ``"snip"`` (global top ``|w * grad|`` over one batch, see
            ``snip_data``), ``"uniform"`` or ``"dense"`` (everything kept: a control run
            through the same code path; ``density`` is then ignored). For ``erk`` and
            ``uniform`` the kept units of a layer are drawn at random, ``d_l * n_l`` of them
            (rounded so that the total is closest to the budget); ``snip`` keeps the
            top-scored units themselves (the official code only takes SNIP's per-layer
            ratios and redraws the pattern at random).
        growth: ``"random"`` (uniform among inactive units) or ``"gradient"`` (largest
            ``|grad|`` among inactive units; needs ``step()`` before ``zero_grad``).
        update_freq: prune and regrow every this many steps; ``None`` keeps the mask fixed.
        total_steps: ``T`` of the cosine prune-rate decay; no update happens after ``T``.
        granularity: ``"fine"`` (per weight, SLaK) or ``"group"`` (one bit per SW small-conv
            piece, shared by its paths).
        targets: which parameters are masked (``shiftwise.sparse.targets``): ``"large_kernels"``
            (default), ``"all"`` (every 2-D/4-D weight, SLaK's released scope), name patterns
            or a predicate ``(name, param) -> bool``.
        prune_rate: initial prune rate ``p0`` (fraction of a layer's active units replaced).
        min_prune_rate: final rate of the cosine decay (official ``eta_min`` 0.005).
        snip_data: for ``init="snip"``: a batch ``(inputs, labels)`` scored with cross
            entropy, or a callable ``model -> scalar loss``. It is run on a deep copy of the
            model in train mode, so neither the model's gradients nor its BN statistics change.
        seed: seed of the engine's own generator (random init and growth); identical on
            every rank, and the masks are broadcast from rank 0 anyway.
        erk_power: exponent of the ERK raw density.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        density: float = 0.6,
        init: str = "erk",
        growth: str = "random",
        update_freq: int | None = 100,
        total_steps: int,
        granularity: str = "fine",
        targets: TargetSpec = "large_kernels",
        prune_rate: float = 0.3,
        min_prune_rate: float = 0.005,
        snip_data: SnipData | None = None,
        seed: int = 0,
        erk_power: float = 1.0,
    ) -> None:
        _check_args(model, optimizer, density, init, growth, update_freq, total_steps)
        if not 0.0 <= min_prune_rate <= prune_rate <= 1.0:
            raise ValueError(
                "prune_rate, min_prune_rate: expected 0 <= min_prune_rate <= prune_rate <= 1, "
                f"got prune_rate={prune_rate}, min_prune_rate={min_prune_rate}"
            )
        if init == "snip" and snip_data is None:
            raise ValueError(
                "snip_data: init='snip' needs a batch (inputs, labels) or a loss callable"
            )
        self.model = model
        self.optimizer = optimizer
        self.target_density = float(density)
        self.init = init
        self.growth = growth
        self.update_freq = update_freq
        self.total_steps = total_steps
        self.granularity = granularity
        self.prune_rate_initial = float(prune_rate)
        self.min_prune_rate = float(min_prune_rate)
        self.steps = 0
        self.targets: list[MaskTarget] = select_targets(model, targets, granularity)
        self.generator = torch.Generator().manual_seed(seed)
        self.masks: dict[str, torch.Tensor] = self._broadcast(
            self._initial_masks(snip_data, erk_power)
        )
        self.apply_mask()
        logger.info(
            "sparse training: %d masked tensors (%s, %s), density %.4f",
            sum(len(t.params) for t in self.targets),
            init,
            granularity,
            self.density(),
        )

    # -- initialisation ------------------------------------------------------------------

    def _initial_masks(
        self, snip_data: SnipData | None, erk_power: float
    ) -> dict[str, torch.Tensor]:
        """One bool mask per target, shaped ``target.mask_shape``, on the parameter's device."""
        targets = self.targets
        if self.init == "snip":
            scores = _snip_scores(self.model, targets, snip_data)
            keep = snip_keep(scores, [t.unit_size for t in targets], self.target_density)
            return {t.name: k for t, k in zip(targets, keep, strict=True)}
        if self.init == "dense":
            densities = uniform_densities(len(targets), 1.0)
        elif self.init == "uniform":
            densities = uniform_densities(len(targets), self.target_density)
        else:
            densities = erk_densities(
                [t.shape for t in targets],
                [t.numel for t in targets],
                self.target_density,
                erk_power,
            )
        counts = unit_counts(
            densities, [t.n_units for t in targets], [t.unit_size for t in targets]
        )
        masks = {}
        for target, n_keep in zip(targets, counts, strict=True):
            key = torch.rand(target.n_units, generator=self.generator)
            mask = torch.zeros(target.n_units, dtype=torch.bool)
            mask[torch.topk(key, n_keep).indices] = True
            masks[target.name] = mask.reshape(target.mask_shape).to(target.params[0].device)
        return masks

    # -- the per-step API ----------------------------------------------------------------

    @property
    def prune_rate(self) -> float:
        """The prune rate the next update uses (cosine decay at the current step)."""
        return cosine_prune_rate(
            self.steps, self.total_steps, self.prune_rate_initial, self.min_prune_rate
        )

    def step(self) -> None:
        """Call once after every ``optimizer.step()``: re-mask, count, prune-and-regrow if due."""
        self.apply_mask()
        self.steps += 1
        if (
            self.update_freq is not None
            and self.steps % self.update_freq == 0
            and self.steps <= self.total_steps
        ):
            self.prune_and_regrow()

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Zero the pruned entries of every masked parameter and of its optimizer state."""
        for target in self.targets:
            pruned = ~self.masks[target.name]
            for param in target.params:
                param.masked_fill_(pruned, 0.0)
                for value in self.optimizer.state.get(param, {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == param.shape:
                        value.masked_fill_(pruned, 0.0)

    @torch.no_grad()
    def apply_mask_to(self, model: nn.Module) -> None:
        """Zero the pruned entries in another copy of the model (e.g. an EMA), by name.

        ``model`` (DDP and ``AveragedModel`` wrappers are looked through) must
        have the masked parameters under the same names; an EMA of a sparse model is not
        sparse by itself, since pruned weights only decay towards zero in it.
        """
        inner = unwrap_model(model)
        if isinstance(inner, torch.optim.swa_utils.AveragedModel):
            inner = inner.module
        params = dict(inner.named_parameters())
        missing = [n for t in self.targets for n in t.param_names if n not in params]
        if missing:
            raise ValueError(f"model: has no parameters named {missing[:3]} (masked here)")
        for target in self.targets:
            pruned = ~self.masks[target.name]
            for name in target.param_names:
                params[name].masked_fill_(pruned.to(params[name].device), 0.0)

    @torch.no_grad()
    def prune_and_regrow(self) -> dict[str, int]:
        """One update at the current prune rate; returns the units replaced per layer.

        Per layer (no redistribution): ``n = ceil(rate * active)`` active units with the
        smallest magnitude (summed ``|w|`` over the unit and the shared paths) are pruned,
        then exactly ``n`` inactive units are regrown (random or largest ``|grad|``; the
        just-pruned units are candidates too). Regrown entries start at exactly zero, with
        zeroed optimizer state. Fully dense layers (e.g. ERK's dense fallback) are left alone.
        """
        rate = self.prune_rate
        replaced, kept, grown = {}, {}, {}
        for target in self.targets:
            mask = self.masks[target.name].flatten()
            n_active = int(mask.sum())
            n_remove = min(n_active, math.ceil(rate * n_active))
            if n_active == mask.numel() or n_remove == 0:
                continue
            magnitude = target.unit_sum(target.params).flatten()
            magnitude = magnitude.masked_fill(~mask, math.inf)
            survivors = mask.clone()
            survivors[torch.topk(magnitude, n_remove, largest=False).indices] = False
            key = self._growth_key(target).masked_fill(survivors, -1.0)
            new_mask = survivors.clone()
            new_mask[torch.topk(key, n_remove).indices] = True
            kept[target.name] = survivors.reshape(target.mask_shape)
            grown[target.name] = new_mask.reshape(target.mask_shape)
            replaced[target.name] = n_remove
        # Rank 0 decides; every rank then zeroes the same regrown units.
        kept, grown = self._broadcast(kept), self._broadcast(grown)
        for target in self.targets:
            if target.name in grown:
                self._zero_units(target, grown[target.name] & ~kept[target.name])
                self.masks[target.name] = grown[target.name]
        self.apply_mask()
        logger.debug("prune and regrow at step %d, rate %.4f: %s", self.steps, rate, replaced)
        return replaced

    def _growth_key(self, target: MaskTarget) -> torch.Tensor:
        """Non-negative growth priority per unit (flat): random, or summed ``|grad|``."""
        device = target.params[0].device
        if self.growth == "random":
            return torch.rand(target.n_units, generator=self.generator).to(device)
        grads = [param.grad for param in target.params]
        if any(grad is None for grad in grads):
            raise ValueError(
                f"growth: 'gradient' needs the gradients of {target.name!r} at the update; "
                "call masking.step() after optimizer.step() and before optimizer.zero_grad()"
            )
        return target.unit_sum(grads).flatten().float()

    def _zero_units(self, target: MaskTarget, units: torch.Tensor) -> None:
        """Set the given units of the parameters (and their optimizer state) to zero."""
        for param in target.params:
            param.masked_fill_(units, 0.0)
            for value in self.optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.masked_fill_(units, 0.0)

    # -- densities -----------------------------------------------------------------------

    def density(self) -> float:
        """Overall density of the masked parameters: kept entries / all masked entries."""
        kept = sum(int(self.masks[t.name].sum()) * t.unit_size for t in self.targets)
        return kept / sum(t.numel for t in self.targets)

    def layer_densities(self) -> dict[str, float]:
        """Mask density of every target, by mask name."""
        return {t.name: float(self.masks[t.name].float().mean()) for t in self.targets}

    # -- checkpointing and DDP -----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Masks (bool, CPU), step counter, generator state and the settings, for checkpoints."""
        return {
            "masks": {name: mask.cpu() for name, mask in self.masks.items()},
            "steps": self.steps,
            "generator": self.generator.get_state(),
            "config": {
                "density": self.target_density,
                "init": self.init,
                "growth": self.growth,
                "update_freq": self.update_freq,
                "total_steps": self.total_steps,
                "granularity": self.granularity,
                "prune_rate": self.prune_rate_initial,
                "min_prune_rate": self.min_prune_rate,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output and re-apply the masks to weights and optimizer."""
        if not isinstance(state, dict) or "masks" not in state or "steps" not in state:
            raise ValueError("state: expected a Masking.state_dict() with 'masks' and 'steps'")
        masks = state["masks"]
        if set(masks) != set(self.masks):
            raise ValueError(
                f"state: masks for {sorted(set(masks) ^ set(self.masks))} do not match this "
                "model's masked parameters (another model or another targets/granularity?)"
            )
        for name, mask in masks.items():
            if tuple(mask.shape) != tuple(self.masks[name].shape):
                raise ValueError(
                    f"state: mask {name!r} has shape {tuple(mask.shape)}, expected "
                    f"{tuple(self.masks[name].shape)}"
                )
        config = state.get("config", {})
        own = self.state_dict()["config"]
        differing = {k: (v, own[k]) for k, v in config.items() if own.get(k) != v}
        if differing:
            logger.warning("sparse state: settings differ (saved, current): %s", differing)
        for name, mask in masks.items():
            self.masks[name] = mask.to(device=self.masks[name].device, dtype=torch.bool)
        self.steps = int(state["steps"])
        if "generator" in state:
            self.generator.set_state(state["generator"])
        self.apply_mask()

    def _broadcast(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rank 0's version of ``masks`` when a process group is initialised, else ``masks``."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return masks
        result = {}
        for name, mask in masks.items():
            buffer = mask.to(torch.uint8)
            dist.broadcast(buffer, src=0)
            result[name] = buffer.bool()
        return result


def _check_args(
    model: object,
    optimizer: object,
    density: object,
    init: object,
    growth: object,
    update_freq: object,
    total_steps: object,
) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first bad constructor argument."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if isinstance(density, bool) or not isinstance(density, int | float):
        raise TypeError(f"density: expected a float in (0, 1], got {type(density).__name__}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density: expected a value in (0, 1], got {density}")
    if init not in INIT_MODES:
        raise ValueError(f"init: expected one of {INIT_MODES}, got {init!r}")
    if growth not in GROWTH_MODES:
        raise ValueError(f"growth: expected one of {GROWTH_MODES}, got {growth!r}")
    if update_freq is not None and (
        isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
    ):
        raise ValueError(f"update_freq: expected a positive int or None, got {update_freq!r}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps: expected a positive int, got {total_steps!r}")


def _snip_scores(
    model: nn.Module, targets: list[MaskTarget], snip_data: SnipData | None
) -> list[torch.Tensor]:
    """Mean ``|w * grad|`` per mask unit after one loss on a deep copy of ``model`` (train mode)."""
    net = copy.deepcopy(unwrap_model(model))
    net.train()
    net.zero_grad(set_to_none=True)
    if callable(snip_data):
        loss = snip_data(net)
    elif isinstance(snip_data, tuple | list) and len(snip_data) == 2:
        inputs, labels = snip_data
        loss = F.cross_entropy(net(inputs), labels)
    else:
        raise TypeError(
            "snip_data: expected a batch (inputs, labels) or a callable model -> loss, "
            f"got {type(snip_data).__name__}"
        )
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(f"snip_data: the loss must be a scalar tensor, got {loss!r}")
    loss.backward()
    params = dict(net.named_parameters())
    scores = []
    for target in targets:
        products = []
        for name in target.param_names:
            param = params[name]
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            products.append(param.detach() * grad)
        scores.append(target.unit_sum(products) / target.unit_size)
    return scores
