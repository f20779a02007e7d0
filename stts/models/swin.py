"""Video Swin Transformer (Swin-T/S/B) with STTS temporal selection (spec §3, §4).

Module and parameter names follow the official mmaction `Recognizer3D` (`backbone.*`, `cls_head.fc_cls.*`,
spec §3.5), so official checkpoints load with no renaming. Behaviour of the official code that looks odd is
copied on purpose (spec §3.2–§3.3):
- a window axis no longer than the feature map shrinks to the map's size and is not shifted, so with
  k ≤ 8 kept frames the temporal window is k; with k > 8 the frames are zero-padded to 16 inside every
  block (after norm1) and the padded tokens take part in attention as keys/values equal to the qkv bias;
- the relative position bias of a shrunk window is the top-left N×N block of the full window's index;
- the shift mask is −100 between tokens of different regions (not −inf).

Temporal selection runs before stage 0, after the patch embedding and its LayerNorm, through the shared
selector of `stts.selection`; k comes from the constructor's `num_frames`, not from the input (spec §9.17).
Spatial selection (`space_pruning_loc`) is an extension the official Swin does not have; it is off in every
shipped config.

Internally feature maps are channels-last (B, D, H, W, C); `SwinTransformer3D.forward` returns the
official channels-first (B, C, T', H', W') map. The family's spec (recipe, FLOPs convention, optimizer
groups, checkpoint conversion) is registered at the end of the file.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace

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
class SwinConfig:
    """Recognizer3D(SwinTransformer3D + I3DHead). Defaults are the STTS Swin-B configs (spec §3.1)."""

    patch_size: Triple = (2, 4, 4)
    in_chans: int = 3
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: Triple = (8, 7, 7)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: float | None = None  # None: head_dim ** -0.5
    drop_path: float = 0.2  # stochastic depth, linear over all blocks from 0
    patch_norm: bool = True
    # Bookkeeping only: k = int((num_frames // patch_t) * time_left_ratio), whatever the input's length.
    num_frames: int = 32
    crop_size: int = 224  # the input's side (`image_size` before: one name for every family)
    num_classes: int = 400
    head_dropout: float = 0.5
    head_init_std: float = 0.01
    # STTS. Temporal selection exists only before stage 0 in the official code; () disables it. The zoo
    # sets the ratio; the default 1.0 keeps every frame (an identity selection, soft or hard).
    time_pruning_loc: tuple[int, ...] = (0,)
    time_left_ratio: float = 1.0
    # Extension, not in the official Swin: one a×a window per frame before each listed stage,
    # a = int(sqrt(int(H_s * W_s * space_left_ratio))).
    space_pruning_loc: tuple[int, ...] = ()
    space_left_ratio: float = 1.0
    strategy: str = "learned"  # learned | random | uniform (stts.selection.STRATEGIES)
    num_samples: int = NUM_SAMPLES
    sigma: float = 0.05  # constant in the official Swin recipe (spec §6.2); the trainer may change it

    def __post_init__(self):
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} differ in length")
        for s, heads in enumerate(self.num_heads):
            if self.stage_dim(s) % heads:
                raise ValueError(f"stage {s}: width {self.stage_dim(s)} is not divisible by {heads} heads")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown selection strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if set(self.time_pruning_loc) - {0}:
            raise ValueError(
                f"time_pruning_loc {self.time_pruning_loc}: Video Swin selects frames only before stage 0"
            )
        if any(not 0 <= s < len(self.depths) for s in self.space_pruning_loc):
            raise ValueError(f"space_pruning_loc {self.space_pruning_loc} names a stage that does not exist")
        if len(set(self.space_pruning_loc)) != len(self.space_pruning_loc):
            raise ValueError(f"space_pruning_loc {self.space_pruning_loc} repeats a stage")
        for name in ("time_left_ratio", "space_left_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")

    def stage_dim(self, stage: int) -> int:
        return self.embed_dim * 2**stage

    @property
    def num_features(self) -> int:
        return self.stage_dim(len(self.depths) - 1)

    @property
    def num_patches(self) -> Triple:
        """Token grid after the patch embedding, from the constructor arguments (floor, as the official)."""
        p = self.patch_size
        return (self.num_frames // p[0], self.crop_size // p[1], self.crop_size // p[2])

    @property
    def time_k(self) -> int | None:
        """Frames kept by temporal selection (None: no selection)."""
        if not self.time_pruning_loc:
            return None
        return int(self.num_patches[0] * self.time_left_ratio)


_SWIN_B = SwinConfig()
_SWIN_T = replace(_SWIN_B, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path=0.1)
_DEBUG = SwinConfig(
    embed_dim=16,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 2, 4),
    # window_t 3 < 4 temporal tokens: unselected debug models pad 4 → 6 frames inside blocks (the k > 8 rule
    # of Swin-B in small); image 56 gives a 14 → 7 → 4 → 2 grid: padded windows and an odd PatchMerging.
    window_size=(3, 4, 4),
    num_frames=8,
    crop_size=56,
    time_pruning_loc=(),
)

# README name ↔ config (spec §3.4): "T0_0.9" is t0_0.875.py, and so on by order.
SWIN_CONFIGS: dict[str, SwinConfig] = {
    "swin_b_32x2": replace(_SWIN_B, time_pruning_loc=()),
    "swin_b_32x2_t0.9": replace(_SWIN_B, time_left_ratio=0.875),  # k = 14
    "swin_b_32x2_t0.8": replace(_SWIN_B, time_left_ratio=0.75),  # k = 12
    "swin_b_32x2_t0.6": replace(_SWIN_B, time_left_ratio=0.625),  # k = 10
    "swin_b_32x2_t0.5": replace(_SWIN_B, time_left_ratio=0.5625),  # k = 9 (README FLOPs match k = 8, §7.2)
    "swin_b_32x2_t0.4": replace(_SWIN_B, time_left_ratio=0.375),  # k = 6
    # Backbones without selection, as data; drop_path of the upstream Video Swin configs (not in the spec).
    "swin_t_32x2": replace(_SWIN_T, time_pruning_loc=()),
    "swin_s_32x2": replace(_SWIN_T, depths=(2, 2, 18, 2), drop_path=0.2, time_pruning_loc=()),
    # CPU flavours for tests and smoke runs.
    "swin_debug": _DEBUG,
    "swin_debug_t0.5": replace(_DEBUG, time_pruning_loc=(0,), time_left_ratio=0.5),  # k = 2
}


# ----------------------------------------------------------------------------------------------------
# Window geometry (pure functions: the rules of spec §3.2–§3.3)


def window_and_shift(size: Triple, window: Triple, shift: Triple) -> tuple[Triple, Triple]:
    """Per axis: an axis no longer than its window gets one window of its own size and no shift."""
    win = tuple(n if n <= w else w for n, w in zip(size, window, strict=True))
    shf = tuple(0 if n <= w else s for n, w, s in zip(size, window, shift, strict=True))
    return win, shf  # type: ignore[return-value]


def padded_size(size: Triple, window: Triple) -> Triple:
    """Each axis rounded up to a multiple of the window (the zero padding inside a block)."""
    return tuple(-(-n // w) * w for n, w in zip(size, window, strict=True))  # type: ignore[return-value]


def relative_position_index(window: Triple) -> Tensor:
    """(N, N) int64, N = Wd·Wh·Ww, tokens d-major: index = (Δd+Wd−1)(2Wh−1)(2Ww−1) + (Δh+Wh−1)(2Ww−1) + Δw+Ww−1,
    Δ = position of the query token minus position of the key token."""
    wd, wh, ww = window
    grid = torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww), indexing="ij")
    coords = torch.stack(grid).flatten(1)  # (3, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (3, N, N)
    return (
        (rel[0] + wd - 1) * (2 * wh - 1) * (2 * ww - 1) + (rel[1] + wh - 1) * (2 * ww - 1) + (rel[2] + ww - 1)
    )


def window_partition(x: Tensor, window: Triple) -> Tensor:
    """(B, D, H, W, C) → (B, nW, N, C): windows in (D, H, W) raster order, tokens d-major inside a window."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, wd * wh * ww, c)


def window_reverse(windows: Tensor, window: Triple, size: Triple) -> Tensor:
    """Inverse of `window_partition`: (B, nW, N, C) → (B, D, H, W, C)."""
    b, _, _, c = windows.shape
    (wd, wh, ww), (d, h, w) = window, size
    x = windows.view(b, d // wd, h // wh, w // ww, wd, wh, ww, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, c)


@functools.lru_cache(maxsize=32)
def shift_mask(size: Triple, window: Triple, shift: Triple, device: torch.device) -> Tensor:
    """Additive mask (nW, N, N) for shifted windows of a padded (D, H, W) volume: −100 between tokens that
    the cyclic roll brought together from different regions, 0 otherwise. Regions are the official three
    slices per axis, [:−w), [−w:−s), [−s:] — with s = 0 the last slice is the whole axis. Cached: every
    shifted block of a stage shares it (do not modify the returned tensor)."""
    # A normal tensor even when first built under inference mode: the cache also serves training.
    with torch.inference_mode(False):
        labels = torch.zeros(size, device="cpu")
        region = 0
        for sd in (slice(-window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
            for sh in (slice(-window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
                for sw in (slice(-window[2]), slice(-window[2], -shift[2]), slice(-shift[2], None)):
                    labels[sd, sh, sw] = region
                    region += 1
        ids = window_partition(labels[None, ..., None], window)[0, ..., 0]  # (nW, N)
        differ = ids[:, None, :] != ids[:, :, None]
        return torch.zeros(differ.shape, device="cpu").masked_fill(differ, -100.0).to(device)


# ----------------------------------------------------------------------------------------------------
# Modules


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside 3-D windows with a learned relative position bias."""

    def __init__(self, dim: int, window: Triple, num_heads: int, qkv_bias: bool, qk_scale: float | None):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        wd, wh, ww = window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        # Persistent: it is in the official checkpoints (spec §3.5), and strict loading must see it.
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, n: int) -> Tensor:
        """(heads, n, n). A shrunk window uses the top-left n×n block of the index (official behaviour:
        exact when only the temporal window shrinks, since tokens are d-major)."""
        idx = self.relative_position_index[:n, :n].reshape(-1)
        return self.relative_position_bias_table[idx].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, nW, N, C) windows; mask (nW, N, N) additive, or None → (B, nW, N, C)."""
        b, nw, n, c = x.shape
        h, hd = self.num_heads, c // self.num_heads
        qkv = self.qkv(x).view(b, nw, n, 3, h, hd).permute(3, 0, 1, 4, 2, 5)  # (3, B, nW, heads, N, hd)
        bias = self.position_bias(n).to(qkv.dtype)
        # Fused kernels take 4-D inputs whose mask broadcasts over dim 0 only: without a shift mask the
        # bias is shared by all windows (batch = B·nW); with one, windows go into the head axis so that
        # the (nW·heads, N, N) mask is shared by the batch instead of being copied B times.
        if mask is None:
            shape, attn_mask = (b * nw, h, n, hd), bias.unsqueeze(0)
        else:
            shape = (b, nw * h, n, hd)
            attn_mask = (mask.to(qkv.dtype).unsqueeze(1) + bias.unsqueeze(0)).reshape(1, nw * h, n, n)
        q, k, v = (t.reshape(shape) for t in qkv.unbind(0))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return self.proj(out.reshape(b, nw, h, n, hd).transpose(2, 3).reshape(b, nw, n, c))


class SwinBlock3D(nn.Module):
    """Pre-norm block: (shifted) window attention, then MLP, each with a residual and stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Triple,
        shift: Triple,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_path: float,
    ):
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, window, num_heads, qkv_bias, qk_scale)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, D, H, W, C) → same shape."""
        size = tuple(x.shape[1:4])
        window, shift = window_and_shift(size, self.window, self.shift)
        shortcut = x
        # Padding after norm1 (official): padded tokens are zeros and, unmasked, attend and are attended
        # to as qkv-bias keys/values (spec §3.2, §9.18).
        x = self.norm1(x)
        padded = padded_size(size, window)
        pads = [p - n for p, n in zip(padded, size, strict=True)]
        if any(pads):
            x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        mask = None
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
            mask = shift_mask(padded, window, shift, x.device)
        x = window_reverse(self.attn(window_partition(x, window), mask), window, padded)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        if any(pads):
            x = x[:, : size[0], : size[1], : size[2]]
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2×2 spatial merge: pad H, W to even, concat the phases (even h, even w), (odd h, even w),
    (even h, odd w), (odd h, odd w) → 4C, LayerNorm, Linear to 2C without bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:4]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat(
            [x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One stage: `depth` blocks, shifted every other one, then PatchMerging except in the last stage."""

    def __init__(self, cfg: SwinConfig, stage: int, drop_paths: list[float]):
        super().__init__()
        dim = cfg.stage_dim(stage)
        half = tuple(w // 2 for w in cfg.window_size)
        self.blocks = nn.ModuleList(
            SwinBlock3D(
                dim,
                cfg.num_heads[stage],
                cfg.window_size,
                (0, 0, 0) if i % 2 == 0 else half,
                cfg.mlp_ratio,
                cfg.qkv_bias,
                cfg.qk_scale,
                drop_paths[i],
            )
            for i in range(cfg.depths[stage])
        )
        self.downsample = PatchMerging(dim) if stage < len(cfg.depths) - 1 else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed3D(nn.Module):
    """Zero-pad (back, bottom, right) to multiples of the patch, Conv3d with kernel = stride = patch,
    LayerNorm over channels. (B, 3, T, H, W) → (B, T/2, H/4, W/4, C) channels-last."""

    def __init__(self, patch: Triple, in_chans: int, dim: int, norm: bool):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        pads = [(-n) % p for n, p in zip(x.shape[2:], self.patch, strict=True)]
        if any(pads):
            x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]))
        x = self.proj(x).permute(0, 2, 3, 4, 1)
        return x if self.norm is None else self.norm(x)


class SwinTransformer3D(nn.Module):
    """The backbone. (B, 3, T, H, W) → (B, C_last, T', H/32, W/32), T' = k with temporal selection."""

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed3D(cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.patch_norm)
        # The official pos_drop, an identity Dropout(0) holding no state, is left out.
        # Rates on the CPU explicitly: the model may be built under a meta or CUDA default device.
        rates = torch.linspace(0, cfg.drop_path, sum(cfg.depths), device="cpu").tolist()
        starts = [sum(cfg.depths[:s]) for s in range(len(cfg.depths))]
        self.layers = nn.ModuleList(
            BasicLayer(cfg, s, rates[starts[s] : starts[s] + cfg.depths[s]]) for s in range(len(cfg.depths))
        )
        if cfg.time_pruning_loc:
            temporal = TemporalSelector(
                cfg.embed_dim, cfg.time_k, strategy=cfg.strategy, num_samples=cfg.num_samples
            )
            self.time_score_predictor = nn.ModuleList([temporal])
        space_k = self._space_k()
        self._space_stages = tuple(space_k)
        if space_k:
            self.space_score_predictor = nn.ModuleList(
                SpatialSelector(cfg.stage_dim(s), k, strategy=cfg.strategy, num_samples=cfg.num_samples)
                for s, k in space_k.items()
            )
        self.norm = nn.LayerNorm(cfg.num_features)
        for selector in self.selectors():
            selector.sigma = cfg.sigma

    def _space_k(self) -> dict[int, int]:
        """Stage → tokens kept per frame by spatial selection, tracking the square grid through the
        stages (PatchMerging rounds up) and through earlier spatial selections."""
        side, ks = self.cfg.num_patches[1], {}
        for s in range(len(self.cfg.depths)):
            if s in self.cfg.space_pruning_loc:
                ks[s] = int(side * side * self.cfg.space_left_ratio)
                side = math.isqrt(ks[s])
            side = -(-side // 2)
        return ks

    def selectors(self) -> list[TemporalSelector | SpatialSelector]:
        """Every selector (temporal first), e.g. for the trainer to set `sigma`."""
        found: list[TemporalSelector | SpatialSelector] = []
        for name in ("time_score_predictor", "space_score_predictor"):
            if hasattr(self, name):
                found.extend(getattr(self, name))
        return found

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        space = dict(zip(self._space_stages, getattr(self, "space_score_predictor", ()), strict=True))
        for s, layer in enumerate(self.layers):
            if s == 0 and self.cfg.time_pruning_loc:
                # the selector wants frames of tokens (B, T, N, C): channels-last maps are that already
                b, t, h, w, c = x.shape
                selector = self.time_score_predictor[0]
                x = selector(x.reshape(b, t, h * w, c)).reshape(b, selector.k, h, w, c)
            if s in space:
                x = space[s](x)
            x = layer(x)
        return self.norm(x).permute(0, 4, 1, 2, 3)


class I3DHead(nn.Module):
    """Average over (T, H, W), dropout, linear classifier. Returns logits."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float):
        super().__init__()
        # a module, not x.mean(): module-hook FLOP counters (the mmcv convention, spec §7.2) count pooling
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc_cls = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_cls(self.dropout(self.avg_pool(x).flatten(1)))


class VideoSwin(nn.Module):
    """The recognizer: `backbone` + `cls_head`. (B, 3, T, H, W) float → logits (B, num_classes), in train
    and eval alike (the official test pipeline averages softmaxes outside the model)."""

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = SwinTransformer3D(cfg)
        self.cls_head = I3DHead(cfg.num_features, cfg.num_classes, cfg.head_dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """Official init: Linear trunc-normal(0.02) / bias 0 and LayerNorm 1 / 0 over the backbone,
        selectors included; the bias tables keep their trunc-normal(0.02) from construction, the patch
        Conv3d its PyTorch default; the classifier normal(0.01) / 0."""
        init_linear_and_norm(self.backbone)
        nn.init.normal_(self.cls_head.fc_cls.weight, std=self.cfg.head_init_std)
        nn.init.zeros_(self.cls_head.fc_cls.bias)

    def selectors(self) -> list[TemporalSelector | SpatialSelector]:
        return self.backbone.selectors()

    def selection_steps(self) -> list[SelectionStep]:
        """Each selector and the token grid it runs on, in forward order (for `stts.explain`)."""
        backbone, cfg = self.backbone, self.cfg
        steps: list[SelectionStep] = []
        if cfg.time_pruning_loc:
            steps.append(
                SelectionStep(backbone.time_score_predictor[0], cfg.patch_size[0], cfg.patch_size[1])
            )
        spatial = dict(
            zip(backbone._space_stages, getattr(backbone, "space_score_predictor", ()), strict=True)
        )
        side, cell = cfg.num_patches[1], cfg.patch_size[1]
        for s in range(len(cfg.depths)):
            if s in spatial:
                steps.append(SelectionStep(spatial[s], cfg.patch_size[0], cell, side))
                side = spatial[s].anchor
            side, cell = -(-side // 2), cell * 2  # PatchMerging pads to even, then halves
        return steps

    def forward(self, x: Tensor) -> Tensor:
        return self.cls_head(self.backbone(x))


def build_swin(name: str, **overrides) -> VideoSwin:
    """A zoo entry, with config fields overridden, e.g. `build_swin("swin_b_32x2_t0.5", num_classes=101)`."""
    if name not in SWIN_CONFIGS:
        raise KeyError(f"unknown Video Swin variant {name!r}; known: {', '.join(SWIN_CONFIGS)}")
    return VideoSwin(replace(SWIN_CONFIGS[name], **overrides))


# ----------------------------------------------------------------------------------------------------
# Foreign checkpoints

_TV_STAGE = re.compile(r"features\.(\d+)\.(.+)")
_TV_MLP = {"mlp.0.": "mlp.fc1.", "mlp.3.": "mlp.fc2."}


def convert_torchvision_swin3d(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision `swin3d_t/s/b` names → ours (pure: same tensors, new names).

    torchvision holds stages and PatchMerging alternately in `features` (`features.{2s}.{b}` = block b of
    stage s, `features.{2s+1}` = its PatchMerging), the MLP as a Sequential (`mlp.0`, `mlp.3`) and the
    classifier as `head`. Its PatchMerging concatenates the 2×2 phases in the same order as ours and its
    `relative_position_index` follows the same formula, so tensors pass unchanged. The result has no
    `time_score_predictor.*`: load it with `strict=False` into a model with selection, whose selector then
    starts from its random init (as in the official fine-tuning, spec §6.2).
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(("patch_embed.", "norm.")):
            new = "backbone." + key
        elif key.startswith("head."):
            new = "cls_head.fc_cls." + key[len("head.") :]
        elif m := _TV_STAGE.fullmatch(key):
            index, rest = int(m[1]), m[2]
            if index % 2:
                new = f"backbone.layers.{index // 2}.downsample.{rest}"
            else:
                block, _, name = rest.partition(".")
                for old, ours in _TV_MLP.items():
                    if name.startswith(old):
                        name = ours + name[len(old) :]
                new = f"backbone.layers.{index // 2}.blocks.{block}.{name}"
        else:
            raise ValueError(f"unexpected key in a torchvision Swin3D state dict: {key!r}")
        out[new] = value
    return out


convert_torchvision_swin3d_b = convert_torchvision_swin3d  # the Swin-B name; t and s share the layout


def convert_state(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Any Video Swin layout `stts` knows → ours: torchvision's `swin3d_*`, or mmcv / ours (the same names,
    unchanged)."""
    if any(k.startswith("features.") for k in state_dict):
        return convert_torchvision_swin3d(state_dict)
    return dict(state_dict)


# ----------------------------------------------------------------------------------------------------
# Optimizer groups of the official recipe

# mmcv's paramwise_cfg.custom_keys of the official configs (spec §6.2): key → (lr_mult, decay_mult)
CUSTOM_KEYS = {
    "relative_position_bias_table": (1.0, 0.0),
    "absolute_pos_embed": (1.0, 0.0),
    "norm": (1.0, 0.0),
}


def param_groups(model: nn.Module, weight_decay: float, selector_lr_mult: float) -> list[dict]:
    """mmcv's default optimizer constructor with the configs' ``custom_keys`` (spec §6.2): keys tried
    longest first, the first substring of the full parameter name wins; one group per key. The selectors
    ("predictor") learn at ``selector_lr_mult`` × lr (0.001 in the recipe)."""
    custom = {**CUSTOM_KEYS, SELECTOR_KEY: (selector_lr_mult, 1.0)}
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


# ----------------------------------------------------------------------------------------------------
# The family's spec

# spec §6.2: 1 video per GPU per iteration, 8 iterations per step; AdamW 3e-4; cosine by epoch with a
# 0.8-epoch warm-up counted in iterations; selectors at 0.001 × lr; σ 0.05 constant; no clipping, no
# mixup. Evaluation (spec §7.1): 4 clips × 3 crops, softmaxes averaged; validation during training: one
# centre clip of a 256 resize (spec §8.2).
SWIN_RECIPE = Recipe(
    clip="swin",
    val_clip="swin_val",
    aggregation="mean",
    train={
        "training": {"epochs": 10, "batch_size": 1, "num_sample": 1, "grad_accum": 8},
        "optim": {
            "lr": 3e-4,
            "min_lr": 0.0,
            "weight_decay": 0.05,
            "lr_schedule": "cosine_epoch",
            "warmup_epochs": 0.8,
            "warmup_ratio": 0.1,
            "selector_lr_mult": 0.001,
            "clip_grad": None,
        },
        "selection": {"sigma": 0.05, "sigma_decay": False},
        "loss": {"mixup": False, "label_smoothing": 0.0},
        "eval": {"eval_every": 5},
    },
    default_model="swin_b_32x2_t0.5",
    plain_model="swin_b_32x2",
)

SPEC = register_family(
    FamilySpec(
        name="swin",
        model=VideoSwin,
        config=SwinConfig,
        variants=SWIN_CONFIGS,
        recipe=SWIN_RECIPE,
        flops_convention="mmcv",
        param_groups=param_groups,
        head_prefixes=("cls_head.",),
        # the official Swin selects frames only, before stage 0; spatial selection needs its stage given
        default_locs={"time_pruning_loc": SwinConfig().time_pruning_loc},
        convert_state=convert_state,
        legacy_config_keys={"image_size": "crop_size"},
    )
)
