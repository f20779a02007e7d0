"""MViT-B 16x4 with STTS token selection (spec §2), named as the official checkpoints.

Multiscale Vision Transformer v1 (pySlowFast "MViT", conv pooling, fused qkv) with the two selectors of
the official STTS fork wired in: temporal selection of k_t of the 8 temporal tokens before block 0, and
spatial selection of one a×a window per frame before block 4 (on the 14×14 grid). Parameter names,
shapes and registration order equal spec §2.6, so an official `model_state` loads with no renaming.

Differences from the official model, on purpose:
- `forward` returns logits in train *and* eval (the official head applies softmax in eval);
- nothing is moved to CUDA here; the model is single-device and device-agnostic.

Foreign formats are converted by the pure functions at the bottom: `convert_pyslowfast_separate_qkv`
(later pySlowFast checkpoints with separate q/k/v Linears) and `convert_torchvision_mvit_v1_b`;
`convert_state` recognises either layout. The family's spec (recipe, FLOPs convention, optimizer groups,
checkpoint conversion) is registered at the end of the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
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

BLOCK_NORM_EPS = 1e-6  # norm1, norm2 and the final norm (pySlowFast's partial(LayerNorm, eps=1e-6))
POOL_NORM_EPS = 1e-5  # norm_q/k/v are plain nn.LayerNorm in the official attention (spec §2.2, §9.2)


@dataclass(frozen=True)
class MViTConfig:
    """Everything that shapes the model. Defaults are MViT-B 16x4 with STTS t0.9_s0.9 (spec §2.1, §5.1)."""

    num_classes: int = 400
    num_frames: int = 16  # input frames; the model accepts only (3, num_frames, crop_size, crop_size)
    crop_size: int = 224
    in_chans: int = 3
    embed_dim: int = 96
    num_heads: int = 1
    depth: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_kernel: Triple = (3, 7, 7)
    patch_stride: Triple = (2, 4, 4)
    patch_padding: Triple = (1, 3, 3)
    # (block index, multiplier): the width/heads change takes effect *at* that block, so the block before
    # it outputs the new width (blocks 0, 2, 13 for MViT-B)
    dim_mul: tuple[tuple[int, float], ...] = ((1, 2.0), (3, 2.0), (14, 2.0))
    head_mul: tuple[tuple[int, float], ...] = ((1, 2.0), (3, 2.0), (14, 2.0))
    pool_q_stride: tuple[tuple[int, int, int, int], ...] = ((1, 1, 2, 2), (3, 1, 2, 2), (14, 1, 2, 2))
    # kv stride of block 0; divided by the q stride at every q-pooling block, for it and all later ones
    pool_kv_stride_adaptive: Triple = (1, 8, 8)
    pool_kernel: Triple = (3, 3, 3)  # POOL_KVQ_KERNEL: q and kv pooling
    drop_path_rate: float = 0.2
    head_dropout: float = 0.5
    # STTS. An empty tuple disables that selection: no selector module, no keys in the state dict.
    time_pruning_loc: tuple[int, ...] = (0,)
    space_pruning_loc: tuple[int, ...] = (4,)
    time_left_ratio: float = 0.875
    space_left_ratio: float = 0.863
    strategy: str = "learned"  # "learned" | "random" | "uniform" (controls; see stts.selection)
    num_samples: int = NUM_SAMPLES  # noise samples of the perturbed top-k
    space_stride: int | None = None  # window stride; None: max((H - a) // 2, 1), i.e. 1 for every zoo entry

    def __post_init__(self) -> None:
        # YAML round trips hand back lists; keep the config hashable and comparable
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
                object.__setattr__(self, f.name, value)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"selection strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("time_pruning_loc", "space_pruning_loc"):
            locs = getattr(self, name)
            # The official model holds one selector per location in a ModuleList, but every shipped config
            # uses one location, and the constructor's k bookkeeping for a second one is not documented.
            if len(locs) > 1:
                raise ValueError(f"{name}: at most one location is supported, got {locs}")
            if any(not 0 <= i < self.depth for i in locs):
                raise ValueError(f"{name} {locs} outside blocks 0..{self.depth - 1}")
        for name in ("time_left_ratio", "space_left_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.patch_stride[1] != self.patch_stride[2] or self.crop_size % self.patch_stride[1]:
            raise ValueError("crop_size must be a multiple of a square patch stride")

    @property
    def patch_grid(self) -> Triple:
        """(T, H, W) tokens after the patch embedding: (8, 56, 56) for MViT-B 16x4."""
        t, s, _ = self.patch_stride
        return (self.num_frames // t, self.crop_size // s, self.crop_size // s)


_DEBUG = MViTConfig(
    num_frames=8,
    crop_size=64,  # 4 x 16 x 16 tokens
    embed_dim=16,
    depth=5,
    # MViT-B's schedule squeezed into 5 blocks: widths 16 → 32 → 64, two q-pooling stages (16 → 8 → 4),
    # kv stride (1,4,4) → (1,2,2) → (1,1,1) with kernel 3 still pooling; like MViT-B, the last block
    # does not pool q (there, q pooling would only touch tokens that the cls-token head never reads)
    dim_mul=((1, 2.0), (3, 2.0)),
    head_mul=((1, 2.0), (3, 2.0)),
    pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2)),
    pool_kv_stride_adaptive=(1, 4, 4),
    drop_path_rate=0.1,
    time_pruning_loc=(),
    space_pruning_loc=(),
)

MVIT_CONFIGS: dict[str, MViTConfig] = {
    "mvit_b_16x4": MViTConfig(time_pruning_loc=(), space_pruning_loc=()),
    # README names; the ratios are those of the official yamls (spec §5.1): k_t = int(8 r_t) frames,
    # a = int(sqrt(int(196 r_s))) window side on the 14x14 grid
    "mvit_b_16x4_t0.9_s0.9": MViTConfig(time_left_ratio=0.875, space_left_ratio=0.863),  # k_t 7, a 13
    "mvit_b_16x4_t0.8_s0.9": MViTConfig(time_left_ratio=0.75, space_left_ratio=0.863),  # 6, 13
    "mvit_b_16x4_t0.6_s0.9": MViTConfig(time_left_ratio=0.625, space_left_ratio=0.863),  # 5, 13
    "mvit_b_16x4_t0.5_s0.7": MViTConfig(time_left_ratio=0.5, space_left_ratio=0.7367),  # 4, 12
    "mvit_b_16x4_t0.4_s0.6": MViTConfig(time_left_ratio=0.375, space_left_ratio=0.6174),  # 3, 11
    "mvit_debug": _DEBUG,
    # spatial selection after the first q-pooling (8x8 map): k_s = 32, a = 5, 16 windows; k_t = 2 of 4
    "mvit_debug_t0.5_s0.5": replace(
        _DEBUG, time_pruning_loc=(0,), space_pruning_loc=(2,), time_left_ratio=0.5, space_left_ratio=0.5
    ),
}


# ------------------------------------------------------------------------------------------------------
# Constructor bookkeeping (pure functions of the config)


def round_width(width: float, multiplier: float, divisor: int = 1) -> int:
    """pySlowFast's rounding of a scaled width to a multiple of `divisor` (at least 1, not under 90 %)."""
    width = width * multiplier
    out = max(1, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


@dataclass(frozen=True)
class BlockPlan:
    dim: int
    dim_out: int
    num_heads: int
    stride_q: Triple | None  # None: no q pooling and no skip pooling
    stride_kv: Triple
    drop_path: float


def block_plans(cfg: MViTConfig) -> list[BlockPlan]:
    """Per-block widths, heads and pooling strides (the table of spec §2.2)."""
    dim_mul = [1.0] * (cfg.depth + 1)
    head_mul = [1.0] * (cfg.depth + 1)
    for i, m in cfg.dim_mul:
        dim_mul[i] = m
    for i, m in cfg.head_mul:
        head_mul[i] = m
    stride_q: list[Triple | None] = [None] * cfg.depth
    for i, *s in cfg.pool_q_stride:
        stride_q[i] = tuple(s)

    plans = []
    kv = tuple(cfg.pool_kv_stride_adaptive)
    heads, dim = cfg.num_heads, cfg.embed_dim
    for i in range(cfg.depth):
        if stride_q[i] is not None:
            kv = tuple(max(a // b, 1) for a, b in zip(kv, stride_q[i], strict=True))
        heads = round_width(heads, head_mul[i])
        dim = round_width(dim, dim_mul[i], divisor=heads)
        dim_out = round_width(dim, dim_mul[i + 1], divisor=round_width(heads, head_mul[i + 1]))
        drop = cfg.drop_path_rate * i / (cfg.depth - 1) if cfg.depth > 1 else 0.0  # linspace(0, rate, depth)
        plans.append(BlockPlan(dim, dim_out, heads, stride_q[i], kv, drop))
    return plans


def selection_sizes(cfg: MViTConfig) -> tuple[int | None, int | None]:
    """(k_t, k_s) as the official constructor derives them (spec §2.4); None where selection is off.

    k_t = int(T · r_t) with T the patch grid's frames (the official code hard-codes 8 = 16 // 2).
    k_s = int(count · r_s), where `count` starts at the patch grid's H·W and becomes
    (int(sqrt(count)) // s)² (s = the spatial q stride, 2 in every config; the official code writes 2) at
    every q-pooling block *up to and including* the selection block — the
    official bookkeeping assumes the selection runs after that block's pooling, while the forward runs it
    before. Both agree for every shipped location (4); copied as is for others. The kept window is
    a × a with a = int(sqrt(k_s)) (the selector's `anchor`).
    """
    k_t = k_s = None
    if cfg.time_pruning_loc:
        k_t = int(cfg.patch_grid[0] * cfg.time_left_ratio)
    if cfg.space_pruning_loc:
        count = cfg.patch_grid[1] * cfg.patch_grid[2]
        for i, plan in enumerate(block_plans(cfg)):
            if plan.stride_q is not None:
                count = (math.isqrt(count) // plan.stride_q[1]) ** 2
            if i == cfg.space_pruning_loc[0]:
                k_s = int(count * cfg.space_left_ratio)
                break
    return k_t, k_s


# ------------------------------------------------------------------------------------------------------
# Layers


class PatchEmbed(nn.Module):
    def __init__(self, cfg: MViTConfig):
        super().__init__()
        self.proj = nn.Conv3d(
            cfg.in_chans,
            cfg.embed_dim,
            kernel_size=cfg.patch_kernel,
            stride=cfg.patch_stride,
            padding=cfg.patch_padding,
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) → tokens (B, T'·H'·W', D), index t·H'W' + h·W' + w."""
        return self.proj(x).flatten(2).transpose(1, 2)


def _pool_tokens(x: Tensor, pool: nn.Module, thw: Triple) -> tuple[Tensor, Triple]:
    """Pool the (T, H, W) grid of the tokens after the cls token; x (..., 1 + T·H·W, C), cls kept as is."""
    lead, c = x.shape[:-2], x.shape[-1]
    cls, grid = x[..., :1, :], x[..., 1:, :]
    grid = grid.reshape(-1, *thw, c).permute(0, 4, 1, 2, 3)  # (·, C, T, H, W)
    grid = pool(grid)
    new_thw = tuple(grid.shape[2:])
    grid = grid.flatten(2).transpose(1, 2).reshape(*lead, -1, c)
    return torch.cat([cls, grid], dim=-2), new_thw


class MultiScaleAttention(nn.Module):
    """Attention with depthwise conv pooling of q, k and v (one conv per role, shared by all heads)."""

    def __init__(self, dim: int, num_heads: int, plan: BlockPlan, cfg: MViTConfig):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        hd, kernel = self.head_dim, cfg.pool_kernel
        # Registration order = official state-dict order: qkv, proj, [pool_q, norm_q], pool_k, norm_k, ...
        self.qkv = nn.Linear(dim, 3 * dim, bias=cfg.qkv_bias)  # rows [q | k | v], each head-major
        self.proj = nn.Linear(dim, dim)

        def pooling(stride: Triple) -> tuple[nn.Module | None, nn.Module | None]:
            if math.prod(kernel) == 1 and math.prod(stride) == 1:
                return None, None
            conv = nn.Conv3d(hd, hd, kernel, stride, [k // 2 for k in kernel], groups=hd, bias=False)
            return conv, nn.LayerNorm(hd, eps=POOL_NORM_EPS)

        self.pool_q = self.norm_q = None
        if plan.stride_q is not None:
            self.pool_q, self.norm_q = pooling(plan.stride_q)
        self.pool_k, self.norm_k = pooling(plan.stride_kv)
        self.pool_v, self.norm_v = pooling(plan.stride_kv)

    def _pool(self, x: Tensor, pool: nn.Module | None, norm: nn.Module | None, thw: Triple):
        if pool is None:
            return x, thw
        x, thw = _pool_tokens(x, pool, thw)
        return norm(x), thw  # the norm covers the cls token too

    def forward(self, x: Tensor, thw: Triple) -> tuple[Tensor, Triple]:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, q_thw = self._pool(q, self.pool_q, self.norm_q, thw)
        k, _ = self._pool(k, self.pool_k, self.norm_k, thw)
        v, _ = self._pool(v, self.pool_v, self.norm_v, thw)
        x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(x.transpose(1, 2).reshape(b, -1, c)), q_thw


class MultiScaleBlock(nn.Module):
    def __init__(self, plan: BlockPlan, cfg: MViTConfig):
        super().__init__()
        dim, dim_out = plan.dim, plan.dim_out
        self.dim, self.dim_out = dim, dim_out
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = MultiScaleAttention(dim, plan.num_heads, plan, cfg)
        self.drop_path = DropPath(plan.drop_path) if plan.drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), dim_out)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        # the residual follows q's pooling with a max pool: kernel s+1 where the stride s > 1
        self.pool_skip = None
        if plan.stride_q is not None and math.prod(plan.stride_q) > 1:
            kernel = [s + 1 if s > 1 else s for s in plan.stride_q]
            self.pool_skip = nn.MaxPool3d(kernel, plan.stride_q, [k // 2 for k in kernel])

    def forward(self, x: Tensor, thw: Triple) -> tuple[Tensor, Triple]:
        x_attn, new_thw = self.attn(self.norm1(x), thw)
        if self.pool_skip is not None:
            x, _ = _pool_tokens(x, self.pool_skip, thw)
        x = x + self.drop_path(x_attn)
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if self.dim != self.dim_out:
            # official: the width-changing residual projects the *normalised* tensor (spec §9.5)
            x = self.proj(x_norm)
        return x + self.drop_path(x_mlp), new_thw


class Head(nn.Module):
    def __init__(self, dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # logits in eval too: the official TransformerBasicHead would apply softmax here in eval mode
        return self.projection(self.dropout(x))


# ------------------------------------------------------------------------------------------------------
# Model


class MViT(nn.Module):
    """MViT v1 with optional STTS selectors. forward: (B, 3, T, H, W) float → logits (B, num_classes).

    The input geometry is fixed by the config (positional embeddings have fixed sizes, and the token-grid
    bookkeeping starts from the config, as in the official code). Block inputs can be observed with a
    forward pre-hook on `blocks[i]`: its arguments are (x, (T, H, W)).
    """

    def __init__(self, cfg: MViTConfig):
        super().__init__()
        self.cfg = cfg
        plans = block_plans(cfg)
        k_t, k_s = selection_sizes(cfg)
        t, h, w = cfg.patch_grid
        d = cfg.embed_dim

        self.patch_embed = PatchEmbed(cfg)
        # parameter order of the official state dict: cls_token, spatial, temporal, class
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, d))
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, d))
        self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(MultiScaleBlock(plan, cfg) for plan in plans)

        # ModuleLists holding one selector, so the keys are `*_score_predictor.0.score_network.*`
        self.time_loc = cfg.time_pruning_loc[0] if cfg.time_pruning_loc else None
        self.space_loc = cfg.space_pruning_loc[0] if cfg.space_pruning_loc else None
        if self.time_loc is not None:
            selector = TemporalSelector(
                plans[self.time_loc].dim, k_t, strategy=cfg.strategy, num_samples=cfg.num_samples
            )
            self.time_score_predictor = nn.ModuleList([selector])
        if self.space_loc is not None:
            selector = SpatialSelector(
                plans[self.space_loc].dim,
                k_s,
                stride=cfg.space_stride,
                strategy=cfg.strategy,
                num_samples=cfg.num_samples,
            )
            self.space_score_predictor = nn.ModuleList([selector])

        self.norm = nn.LayerNorm(plans[-1].dim_out, eps=BLOCK_NORM_EPS)
        self.head = Head(plans[-1].dim_out, cfg.num_classes, cfg.head_dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.cls_token, self.pos_embed_spatial, self.pos_embed_temporal, self.pos_embed_class):
            nn.init.trunc_normal_(p, std=0.02)
        init_linear_and_norm(self)  # the whole model, selectors included; convs keep PyTorch's default init

    def selectors(self) -> Iterator[nn.Module]:
        """The selector modules (temporal first), e.g. for the trainer to set `sigma` on each."""
        if self.time_loc is not None:
            yield from self.time_score_predictor
        if self.space_loc is not None:
            yield from self.space_score_predictor

    def selection_steps(self) -> list[SelectionStep]:
        """Each selector and the token grid it runs on, in forward order (for `stts.explain`)."""
        cfg = self.cfg
        steps: list[SelectionStep] = []
        t_stride, s_stride = cfg.patch_stride[0], cfg.patch_stride[1]
        side = cfg.patch_grid[1]
        for i, plan in enumerate(block_plans(cfg)):
            # in forward, temporal then spatial selection run before block i (and before its pooling)
            if i == self.time_loc:
                steps.append(SelectionStep(self.time_score_predictor[0], t_stride, s_stride))
            if i == self.space_loc:
                steps.append(SelectionStep(self.space_score_predictor[0], t_stride, s_stride, side))
            if plan.stride_q is not None:
                t_stride *= plan.stride_q[0]
                s_stride *= plan.stride_q[1]
                # conv pooling with padding k // 2: ceil, as the block's own thw bookkeeping
                side = -(-side // plan.stride_q[1])
        return steps

    def _pos_embed(self) -> Tensor:
        """Separable: spatial tiled over frames + temporal repeated over positions; class prepended."""
        t = self.pos_embed_temporal.shape[1]
        hw = self.pos_embed_spatial.shape[1]
        pos = self.pos_embed_spatial.repeat(1, t, 1) + self.pos_embed_temporal.repeat_interleave(hw, dim=1)
        return torch.cat([self.pos_embed_class, pos], dim=1)

    def _select_time(self, x: Tensor, thw: Triple) -> tuple[Tensor, Triple]:
        t, h, w = thw
        cls, tokens = x[:, :1], x[:, 1:]
        frames = self.time_score_predictor[0](tokens.reshape(x.shape[0], t, h * w, x.shape[-1]))
        # cls is never scored nor changed; kept frames keep their original temporal embedding
        return torch.cat([cls, frames.flatten(1, 2)], dim=1), (frames.shape[1], h, w)

    def _select_space(self, x: Tensor, thw: Triple) -> tuple[Tensor, Triple]:
        cls, tokens = x[:, :1], x[:, 1:]
        windows = self.space_score_predictor[0](tokens.reshape(x.shape[0], *thw, x.shape[-1]))
        # each frame's window in raster order; the windows are then treated as one (T, a, a) volume even
        # where frames chose different windows (as in the official code)
        t, a = windows.shape[1], windows.shape[2]
        return torch.cat([cls, windows.flatten(1, 3)], dim=1), (t, a, a)

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        expected = (cfg.in_chans, cfg.num_frames, cfg.crop_size, cfg.crop_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"MViT built for inputs (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._pos_embed()
        thw = cfg.patch_grid  # from the config, not the tensor (spec §2.3)
        for i, block in enumerate(self.blocks):
            if i == self.time_loc:
                x, thw = self._select_time(x, thw)
            if i == self.space_loc:
                x, thw = self._select_space(x, thw)
            x, thw = block(x, thw)
        x = self.norm(x)
        return self.head(x[:, 0])


# ------------------------------------------------------------------------------------------------------
# Checkpoint conversion (pure: state dict in, state dict out)


def convert_pyslowfast_separate_qkv(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Fuse `*.attn.q/k/v.{weight,bias}` (later pySlowFast MViT) into `*.attn.qkv.*`, rows [q | k | v].

    Other keys pass unchanged, in their order; the fused tensor takes the place of the q tensor.
    """
    parts: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        head, _, leaf = key.rpartition(".")
        prefix, _, role = head.rpartition(".")
        if prefix.endswith("attn") and role in ("q", "k", "v"):
            parts.setdefault((prefix, leaf), {})[role] = value
    for (prefix, leaf), found in parts.items():
        if set(found) != {"q", "k", "v"}:
            raise ValueError(f"{prefix}: found {sorted(found)} of q/k/v {leaf}, need all three")
        shapes = {tuple(t.shape) for t in found.values()}
        if len(shapes) != 1:
            raise ValueError(f"{prefix}: q/k/v {leaf} shapes differ: {sorted(shapes)}")

    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        head, _, leaf = key.rpartition(".")
        prefix, _, role = head.rpartition(".")
        if (prefix, leaf) in parts and role in ("q", "k", "v"):
            if role == "q":
                found = parts[(prefix, leaf)]
                out[f"{prefix}.qkv.{leaf}"] = torch.cat([found["q"], found["k"], found["v"]], dim=0)
            continue
        out[key] = value
    return out


# torchvision `mvit_v1_b` (torchvision/models/video/mvit.py): pooling wrapped in `Pool(pool, norm_act)`,
# torchvision.ops.MLP Sequential (Linear, GELU, Dropout, Linear, Dropout), head Sequential (Dropout, Linear)
_TORCHVISION_TOP = {
    "conv_proj.weight": "patch_embed.proj.weight",
    "conv_proj.bias": "patch_embed.proj.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
    "head.1.weight": "head.projection.weight",
    "head.1.bias": "head.projection.bias",
}
# torchvision keeps these as 1-D (class) / 2-D (spatial, temporal) tensors; ours carry a batch axis
_TORCHVISION_POS = {
    "pos_encoding.class_token": "cls_token",
    "pos_encoding.spatial_pos": "pos_embed_spatial",
    "pos_encoding.temporal_pos": "pos_embed_temporal",
    "pos_encoding.class_pos": "pos_embed_class",
}
_TORCHVISION_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.qkv": "attn.qkv",
    "attn.project.0": "attn.proj",
    "attn.pool_q.pool": "attn.pool_q",
    "attn.pool_q.norm_act.0": "attn.norm_q",
    "attn.pool_k.pool": "attn.pool_k",
    "attn.pool_k.norm_act.0": "attn.norm_k",
    "attn.pool_v.pool": "attn.pool_v",
    "attn.pool_v.norm_act.0": "attn.norm_v",
    "mlp.0": "mlp.fc1",
    "mlp.3": "mlp.fc2",
    "project": "proj",
}


def convert_torchvision_mvit_v1_b(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision's `mvit_v1_b` weights to ours (the baseline `mvit_b_16x4`, no selectors).

    Same layout otherwise (fused qkv, [q | k | v] head-major rows). One numerical difference remains:
    torchvision's pooling LayerNorms use eps 1e-6 where pySlowFast (and this model) use 1e-5.
    Unknown keys raise, so that a different model is not half-loaded.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        name, _, leaf = key.rpartition(".")
        if key in _TORCHVISION_TOP:
            out[_TORCHVISION_TOP[key]] = value
        elif key in _TORCHVISION_POS:
            out[_TORCHVISION_POS[key]] = value.reshape(1, -1, value.shape[-1])
        elif name.startswith("blocks."):
            _, index, inner = name.split(".", 2)
            if inner not in _TORCHVISION_BLOCK:
                unknown.append(key)
                continue
            out[f"blocks.{index}.{_TORCHVISION_BLOCK[inner]}.{leaf}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not torchvision mvit_v1_b keys: {', '.join(unknown[:8])}")
    return out


def convert_state(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Any MViT layout `stts` knows → ours: torchvision's `mvit_v1_b`, pySlowFast's separate q/k/v, or ours
    (unchanged)."""
    if "conv_proj.weight" in state_dict:
        return convert_torchvision_mvit_v1_b(state_dict)
    if any(k.endswith((".attn.q.weight", ".attn.q.bias")) for k in state_dict):
        return convert_pyslowfast_separate_qkv(state_dict)
    return dict(state_dict)


# ------------------------------------------------------------------------------------------------------
# Optimizer groups of the official recipe


def param_groups(model: nn.Module, weight_decay: float, selector_lr_mult: float = 1.0) -> list[dict]:
    """pySlowFast's STTS groups, built by walking *modules* and their direct parameters (spec §6.1):
    every parameter of a module whose name contains "predictor" (decayed, biases and norms included; lr ×
    ``selector_lr_mult``, 1 in the recipe); BatchNorm parameters (none in MViT); other ≥2-D parameters
    (decayed: cls token, position embeddings and conv weights included); other 1-D parameters (no decay).
    Empty groups are dropped."""
    groups = {
        "predictor": ([], weight_decay, "selector", selector_lr_mult),
        "backbone_bn": ([], 0.0, "backbone", 1.0),
        "backbone_nonbn": ([], weight_decay, "backbone", 1.0),
        "backbone_zero": ([], 0.0, "backbone", 1.0),
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
        {"params": params, "weight_decay": wd, "name": name, "lr_mult": mult, "kind": kind}
        for name, (params, wd, kind, mult) in groups.items()
        if params
    ]


# ------------------------------------------------------------------------------------------------------
# The family's spec

# spec §6.1: 16 videos over 8 GPUs, 2 augmented clips each; 20 epochs; the two-rate schedule (selectors on
# cosine from step 0, backbone frozen 3 epochs then capped at 0.1 × lr); σ 0.1 → 0; mixup/cutmix with
# label smoothing; clipping at global norm 1. Evaluation (spec §7.1): 10 clips × 1 centre crop, softmaxes
# summed.
MVIT_RECIPE = Recipe(
    clip="mvit",
    val_clip="mvit",
    aggregation="sum",
    train={
        "training": {"epochs": 20, "batch_size": 2, "num_sample": 2, "grad_accum": 1},
        "optim": {
            "lr": 1e-4,
            "min_lr": 1e-6,
            "weight_decay": 0.05,
            "lr_schedule": "two_rate",
            "frozen_backbone_epochs": 3.0,
            "backbone_lr_ratio": 0.1,
            "warmup_epochs": 0.0,
            "selector_lr_mult": 1.0,
            "clip_grad": 1.0,
        },
        "selection": {"sigma": 0.1, "sigma_decay": True},
        "loss": {"mixup": True, "label_smoothing": 0.1},
        "eval": {"eval_every": 2},
    },
    default_model="mvit_b_16x4_t0.6_s0.9",
    plain_model="mvit_b_16x4",
)

SPEC = register_family(
    FamilySpec(
        name="mvit",
        model=MViT,
        config=MViTConfig,
        variants=MVIT_CONFIGS,
        recipe=MVIT_RECIPE,
        flops_convention="fvcore",
        param_groups=param_groups,
        head_prefixes=("head.",),
        default_locs={
            "time_pruning_loc": MViTConfig().time_pruning_loc,
            "space_pruning_loc": MViTConfig().space_pruning_loc,
        },
        convert_state=convert_state,
    )
)
