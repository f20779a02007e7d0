"""A third model family needs its model file and nothing else (issue 12): `third_family.py` registers FST, a
factorised space-time transformer, and every generic path — registry, `stts.explain`, `stts models`,
`stts flops`, checkpoints, `stts train` (the engine's Trainer on real shards, with --init), `stts eval` and
`stts predict` — serves it without knowing it.

The family is registered only while this module's tests run (a module fixture imports the file and takes
it out of the registry afterwards), so that the registry-wide tests elsewhere see the shipped families
only."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import make_video
from typer.testing import CliRunner

import stts
import stts.engine  # noqa: F401 - before the family registers: RECIPES, built at import, must not keep it
from cli.main import app
from pipelines.video_file import recipe_for_model, video_file_views
from stts.checkpoint import save_checkpoint
from stts.explain import explain
from stts.flops import gflops
from stts.models import FAMILIES
from stts.registry import (
    checkpoint_meta,
    family_spec,
    list_families,
    model_from_checkpoint,
    selection_counts,
    spec_of,
)

needs_dali = pytest.mark.skipif(
    importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None,
    reason="needs nvidia-dali",
)
ENV = {"COLUMNS": "200"}
MODULE = "stts_tests_third_family"


@pytest.fixture(scope="module")
def fst():
    """The family's module, imported (= registered) for this module's tests only."""
    assert "fst" not in FAMILIES
    spec = importlib.util.spec_from_file_location(MODULE, Path(__file__).with_name("third_family.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        FAMILIES.pop("fst", None)
        sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig

    out = tmp_path_factory.mktemp("fst-shards")
    synthetic = SyntheticConfig(num_classes=2, train_per_class=2, val_per_class=1, frames=16, size=64)
    build_shards(ShardConfig(src="synthetic", out=str(out), workers=1, synthetic=synthetic))
    return out


def test_the_registry_serves_the_family(fst):
    assert stts.list_models("fst") == ["fst_debug", "fst_debug_t0.5"]
    assert set(stts.list_models()) >= {"fst_debug", "mvit_debug", "swin_debug"}
    assert "fst" in list_families() and family_spec("fst") is fst.SPEC
    torch.manual_seed(0)
    model = stts.build_model("fst_debug_t0.5", num_classes=5)
    assert model.model_name == "fst_debug_t0.5" and isinstance(model, fst.FST)
    assert (
        spec_of("fst_debug") is spec_of(model) is spec_of(model.cfg) is spec_of(torch.nn.DataParallel(model))
    )
    assert stts.input_shape(model, batch=2) == (2, 3, 8, 64, 64)
    assert selection_counts(model.cfg) == {"t": (4, 2)}
    # the registry-wide protocol (tests/stts/test_registry.py): logits in both modes, every parameter
    # reached by one training step, the selection steps `stts.explain` reads
    x = torch.randn(stts.input_shape(model, batch=2))
    model.train()
    for selector in model.selectors():
        selector.sigma = 0.1
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []
    model.eval()
    with torch.no_grad():
        model(x)
    kept = explain(model)
    assert [c.kept_slices for c in kept] == [tuple(model.time_score_predictor.last_indices[b].tolist())
                                             for b in range(2)]  # fmt: skip
    assert all(len(c.kept_frames) == 4 for c in kept)  # 2 slices of 2 frames
    # overrides: a ratio without its location lands on the family's default location (spec default_locs);
    # bad values get the registry's errors
    both = stts.build_model("fst_debug", num_classes=5, t_ratio=0.75, s_ratio=0.25)
    assert (both.cfg.time_pruning_loc, both.cfg.space_pruning_loc) == ((0,), (1,))
    assert selection_counts(both.cfg) == {"t": (4, 3), "s": (64, 16)}
    assert both(x).shape == (2, 5) and len(both.selection_steps()) == 2
    with pytest.raises(ValueError, match="fst_debug has no option 'depthh'"):
        stts.build_model("fst_debug", depthh=3)
    with pytest.raises(ValueError, match="did you mean fst_debug"):
        stts.build_model("fst_deb")


def test_stts_models_and_flops_list_it(fst):
    rows = json.loads(CliRunner().invoke(app, ["models", "--family", "fst", "--json"], env=ENV).stdout)
    assert [(r["name"], r["family"], r["official"], r["kept_frames"], r["input"]) for r in rows] == [
        ("fst_debug", "fst", None, None, [3, 8, 64, 64]),
        ("fst_debug_t0.5", "fst", None, {"k": 2, "of": 4}, [3, 8, 64, 64]),
    ]
    table = CliRunner().invoke(app, ["models"], env=ENV)
    assert table.exit_code == 0, table.output
    assert any(
        ln.split()[:2] == ["fst_debug_t0.5", "fst"] and "2/4 frames" in ln for ln in table.output.splitlines()
    )

    result = CliRunner().invoke(app, ["flops", "fst_debug_t0.5", "--json"], env=ENV)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    model = stts.build_model("fst_debug_t0.5").eval()
    assert row["convention"] == "fvcore" == fst.SPEC.flops_convention
    assert row["gflops"] == round(gflops(model, stts.input_shape(model), "fvcore"), 4) > 0
    assert row["params"] == sum(p.numel() for p in model.parameters())
    # temporal selection before the first block: every block runs on k of the 4 slices; keeping all 4 costs
    # the scorer on top of the plain model
    by_k = {
        int(4 * r): gflops(m.eval(), stts.input_shape(m))
        for r, m in ((r, stts.build_model("fst_debug", t_ratio=r)) for r in (0.5, 0.75, 1.0))
    }
    plain = gflops(stts.build_model("fst_debug").eval(), (1, 3, 8, 64, 64))
    assert row["gflops"] == round(by_k[2], 4) and by_k[2] < by_k[3] < plain < by_k[4]


def test_checkpoints_round_trip_and_convert(fst, tmp_path):
    torch.manual_seed(1)
    model = stts.build_model("fst_debug", num_classes=3, s_ratio=0.5)
    path = save_checkpoint(tmp_path / "fst.pt", model, meta=checkpoint_meta(model, classes=["a", "b", "c"]))
    again, meta = model_from_checkpoint(path)
    assert (
        meta["family"] == "fst" and meta["model_name"] == "fst_debug" and meta["classes"] == ["a", "b", "c"]
    )
    assert type(again) is fst.FST and again.cfg == model.cfg
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    # an older config (a renamed field, lists from JSON) rebuilds through the spec's legacy keys
    old = dict(
        meta, config={**{k: list(v) if isinstance(v, tuple) else v for k, v in meta["config"].items()}}
    )
    old["config"]["image_size"] = old["config"].pop("crop_size")
    save_checkpoint(tmp_path / "old.pt", model, meta=old)
    assert model_from_checkpoint(tmp_path / "old.pt")[0].cfg == model.cfg
    # a foreign layout (selectors in one-element ModuleLists) loads by name through the spec's converter
    foreign = {
        k.replace("_score_predictor.", "_score_predictor.0."): v for k, v in model.state_dict().items()
    }
    assert foreign.keys() != model.state_dict().keys()
    torch.save(foreign, tmp_path / "foreign.pth")
    loaded = stts.build_model("fst_debug", num_classes=3, s_ratio=0.5, checkpoint=tmp_path / "foreign.pth")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


@needs_dali
def test_train_then_eval_through_the_cli(fst, shards, tmp_path):
    # --init from a model of another class count: the backbone loads, the head (spec head_prefixes) and the
    # selectors start fresh
    torch.manual_seed(2)
    init = stts.build_model("fst_debug", num_classes=7)
    save_checkpoint(tmp_path / "init.pt", init, meta=checkpoint_meta(init))
    out = tmp_path / "run"
    args = ["train", "--backbone", "fst", "--t-ratio", "0.5", "--recipe", "fst", "--data", str(shards),
            "--out", str(out), "--init", str(tmp_path / "init.pt"), "--epochs", "1", "--batch-size", "2",
            "--max-steps", "2", "--workers", "1", "--decoder", "dali-cpu", "--quiet",
            "--set", "tensorboard=false", "--set", "val_views=[2, 1]"]  # fmt: skip
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 0, result.output
    cfg = stts.engine.load_config(out / "config.yaml")
    # the family's recipe (Recipe.train); its plain model with t_ratio at the spec's default location
    assert cfg.model.name == "fst_debug" and cfg.model.overrides == {"time_left_ratio": 0.5}
    assert cfg.model.config(2) == replace(fst.FST_CONFIGS["fst_debug_t0.5"], num_classes=2)
    assert (cfg.recipe, cfg.optim.lr_schedule, cfg.optim.lr, cfg.loss.mixup) == ("fst", "cosine", 1e-3, False)
    log = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in log if e["event"] == "train"]
    assert train and all(e["sigma"] == 0.05 for e in train)  # the recipe's constant σ
    assert set(train[-1]["lr"]) == {"selector", "decay", "no_decay"}  # the spec's parameter groups
    trained, meta = model_from_checkpoint(out / "model.pt")
    assert type(trained) is fst.FST and meta["family"] == "fst" and len(meta["classes"]) == 2
    assert trained.cfg == replace(fst.FST_CONFIGS["fst_debug_t0.5"], num_classes=2)
    # the init's backbone was the start: a trained tensor moved away from it, but not far in 2 steps
    start = init.state_dict()["patch_embed.weight"]
    assert 0 < (trained.state_dict()["patch_embed.weight"] - start).abs().max() < 0.05

    result = CliRunner().invoke(app, ["eval", "--checkpoint", str(out / "model.pt"), "--data", str(shards),
                                      "--views", "2x1", "--batch-size", "4", "--device", "cpu", "--json"],
                                env=ENV)  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["videos"] == 2 and data["views"] == 4
    # the family's own aggregation and FLOPs convention, the clips of the recipe it names
    assert (data["recipe"], data["aggregation"], data["flops_convention"]) == ("fst", "mean", "fvcore")
    assert data["gflops_per_view"] == pytest.approx(
        gflops(trained.eval(), stts.input_shape(trained)), rel=1e-3
    )
    assert data["selection"]["temporal_kept"] == 4 * 4  # 4 views × 2 slices of 2 frames

    # stts predict on a file: the model's recipe fitted to its input, the family's aggregation
    video = make_video(tmp_path / "clip.mp4", frames=40, seed=3)
    result = CliRunner().invoke(app, ["predict", str(video), "--checkpoint", str(out / "model.pt"), "--json",
                                      "--views", "2x1"], env=ENV)  # fmt: skip
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    clip, aug = recipe_for_model(trained, views=(2, 1))
    with torch.no_grad():
        probs = torch.softmax(trained.eval()(video_file_views(video, clip, aug).video), -1).mean(0)
    got = {row["class_id"]: row["prob"] for row in entry["top_k"]}
    assert entry["views"] == 2 and got == pytest.approx(dict(enumerate(probs.tolist())), abs=2e-6)
