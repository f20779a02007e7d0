"""`stts viz`: the PNG's size follows from the tiles, the kept window is outlined where the (forced)
selection put it, dropped frames are dimmed, and a synthetic shard sample gets its ground truth marked."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import stts
from cli.main import app
from pipelines.video_file import recipe_for_model, video_file_views
from stts import viz
from stts.checkpoint import save_checkpoint
from stts.registry import checkpoint_meta
from stts.selection import SpatialSelector, TemporalSelector, _Selector

pytest.importorskip("nvidia.dali")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_video  # noqa: E402

KEPT_SLICES = [1, 3]  # of the debug MViT's 4 token slices (2 frames each): frames 2, 3, 6, 7
WINDOW = 15  # of its 4 x 4 candidate windows: the bottom-right one


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("viz")
    torch.manual_seed(0)
    mvit = stts.build_model("mvit_debug_t0.5_s0.5", num_classes=3)
    swin = stts.build_model("swin_debug_t0.5", num_classes=3)
    meta = {"classes": ["alpha", "beta", "gamma"]}
    return {
        "mvit": save_checkpoint(d / "mvit.pt", mvit, meta=checkpoint_meta(mvit, **meta)),
        "swin": save_checkpoint(d / "swin.pt", swin, meta=checkpoint_meta(swin, **meta)),
        "video": make_video(d / "clip.mp4", frames=90, width=96, height=72),
    }


@pytest.fixture
def forced(monkeypatch):
    """Selectors that keep KEPT_SLICES and WINDOW whatever the scores."""
    original = _Selector._hard_indices

    def fixed(self, scores, batch, n, k, device):
        if isinstance(self, TemporalSelector):
            return torch.tensor([KEPT_SLICES] * batch, device=device)
        if isinstance(self, SpatialSelector):
            return torch.full((batch, 1), WINDOW, device=device)
        return original(self, scores, batch, n, k, device)

    monkeypatch.setattr(_Selector, "_hard_indices", fixed)


def invoke(*args):
    return CliRunner().invoke(app, ["viz", *map(str, args)], env={"COLUMNS": "200"})


def test_png_size_kept_window_and_dimmed_frames(files, forced, tmp_path):
    out = tmp_path / "sel.png"
    result = invoke(files["video"], "--checkpoint", files["mvit"], "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "top-1:" in result.stdout and "mvit_debug_t0.5_s0.5" in result.stdout
    img = np.asarray(Image.open(out).convert("RGB"))
    tile = 64 * 3  # 64² frames, upscaled 3x to reach 160 px
    assert viz.tile_size(64) == tile
    width = 2 * viz.MARGIN + 8 * tile + 7 * viz.GAP  # one row of 8
    height = 2 * viz.MARGIN + viz.HEADER + tile + viz.CAPTION
    assert img.shape == (height, width, 3)

    # what the model saw: the centre clip (1x1 views), centre crop
    model = stts.registry.model_from_checkpoint(files["mvit"])[0]
    seen = video_file_views(files["video"], *recipe_for_model(model, views=(1, 1))).pixels(0)
    # window 15 of a 4x4 grid (stride 1) of 5x5 windows on the 8x8 map of 8-pixel cells: crop (24, 24)-(64, 64)
    x0 = y0 = 24 * 3
    kept = {2, 3, 6, 7}
    for f in range(8):
        x, y = viz.MARGIN + f * (tile + viz.GAP), viz.MARGIN + viz.HEADER
        left_edge = img[y + y0 + 20 : y + tile - 20, x + x0 : x + x0 + viz.OUTLINE]
        right_edge = img[y + y0 + 20 : y + tile - 20, x + tile - viz.OUTLINE : x + tile]
        top_edge = img[y + y0 : y + y0 + viz.OUTLINE, x + x0 + 20 : x + tile - 20]
        inside = img[y + y0 + 10 : y + tile - 10, x + x0 + 10 : x + tile - 10]
        if f in kept:
            for edge in (left_edge, right_edge, top_edge):
                assert (edge == viz.KEPT_WINDOW).all(), f
            # inside the window: the model's pixels, enlarged 3x (nearest)
            np.testing.assert_array_equal(
                inside, seen[f].repeat(3, 0).repeat(3, 1)[y0 + 10 : -10, x0 + 10 : -10]
            )
        else:
            assert not (left_edge == viz.KEPT_WINDOW).all(axis=-1).any(), f
            dimmed = seen[f].astype(np.float64) * viz.DIM * (1 - viz.VEIL_ALPHA) + 128 * viz.VEIL_ALPHA
            got = img[y : y + tile : 3, x : x + tile : 3].astype(np.float64)
            np.testing.assert_allclose(got, dimmed, atol=1)


def test_model_without_spatial_selection(files, tmp_path):
    out = tmp_path / "swin.png"
    result = invoke(
        files["video"], "--checkpoint", files["swin"], "--out", out, "--views", "4x3", "--clip", "1"
    )
    assert result.exit_code == 0, result.output
    assert "clip 2/4, crop 3/3" in result.stdout  # mmaction's ThreeCrop order: the centre crop is the third
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[:2] == viz.canvas_size(8, 56)[::-1] and viz.tile_size(56) == 168
    assert not (img == viz.KEPT_WINDOW).all(axis=-1).any()  # no window outlined


def test_truth_in_view_maps_the_region_into_the_crop():
    meta = {"informative_frames": [10, 18], "region": [48, 0, 96, 48], "label_name": "circle moving up"}
    truth = viz.truth_in_view(meta, [8, 12, 17, 18], (96, 96), (73, 73), (5, 5, 69, 69))
    assert truth.informative == (False, True, True, False) and truth.label == "circle moving up"
    assert truth.region == pytest.approx((48 * 73 / 96 - 5, -5, 73 - 5, 48 * 73 / 96 - 5))
    assert viz.truth_in_view({"label": 1}, [0], (96, 96), (73, 73), (5, 5, 69, 69)) is None


def test_shard_sample_with_ground_truth(files, tmp_path):
    from pipelines.video_file import read_shard_sample
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig

    shards = tmp_path / "shards"
    synth = SyntheticConfig(
        num_classes=3, train_per_class=1, val_per_class=1, frames=36, size=64, codec="vp9"
    )
    build_shards(ShardConfig(src="synthetic", out=str(shards), workers=1, synthetic=synth))
    torch.manual_seed(1)
    model = stts.build_model("mvit_debug_t0.5_s0.5", num_classes=3)
    ckpt = save_checkpoint(tmp_path / "noclasses.pt", model, meta=checkpoint_meta(model))  # names: shards'
    names = (shards / "classes.txt").read_text().split("\n")
    key = "synthetic_val_000000"
    sample = read_shard_sample(shards, key, "val")
    out = tmp_path / "gt.png"
    result = invoke("--data", shards, "--key", key, "--checkpoint", ckpt, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"(truth: {sample.meta['label_name']})" in result.stdout
    assert any(f"top-1: {n} " in result.stdout for n in names if n)
    # 36 frames: the centre clip is frames 2..33; the 8 informative ones fall (partly) inside it
    start, end = sample.meta["informative_frames"]
    img = np.asarray(Image.open(out).convert("RGB"))
    green = (img == viz.TRUTH).all(axis=-1)
    assert green.any() == (end > 2 and start <= 33)
    assert img.shape[:2] == viz.canvas_size(8, 64)[::-1]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--out", "x.png"], 2, "--checkpoint"),
        (["--checkpoint", "{mvit}"], 2, "give a VIDEO file"),
        (["{video}", "--checkpoint", "{mvit}", "--out", "x.jpg"], 2, "PNG"),
        (["{video}", "--checkpoint", "{mvit}", "--clip", "3"], 2, "--clip 3"),
        (["{bad}", "--checkpoint", "{mvit}"], 1, "not a readable video container"),
        (["--data", "{tmp}", "--key", "k", "--checkpoint", "{mvit}"], 1, "manifest.json"),
    ],
)
def test_bad_input_is_one_line(files, tmp_path, args, code, message):
    bad = tmp_path / "bad.mp4"
    bad.write_text("no video here\n")
    subs = {"mvit": files["mvit"], "video": files["video"], "bad": bad, "tmp": tmp_path}
    result = invoke(*(a.format(**subs) for a in args))
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], lines
