"""video_file: one file's evaluation views equal the loader's for the same video in a shard (same
sampling, same DALI graph), in the official order; unreadable files raise an error naming the file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.sampling import CLIP_SPECS, eval_clip_indices, eval_crop_boxes, eval_views
from pipelines.video_file import (
    VideoReadError,
    read_shard_sample,
    recipe_for_model,
    shard_sample_views,
    video_file_views,
)
from shards.encode import extension_for
from stts.models.mvit import MVIT_CONFIGS
from stts.models.swin import SWIN_CONFIGS

pytest.importorskip("nvidia.dali")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_video  # noqa: E402

MVIT_DEBUG = MVIT_CONFIGS["mvit_debug_t0.5_s0.5"]
SWIN_DEBUG = SWIN_CONFIGS["swin_debug_t0.5"]


def test_recipe_for_model_keeps_the_recipe_and_takes_the_models_input():
    clip, aug = recipe_for_model(MVIT_DEBUG)
    assert (clip.num_frames, clip.crop_size, clip.short_side) == (8, 64, 73)  # 256/224 of 64, rounded
    assert (clip.sampling_rate, clip.time_base, clip.style, clip.num_clips, clip.num_crops) == (
        4, "target_fps", "pyslowfast", 10, 1)  # fmt: skip
    assert aug.clip == clip and aug.mean == (0.45 * 255,) * 3
    clip, aug = recipe_for_model(SWIN_DEBUG, views=(2, 3))
    assert (clip.num_frames, clip.crop_size, clip.short_side, clip.num_clips, clip.num_crops) == (
        8,
        56,
        56,
        2,
        3,
    )
    # full-size models get the zoo recipe unchanged
    assert recipe_for_model(MVIT_CONFIGS["mvit_b_16x4_t0.9_s0.9"])[0] == CLIP_SPECS["mvit"]
    assert recipe_for_model(SWIN_CONFIGS["swin_b_32x2_t0.5"])[0] == CLIP_SPECS["swin"]


@pytest.mark.parametrize("codec", ["h264", "vp9", "mjpeg"])
def test_views_indices_and_order(tmp_path, codec):
    path = make_video(tmp_path / f"v.{extension_for(codec)}", frames=70, width=80, height=48, codec=codec)
    clip, aug = recipe_for_model(SWIN_DEBUG)  # 4 clips x 3 crops, mmaction order (crop-major)
    vv = video_file_views(path, clip, aug)
    assert (vv.num_frames, vv.fps, vv.width, vv.height) == (70, 30.0, 80, 48)
    assert vv.video.shape == (12, 3, 8, 56, 56) and vv.video.dtype == torch.float32
    assert vv.views == eval_views(clip) == [(v % 4, v // 4) for v in range(12)]
    for t in range(4):
        np.testing.assert_array_equal(vv.indices[t], eval_clip_indices(70, 30.0, clip, t))
    assert len({tuple(i) for i in vv.indices}) == 4  # four different clips
    assert vv.frames.shape == (4, 8, 48, 80, 3) and vv.frames.dtype == np.uint8
    assert vv.boxes == eval_crop_boxes(80, 48, clip)
    # the pixels the model saw: crop of the resized frame; normalising them again gives the view back
    px = vv.pixels(vv.view_index(2, 1))
    assert px.shape == (8, 56, 56, 3) and px.dtype == np.uint8
    again = (px.astype(np.float32) - np.float32(aug.mean)) / np.float32(aug.std)
    np.testing.assert_allclose(again.transpose(3, 0, 1, 2), vv.video[vv.view_index(2, 1)].numpy(), atol=0.02)


def test_views_equal_the_loaders_eval_views(tmp_path):
    from pipelines import build_loader
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig

    out = tmp_path / "shards"
    synth = SyntheticConfig(
        num_classes=2, train_per_class=1, val_per_class=1, frames=72, size=64, codec="h264"
    )
    build_shards(ShardConfig(src="synthetic", out=str(out), workers=1, synthetic=synth))
    clip, aug = recipe_for_model(MVIT_DEBUG, views=(3, 1))
    loader = build_loader(out, "val", (clip, aug), batch_size=4, train=False, decoder="pyav", num_threads=1)
    got: dict[tuple[str, int], torch.Tensor] = {}
    for batch in loader:
        for key, view, video in zip(batch.key, batch.view.tolist(), batch.video, strict=True):
            got[(key, view)] = video
    keys = sorted({k for k, _ in got})
    assert len(got) == 2 * 3 and len(keys) == 2
    for key in keys:
        vv, meta = shard_sample_views(out, key, clip, aug, split="val")
        assert meta["key"] == key and "informative_frames" in meta
        assert vv.views == [(0, 0), (1, 0), (2, 0)]
        for v in range(3):
            torch.testing.assert_close(vv.video[v], got[(key, v)], atol=1e-5, rtol=0)
        # the same bytes as a file: the probe gives the shard's frame count and fps, so the same views
        sample = read_shard_sample(out, key, "val")
        path = tmp_path / f"{key}.mp4"
        path.write_bytes(sample.video)
        torch.testing.assert_close(video_file_views(path, clip, aug).video, vv.video, atol=1e-5, rtol=0)
    with pytest.raises(VideoReadError, match="no sample 'nope'"):
        read_shard_sample(out, "nope", "val")
    with pytest.raises(VideoReadError, match="no split 'test'"):
        read_shard_sample(out, keys[0], "test")


def test_unreadable_files_name_the_file(tmp_path):
    clip, aug = recipe_for_model(MVIT_DEBUG)
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    with pytest.raises(VideoReadError, match=r"notes\.mp4: not a readable video container"):
        video_file_views(bad, clip, aug)
    with pytest.raises(VideoReadError, match=r"missing\.webm: missing"):
        video_file_views(tmp_path / "missing.webm", clip, aug)


def test_pipelines_are_reused_across_files(tmp_path):
    from pipelines import video_file

    clip, aug = recipe_for_model(MVIT_DEBUG, views=(2, 1))
    a = make_video(tmp_path / "a.mp4", frames=40, width=64, height=48)
    b = make_video(tmp_path / "b.mp4", frames=50, width=96, height=64, seed=1)
    video_file_views(a, clip, aug)
    before = len(video_file._PIPELINES)
    vb = video_file_views(b, clip, aug)
    assert len(video_file._PIPELINES) == before and vb.video.shape == (2, 3, 8, 64, 64)
