"""Video Swin + STTS against the spec (§3, §4, §10): names, shapes, counts, window rules, selection wiring."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from stts.layers import DropPath
from stts.models.swin import (
    SWIN_CONFIGS,
    PatchMerging,
    SwinBlock3D,
    SwinConfig,
    VideoSwin,
    WindowAttention3D,
    build_swin,
    convert_torchvision_swin3d,
    convert_torchvision_swin3d_b,
    padded_size,
    relative_position_index,
    shift_mask,
    window_and_shift,
    window_partition,
    window_reverse,
)
from stts.selection import SpatialSelector, TemporalSelector

SWIN_B_PARAMS = 88_156_505  # spec §3.5 / §10, with the selector
SELECTOR_PARAMS = 107_521
ZOO_K = {  # spec §3.4
    "swin_b_32x2": None,
    "swin_b_32x2_t0.9": 14,
    "swin_b_32x2_t0.8": 12,
    "swin_b_32x2_t0.6": 10,
    "swin_b_32x2_t0.5": 9,
    "swin_b_32x2_t0.4": 6,
    "swin_t_32x2": None,
    "swin_s_32x2": None,
    "swin_debug": None,
    "swin_debug_t0.5": 2,
}


def meta_model(name: str, **overrides) -> VideoSwin:
    """Full-size structure without memory or init cost (no values)."""
    with torch.device("meta"):
        return build_swin(name, **overrides)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def formula_index(window: tuple[int, int, int], tokens: int | None = None) -> torch.Tensor:
    """Spec §3.2 formula from decoded token coordinates (d-major), for the first `tokens` tokens."""
    wd, wh, ww = window
    n = tokens or wd * wh * ww
    t = torch.arange(n)
    d, h, w = t // (wh * ww), (t // ww) % wh, t % ww
    dd, dh, dw = d[:, None] - d[None], h[:, None] - h[None], w[:, None] - w[None]
    return (dd + wd - 1) * (2 * wh - 1) * (2 * ww - 1) + (dh + wh - 1) * (2 * ww - 1) + (dw + ww - 1)


# ------------------------------------------------------------------------------------------------------
# Zoo, counts, names (spec §3.4, §3.5)


@pytest.fixture(scope="module")
def swin_b() -> VideoSwin:
    torch.manual_seed(0)
    return build_swin("swin_b_32x2_t0.5")


def test_zoo_k_table():
    assert set(SWIN_CONFIGS) == set(ZOO_K)
    for name, k in ZOO_K.items():
        cfg = SWIN_CONFIGS[name]
        assert cfg.time_k == k, name
        model = meta_model(name)
        if k is None:
            assert model.selectors() == [] and not hasattr(model.backbone, "time_score_predictor")
        else:
            (selector,) = model.selectors()
            assert isinstance(selector, TemporalSelector)
            assert (selector.k, selector.strategy, selector.num_samples, selector.sigma) == (
                k,
                "learned",
                500,
                0.05,
            )


def test_k_follows_constructor_num_frames_not_input():
    assert SWIN_CONFIGS["swin_b_32x2_t0.5"].num_patches == (16, 56, 56)
    assert replace(SWIN_CONFIGS["swin_b_32x2_t0.5"], num_frames=16).time_k == 4  # int(8 * 0.5625)
    model = build_swin("swin_debug_t0.5").eval()  # k = 2 of num_frames 8 // 2 = 4
    assert model(torch.randn(1, 3, 12, 56, 56)).shape == (1, 400)  # 6 temporal tokens in, still 2 kept
    assert model.selectors()[0].last_indices.shape == (1, 2)


def test_swin_b_parameter_counts_do_not_depend_on_k():
    for name in ZOO_K:
        if name.startswith("swin_b_32x2_t"):
            model = meta_model(name)
            assert n_params(model) == SWIN_B_PARAMS, name
            assert n_params(model.selectors()[0]) == SELECTOR_PARAMS
    # without the selector: torchvision's swin3d_b count (its weights meta says 88,048,984)
    assert n_params(meta_model("swin_b_32x2")) == SWIN_B_PARAMS - SELECTOR_PARAMS
    assert n_params(meta_model("swin_t_32x2")) == 28_158_070  # torchvision swin3d_t
    assert n_params(meta_model("swin_s_32x2")) == 49_816_678  # torchvision swin3d_s


def expected_swin_b_state_dict() -> list[tuple[str, tuple[int, ...]]]:
    """Spec §3.5, in registration order."""
    keys: list[tuple[str, tuple[int, ...]]] = [
        ("backbone.patch_embed.proj.weight", (128, 3, 2, 4, 4)),
        ("backbone.patch_embed.proj.bias", (128,)),
        ("backbone.patch_embed.norm.weight", (128,)),
        ("backbone.patch_embed.norm.bias", (128,)),
    ]
    for s, (c, heads, depth) in enumerate(
        zip((128, 256, 512, 1024), (4, 8, 16, 32), (2, 2, 18, 2), strict=True)
    ):
        for b in range(depth):
            p = f"backbone.layers.{s}.blocks.{b}."
            keys += [
                (p + "norm1.weight", (c,)),
                (p + "norm1.bias", (c,)),
                (p + "attn.relative_position_bias_table", (2535, heads)),
                (p + "attn.relative_position_index", (392, 392)),
                (p + "attn.qkv.weight", (3 * c, c)),
                (p + "attn.qkv.bias", (3 * c,)),
                (p + "attn.proj.weight", (c, c)),
                (p + "attn.proj.bias", (c,)),
                (p + "norm2.weight", (c,)),
                (p + "norm2.bias", (c,)),
                (p + "mlp.fc1.weight", (4 * c, c)),
                (p + "mlp.fc1.bias", (4 * c,)),
                (p + "mlp.fc2.weight", (c, 4 * c)),
                (p + "mlp.fc2.bias", (c,)),
            ]
        if s < 3:
            p = f"backbone.layers.{s}.downsample."
            keys += [
                (p + "reduction.weight", (2 * c, 4 * c)),
                (p + "norm.weight", (4 * c,)),
                (p + "norm.bias", (4 * c,)),
            ]
    p = "backbone.time_score_predictor.0.score_network."
    keys += [
        (p + "in_conv.0.weight", (256,)),
        (p + "in_conv.0.bias", (256,)),
        (p + "in_conv.1.weight", (256, 256)),
        (p + "in_conv.1.bias", (256,)),
        (p + "out_conv.0.weight", (128, 256)),
        (p + "out_conv.0.bias", (128,)),
        (p + "out_conv.2.weight", (64, 128)),
        (p + "out_conv.2.bias", (64,)),
        (p + "out_conv.4.weight", (1, 64)),
        (p + "out_conv.4.bias", (1,)),
        ("backbone.norm.weight", (1024,)),
        ("backbone.norm.bias", (1024,)),
        ("cls_head.fc_cls.weight", (400, 1024)),
        ("cls_head.fc_cls.bias", (400,)),
    ]
    return keys


def test_swin_b_state_dict_names_order_shapes(swin_b):
    state = swin_b.state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected_swin_b_state_dict()
    index = formula_index((8, 7, 7))
    for key, value in state.items():
        if key.endswith("relative_position_index"):
            assert value.dtype == torch.int64
            assert torch.equal(value, index), key
    # every official key loads strictly (the buffer is persistent, nothing extra)
    assert swin_b.load_state_dict(state, strict=True)


def test_swin_b_init(swin_b):
    """Spec §3.2: Linear trunc-normal 0.02 / 0 (selector included), LayerNorm 1 / 0, bias tables trunc-normal
    0.02, fc_cls normal 0.01 / 0."""
    block = swin_b.backbone.layers[2].blocks[5]
    for w in (
        block.attn.qkv.weight,
        block.mlp.fc1.weight,
        swin_b.selectors()[0].score_network.in_conv[1].weight,
    ):
        assert w.std().item() == pytest.approx(0.02, rel=0.05) and w.abs().max() <= 2.0
    assert torch.all(block.attn.qkv.bias == 0) and torch.all(block.mlp.fc2.bias == 0)
    assert torch.all(block.norm1.weight == 1) and torch.all(block.norm1.bias == 0)
    assert block.attn.relative_position_bias_table.std().item() == pytest.approx(0.02, rel=0.1)
    assert swin_b.cls_head.fc_cls.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(swin_b.cls_head.fc_cls.bias == 0)
    assert swin_b.backbone.layers[0].downsample.reduction.bias is None


# ------------------------------------------------------------------------------------------------------
# Window rules (spec §3.2, §3.3)


@pytest.mark.parametrize(
    ("size", "window", "shift"),
    [
        ((16, 56, 56), (8, 7, 7), (4, 3, 3)),  # no selection
        ((14, 56, 56), (8, 7, 7), (4, 3, 3)),  # k = 14: padded to 16 inside blocks
        ((9, 28, 28), (8, 7, 7), (4, 3, 3)),  # k = 9
        ((8, 56, 56), (8, 7, 7), (0, 3, 3)),  # k = 8: one window in time, no temporal shift
        ((6, 14, 14), (6, 7, 7), (0, 3, 3)),  # k = 6: the window shrinks to 6
        ((9, 7, 7), (8, 7, 7), (4, 0, 0)),  # stage 3: no spatial shift
        ((6, 7, 7), (6, 7, 7), (0, 0, 0)),
    ],
)
def test_window_and_shift(size, window, shift):
    assert window_and_shift(size, (8, 7, 7), (4, 3, 3)) == (window, shift)
    assert window_and_shift(size, (8, 7, 7), (0, 0, 0)) == (window, (0, 0, 0))


def test_padding_inside_blocks():
    assert padded_size((9, 56, 56), (8, 7, 7)) == (16, 56, 56)
    assert padded_size((14, 28, 28), (8, 7, 7)) == (16, 28, 28)
    assert padded_size((6, 14, 14), (6, 7, 7)) == (6, 14, 14)
    assert padded_size((4, 14, 14), (3, 4, 4)) == (6, 16, 16)


def test_relative_position_index_formula_and_sub_block():
    index = relative_position_index((8, 7, 7))
    assert index.shape == (392, 392) and index.dtype == torch.int64
    assert torch.equal(index, formula_index((8, 7, 7)))
    assert index.min() == 0 and index.max() == 2534
    # spot values: (Δd+7)·169 + (Δh+6)·13 + (Δw+6)
    assert index[0, 0] == 7 * 169 + 6 * 13 + 6
    assert index[391, 0] == 14 * 169 + 12 * 13 + 12 and index[0, 391] == 0
    # T' = 6: the top-left 294×294 block is the formula for the (6, 7, 7) window's tokens
    assert torch.equal(index[:294, :294], formula_index((8, 7, 7), tokens=294))
    assert torch.equal(relative_position_index((3, 4, 4)), formula_index((3, 4, 4)))


def test_window_partition_order_and_inverse():
    x = torch.arange(2 * 4 * 6 * 6).float().view(2, 4, 6, 6, 1)
    windows = window_partition(x, (2, 3, 3))
    assert windows.shape == (2, 2 * 2 * 2, 18, 1)
    # window 1 is the second along W; inside a window tokens go d, then h, then w
    expected = [x[0, d, h, 3 + w, 0] for d in range(2) for h in range(3) for w in range(3)]
    assert windows[0, 1, :, 0].tolist() == [v.item() for v in expected]
    assert torch.equal(window_reverse(windows, (2, 3, 3), (4, 6, 6)), x)


def region_labels(size, window, shift) -> torch.Tensor:
    """Per-axis regions [0, L−w), [L−w, L−s), [L−s, L) combined; an unshifted axis is one region."""
    axes = []
    for n, w, s in zip(size, window, shift, strict=True):
        lab = torch.zeros(n, dtype=torch.long)
        if s:
            lab[n - w : n - s] = 1
            lab[n - s :] = 2
        axes.append(lab)
    return axes[0][:, None, None] * 9 + axes[1][None, :, None] * 3 + axes[2][None, None, :]


@pytest.mark.parametrize(
    ("size", "window", "shift"), [((16, 28, 28), (8, 7, 7), (4, 3, 3)), ((16, 7, 7), (8, 7, 7), (4, 0, 0))]
)
def test_shift_mask(size, window, shift):
    mask = shift_mask(size, window, shift, torch.device("cpu"))
    n_windows = (size[0] // window[0]) * (size[1] // window[1]) * (size[2] // window[2])
    assert mask.shape == (n_windows, 392, 392) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, -100.0}
    ids = window_partition(region_labels(size, window, shift)[None, ..., None].float(), window)[0, ..., 0]
    assert torch.equal(mask == -100, ids[:, :, None] != ids[:, None, :])
    assert torch.all(mask[0] == 0)  # the first window holds one region
    assert mask is shift_mask(size, window, shift, torch.device("cpu"))  # cached


def test_shift_mask_cached_under_inference_mode_serves_training():
    with torch.inference_mode():
        mask = shift_mask((6, 21, 21), (6, 7, 7), (0, 3, 3), torch.device("cpu"))
    assert not mask.is_inference()


def reference_block(block: SwinBlock3D, x: torch.Tensor, mask_padding: bool = False) -> torch.Tensor:
    """Spec §3.2 step by step, one window at a time with an explicit softmax (eval: no drop path).
    `mask_padding` hides padded keys — what the official code does *not* do."""
    b, d, h, w, c = x.shape
    cfg_window, cfg_shift = block.window, block.shift
    window = tuple(n if n <= wi else wi for n, wi in zip((d, h, w), cfg_window, strict=True))
    shift = tuple(0 if n <= wi else s for n, wi, s in zip((d, h, w), cfg_window, cfg_shift, strict=True))
    size = tuple(-(-n // wi) * wi for n, wi in zip((d, h, w), window, strict=True))
    xp = x.new_zeros(b, *size, c)
    xp[:, :d, :h, :w] = block.norm1(x)
    real = torch.zeros(size, dtype=torch.bool)
    real[:d, :h, :w] = True
    xp = torch.roll(xp, [-s for s in shift], (1, 2, 3))
    real = torch.roll(real, [-s for s in shift], (0, 1, 2))
    labels = region_labels(size, window, shift)
    attn = block.attn
    heads, hd = attn.num_heads, c // attn.num_heads
    fd, fh, fw = cfg_window
    out = torch.zeros_like(xp)
    for i, j, k in itertools.product(*(range(n // wi) for n, wi in zip(size, window, strict=True))):
        coords = [
            (i * window[0] + a, j * window[1] + e, k * window[2] + f)
            for a in range(window[0])
            for e in range(window[1])
            for f in range(window[2])
        ]
        dd, hh, ww = (torch.tensor(v) for v in zip(*coords, strict=True))
        q, kk, v = attn.qkv(xp[:, dd, hh, ww]).view(b, len(coords), 3, heads, hd).permute(2, 0, 3, 1, 4)
        ld, lh, lw = dd - i * window[0], hh - j * window[1], ww - k * window[2]
        rel = (ld[:, None] - ld + fd - 1) * (2 * fh - 1) * (2 * fw - 1)
        rel = rel + (lh[:, None] - lh + fh - 1) * (2 * fw - 1) + (lw[:, None] - lw + fw - 1)
        logits = q @ kk.transpose(-1, -2) * hd**-0.5 + attn.relative_position_bias_table[rel].permute(2, 0, 1)
        if any(shift):
            lab = labels[dd, hh, ww]
            logits = logits + torch.where(lab[:, None] != lab[None], -100.0, 0.0)
        if mask_padding:
            logits = logits.masked_fill(~real[dd, hh, ww][None, None, None], float("-inf"))
        o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, len(coords), c)
        out[:, dd, hh, ww] = attn.proj(o)
    out = torch.roll(out, list(shift), (1, 2, 3))[:, :d, :h, :w]
    y = x + out
    return y + block.mlp(block.norm2(y))


@pytest.mark.parametrize(
    ("size", "shifted"),
    [
        ((9, 14, 14), True),  # k = 9: padded to 16 frames, shift (4, 3, 3)
        ((9, 14, 14), False),
        ((6, 14, 14), True),  # k = 6: window (6, 7, 7), shift (0, 3, 3)
        ((10, 7, 7), True),  # stage 3 of k = 10: shift (4, 0, 0)
        ((5, 9, 10), True),  # odd sizes: spatial padding too
    ],
)
def test_block_matches_reference(size, shifted):
    torch.manual_seed(0)
    block = SwinBlock3D(8, 2, (8, 7, 7), (4, 3, 3) if shifted else (0, 0, 0), 4.0, True, None, 0.1).eval()
    for p in block.parameters():  # non-trivial LayerNorm affine and biases
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, *size, 8)
    with torch.no_grad():
        got = block(x)
        assert torch.allclose(got, reference_block(block, x), atol=1e-5)
        if size[0] == 9:  # padded frames are attended to (official behaviour): hiding them changes the output
            assert not torch.allclose(got, reference_block(block, x, mask_padding=True), atol=1e-3)


def test_attention_gets_padded_windows():
    """T' = 9 → the attention runs on 16 frames: 2 temporal windows of 392 tokens."""
    block = SwinBlock3D(8, 2, (8, 7, 7), (4, 3, 3), 4.0, True, None, 0.0)
    seen = []
    block.attn.register_forward_hook(lambda m, args, out: seen.append((tuple(args[0].shape), args[1].shape)))
    block(torch.randn(1, 9, 14, 14, 8))
    assert seen == [((1, 2 * 2 * 2, 392, 8), (8, 392, 392))]


def test_position_bias_and_attention_gradients():
    attn = WindowAttention3D(8, (8, 7, 7), 2, True, None)
    x = torch.randn(1, 4, 294, 8)
    mask = shift_mask((6, 14, 14), (6, 7, 7), (0, 3, 3), torch.device("cpu"))
    attn(x, mask).sum().backward()
    assert attn.relative_position_bias_table.grad.abs().sum() > 0
    # only the rows reachable from the top-left 294×294 block receive gradient
    used = attn.relative_position_index[:294, :294].unique()
    grad_rows = attn.relative_position_bias_table.grad.abs().sum(1).nonzero().squeeze(1)
    assert torch.equal(grad_rows, used)


def test_patch_merging_phase_order_and_odd_padding():
    merge = PatchMerging(2)
    x = torch.randn(1, 2, 5, 7, 2)
    seen = []
    merge.norm.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    assert merge(x).shape == (1, 2, 3, 4, 4)
    xp = F.pad(x, (0, 0, 0, 1, 0, 1))
    phases = [xp[:, :, 0::2, 0::2], xp[:, :, 1::2, 0::2], xp[:, :, 0::2, 1::2], xp[:, :, 1::2, 1::2]]
    assert torch.equal(seen[0], torch.cat(phases, -1))


def test_drop_path_per_sample():
    torch.manual_seed(0)
    dp = DropPath(0.5)
    y = dp(torch.ones(4000, 3, 5))
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2).all(1))  # whole samples dropped or scaled
    assert 0.45 < (per_sample[:, 0] == 0).float().mean() < 0.55
    dp.eval()
    assert torch.equal(dp(torch.ones(3, 2)), torch.ones(3, 2))


# ------------------------------------------------------------------------------------------------------
# Shapes (spec §4)


def walk(model: VideoSwin, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Shapes at the points of spec §4, channels-first like the official maps."""
    shapes: list[tuple[str, tuple[int, ...]]] = []

    def grab(name):
        def hook(module, args, out):
            shapes.append(
                (name, tuple(out.permute(0, 4, 1, 2, 3).shape) if out.ndim == 5 else tuple(out.shape))
            )

        return hook

    bb = model.backbone
    handles = [bb.patch_embed.register_forward_hook(grab("embed"))]
    if bb.selectors():
        handles.append(
            bb.layers[0].register_forward_pre_hook(
                lambda m, args: shapes.append(("selected", tuple(args[0].permute(0, 4, 1, 2, 3).shape)))
            )
        )
    handles += [layer.register_forward_hook(grab(f"stage{s}")) for s, layer in enumerate(bb.layers)]
    handles.append(bb.register_forward_hook(lambda m, args, out: shapes.append(("norm", tuple(out.shape)))))
    shapes.append(("head", tuple(model(x).shape)))
    for h in handles:
        h.remove()
    return shapes


@pytest.mark.slow
def test_swin_b_shapes_k9(swin_b):
    swin_b.eval()
    seen = []
    swin_b.backbone.layers[0].blocks[1].attn.register_forward_hook(lambda m, a, o: seen.append(a[0].shape))
    with torch.no_grad():
        shapes = walk(swin_b, torch.randn(1, 3, 32, 224, 224))
    assert shapes == [
        ("embed", (1, 128, 16, 56, 56)),
        ("selected", (1, 128, 9, 56, 56)),
        ("stage0", (1, 256, 9, 28, 28)),
        ("stage1", (1, 512, 9, 14, 14)),
        ("stage2", (1, 1024, 9, 7, 7)),
        ("stage3", (1, 1024, 9, 7, 7)),
        ("norm", (1, 1024, 9, 7, 7)),
        ("head", (1, 400)),
    ]
    assert seen == [(1, 2 * 8 * 8, 392, 128)]  # 9 frames padded to 16 inside the block
    assert swin_b.selectors()[0].last_indices.shape == (1, 9)


def test_debug_shapes():
    model = build_swin("swin_debug_t0.5").eval()
    with torch.no_grad():
        shapes = walk(model, torch.randn(2, 3, 8, 56, 56))
    assert shapes == [
        ("embed", (2, 16, 4, 14, 14)),
        ("selected", (2, 16, 2, 14, 14)),
        ("stage0", (2, 32, 2, 7, 7)),
        ("stage1", (2, 64, 2, 4, 4)),  # 7 is padded to 8 by PatchMerging
        ("stage2", (2, 128, 2, 2, 2)),
        ("stage3", (2, 128, 2, 2, 2)),
        ("norm", (2, 128, 2, 2, 2)),
        ("head", (2, 400)),
    ]
    model = build_swin("swin_debug").eval()
    with torch.no_grad():
        assert walk(model, torch.randn(1, 3, 8, 56, 56))[1] == ("stage0", (1, 32, 4, 7, 7))


# ------------------------------------------------------------------------------------------------------
# Behaviour of the debug model


def test_train_mode_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = build_swin("swin_debug_t0.5").train()
    assert model.selectors()[0].sigma == 0.05  # > 0, or the scorer gets no gradient (spec §1.3)
    logits = model(torch.randn(2, 3, 8, 56, 56))
    assert logits.shape == (2, 400)
    F.cross_entropy(logits, torch.tensor([3, 7])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    scorer = model.selectors()[0].score_network
    assert all(p.grad.abs().sum() > 0 for p in scorer.parameters())


def test_eval_is_deterministic_and_per_sample():
    torch.manual_seed(0)
    model = build_swin("swin_debug_t0.5").eval()
    x = torch.randn(3, 3, 8, 56, 56)
    with torch.no_grad():
        a, b = model(x), model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert torch.equal(a, b)
    assert torch.allclose(a, alone, atol=1e-5)
    assert not torch.allclose(a.softmax(-1).sum(-1), a.sum(-1))  # logits, not probabilities


def test_soft_selection_in_training_hard_in_eval():
    torch.manual_seed(0)
    model = build_swin("swin_debug_t0.5")
    seen = []
    model.backbone.layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(1, 3, 8, 56, 56)
    model.eval()
    with torch.no_grad():
        model(x)
        embed = model.backbone.patch_embed(x)  # (1, 4, 14, 14, 16)
    idx = model.selectors()[0].last_indices[0]
    assert torch.equal(idx, idx.sort().values)
    assert torch.equal(seen[0], embed[:, idx])  # hard gather of whole frames, in order
    model.train()
    model(x)
    assert seen[1].shape == (1, 2, 14, 14, 16)


@pytest.mark.parametrize("strategy", ["random", "uniform"])
def test_baseline_strategies(strategy):
    model = build_swin("swin_debug_t0.5", strategy=strategy, time_left_ratio=0.75)  # k = 3 of 4
    model.train()
    model(torch.randn(2, 3, 8, 56, 56)).sum().backward()
    idx = model.selectors()[0].last_indices
    assert idx.shape == (2, 3)
    if strategy == "uniform":
        assert idx.tolist() == [[0, 1, 3], [0, 1, 3]]  # linspace(0, 3, 3) = 0, 1.5, 3 truncated


def test_selectors_expose_sigma():
    model = build_swin("swin_debug_t0.5", sigma=0.1)
    assert [s.sigma for s in model.selectors()] == [0.1]
    for s in model.selectors():
        s.sigma = 0.0
    assert model.backbone.time_score_predictor[0].sigma == 0.0


def test_space_selection_extension():
    """Off in every zoo entry; as an option, one a×a window per frame before the chosen stage."""
    assert all(cfg.space_pruning_loc == () for cfg in SWIN_CONFIGS.values())
    model = build_swin("swin_debug_t0.5", space_pruning_loc=(1,), space_left_ratio=0.5625)  # 7×7 → 36 → 6×6
    temporal, spatial = model.selectors()
    assert isinstance(spatial, SpatialSelector) and spatial.k == 27 and spatial.anchor == 5
    assert spatial.sigma == 0.05
    assert "backbone.space_score_predictor.0.score_network.in_conv.1.weight" in model.state_dict()
    model.train()
    model(torch.randn(2, 3, 8, 56, 56)).sum().backward()
    assert all(p.grad is not None for p in spatial.parameters())
    model.eval()
    seen = []
    model.backbone.layers[1].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 8, 56, 56))
    assert seen == [(1, 2, 5, 5, 32)]


def test_config_validation():
    with pytest.raises(ValueError, match="strategy"):
        SwinConfig(strategy="best")
    with pytest.raises(ValueError, match="stage 0"):
        SwinConfig(time_pruning_loc=(1,))
    with pytest.raises(ValueError, match="stage"):
        SwinConfig(space_pruning_loc=(4,))
    with pytest.raises(ValueError, match="repeats"):
        SwinConfig(space_pruning_loc=(1, 1))
    with pytest.raises(ValueError, match="ratio"):
        SwinConfig(time_left_ratio=0.0)
    with pytest.raises(ValueError, match="heads"):
        SwinConfig(embed_dim=130)
    with pytest.raises(KeyError, match="swin_b_32x2"):
        build_swin("swin_x")


# ------------------------------------------------------------------------------------------------------
# torchvision conversion


def torchvision_names(cfg: SwinConfig) -> list[str]:
    """torchvision `SwinTransformer3d` state-dict names: stages and PatchMerging alternate in `features`,
    the MLP is a Sequential (Linear 0, GELU 1, Dropout 2, Linear 3, Dropout 4), the classifier is `head`."""
    names = [
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "patch_embed.norm.weight",
        "patch_embed.norm.bias",
    ]
    for s, depth in enumerate(cfg.depths):
        for b in range(depth):
            p = f"features.{2 * s}.{b}."
            names += [
                p + n
                for n in (
                    "norm1.weight",
                    "norm1.bias",
                    "attn.relative_position_bias_table",
                    "attn.relative_position_index",
                    "attn.qkv.weight",
                    "attn.qkv.bias",
                    "attn.proj.weight",
                    "attn.proj.bias",
                    "norm2.weight",
                    "norm2.bias",
                    "mlp.0.weight",
                    "mlp.0.bias",
                    "mlp.3.weight",
                    "mlp.3.bias",
                )
            ]
        if s < len(cfg.depths) - 1:
            names += [f"features.{2 * s + 1}.{n}" for n in ("reduction.weight", "norm.weight", "norm.bias")]
    return names + ["norm.weight", "norm.bias", "head.weight", "head.bias"]


def test_convert_torchvision_swin3d_b_names_and_shapes():
    ours = meta_model("swin_b_32x2").state_dict()
    names = torchvision_names(SWIN_CONFIGS["swin_b_32x2"])
    assert len(names) == len(ours)
    # shapes: torchvision's, in torchvision's order, equal ours in our order (same layout, same tensors)
    tv = {n: torch.empty(v.shape, device="meta") for n, v in zip(names, ours.values(), strict=True)}
    converted = convert_torchvision_swin3d_b(tv)
    assert list(converted) == list(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)


def test_convert_torchvision_loads_into_stts_model():
    torch.manual_seed(0)
    model = build_swin("swin_debug_t0.5")
    ours = model.state_dict()
    plain = [k for k in ours if "score_predictor" not in k]
    tv = {n: torch.randn(ours[k].shape) for n, k in zip(torchvision_names(model.cfg), plain, strict=True)}
    for n in tv:
        if n.endswith("relative_position_index"):
            tv[n] = relative_position_index((3, 4, 4))
    converted = convert_torchvision_swin3d(tv)
    result = model.load_state_dict(converted, strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys == [
        k for k in ours if "time_score_predictor" in k
    ]  # the selector stays random
    state = model.state_dict()
    assert torch.equal(state["backbone.layers.1.blocks.1.mlp.fc2.weight"], tv["features.2.1.mlp.3.weight"])
    assert torch.equal(
        state["backbone.layers.2.downsample.reduction.weight"], tv["features.5.reduction.weight"]
    )
    assert torch.equal(state["cls_head.fc_cls.bias"], tv["head.bias"])
    with pytest.raises(ValueError, match="unexpected key"):
        convert_torchvision_swin3d(
            {"features.0.0.attn.qkv.weight": torch.zeros(1), "avgpool.x": torch.zeros(1)}
        )
