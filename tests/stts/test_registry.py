"""The registry as users call it: names, overrides, checkpoints, and the zoo's FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import stts
from cli.main import app
from stts.checkpoint import CheckpointError, save_checkpoint
from stts.flops import gflops
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


@pytest.mark.parametrize("name", ["mvit_debug", "mvit_debug_t0.5_s0.5", "swin_debug", "swin_debug_t0.5"])
def test_debug_models_give_logits_in_train_and_eval(name):
    model = stts.build_model(name, num_classes=5)
    x = torch.randn(stts.input_shape(model, batch=2))
    for mode in (True, False):
        model.train(mode)
        out = model(x)
        assert out.shape == (2, 5) and torch.isfinite(out).all()
    assert not torch.allclose(out.softmax(-1).sum(-1), out.sum(-1))  # logits, not probabilities


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


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_NAMES)
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
