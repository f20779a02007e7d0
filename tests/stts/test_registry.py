"""The registry as users call it: names, overrides, checkpoints, and the zoo's FLOPs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import stts
from cli.main import app
from stts.checkpoint import CheckpointError, save_checkpoint
from stts.flops import gflops
from stts.registry import spec_of
from stts.zoo import ZOO

ZOO_NAMES = [
    "mvit_b_16x4",
    "mvit_b_16x4_t0.9_s0.9",
    "mvit_b_16x4_t0.8_s0.9",
    "mvit_b_16x4_t0.6_s0.9",
    "mvit_b_16x4_t0.5_s0.7",
    "mvit_b_16x4_t0.4_s0.6",
    "swin_b_32x2",
    "swin_b_32x2_t0.9",
    "swin_b_32x2_t0.8",
    "swin_b_32x2_t0.6",
    "swin_b_32x2_t0.5",
    "swin_b_32x2_t0.4",
]


def test_every_zoo_name_and_a_debug_flavour_per_family():
    names = stts.list_models()
    assert set(ZOO_NAMES) <= set(names) and set(ZOO) == set(ZOO_NAMES)
    assert {"mvit_debug", "swin_debug"} <= set(names)
    assert stts.list_models("swin") == [n for n in names if n.startswith("swin")]


def _full_size(name: str) -> bool:
    """Zoo-size inputs (16-32 frames of 224²) take seconds to minutes per step on a CPU: `slow`."""
    return math.prod(stts.input_shape(stts.model_config(name))) > 100_000


# `make test` keeps one full-size model of each family, its zoo's cheapest (fewest FLOPs in spec §5/§7.2:
# 10 s for MViT, 40 s for Swin on our CPU where Swin-B without selection takes 140 s); `make test-slow`
# runs every other one.
CHEAPEST_FULL_SIZE = {
    min((n for n in ZOO_NAMES if spec_of(n) is spec_of(family_model)), key=lambda n: ZOO[n].fvcore)
    for family_model in ("mvit_debug", "swin_debug")
}


def _marked(names):
    return [pytest.param(n, marks=pytest.mark.slow) if _full_size(n) and n not in CHEAPEST_FULL_SIZE else n
            for n in names]  # fmt: skip


@pytest.mark.parametrize("name", _marked(stts.list_models()))
def test_every_registered_model_trains_and_evaluates(name):
    """timm's registry-wide test: logits of the right shape in train and eval mode, finite, and one
    training step reaches every parameter (the scorers through the perturbed top-k at σ > 0)."""
    torch.manual_seed(0)
    model = stts.build_model(name, num_classes=5)
    spec = spec_of(model)
    assert spec is spec_of(name) and name in spec.variants and model.model_name == name
    assert len(model.selection_steps()) == len(list(model.selectors()))  # what `stts.explain` reads
    x = torch.randn(stts.input_shape(model, batch=2))
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    assert not torch.allclose(out.softmax(-1).sum(-1), out.sum(-1))  # logits, not probabilities
    model.train()
    for selector in model.selectors():
        selector.sigma = 0.1
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.tensor([1, 3])).backward()
    named = dict(model.named_parameters())
    assert [n for n, p in named.items() if p.grad is None] == []
    assert [n for n, p in named.items() if not torch.isfinite(p.grad).all()] == []
    for selector in model.selectors():  # the last bias of a scorer gets 0: min-max scores ignore shifts
        assert any(p.grad.abs().sum() > 0 for p in selector.parameters())


@pytest.mark.parametrize("family", stts.registry.list_families())
def test_every_family_spec_is_complete(family):
    """What code outside the model file asks of a family resolves: recipe, views, FLOPs convention,
    optimizer groups, a debug flavour, its checkpoint conversion of its own layout."""
    from pipelines.augment import AUG_SPECS
    from stts.engine import recipe_for
    from stts.flops import CONVENTIONS

    spec = stts.registry.family_spec(family)
    debug = [n for n in spec.variants if "debug" in n]
    assert debug and not any(_full_size(n) for n in debug)
    assert spec.flops_convention in CONVENTIONS
    assert {spec.recipe.clip, spec.recipe.val_clip} <= set(AUG_SPECS)
    cfg = recipe_for(family)  # every value of the recipe is a valid TrainConfig value
    assert cfg.model.name == spec.recipe.default_model and spec_of(cfg.model.name) is spec
    model = stts.build_model(debug[0], num_classes=3)
    groups = spec.param_groups(model, 0.05, 0.5)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())
    assert all({"params", "weight_decay", "name", "lr_mult", "kind"} <= set(g) for g in groups)
    state = model.state_dict()
    assert list(spec.convert_state(state)) == list(state)
    head = [k for k in state if k.startswith(spec.head_prefixes)]
    assert head and all(v.shape[0] == 3 for k, v in state.items() if k in head)


def test_ratio_overrides_are_literal_and_add_the_selection_where_missing():
    cfg = stts.model_config("swin_b_32x2", t_ratio=0.5)
    assert cfg.time_pruning_loc == (0,) and cfg.time_left_ratio == 0.5
    model = stts.build_model("swin_debug", t_ratio=0.5)  # 8 frames → 4 temporal tokens → k = int(4 · 0.5)
    assert [s.k for s in model.selectors()] == [2]
    cfg = stts.model_config("mvit_b_16x4", t_ratio=0.5, s_ratio=0.7367)
    assert (cfg.time_pruning_loc, cfg.space_pruning_loc) == ((0,), (4,))
    assert stts.model_config("mvit_b_16x4_t0.9_s0.9", strategy="random").strategy == "random"
    assert stts.model_config("mvit_b_16x4", time_loc=0, t_ratio=0.5).time_pruning_loc == (0,)


def test_bad_names_and_options():
    with pytest.raises(ValueError, match="unknown model 'mvit_l'"):
        stts.build_model("mvit_l")
    with pytest.raises(ValueError, match="has no option 'depthh'"):
        stts.build_model("mvit_debug", depthh=3)


def test_checkpoint_round_trip_through_build_model(tmp_path):
    src = stts.build_model("swin_debug_t0.5", num_classes=3)
    path = save_checkpoint(tmp_path / "m.pt", src, meta={"model_name": "swin_debug_t0.5"})
    dst = stts.build_model("swin_debug_t0.5", num_classes=3, checkpoint=path)
    assert dst.load_report.ok
    x = torch.randn(stts.input_shape(src))
    torch.testing.assert_close(src.eval()(x), dst.eval()(x))
    with pytest.raises(CheckpointError, match="with other shapes"):
        stts.build_model("swin_debug_t0.5", num_classes=4, checkpoint=path)
    loose = stts.build_model("swin_debug_t0.5", num_classes=4, checkpoint=path, strict=False)
    assert [k for k, _, _ in loose.load_report.mismatched] == [
        "cls_head.fc_cls.weight",
        "cls_head.fc_cls.bias",
    ]


def test_flops_command_json():
    result = CliRunner().invoke(app, ["flops", "mvit_debug", "--json", "--convention", "fvcore"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    model = stts.build_model("mvit_debug")
    assert row == {
        "model": "mvit_debug",
        "convention": "fvcore",
        "gflops": round(gflops(model, stts.input_shape(model)), 4),
        "params": sum(p.numel() for p in model.parameters()),
    }
    bad = CliRunner().invoke(app, ["flops", "nope"])
    assert bad.exit_code == 2 and "unknown model" in bad.output


@pytest.mark.parametrize("name", _marked(ZOO_NAMES))
def test_zoo_flops_match_the_spec(name):
    """fvcore (both families) and mmcv (Swin) GFLOPs of each config equal spec §5 / §7.2 to ±0.01."""
    model = stts.build_model(name)
    ref = ZOO[name]
    for convention in ("fvcore", "mmcv"):
        expected = getattr(ref, convention)
        if expected is not None:
            assert gflops(model, stts.input_shape(model), convention) == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize(
    ("name", "export"),
    [("mvit_debug_t0.5_s0.5", "pyslowfast"), ("swin_debug_t0.5", "mmcv"), ("mvit_debug", "ours")],
)
def test_models_round_trip_through_the_official_formats(tmp_path, name, export):
    from stts.checkpoint import export_mmcv, export_pyslowfast

    src = stts.build_model(name).eval()
    path = tmp_path / "ckpt"
    if export == "pyslowfast":
        export_pyslowfast(src, path, epoch=30, cfg="MVIT: {}")
        assert set(torch.load(path, weights_only=True)) == {"epoch", "model_state", "optimizer_state", "cfg"}
    elif export == "mmcv":
        export_mmcv(src, path)
        keys = torch.load(path, weights_only=True)["state_dict"]
        assert all(k.startswith(("backbone.", "cls_head.")) for k in keys)
    else:
        save_checkpoint(path, src, meta={"model_name": name})
    dst = stts.build_model(name, checkpoint=path).eval()
    assert dst.load_report.ok
    x = torch.randn(stts.input_shape(src, batch=2))
    torch.testing.assert_close(dst(x), src(x))
