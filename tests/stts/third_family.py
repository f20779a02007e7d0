"""A third model family, test-only: FST, a factorised space-time transformer with STTS selection.

It exists to show that a family is its model file (and, in `stts/models/`, one import line): nothing else
in `stts`, `pipelines` or `cli` knows it. Importing this file registers it (`register_family`), exactly as
`stts/models/mvit.py` and `swin.py` do; `tests/stts/test_third_family.py` imports it inside a fixture and
removes it from the registry afterwards, so that no other test sees a third family.

The model (TimeSformer's "divided space-time attention", scaled down): a tubelet embedding (Conv3d with
stride = kernel) to a (T', H', W') token grid with separable position embeddings, then blocks of temporal
attention (each spatial position over time), spatial attention (each frame over its tokens) and an MLP,
then a mean-pooled LayerNorm head. STTS selection runs on the grid between blocks: temporal selection
(`stts.selection.TemporalSelector`, k of T' frames) before block ``time_pruning_loc``, spatial selection
(`SpatialSelector`, one a×a window per frame) before block ``space_pruning_loc``. Position embeddings are
added before any selection, so kept tokens keep their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stts.layers import DropPath, Mlp, init_linear_and_norm
from stts.models.spec import FamilySpec, Recipe, register_family
from stts.selection import (
    NUM_SAMPLES,
    SELECTOR_KEY,
    STRATEGIES,
    SelectionStep,
    SpatialSelector,
    TemporalSelector,
)

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class FSTConfig:
    num_classes: int = 400
    num_frames: int = 8
    crop_size: int = 64
    in_chans: int = 3
    tubelet: Triple = (2, 8, 8)  # (t, h, w) of one token: 8 x 64² → a 4 x 8 x 8 grid
    embed_dim: int = 32
    depth: int = 2
    num_heads: int = 2
    mlp_ratio: float = 2.0
    drop_path_rate: float = 0.1
    head_dropout: float = 0.0
    # STTS: an empty tuple disables that selection (no selector, no keys in the state dict)
    time_pruning_loc: tuple[int, ...] = ()
    space_pruning_loc: tuple[int, ...] = ()
    time_left_ratio: float = 1.0
    space_left_ratio: float = 1.0
    strategy: str = "learned"
    num_samples: int = NUM_SAMPLES

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML and JSON hand back lists
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        if self.strategy not in STRATEGIES:
            raise ValueError(f"selection strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("time_pruning_loc", "space_pruning_loc"):
            locs = getattr(self, name)
            if len(locs) > 1:
                raise ValueError(f"{name}: at most one location is supported, got {locs}")
            if any(not 0 <= i < self.depth for i in locs):
                raise ValueError(f"{name} {locs} outside blocks 0..{self.depth - 1}")
        for name in ("time_left_ratio", "space_left_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        t, h, w = self.tubelet
        if h != w or self.crop_size % h or self.num_frames % t:
            raise ValueError(
                f"tubelet {self.tubelet} must be square and tile {self.num_frames} x {self.crop_size}²"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")

    @property
    def grid(self) -> Triple:
        """(T', H', W') tokens after the tubelet embedding."""
        t, s, _ = self.tubelet
        return (self.num_frames // t, self.crop_size // s, self.crop_size // s)


_DEBUG = FSTConfig()
FST_CONFIGS: dict[str, FSTConfig] = {
    "fst_debug": _DEBUG,
    # 2 of the 4 temporal slices before the first block
    "fst_debug_t0.5": replace(_DEBUG, time_pruning_loc=(0,), time_left_ratio=0.5),
}


def selection_counts(cfg: FSTConfig) -> dict[str, tuple[int, int]]:
    """(candidates, k) of each selection (`FamilySpec.selection_counts`)."""
    t, h, w = cfg.grid
    counts = {}
    if cfg.time_pruning_loc:
        counts["t"] = (t, int(t * cfg.time_left_ratio))
    if cfg.space_pruning_loc:
        counts["s"] = (h * w, int(h * w * cfg.space_left_ratio))
    return counts


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x (B', M, C): attention among the M tokens of each of the B' sequences."""
        b, m, c = x.shape
        q, k, v = self.qkv(x).reshape(b, m, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, m, c))


class DividedBlock(nn.Module):
    """Temporal attention, then spatial attention, then the MLP; each a pre-norm residual branch."""

    def __init__(self, cfg: FSTConfig, drop_path: float):
        super().__init__()
        d = cfg.embed_dim
        self.norm_t, self.attn_t = nn.LayerNorm(d), Attention(d, cfg.num_heads)
        self.norm_s, self.attn_s = nn.LayerNorm(d), Attention(d, cfg.num_heads)
        self.norm_mlp, self.mlp = nn.LayerNorm(d), Mlp(d, int(d * cfg.mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, N, C) → the same shape."""
        b, t, n, c = x.shape
        across_time = x.transpose(1, 2).reshape(b * n, t, c)
        x = x + self.drop_path(self.attn_t(self.norm_t(across_time))).reshape(b, n, t, c).transpose(1, 2)
        x = x + self.drop_path(self.attn_s(self.norm_s(x.reshape(b * t, n, c)))).reshape(b, t, n, c)
        return x + self.drop_path(self.mlp(self.norm_mlp(x)))


class FST(nn.Module):
    """forward: (B, in_chans, num_frames, crop_size, crop_size) → logits (B, num_classes)."""

    def __init__(self, cfg: FSTConfig):
        super().__init__()
        self.cfg = cfg
        t, h, w = cfg.grid
        d = cfg.embed_dim
        self.patch_embed = nn.Conv3d(cfg.in_chans, d, kernel_size=cfg.tubelet, stride=cfg.tubelet)
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, 1, h * w, d))
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, 1, d))
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(DividedBlock(cfg, rate) for rate in rates)
        self.time_loc = cfg.time_pruning_loc[0] if cfg.time_pruning_loc else None
        self.space_loc = cfg.space_pruning_loc[0] if cfg.space_pruning_loc else None
        counts = selection_counts(cfg)
        if self.time_loc is not None:
            self.time_score_predictor = TemporalSelector(
                d, counts["t"][1], strategy=cfg.strategy, num_samples=cfg.num_samples
            )
        if self.space_loc is not None:
            self.space_score_predictor = SpatialSelector(
                d, counts["s"][1], strategy=cfg.strategy, num_samples=cfg.num_samples
            )
        self.norm = nn.LayerNorm(d)
        self.head_drop = nn.Dropout(cfg.head_dropout)
        self.head = nn.Linear(d, cfg.num_classes)
        nn.init.trunc_normal_(self.pos_embed_spatial, std=0.02)
        nn.init.trunc_normal_(self.pos_embed_temporal, std=0.02)
        init_linear_and_norm(self)

    def selectors(self) -> Iterator[nn.Module]:
        if self.time_loc is not None:
            yield self.time_score_predictor
        if self.space_loc is not None:
            yield self.space_score_predictor

    def selection_steps(self) -> list[SelectionStep]:
        """Both selections run on the tubelet grid (no pooling between blocks): a temporal slice is
        ``tubelet[0]`` frames, neighbouring tokens are ``tubelet[1]`` pixels apart; spatial selection sees
        the full H' × W' map."""
        t_stride, cell = self.cfg.tubelet[0], self.cfg.tubelet[1]
        steps = []
        for i in range(self.cfg.depth):
            if i == self.time_loc:
                steps.append(SelectionStep(self.time_score_predictor, t_stride, cell))
            if i == self.space_loc:
                steps.append(SelectionStep(self.space_score_predictor, t_stride, cell, self.cfg.grid[1]))
        return steps

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        expected = (cfg.in_chans, cfg.num_frames, cfg.crop_size, cfg.crop_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"FST built for inputs (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )
        x = self.patch_embed(x).flatten(3).permute(0, 2, 3, 1)  # (B, T', H'W', C)
        x = x + self.pos_embed_spatial + self.pos_embed_temporal
        for i, block in enumerate(self.blocks):
            if i == self.time_loc:
                x = self.time_score_predictor(x)
            if i == self.space_loc:
                b, t, n, c = x.shape
                side = math.isqrt(n)
                x = self.space_score_predictor(x.reshape(b, t, side, side, c)).flatten(2, 3)
            x = block(x)
        return self.head(self.head_drop(self.norm(x).mean(dim=(1, 2))))


def param_groups(model: nn.Module, weight_decay: float, selector_lr_mult: float) -> list[dict]:
    """timm's rule: no weight decay on 1-D parameters (biases, norms) and position embeddings; the
    selectors in their own group at ``selector_lr_mult`` × lr."""
    groups: dict[str, list] = {"selector": [], "decay": [], "no_decay": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if SELECTOR_KEY in name:
            groups["selector"].append(param)
        elif param.ndim <= 1 or "pos_embed" in name:
            groups["no_decay"].append(param)
        else:
            groups["decay"].append(param)
    rules = {
        "selector": (weight_decay, selector_lr_mult, "selector"),
        "decay": (weight_decay, 1.0, "backbone"),
        "no_decay": (0.0, 1.0, "backbone"),
    }
    return [
        {"params": params, "weight_decay": rules[key][0], "name": key, "lr_mult": rules[key][1],
         "kind": rules[key][2]}
        for key, params in groups.items()
        if params
    ]  # fmt: skip


def convert_state(state: dict) -> dict:
    """Checkpoints of an earlier layout that kept the selectors in one-element ModuleLists (MViT's
    ``time_score_predictor.0.*``) → ours; ours unchanged."""
    out = {}
    for key, value in state.items():
        for name in ("time_score_predictor", "space_score_predictor"):
            if key.startswith(f"{name}.0."):
                key = name + key[len(name) + 2 :]
        out[key] = value
    return out


# the clips and augmentation of an existing recipe (pipelines' CLIP_SPECS / AUG_SPECS key "mvit"), with
# this family's own aggregation (mean) and training values
FST_RECIPE = Recipe(
    clip="mvit",
    val_clip="mvit",
    aggregation="mean",
    train={
        "training": {"epochs": 4, "batch_size": 2, "num_sample": 1},
        "optim": {
            "lr": 1e-3,
            "weight_decay": 0.05,
            "lr_schedule": "cosine",
            "frozen_backbone_epochs": 0.0,
            "warmup_epochs": 0.0,
            "selector_lr_mult": 1.0,
            "clip_grad": 1.0,
        },
        "selection": {"sigma": 0.05, "sigma_decay": False},
        "loss": {"mixup": False, "label_smoothing": 0.0},
        "eval": {"eval_every": 1},
    },
    default_model="fst_debug_t0.5",
    plain_model="fst_debug",
)

SPEC = register_family(
    FamilySpec(
        name="fst",
        model=FST,
        config=FSTConfig,
        variants=FST_CONFIGS,
        recipe=FST_RECIPE,
        flops_convention="fvcore",
        param_groups=param_groups,
        head_prefixes=("head.",),
        default_locs={"time_pruning_loc": (0,), "space_pruning_loc": (1,)},
        convert_state=convert_state,
        legacy_config_keys={"image_size": "crop_size"},
        selection_counts=selection_counts,
    )
)
