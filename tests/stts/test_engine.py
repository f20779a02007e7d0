"""The training engine's pure parts: recipes, --set, parameter groups, lr and σ schedules (spec §6)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import stts
from stts.engine.config import RECIPES, TrainConfig, apply_settings, load_config, save_config
from stts.engine.optim import Schedule, mvit_param_groups, param_groups, swin_param_groups
from stts.engine.trainer import _deepspeed_config, specs_for

MVIT, SWIN = RECIPES["mvit"], RECIPES["swin"]


# ------------------------------------------------------------------------------------------ schedules


@pytest.mark.parametrize(
    "epoch, selector, backbone",
    # spec §6.1 reference values
    [(0, 1.0e-4, 0.0), (3, 9.46e-5, 1e-5), (10, 5.05e-5, 1e-5), (18, 3.42e-6, 3.42e-6)],
)
def test_mvit_two_rate_schedule_reference_values(epoch, selector, backbone):
    schedule = Schedule(MVIT, iters_per_epoch=50)
    it = epoch * 50
    assert schedule.lr(it, {"kind": "selector"}) == pytest.approx(selector, rel=2e-3, abs=1e-12)
    assert schedule.lr(it, {"kind": "backbone"}) == pytest.approx(backbone, rel=2e-3, abs=1e-12)


def test_mvit_backbone_frozen_for_three_epochs_then_capped():
    schedule = Schedule(MVIT, iters_per_epoch=10)
    assert schedule.lr(29, {"kind": "backbone"}) == 0.0
    assert schedule.lr(30, {"kind": "backbone"}) == pytest.approx(1e-5)
    # the cap holds until the cosine falls under 1e-5 at e ≈ 16.10
    assert schedule.lr(160, {"kind": "backbone"}) == pytest.approx(1e-5)
    assert schedule.lr(162, {"kind": "backbone"}) < 1e-5
    assert schedule.lr(162, {"kind": "backbone"}) == pytest.approx(schedule.lr(162, {"kind": "selector"}))


def test_swin_schedule_cosine_by_epoch_with_iteration_warmup():
    schedule = Schedule(SWIN, iters_per_epoch=100)
    by_epoch = [schedule.lr(e * 100 + 99, {"lr_mult": 1.0}) for e in range(10)]
    expected = [3.0e-4, 2.927e-4, 2.714e-4, 2.382e-4, 1.964e-4, 1.5e-4, 1.036e-4, 6.18e-5, 2.865e-5, 7.34e-6]
    assert by_epoch == pytest.approx(expected, rel=2e-3)
    # warm-up over 0.8 epoch = 80 iterations, from 0.1x to 1x, linear in iterations
    assert schedule.lr(0, {"lr_mult": 1.0}) == pytest.approx(3e-5)
    assert schedule.lr(40, {"lr_mult": 1.0}) == pytest.approx(3e-4 * (1 - 0.5 * 0.9))
    assert schedule.lr(80, {"lr_mult": 1.0}) == pytest.approx(3e-4)
    # the selector's official multiplier
    assert schedule.lr(80, {"lr_mult": 0.001}) == pytest.approx(3e-7)


def test_sigma_schedules():
    mvit = Schedule(MVIT, iters_per_epoch=10)  # 200 iterations
    assert mvit.sigma(0) == pytest.approx(0.1)
    assert mvit.sigma(100) == pytest.approx(0.05)
    assert mvit.sigma(199) == pytest.approx(0.1 / 200) and mvit.sigma(199) > 0
    swin = Schedule(SWIN, iters_per_epoch=10)
    assert {swin.sigma(i) for i in (0, 50, 99)} == {0.05}


# ------------------------------------------------------------------------------------- param groups


def test_mvit_param_groups_by_module():
    model = stts.build_model("mvit_debug_t0.5_s0.5", num_classes=5)
    groups = {g["name"]: g for g in mvit_param_groups(model, 0.05)}
    assert set(groups) == {"predictor", "backbone_nonbn", "backbone_zero"}  # no BatchNorm in MViT
    ids = {n: {id(p) for p in g["params"]} for n, g in groups.items()}
    named = dict(model.named_parameters())
    for name, param in named.items():
        if "predictor" in name:
            assert id(param) in ids["predictor"], name  # selector biases and norms included
        elif param.ndim >= 2:
            assert id(param) in ids["backbone_nonbn"], name
        else:
            assert id(param) in ids["backbone_zero"], name
    for name in ("cls_token", "pos_embed_spatial", "pos_embed_temporal", "patch_embed.proj.weight"):
        assert id(named[name]) in ids["backbone_nonbn"]  # decayed, as pySlowFast's module walk does
    assert sum(len(g["params"]) for g in groups.values()) == len(named)
    assert groups["predictor"]["weight_decay"] == 0.05 and groups["backbone_zero"]["weight_decay"] == 0.0
    assert groups["predictor"]["kind"] == "selector" and groups["backbone_nonbn"]["kind"] == "backbone"


def test_swin_param_groups_by_name_longest_key_first():
    model = stts.build_model("swin_debug_t0.5", num_classes=5)
    groups = swin_param_groups(model, 0.05, 0.001)
    where = {id(p): g for g in groups for p in g["params"]}
    for name, param in model.named_parameters():
        g = where[id(param)]
        if "relative_position_bias_table" in name:
            assert (g["name"], g["weight_decay"]) == ("relative_position_bias_table", 0.0)
        elif "predictor" in name:  # its LayerNorm too: "predictor" is tried before "norm"
            assert (g["name"], g["lr_mult"], g["weight_decay"]) == ("predictor", 0.001, 0.05)
        elif "norm" in name:
            assert g["weight_decay"] == 0.0 and g["lr_mult"] == 1.0
        else:  # Linear biases included
            assert (g["name"], g["weight_decay"]) == ("default", 0.05)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    alt = param_groups(model, replace(SWIN, selector_lr_mult=1.0))
    assert next(g for g in alt if g["name"] == "predictor")["lr_mult"] == 1.0


# ------------------------------------------------------------------------------------ configs, --set


def test_set_parses_typed_values_and_nested_keys():
    cfg = apply_settings(
        MVIT,
        [
            "lr=3e-4",
            "epochs=5",
            "clip_grad=null",
            "mixup=false",
            "aug.randaugment=null",
            "model.t_ratio=0.5",
            "val_views=[2, 1]",
            "min_lr=0",
        ],
    )
    assert cfg.lr == 3e-4 and cfg.epochs == 5 and cfg.clip_grad is None and cfg.mixup is False
    assert cfg.aug == {"randaugment": None} and cfg.model_overrides == {"t_ratio": 0.5}
    assert cfg.val_views == (2, 1) and cfg.min_lr == 0.0 and isinstance(cfg.min_lr, float)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("lrr=1", "no field 'lrr'"),
        ("lr", "key=value"),
        ("mixup=maybe", "true or false"),
        ("epochs=0", "epochs must be >= 1"),
        ("foo.bar=1", "only aug"),
        ("epochs=null", "cannot be empty"),
    ],
)
def test_set_rejects_bad_settings(setting, message):
    with pytest.raises(ValueError, match=message):
        apply_settings(MVIT, [setting])


def test_config_yaml_round_trip(tmp_path):
    cfg = apply_settings(
        SWIN, {"data": "/x", "model_overrides": {"t_ratio": 0.5}, "aug": {"rrc_scale": (0.5, 1.0)}}
    )
    again = load_config(save_config(cfg, tmp_path / "config.yaml"))
    assert again.to_dict() == cfg.to_dict()
    (tmp_path / "bad.yaml").write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown fields epochz"):
        load_config(tmp_path / "bad.yaml")


def test_recipes_are_the_official_values():
    assert (MVIT.lr, MVIT.min_lr, MVIT.epochs, MVIT.num_sample, MVIT.clip_grad, MVIT.sigma) == (
        1e-4,
        1e-6,
        20,
        2,
        1.0,
        0.1,
    )
    assert MVIT.mixup and MVIT.label_smoothing == 0.1 and MVIT.frozen_backbone_epochs == 3.0
    assert (SWIN.lr, SWIN.grad_accum, SWIN.selector_lr_mult, SWIN.sigma, SWIN.sigma_decay) == (
        3e-4,
        8,
        0.001,
        0.05,
        False,
    )
    assert SWIN.clip_grad is None and not SWIN.mixup and SWIN.warmup_epochs == 0.8


def test_deepspeed_config_fills_the_autos(tmp_path):
    cfg = replace(MVIT, zero=2, grad_accum=4, mixed_precision="bf16")
    ds = _deepspeed_config(cfg, clips_per_iter=6)
    assert ds["zero_optimization"]["stage"] == 2
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (6, 4)
    assert ds["gradient_clipping"] == 1.0 and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"train_micro_batch_size_per_gpu": 3, "zero_optimization": {"stage": 1}}))
    ds = _deepspeed_config(replace(MVIT, deepspeed=str(own)), clips_per_iter=6)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 1
    with pytest.raises(ValueError, match="not both"):
        replace(MVIT, deepspeed=str(own), zero=1)


def test_clip_specs_follow_the_model_input():
    model = stts.build_model("mvit_debug_t0.5_s0.5", num_classes=3)
    clip, aug = specs_for(MVIT, model, train=True)
    assert (clip.num_frames, clip.crop_size, clip.sampling_rate) == (8, 64, 4)
    assert clip.short_side == round(256 * 64 / 224) and aug.clip == clip and aug.randaugment == (4, 7)
    clip, aug = specs_for(
        replace(SWIN, aug={"flip_prob": 0.0}), stts.build_model("swin_debug_t0.5"), train=False
    )
    assert clip.num_clips == 1 and aug.flip_prob == 0.0 and aug.train_short_side >= clip.crop_size


def test_cli_build_config_picks_model_and_recipe():
    from cli.train import build_config

    def build(**kw):
        args = dict(
            backbone=None,
            model=None,
            t_ratio=None,
            s_ratio=None,
            strategy=None,
            frames=None,
            recipe=None,
            settings={},
            sets=[],
        )
        return build_config(**{**args, **kw})

    cfg = build(backbone="swin", t_ratio=0.5)
    assert (cfg.model, cfg.model_overrides, cfg.recipe, cfg.grad_accum) == (
        "swin_b_32x2",
        {"t_ratio": 0.5},
        "swin",
        8,
    )
    assert build(backbone="mvit").model == "mvit_b_16x4_t0.6_s0.9"
    cfg = build(model="mvit_debug_t0.5_s0.5", strategy="random", sets=["epochs=3"])
    assert cfg.recipe == "mvit" and cfg.model_overrides == {"strategy": "random"} and cfg.epochs == 3
    with pytest.raises(ValueError, match="temporal selection only"):
        build(backbone="swin", s_ratio=0.5)
    with pytest.raises(ValueError, match="say what to train"):
        build()
    with pytest.raises(ValueError, match="selection strategy"):
        build(model="mvit_debug_t0.5_s0.5", strategy="best")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"t_ratio": 0.0}, "--t-ratio 0: the share of frames to keep, in (0, 1]; e.g. --t-ratio 0.5"),
        ({"s_ratio": 1.5}, "--s-ratio 1.5: the share of tokens of each frame to keep, in (0, 1]"),
        (
            {"t_ratio": 0.01},
            "--t-ratio 0.01 keeps no frame: mvit_b_16x4 selects among 8 temporal slices and keeps "
            "int(8 × 0.01) = 0; give at least 1/8 = 0.125",
        ),
        (
            {"s_ratio": 0.001},
            "--s-ratio 0.001 keeps no token: mvit_b_16x4 selects among 196 tokens per frame",
        ),
        ({"sets": ["model.t_ratio=0.1"]}, "--set model.t_ratio=0.1 keeps no frame: mvit_b_16x4_t0.6_s0.9"),
        ({"t_ratio": 0.5, "sets": ["model.t_ratio=0"]}, "--set model.t_ratio=0: the share of frames"),
    ],
)
def test_selection_ratios_are_checked_in_the_users_terms(kw, message):
    from cli.train import build_config

    args = dict(backbone="mvit", model=None, t_ratio=None, s_ratio=None, strategy=None, frames=None,
                recipe=None, settings={}, sets=[])  # fmt: skip
    with pytest.raises(ValueError) as err:
        build_config(**{**args, **kw})
    assert message in str(err.value)
    assert "time_left_ratio" not in str(err.value) and "k must be" not in str(err.value)


def test_selection_counts_of_the_zoo():
    from stts.registry import model_config, selection_counts

    assert selection_counts(model_config("mvit_b_16x4_t0.9_s0.9")) == {"t": (8, 7), "s": (196, 169)}
    assert selection_counts(model_config("swin_b_32x2_t0.5")) == {"t": (16, 9)}
    assert selection_counts(model_config("mvit_b_16x4")) == {}


def test_train_config_defaults_are_valid():
    assert TrainConfig().recipe == "mvit"
    assert torch.optim.AdamW(param_groups(stts.build_model("mvit_debug"), MVIT), lr=1e-4)
