"""MViT-B 16x4 + STTS against the spec (§2.2 block table, §2.4 k/anchor, §2.5 token grids, §2.6 state dict,
§5.1 zoo, §10 acceptance numbers). Expected values are written out here from the spec, not derived from the
model code."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from stts.models.mvit import (
    MVIT_CONFIGS,
    MViT,
    MViTConfig,
    block_plans,
    convert_pyslowfast_separate_qkv,
    convert_torchvision_mvit_v1_b,
    selection_sizes,
)

STTS_NAMES = [
    "mvit_b_16x4_t0.9_s0.9",
    "mvit_b_16x4_t0.8_s0.9",
    "mvit_b_16x4_t0.6_s0.9",
    "mvit_b_16x4_t0.5_s0.7",
    "mvit_b_16x4_t0.4_s0.6",
]
DEBUG = "mvit_debug_t0.5_s0.5"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def video(cfg: MViTConfig, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.in_chans, cfg.num_frames, cfg.crop_size, cfg.crop_size, generator=g)


def block_inputs(model: MViT, x: torch.Tensor) -> list[tuple[int, int, int]]:
    """(T, H, W) entering each block, seen through forward pre-hooks (args are (x, thw))."""
    grids: list[tuple[int, int, int]] = []
    hooks = [b.register_forward_pre_hook(lambda m, args: grids.append(tuple(args[1]))) for b in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return grids


@pytest.fixture(scope="module")
def stts_model() -> MViT:
    torch.manual_seed(0)
    return MViT(MVIT_CONFIGS["mvit_b_16x4_t0.9_s0.9"])


# ------------------------------------------------------------------------------------------------------
# Zoo and configuration


def test_zoo_names():
    assert set(MVIT_CONFIGS) == {"mvit_b_16x4", *STTS_NAMES, "mvit_debug", DEBUG}
    base = MVIT_CONFIGS["mvit_b_16x4"]
    assert base.time_pruning_loc == () and base.space_pruning_loc == ()
    for name in STTS_NAMES:
        cfg = MVIT_CONFIGS[name]
        assert (cfg.time_pruning_loc, cfg.space_pruning_loc) == ((0,), (4,))
        assert replace(cfg, time_pruning_loc=(), space_pruning_loc=()) == replace(
            base, time_left_ratio=cfg.time_left_ratio, space_left_ratio=cfg.space_left_ratio
        )


def test_config_validation_and_yaml_lists():
    with pytest.raises(ValueError, match="selection"):
        MViTConfig(strategy="topk")
    with pytest.raises(ValueError, match="at most one"):
        MViTConfig(space_pruning_loc=(4, 8))
    with pytest.raises(ValueError, match="outside"):
        MViTConfig(time_pruning_loc=(16,))
    with pytest.raises(ValueError, match="ratio"):
        MViTConfig(time_left_ratio=0.0)
    # lists (as a YAML round trip returns them) become tuples: equal and hashable
    cfg = MViTConfig(dim_mul=[[1, 2.0], [3, 2.0], [14, 2.0]], time_pruning_loc=[0], patch_kernel=[3, 7, 7])
    assert cfg == MViTConfig()
    hash(cfg)


def test_block_schedule_matches_spec():
    """Spec §2.2: dims, heads, q/kv strides, drop-path linspace(0, 0.2, 16)."""
    plans = block_plans(MVIT_CONFIGS["mvit_b_16x4"])
    dims = [(96, 192), (192, 192), (192, 384)] + [(384, 384)] * 10 + [(384, 768), (768, 768), (768, 768)]
    heads = [1, 2, 2] + [4] * 11 + [8, 8]
    stride_q = {1: (1, 2, 2), 3: (1, 2, 2), 14: (1, 2, 2)}
    stride_kv = [(1, 8, 8), (1, 4, 4), (1, 4, 4)] + [(1, 2, 2)] * 11 + [(1, 1, 1)] * 2
    assert len(plans) == 16
    for i, p in enumerate(plans):
        assert (p.dim, p.dim_out) == dims[i], i
        assert p.num_heads == heads[i], i
        assert p.dim // p.num_heads == 96
        assert p.stride_q == stride_q.get(i), i
        assert p.stride_kv == stride_kv[i], i
        assert p.drop_path == pytest.approx(0.2 * i / 15)


# spec §5.1: ratio_t, k_t, ratio_s, int(196 r_s), anchor a, windows L on the 14x14 grid (stride 1)
ZOO_SIZES = {
    "mvit_b_16x4_t0.9_s0.9": (0.875, 7, 0.863, 169, 13, 4),
    "mvit_b_16x4_t0.8_s0.9": (0.75, 6, 0.863, 169, 13, 4),
    "mvit_b_16x4_t0.6_s0.9": (0.625, 5, 0.863, 169, 13, 4),
    "mvit_b_16x4_t0.5_s0.7": (0.5, 4, 0.7367, 144, 12, 9),
    "mvit_b_16x4_t0.4_s0.6": (0.375, 3, 0.6174, 121, 11, 16),
}


@pytest.mark.parametrize("name", STTS_NAMES)
def test_k_and_anchor_per_zoo_entry(name):
    r_t, k_t, r_s, k_s, anchor, _ = ZOO_SIZES[name]
    cfg = MVIT_CONFIGS[name]
    assert (cfg.time_left_ratio, cfg.space_left_ratio) == (r_t, r_s)
    assert selection_sizes(cfg) == (k_t, k_s)
    assert math.isqrt(k_s) ** 2 == k_s == anchor**2
    assert selection_sizes(MVIT_CONFIGS["mvit_b_16x4"]) == (None, None)


def test_selectors_of_built_model(stts_model):
    t_sel, s_sel = stts_model.selectors()
    assert stts_model.time_score_predictor[0] is t_sel and stts_model.space_score_predictor[0] is s_sel
    assert (t_sel.k, s_sel.k, s_sel.anchor) == (7, 169, 13)
    assert s_sel.windows(14) == (1, 2)  # stride 1, 2x2 = 4 candidate windows
    assert t_sel.channels == 96 and s_sel.channels == 384  # scorer widths 192 and 384 (§2.4)
    for s in stts_model.selectors():  # what a trainer does
        s.sigma = 0.1
    assert [s.sigma for s in stts_model.selectors()] == [0.1, 0.1]


def test_selection_location_bookkeeping_is_official():
    """§2.4 [surprising]: the count is halved at a q-pooling block *before* the selection test of that same
    block, so a selector placed at block 3 (28x28 grid in the forward) gets k from the 14x14 count."""
    cfg = replace(MVIT_CONFIGS["mvit_b_16x4_t0.9_s0.9"], space_pruning_loc=(3,))
    assert selection_sizes(cfg) == (7, 169)
    cfg = replace(cfg, space_pruning_loc=(2,))
    assert selection_sizes(cfg) == (7, int(784 * 0.863))


# ------------------------------------------------------------------------------------------------------
# Parameters and state dict (spec §2.6, §10)


def test_parameter_counts(stts_model):
    assert n_params(stts_model) == 36_912_498
    assert n_params(stts_model.time_score_predictor) == 60_673
    assert n_params(stts_model.space_score_predictor) == 241_153
    baseline = MViT(MVIT_CONFIGS["mvit_b_16x4"])
    assert n_params(baseline) == 36_610_672
    assert not hasattr(baseline, "time_score_predictor") and not hasattr(baseline, "space_score_predictor")
    assert list(baseline.selectors()) == []


def expected_state_dict(with_selectors: bool) -> list[tuple[str, tuple[int, ...]]]:
    """Spec §2.6, in registration order."""
    rows = [
        ("cls_token", (1, 1, 96)),
        ("pos_embed_spatial", (1, 3136, 96)),
        ("pos_embed_temporal", (1, 8, 96)),
        ("pos_embed_class", (1, 1, 96)),
        ("patch_embed.proj.weight", (96, 3, 3, 7, 7)),
        ("patch_embed.proj.bias", (96,)),
    ]
    # block: dim, dim_out, q pooling
    table = {0: (96, 192, False), 1: (192, 192, True), 2: (192, 384, False), 3: (384, 384, True)}
    table.update({i: (384, 384, False) for i in range(4, 13)})
    table.update({13: (384, 768, False), 14: (768, 768, True), 15: (768, 768, False)})
    for i in range(16):
        dim, dim_out, pool_q = table[i]
        p = f"blocks.{i}."

        def linear(name, n_out, n_in, p=p):
            return [(f"{p}{name}.weight", (n_out, n_in)), (f"{p}{name}.bias", (n_out,))]

        def norm(name, n, p=p):
            return [(f"{p}{name}.weight", (n,)), (f"{p}{name}.bias", (n,))]

        def pool(role, p=p):
            return [(f"{p}attn.pool_{role}.weight", (96, 1, 3, 3, 3)), *norm(f"attn.norm_{role}", 96)]

        rows += norm("norm1", dim) + linear("attn.qkv", 3 * dim, dim) + linear("attn.proj", dim, dim)
        rows += (pool("q") if pool_q else []) + pool("k") + pool("v")
        rows += norm("norm2", dim) + linear("mlp.fc1", 4 * dim, dim) + linear("mlp.fc2", dim_out, 4 * dim)
        rows += linear("proj", dim_out, dim) if dim != dim_out else []
    if with_selectors:
        for pred, d in (("time_score_predictor", 192), ("space_score_predictor", 384)):
            s = f"{pred}.0.score_network."
            rows += [(f"{s}in_conv.0.weight", (d,)), (f"{s}in_conv.0.bias", (d,))]
            for name, n_out, n_in in (
                ("in_conv.1", d, d),
                ("out_conv.0", d // 2, d),
                ("out_conv.2", d // 4, d // 2),
                ("out_conv.4", 1, d // 4),
            ):
                rows += [(f"{s}{name}.weight", (n_out, n_in)), (f"{s}{name}.bias", (n_out,))]
    rows += [("norm.weight", (768,)), ("norm.bias", (768,))]
    rows += [("head.projection.weight", (400, 768)), ("head.projection.bias", (400,))]
    return rows


def test_state_dict_keys_order_and_shapes(stts_model):
    expected = expected_state_dict(with_selectors=True)
    got = [(k, tuple(v.shape)) for k, v in stts_model.state_dict().items()]
    assert got == expected
    assert sum(math.prod(s) for _, s in expected) == 36_912_498  # the table itself adds up (§2.6)
    # no buffer reaches the state dict: the selectors' σ is a non-persistent buffer
    assert [n.rpartition(".")[2] for n, _ in stts_model.named_buffers()] == ["sigma_t", "sigma_t"]
    # parameters() order too (optimizer groups, checkpoint tools)
    assert [k for k, _ in stts_model.named_parameters()] == [k for k, _ in expected]


def test_baseline_state_dict_has_no_selector_keys():
    sd = MViT(MVIT_CONFIGS["mvit_b_16x4"]).state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == expected_state_dict(with_selectors=False)


def test_init(stts_model):
    sd = stts_model.state_dict()
    for key in ("cls_token", "pos_embed_spatial", "blocks.4.attn.qkv.weight", "head.projection.weight"):
        assert sd[key].std().item() == pytest.approx(0.02, rel=0.2), key
    for key in (
        "blocks.4.attn.qkv.bias",
        "head.projection.bias",
        "space_score_predictor.0.score_network.in_conv.1.bias",
    ):
        assert torch.count_nonzero(sd[key]) == 0, key
    assert torch.all(sd["blocks.4.norm1.weight"] == 1) and torch.all(sd["blocks.3.attn.norm_q.bias"] == 0)
    assert torch.all(sd["time_score_predictor.0.score_network.in_conv.0.weight"] == 1)
    # LayerNorm epsilons (§9.2): blocks 1e-6, attention pooling 1e-5
    b = stts_model.blocks[3]
    assert b.norm1.eps == b.norm2.eps == stts_model.norm.eps == 1e-6
    assert b.attn.norm_q.eps == b.attn.norm_k.eps == b.attn.norm_v.eps == 1e-5
    assert b.attn.pool_q.groups == 96 and b.attn.pool_q.bias is None and b.attn.pool_q.padding == (1, 1, 1)


# ------------------------------------------------------------------------------------------------------
# Token grids (spec §2.5)

# per model: (T, side entering blocks 4-14 / 15) — blocks 0-1 enter at 56, blocks 2-3 at 28
GRIDS = {
    "mvit_b_16x4": (8, 14, 7),
    "mvit_b_16x4_t0.9_s0.9": (7, 13, 7),
    "mvit_b_16x4_t0.8_s0.9": (6, 13, 7),
    "mvit_b_16x4_t0.6_s0.9": (5, 13, 7),
    "mvit_b_16x4_t0.5_s0.7": (4, 12, 6),
    "mvit_b_16x4_t0.4_s0.6": (3, 11, 6),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GRIDS))
def test_token_grids_full_size(name):
    t, s4, s15 = GRIDS[name]
    model = MViT(MVIT_CONFIGS[name]).eval()
    tokens = []
    hook = model.blocks[0].register_forward_pre_hook(lambda m, args: tokens.append(args[0].shape[1]))
    grids = block_inputs(model, video(model.cfg))
    hook.remove()
    assert grids == [(t, 56, 56)] * 2 + [(t, 28, 28)] * 2 + [(t, s4, s4)] * 11 + [(t, s15, s15)]
    assert tokens == [1 + t * 56 * 56]  # 25089 / 21953 / 18817 / 15681 / 12545 / 9409
    if name in ZOO_SIZES:  # the built selectors carry §5.1's numbers
        _, k_t, _, k_s, anchor, windows = ZOO_SIZES[name]
        t_sel, s_sel = model.selectors()
        assert (t_sel.k, s_sel.k, s_sel.anchor) == (k_t, k_s, anchor)
        assert s_sel.windows(14) == (1, math.isqrt(windows))  # stride 1, L windows
        assert s_sel.last_indices.shape == (1, t) and int(s_sel.last_indices.max()) < windows


def test_token_grids_debug():
    cfg = MVIT_CONFIGS[DEBUG]
    assert cfg.patch_grid == (4, 16, 16)
    assert selection_sizes(cfg) == (2, 32)  # a = 5 on the 8x8 map entering block 2
    grids = block_inputs(MViT(cfg).eval(), video(cfg))
    assert grids == [(2, 16, 16), (2, 16, 16), (2, 5, 5), (2, 5, 5), (2, 3, 3)]
    grids = block_inputs(MViT(MVIT_CONFIGS["mvit_debug"]).eval(), video(cfg))
    assert grids == [(4, 16, 16), (4, 16, 16), (4, 8, 8), (4, 8, 8), (4, 4, 4)]


# ------------------------------------------------------------------------------------------------------
# Layers against naive references (spec §2.2)


def randomise_(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere, LayerNorm affines included, so that every term shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            norm_weight = p.ndim == 1 and name.endswith("weight")  # LayerNorm: keep the scale near 1
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if norm_weight else 0.0))


def pool_reference(t, conv, norm, thw):
    """Spec §2.2 step 2 for one head: split cls, depthwise conv of the grid, re-prepend cls, LayerNorm 1e-5."""
    b, _, c = t.shape
    grid = t[:, 1:].reshape(b, *thw, c).permute(0, 4, 1, 2, 3)
    grid = F.conv3d(grid, conv.weight, stride=conv.stride, padding=1, groups=c)
    new_thw = tuple(grid.shape[2:])
    t = torch.cat([t[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    return F.layer_norm(t, (c,), norm.weight, norm.bias, eps=1e-5), new_thw


def test_attention_matches_naive_reference():
    torch.manual_seed(0)
    attn = MViT(MVIT_CONFIGS["mvit_debug"]).blocks[1].attn  # 2 heads of 16; q stride (1,2,2), kv (1,2,2)
    randomise_(attn)
    thw, dim, hd = (4, 16, 16), 32, 16
    x = torch.randn(2, 1 + 4 * 16 * 16, dim)
    with torch.no_grad():
        out, new_thw = attn(x, thw)
        qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)
        heads = []
        for h in range(2):

            def role(r, conv, norm, h=h):  # rows [q | k | v], each head-major; one conv for every head
                return pool_reference(qkv[..., r * dim + h * hd : r * dim + (h + 1) * hd], conv, norm, thw)

            (q, q_thw), (k, k_thw), (v, _) = (
                role(0, attn.pool_q, attn.norm_q),
                role(1, attn.pool_k, attn.norm_k),
                role(2, attn.pool_v, attn.norm_v),
            )
            heads.append(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1) @ v)
        ref = F.linear(torch.cat(heads, dim=-1), attn.proj.weight, attn.proj.bias)
    assert new_thw == q_thw == (4, 8, 8) and k_thw == (4, 8, 8)
    assert out.shape == (2, 1 + 4 * 8 * 8, dim)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("index", [1, 2])  # 1: q pooling with max-pool skip; 2: width change 32 -> 64
def test_block_matches_naive_reference(index):
    torch.manual_seed(0)
    block = MViT(MVIT_CONFIGS["mvit_debug"]).blocks[index].eval()
    randomise_(block)
    thw = (4, 16, 16) if index == 1 else (4, 8, 8)
    x = torch.randn(2, 1 + math.prod(thw), block.dim)
    with torch.no_grad():
        out, new_thw = block(x, thw)
        x_attn, _ = block.attn(F.layer_norm(x, (block.dim,), block.norm1.weight, block.norm1.bias, 1e-6), thw)
        res = x
        if index == 1:
            grid = x[:, 1:].reshape(2, *thw, -1).permute(0, 4, 1, 2, 3)
            grid = F.max_pool3d(grid, (1, 3, 3), (1, 2, 2), (0, 1, 1)).flatten(2).transpose(1, 2)
            res = torch.cat([x[:, :1], grid], dim=1)
        h = res + x_attn
        h_norm = F.layer_norm(h, (block.dim,), block.norm2.weight, block.norm2.bias, 1e-6)
        mlp = F.linear(
            F.gelu(F.linear(h_norm, block.mlp.fc1.weight, block.mlp.fc1.bias)), block.mlp.fc2.weight
        )
        mlp = mlp + block.mlp.fc2.bias
        # the width-changing residual projects the normalised tensor (§9.5)
        skip = F.linear(h_norm, block.proj.weight, block.proj.bias) if index == 2 else h
        ref = skip + mlp
    assert new_thw == ((4, 8, 8) if index == 1 else thw)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_separable_positional_embedding():
    model = MViT(MVIT_CONFIGS["mvit_debug"])
    pos = model._pos_embed()[0]
    t_tokens, hw = 4, 256
    assert pos.shape == (1 + t_tokens * hw, 16)
    assert torch.equal(pos[0], model.pos_embed_class[0, 0])
    for t, s in [(0, 0), (1, 5), (3, 255), (2, 17)]:
        expected = model.pos_embed_spatial[0, s] + model.pos_embed_temporal[0, t]
        torch.testing.assert_close(pos[1 + t * hw + s], expected)


# ------------------------------------------------------------------------------------------------------
# Forward behaviour on the debug flavours


@pytest.mark.parametrize("name", ["mvit_debug", DEBUG])
def test_forward_returns_logits_in_train_and_eval(name):
    torch.manual_seed(0)
    model = MViT(MVIT_CONFIGS[name])
    x = video(model.cfg, batch=3)
    for s in model.selectors():
        s.sigma = 0.1
    for mode in (True, False):
        model.train(mode)
        out = model(x)
        assert out.shape == (3, 400) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        # logits, not probabilities: negative entries exist and rows do not sum to 1
        assert (out < 0).any()
        assert not torch.allclose(out.sum(-1), torch.ones(3), atol=1e-3)


def test_every_parameter_gets_a_gradient_in_training():
    torch.manual_seed(0)
    # no drop path, so no branch is dropped for the whole (tiny) batch by chance
    model = MViT(replace(MVIT_CONFIGS[DEBUG], drop_path_rate=0.0)).train()
    for s in model.selectors():
        s.sigma = 0.1  # the perturbed top-k passes no gradient to the scorers at sigma 0
    model(video(model.cfg, batch=2)).logsumexp(-1).sum().backward()
    # Analytically zero: a bias added to every key shifts each attention row by a constant (softmax is
    # invariant), and a constant added to every score is removed by the selectors' min-max normalisation.
    invariant = ("attn.norm_k.bias", "score_network.out_conv.4.bias")
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if not name.endswith(invariant):
            assert p.grad.abs().max() > 1e-6, name
    assert {n for n, _ in model.named_parameters()} >= {
        "time_score_predictor.0.score_network.in_conv.1.weight",
        "space_score_predictor.0.score_network.in_conv.1.weight",
    }


def test_eval_is_deterministic_and_per_sample():
    torch.manual_seed(0)
    model = MViT(MVIT_CONFIGS[DEBUG]).eval()
    x = video(model.cfg, batch=4, seed=1)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, model(x))
        for i in range(4):
            torch.testing.assert_close(model(x[i : i + 1]), out[i : i + 1], rtol=1e-4, atol=1e-5)
        # changing the other samples changes nothing for sample 0
        y = x.clone()
        y[1:] = torch.randn_like(y[1:])
        torch.testing.assert_close(model(y)[0], out[0], rtol=1e-4, atol=1e-5)


def test_eval_selects_hard_frames_and_windows():
    """The temporal selector hands a subset of the real (cls-free) frame tokens to block 0 in eval."""
    torch.manual_seed(0)
    model = MViT(MVIT_CONFIGS[DEBUG]).eval()
    x = video(model.cfg, batch=2)
    seen = {}
    hook = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    with torch.no_grad():
        model(x)
        full = model.patch_embed(x)
        full = torch.cat([model.cls_token.expand(2, -1, -1), full], 1) + model._pos_embed()
    hook.remove()
    t_sel = model.time_score_predictor[0]
    idx = t_sel.last_indices
    assert idx.shape == (2, 2) and torch.all(idx[:, 0] < idx[:, 1])  # sorted, distinct
    frames = full[:, 1:].reshape(2, 4, 256, 16)
    expected = torch.stack([frames[b, idx[b]] for b in range(2)]).reshape(2, -1, 16)
    torch.testing.assert_close(seen["x"][:, 1:], expected)
    torch.testing.assert_close(seen["x"][:, :1], full[:, :1])  # cls unchanged
    assert model.space_score_predictor[0].last_indices.shape == (2, 2)


@pytest.mark.parametrize("strategy", ["random", "uniform"])
def test_control_strategies_run(strategy):
    model = MViT(replace(MVIT_CONFIGS[DEBUG], strategy=strategy))
    x = video(model.cfg, batch=2)
    for mode in (True, False):
        assert model.train(mode)(x).shape == (2, 400)


def test_wrong_input_geometry_is_rejected():
    model = MViT(MVIT_CONFIGS["mvit_debug"])
    with pytest.raises(ValueError, match="built for inputs"):
        model(torch.zeros(1, 3, 8, 32, 32))


def test_drop_path_is_per_sample():
    torch.manual_seed(0)
    model = MViT(MVIT_CONFIGS["mvit_debug"]).train()
    drop = model.blocks[-1].drop_path
    drop.p = 0.5
    out = drop(torch.ones(64, 5, 3))
    per_sample = out.reshape(64, -1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2).all(1))  # dropped or scaled by 1/(1-p)
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    assert torch.equal(drop.eval()(torch.ones(4, 3)), torch.ones(4, 3))
    assert isinstance(model.blocks[0].drop_path, torch.nn.Identity)  # rate 0 in block 0


# ------------------------------------------------------------------------------------------------------
# Conversions


def split_qkv(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The later pySlowFast layout: attn.q / attn.k / attn.v Linear layers instead of attn.qkv."""
    out = {}
    for key, value in state_dict.items():
        if ".attn.qkv." in key:
            prefix, leaf = key.split(".attn.qkv.")
            for role, part in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{prefix}.attn.{role}.{leaf}"] = part.clone()
        else:
            out[key] = value
    return out


def test_separate_qkv_conversion_round_trip():
    torch.manual_seed(0)
    model = MViT(MVIT_CONFIGS[DEBUG]).eval()
    sd = model.state_dict()
    split = split_qkv(sd)
    assert "blocks.2.attn.q.weight" in split and "blocks.2.attn.qkv.weight" not in split
    converted = convert_pyslowfast_separate_qkv(split)
    assert list(converted) == list(sd)  # same keys, same order
    for key in sd:
        assert torch.equal(converted[key], sd[key]), key
    other = MViT(MVIT_CONFIGS[DEBUG]).eval()
    other.load_state_dict(converted, strict=True)
    x = video(model.cfg, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x))
    # q rows first: the first head-dim rows of the fused weight are q's
    w = converted["blocks.0.attn.qkv.weight"]
    assert torch.equal(w[:16], split["blocks.0.attn.q.weight"][:16])
    assert torch.equal(w[32:], split["blocks.0.attn.v.weight"])
    # a state dict that is already fused passes through unchanged
    assert convert_pyslowfast_separate_qkv(sd).keys() == sd.keys()


def test_separate_qkv_conversion_rejects_incomplete_sets():
    split = split_qkv(MViT(MVIT_CONFIGS["mvit_debug"]).state_dict())
    del split["blocks.1.attn.k.bias"]
    with pytest.raises(ValueError, match=r"blocks\.1\.attn"):
        convert_pyslowfast_separate_qkv(split)


def torchvision_mvit_v1_b_state_dict() -> dict[str, torch.Tensor]:
    """Synthetic weights with the names and shapes of torchvision's `mvit_v1_b` (torchvision/models/video/
    mvit.py: `conv_proj`, `pos_encoding.*`, blocks with `attn.project.0`, `Pool(pool, norm_act)` wrappers,
    `mlp.0`/`mlp.3`, `project`; `head.1`), from its block config."""
    num_heads = [1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8]
    cin = [96, 192, 192, 384, 384, 384, 384, 384, 384, 384, 384, 384, 384, 384, 768, 768]
    cout = [192, 192, 384, 384, 384, 384, 384, 384, 384, 384, 384, 384, 384, 768, 768, 768]
    has_q = {1, 3, 14}
    g = torch.Generator().manual_seed(0)
    shapes = {
        "conv_proj.weight": (96, 3, 3, 7, 7),
        "conv_proj.bias": (96,),
        "pos_encoding.class_token": (96,),
        "pos_encoding.spatial_pos": (3136, 96),
        "pos_encoding.temporal_pos": (8, 96),
        "pos_encoding.class_pos": (96,),
    }
    for i in range(16):
        p, c, o, hd = f"blocks.{i}.", cin[i], cout[i], cin[i] // num_heads[i]
        shapes.update({f"{p}norm1.weight": (c,), f"{p}norm1.bias": (c,), f"{p}norm2.weight": (c,)})
        shapes.update(
            {f"{p}norm2.bias": (c,), f"{p}attn.qkv.weight": (3 * c, c), f"{p}attn.qkv.bias": (3 * c,)}
        )
        shapes.update({f"{p}attn.project.0.weight": (c, c), f"{p}attn.project.0.bias": (c,)})
        for role in ("q", "k", "v") if i in has_q else ("k", "v"):
            shapes[f"{p}attn.pool_{role}.pool.weight"] = (hd, 1, 3, 3, 3)
            shapes[f"{p}attn.pool_{role}.norm_act.0.weight"] = (hd,)
            shapes[f"{p}attn.pool_{role}.norm_act.0.bias"] = (hd,)
        shapes.update({f"{p}mlp.0.weight": (4 * c, c), f"{p}mlp.0.bias": (4 * c,)})
        shapes.update({f"{p}mlp.3.weight": (o, 4 * c), f"{p}mlp.3.bias": (o,)})
        if c != o:
            shapes.update({f"{p}project.weight": (o, c), f"{p}project.bias": (o,)})
    shapes.update(
        {"norm.weight": (768,), "norm.bias": (768,), "head.1.weight": (400, 768), "head.1.bias": (400,)}
    )
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def test_torchvision_conversion_loads_strictly():
    tv = torchvision_mvit_v1_b_state_dict()
    assert sum(v.numel() for v in tv.values()) == 36_610_672  # torchvision's documented num_params
    converted = convert_torchvision_mvit_v1_b(tv)
    model = MViT(MVIT_CONFIGS["mvit_b_16x4"])
    model.load_state_dict(converted, strict=True)
    sd = model.state_dict()
    assert torch.equal(sd["cls_token"].flatten(), tv["pos_encoding.class_token"])
    assert torch.equal(sd["pos_embed_spatial"][0], tv["pos_encoding.spatial_pos"])
    assert torch.equal(sd["pos_embed_temporal"][0], tv["pos_encoding.temporal_pos"])
    assert torch.equal(sd["blocks.14.attn.norm_q.weight"], tv["blocks.14.attn.pool_q.norm_act.0.weight"])
    assert torch.equal(sd["blocks.13.proj.weight"], tv["blocks.13.project.weight"])
    assert torch.equal(sd["blocks.3.mlp.fc2.bias"], tv["blocks.3.mlp.3.bias"])
    assert torch.equal(sd["head.projection.weight"], tv["head.1.weight"])
    with pytest.raises(ValueError, match="rel_pos_h"):
        convert_torchvision_mvit_v1_b({**tv, "blocks.0.attn.rel_pos_h": torch.zeros(1)})
