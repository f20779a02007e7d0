"""Parameter groups, learning-rate and σ schedules of the official recipes (spec §6), as pure functions.

The groups are the family's (`stts.models.spec.FamilySpec.param_groups`): dicts for `torch.optim.AdamW`
with extra keys the schedule reads: ``name``, ``lr_mult`` and ``kind``: ``"selector"`` or ``"backbone"``
(the two-rate schedule treats them differently). The schedules are named by what they do; a family's recipe
names its own (`Recipe.train`).
Positions in training are counted in *iterations* (loader batches), as both official schedules do:
``iteration = epoch * iters_per_epoch + i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from .config import TrainConfig

__all__ = ["Schedule", "param_groups"]


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """The optimizer groups of the family ``cfg.param_groups`` names (default: the model's own family): the
    official optimizer's grouping, registered in the family's spec (`stts.models.spec.FamilySpec`)."""
    from stts.registry import family_spec, spec_of

    opt = cfg.optim
    spec = family_spec(opt.param_groups) if opt.param_groups else spec_of(model)
    return spec.param_groups(model, opt.weight_decay, opt.selector_lr_mult)


@dataclass(frozen=True)
class Schedule:
    """lr per group and σ at an iteration, for ``iters_per_epoch`` loader iterations per epoch."""

    cfg: TrainConfig
    iters_per_epoch: int

    @property
    def total_iters(self) -> int:
        return self.iters_per_epoch * self.cfg.training.epochs

    def cosine(self, epoch: float) -> float:
        c, epochs = self.cfg.optim, self.cfg.training.epochs
        return c.min_lr + (c.lr - c.min_lr) * (1 + math.cos(math.pi * epoch / epochs)) / 2

    def warmup_factor(self, iteration: int) -> float:
        """mmcv's linear warm-up: from ``warmup_ratio`` to 1 over ``warmup_epochs`` of iterations."""
        warm_iters = self.cfg.optim.warmup_epochs * self.iters_per_epoch
        if iteration >= warm_iters:
            return 1.0
        return 1 - (1 - iteration / warm_iters) * (1 - self.cfg.optim.warmup_ratio)

    def lr(self, iteration: int, group: dict) -> float:
        c = self.cfg.optim
        epoch = iteration / self.iters_per_epoch
        if c.lr_schedule == "two_rate":
            value = self.cosine(epoch)
            if group.get("kind") == "backbone":
                value = 0.0 if epoch < c.frozen_backbone_epochs else min(value, c.backbone_lr_ratio * c.lr)
            return value * group.get("lr_mult", 1.0)
        value = self.cosine(math.floor(epoch) if c.lr_schedule == "cosine_epoch" else epoch)
        return value * self.warmup_factor(iteration) * group.get("lr_mult", 1.0)

    def sigma(self, iteration: int) -> float:
        """σ·(1 − iteration / total iterations) with ``sigma_decay`` (MViT recipe), else σ (Swin recipe)."""
        c = self.cfg.selection
        if not c.sigma_decay:
            return c.sigma
        return c.sigma * (1 - iteration / self.total_iters)
