"""Parameter groups, learning-rate and σ schedules of the two official recipes (spec §6), as pure functions.

Every group is a dict for `torch.optim.AdamW` with two extra keys the schedule reads: ``name`` and
``lr_mult``, and ``kind``: ``"selector"`` or ``"backbone"`` (the MViT schedule treats them differently).
Positions in training are counted in *iterations* (loader batches), as both official schedules do:
``iteration = epoch * iters_per_epoch + i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from .config import TrainConfig

__all__ = ["Schedule", "param_groups", "mvit_param_groups", "swin_param_groups"]

SELECTOR_KEY = "predictor"  # the official selectors: time_score_predictor / space_score_predictor


def mvit_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """pySlowFast's STTS groups, built by walking *modules* and their direct parameters (spec §6.1):
    every parameter of a module whose name contains "predictor" (decayed, biases and norms included);
    BatchNorm parameters (none in MViT); other ≥2-D parameters (decayed: cls token, position embeddings and
    conv weights included); other 1-D parameters (no decay). Empty groups are dropped."""
    groups = {
        "predictor": ([], weight_decay, "selector"),
        "backbone_bn": ([], 0.0, "backbone"),
        "backbone_nonbn": ([], weight_decay, "backbone"),
        "backbone_zero": ([], 0.0, "backbone"),
    }
    for module_name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad:
                continue
            if SELECTOR_KEY in module_name:
                key = "predictor"
            elif isinstance(module, nn.modules.batchnorm._NormBase):
                key = "backbone_bn"
            elif param.ndim >= 2:
                key = "backbone_nonbn"
            else:
                key = "backbone_zero"
            groups[key][0].append(param)
    return [
        {"params": params, "weight_decay": wd, "name": name, "lr_mult": 1.0, "kind": kind}
        for name, (params, wd, kind) in groups.items()
        if params
    ]


def swin_param_groups(model: nn.Module, weight_decay: float, selector_lr_mult: float) -> list[dict]:
    """mmcv's default constructor with the configs' ``paramwise_cfg.custom_keys`` (spec §6.2): keys tried
    longest first, the first substring of the full parameter name wins; one group per (key, setting)."""
    custom = {  # key → (lr_mult, decay_mult)
        "relative_position_bias_table": (1.0, 0.0),
        "absolute_pos_embed": (1.0, 0.0),
        SELECTOR_KEY: (selector_lr_mult, 1.0),
        "norm": (1.0, 0.0),
    }
    order = sorted(custom, key=len, reverse=True)
    groups: dict[str, list] = {key: [] for key in [*order, "default"]}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = next((k for k in order if k in name), "default")
        groups[key].append(param)
    out = []
    for key, params in groups.items():
        if not params:
            continue
        lr_mult, decay_mult = custom.get(key, (1.0, 1.0))
        out.append(
            {
                "params": params,
                "weight_decay": weight_decay * decay_mult,
                "name": key,
                "lr_mult": lr_mult,
                "kind": "selector" if key == SELECTOR_KEY else "backbone",
            }
        )
    return out


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    if cfg.param_groups == "mvit":
        return mvit_param_groups(model, cfg.weight_decay)
    return swin_param_groups(model, cfg.weight_decay, cfg.selector_lr_mult)


@dataclass(frozen=True)
class Schedule:
    """lr per group and σ at an iteration, for ``iters_per_epoch`` loader iterations per epoch."""

    cfg: TrainConfig
    iters_per_epoch: int

    @property
    def total_iters(self) -> int:
        return self.iters_per_epoch * self.cfg.epochs

    def cosine(self, epoch: float) -> float:
        c = self.cfg
        return c.min_lr + (c.lr - c.min_lr) * (1 + math.cos(math.pi * epoch / c.epochs)) / 2

    def warmup_factor(self, iteration: int) -> float:
        """mmcv's linear warm-up: from ``warmup_ratio`` to 1 over ``warmup_epochs`` of iterations."""
        warm_iters = self.cfg.warmup_epochs * self.iters_per_epoch
        if iteration >= warm_iters:
            return 1.0
        return 1 - (1 - iteration / warm_iters) * (1 - self.cfg.warmup_ratio)

    def lr(self, iteration: int, group: dict) -> float:
        c = self.cfg
        epoch = iteration / self.iters_per_epoch
        if c.lr_schedule == "mvit":
            value = self.cosine(epoch)
            if group.get("kind") == "backbone":
                value = 0.0 if epoch < c.frozen_backbone_epochs else min(value, c.backbone_lr_ratio * c.lr)
            return value * group.get("lr_mult", 1.0)
        # "swin": mmcv CosineAnnealing by epoch, the lr changes at epoch boundaries only
        value = self.cosine(math.floor(epoch) if c.lr_schedule == "swin" else epoch)
        return value * self.warmup_factor(iteration) * group.get("lr_mult", 1.0)

    def sigma(self, iteration: int) -> float:
        """MViT: σ·(1 − iteration / total iterations); Swin: σ constant."""
        c = self.cfg
        if not c.sigma_decay:
            return c.sigma
        return c.sigma * (1 - iteration / self.total_iters)
