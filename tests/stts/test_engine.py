"""The training engine's pure parts: recipes, --set, parameter groups, lr and σ schedules (spec §6)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

import stts
from stts.engine.config import RECIPES, ConfigError, TrainConfig, apply_settings, load_config, save_config
from stts.engine.optim import Schedule, param_groups
from stts.engine.trainer import _deepspeed_config, specs_for
from stts.models.mvit import param_groups as mvit_param_groups
from stts.models.swin import param_groups as swin_param_groups

MVIT, SWIN = RECIPES["mvit"], RECIPES["swin"]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


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
    alt = param_groups(model, apply_settings(SWIN, {"selector_lr_mult": 1.0}))
    assert next(g for g in alt if g["name"] == "predictor")["lr_mult"] == 1.0


# ------------------------------------------------------------------------------------ configs, --set


def test_set_parses_typed_values_and_nested_keys():
    cfg = apply_settings(
        MVIT,
        [
            "lr=3e-4",
            "training.epochs=5",
            "clip_grad=null",
            "loss.mixup=false",
            "aug.randaugment=null",
            "model.t_ratio=0.5",
            "val_views=[2, 1]",
            "min_lr=0",
            "clip.sampling_rate=2",
        ],
    )
    assert cfg.optim.lr == 3e-4 and cfg.training.epochs == 5 and cfg.optim.clip_grad is None
    assert cfg.loss.mixup is False and cfg.aug.values == {"randaugment": None}
    assert cfg.clip.sampling_rate == 2 and cfg.model.overrides == {"time_left_ratio": 0.5}
    assert cfg.eval.val_views == (2, 1) and cfg.optim.min_lr == 0.0 and isinstance(cfg.optim.min_lr, float)
    # flat keys of earlier versions and mappings of a section
    again = apply_settings(MVIT, {"model": "mvit_debug", "model_overrides": {"t_ratio": 0.5}, "data": "/x",
                                  "optim": {"lr": 3e-4}})  # fmt: skip
    assert (again.model.name, again.model.overrides, again.data.shards) == (
        "mvit_debug",
        {"time_left_ratio": 0.5},
        "/x",
    )
    assert again.optim.lr == 3e-4


@pytest.mark.parametrize(
    "setting, key, message",
    [
        ("lrr=1", "lrr", "no such setting (did you mean lr?)"),
        ("lr", "lr", "key=value"),
        ("mixup=maybe", "loss.mixup", "true or false"),
        ("epochs=0", "training.epochs", "must be >= 1"),
        ("foo.bar=1", "foo.bar", "no such section"),
        ("epochs=null", "training.epochs", "cannot be null"),
        ("grad_accum=two", "training.grad_accum", "expected an integer"),
        ("aug.foo=1", "aug.foo", "no such field of AugmentSpec"),
        ("aug.rrc_scale=0.5", "aug.rrc_scale", "expected a list"),
        ("clip.num_framez=8", "clip.num_framez", "did you mean num_frames"),
        ("optim.lrr=1", "optim.lrr", "did you mean lr"),
        ("model.depthh=3", "model.depthh", "no such option (did you mean depth?)"),
        ("model.t_ratio=0", "model.t_ratio", "time_left_ratio must be in (0, 1]"),
        ("model.num_classes=3", "model.num_classes", "no such option"),
        ("model.name=mvit_l", "model.name", "unknown model 'mvit_l'"),
        ("lr_schedule=step", "optim.lr_schedule", "must be one of two_rate"),
    ],
)
def test_set_rejects_bad_settings_naming_the_key(setting, key, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        apply_settings(MVIT, [setting])
    assert err.value.key == key and str(err.value).startswith(f"{key}: ")
    assert isinstance(err.value, ValueError)


def test_config_yaml_round_trip(tmp_path):
    cfg = apply_settings(
        SWIN, {"data": "/x", "model.t_ratio": 0.5, "aug.rrc_scale": (0.5, 1.0), "aug.randaugment": None}
    )
    again = load_config(save_config(cfg, tmp_path / "config.yaml"))
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert again.aug.values == {"rrc_scale": (0.5, 1.0), "randaugment": None}  # null kept apart from unset
    (tmp_path / "bad.yaml").write_text("training:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="training.epochz: no such field"):
        load_config(tmp_path / "bad.yaml")


def test_a_config_yaml_of_the_previous_version_loads_as_the_same_run(tmp_path):
    """The flat config.yaml that 0.1 wrote (a real one, kept in tests/fixtures) reads as the sections the
    same command gives today; an unknown key is a ConfigError naming it."""
    old = load_config(FIXTURES / "run-0.1" / "config.yaml")
    today = apply_settings(
        MVIT,
        {"model": "mvit_debug_t0.5_s0.5", "data": "/tmp/i12old/shards", "out": "/tmp/i12old/run", "epochs": 2,
         "batch_size": 2, "num_threads": 1, "decoder": "dali-cpu", "seed": 3, "max_steps": 2, "num_sample": 1,
         "tensorboard": False, "frozen_backbone_epochs": 0, "val_split": None, "checkpoint_every": 2},
    )  # fmt: skip
    assert old == today
    assert old.optim.lr_schedule == "two_rate" and old.optim.param_groups == "mvit" and old.recipe == "mvit"
    flat = yaml.safe_load((FIXTURES / "run-0.1" / "config.yaml").read_text())
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**flat, "sigmaa": 0.1}))
    with pytest.raises(ConfigError, match="sigmaa: unknown field") as err:
        load_config(tmp_path / "c.yaml")
    assert err.value.key == "sigmaa"


def test_recipes_are_the_official_values():
    o, t = MVIT.optim, MVIT.training
    assert (o.lr, o.min_lr, t.epochs, t.num_sample, o.clip_grad, MVIT.selection.sigma) == (
        1e-4,
        1e-6,
        20,
        2,
        1.0,
        0.1,
    )
    assert MVIT.loss.mixup and MVIT.loss.label_smoothing == 0.1 and o.frozen_backbone_epochs == 3.0
    assert (o.lr_schedule, o.param_groups, MVIT.recipe, MVIT.model.name) == ("two_rate", "mvit", "mvit",
                                                                            "mvit_b_16x4_t0.6_s0.9")  # fmt: skip
    o, t = SWIN.optim, SWIN.training
    assert (o.lr, t.grad_accum, o.selector_lr_mult, SWIN.selection.sigma, SWIN.selection.sigma_decay) == (
        3e-4,
        8,
        0.001,
        0.05,
        False,
    )
    assert o.clip_grad is None and not SWIN.loss.mixup and o.warmup_epochs == 0.8
    assert (o.lr_schedule, SWIN.model.name, SWIN.eval.eval_every) == ("cosine_epoch", "swin_b_32x2_t0.5", 5)


def test_deepspeed_config_fills_the_autos(tmp_path):
    cfg = apply_settings(MVIT, {"zero": 2, "grad_accum": 4, "mixed_precision": "bf16"})
    ds = _deepspeed_config(cfg, clips_per_iter=6)
    assert ds["zero_optimization"]["stage"] == 2
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (6, 4)
    assert ds["gradient_clipping"] == 1.0 and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"train_micro_batch_size_per_gpu": 3, "zero_optimization": {"stage": 1}}))
    ds = _deepspeed_config(apply_settings(MVIT, {"deepspeed": str(own)}), clips_per_iter=6)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 1
    with pytest.raises(ConfigError, match="not both"):
        apply_settings(MVIT, {"deepspeed": str(own), "zero": 1})


def test_clip_specs_follow_the_model_input():
    model = stts.build_model("mvit_debug_t0.5_s0.5", num_classes=3)
    clip, aug = specs_for(MVIT, model, train=True)
    assert (clip.num_frames, clip.crop_size, clip.sampling_rate) == (8, 64, 4)
    assert clip.short_side == round(256 * 64 / 224) and aug.clip == clip and aug.randaugment == (4, 7)
    clip, aug = specs_for(
        apply_settings(SWIN, {"aug.flip_prob": 0.0}), stts.build_model("swin_debug_t0.5"), train=False
    )
    assert clip.num_clips == 1 and aug.flip_prob == 0.0 and aug.train_short_side >= clip.crop_size
    # Swin validates during training as the official config does: one centre clip of a 256/224 resize
    assert clip.short_side == round(256 * 56 / 224)


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
    assert (cfg.model.name, cfg.model.overrides, cfg.recipe, cfg.training.grad_accum) == (
        "swin_b_32x2",
        {"time_left_ratio": 0.5},
        "swin",
        8,
    )
    assert build(backbone="mvit").model.name == "mvit_b_16x4_t0.6_s0.9"
    cfg = build(model="mvit_debug_t0.5_s0.5", strategy="random", sets=["epochs=3"])
    assert cfg.recipe == "mvit" and cfg.model.overrides == {"strategy": "random"} and cfg.training.epochs == 3
    with pytest.raises(ValueError, match="temporal selection only"):
        build(backbone="swin", s_ratio=0.5)
    with pytest.raises(ValueError, match="say what to train"):
        build()
    with pytest.raises(ValueError, match="selection strategy"):
        build(model="mvit_debug_t0.5_s0.5", strategy="best")


def test_train_config_defaults_are_valid():
    assert TrainConfig().recipe == "mvit" and TrainConfig().data.recipe is None  # the model's family
    assert torch.optim.AdamW(param_groups(stts.build_model("mvit_debug"), MVIT), lr=1e-4)
