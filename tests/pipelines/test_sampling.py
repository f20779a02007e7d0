"""Frame-index sampling and evaluation crops against the spec's formulas (§6, §7.1, §8) and against a
literal re-statement of the official two-pass pySlowFast decode run with torch."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from pipelines import sampling
from pipelines.sampling import (
    CLIP_SPECS,
    MVIT_CLIP,
    SWIN_CLIP,
    SWIN_VAL_CLIP,
    ClipSpec,
    eval_clip_indices,
    eval_crop_boxes,
    eval_resize_size,
    eval_views,
    resize_short_side,
    sample_rng,
    train_clip_indices,
)

# torch.linspace(0, 63, 16) truncated: what a 64-frame window at 30 fps gives
MVIT_64 = [0, 4, 8, 12, 16, 21, 25, 29, 33, 37, 42, 46, 50, 54, 58, 63]
# torch.linspace(0, 52.333, 16) truncated: the 53.33-frame window of a 25-fps video
MVIT_25FPS = [0, 3, 6, 10, 13, 17, 20, 24, 27, 31, 34, 38, 41, 45, 48, 52]


# ------------------------------------------------------------------------------------------ recipes


def test_recipes_are_the_official_numbers():
    assert CLIP_SPECS["mvit"] is MVIT_CLIP and CLIP_SPECS["swin"] is SWIN_CLIP
    assert CLIP_SPECS["swin_val"] is SWIN_VAL_CLIP
    m = MVIT_CLIP
    assert (m.num_frames, m.sampling_rate, m.time_base, m.target_fps) == (16, 4, "target_fps", 30.0)
    assert (m.num_clips, m.num_crops, m.short_side, m.crop_size, m.num_views) == (10, 1, 256, 224, 10)
    assert m.style == "pyslowfast" and m.offset_sampling
    s = SWIN_CLIP
    assert (s.num_frames, s.frame_interval, s.time_base, s.style) == (32, 2, "native", "mmaction")
    assert (s.num_clips, s.num_crops, s.short_side, s.crop_size, s.num_views) == (4, 3, 224, 224, 12)
    v = SWIN_VAL_CLIP
    assert (v.num_frames, v.frame_interval, v.num_clips, v.num_crops, v.short_side) == (32, 2, 1, 1, 256)
    # clip extent in source frames: 64 at 30 fps, scaled by fps; native for Swin whatever the fps
    assert m.clip_size(30.0) == 64.0
    assert m.clip_size(25.0) == pytest.approx(64 * 25 / 30)
    assert m.clip_size(7.5) == 16.0
    assert s.clip_size(25.0) == s.clip_size(60.0) == 64.0


def test_clip_spec_is_frozen_data_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MVIT_CLIP.num_frames = 8  # type: ignore[misc]
    assert ClipSpec(**dataclasses.asdict(SWIN_CLIP)) == SWIN_CLIP
    assert dataclasses.replace(MVIT_CLIP, num_clips=5).num_views == 5
    with pytest.raises(ValueError, match="native"):
        ClipSpec(num_frames=32, sampling_rate=2, time_base="target_fps", style="mmaction")
    with pytest.raises(ValueError, match="num_crops"):
        dataclasses.replace(MVIT_CLIP, num_crops=2)
    with pytest.raises(ValueError, match="crop_size"):
        dataclasses.replace(MVIT_CLIP, short_side=200)
    with pytest.raises(ValueError, match="fps"):
        MVIT_CLIP.clip_size(0.0)


def test_bad_arguments_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="clip_idx"):
        eval_clip_indices(300, 30.0, MVIT_CLIP, 10)
    with pytest.raises(ValueError, match="clip_idx"):
        eval_clip_indices(300, 30.0, SWIN_CLIP, -1)
    with pytest.raises(ValueError, match="num_video_frames"):
        train_clip_indices(0, 30.0, SWIN_CLIP, rng)
    with pytest.raises(ValueError, match="fps"):
        train_clip_indices(300, 0.0, MVIT_CLIP, rng)


# ------------------------------------------------------------------------------- MViT (pySlowFast)


def test_mvit_eval_300_frames_at_30fps():
    # clip 64 frames, delta = 236, offset sampling: start = k * floor(236 / 9) = 26 k
    for k in range(10):
        idx = eval_clip_indices(300, 30.0, MVIT_CLIP, k)
        assert idx.dtype == np.int64 and idx.shape == (16,)
        assert idx.tolist() == [26 * k + i for i in MVIT_64], k
    assert eval_clip_indices(300, 30.0, MVIT_CLIP, 9)[-1] == 297


def test_mvit_eval_250_frames_at_25fps_is_scaled_by_fps():
    # clip 64 / 30 * 25 = 53.33 frames, delta = 196.67, start = k * floor(196.67 / 9) = 21 k
    for k in range(10):
        assert eval_clip_indices(250, 25.0, MVIT_CLIP, k).tolist() == [21 * k + i for i in MVIT_25FPS], k


def test_mvit_eval_60fps_spans_twice_the_frames():
    # clip 128 frames, delta = 472, start = k * floor(472 / 9) = 52 k; stride ~8.47 frames
    idx = eval_clip_indices(600, 60.0, MVIT_CLIP, 3)
    assert idx[0] == 156 and idx[-1] == 156 + 127
    assert np.all(np.diff(idx) >= 8) and np.all(np.diff(idx) <= 9)


def test_mvit_single_clip_is_the_centre():
    # num_clips = 1 with offset sampling: floor(delta / 2) = 118
    assert eval_clip_indices(300, 30.0, MVIT_CLIP, 0, num_clips=1).tolist() == [118 + i for i in MVIT_64]


def test_mvit_exact_length_and_short_videos():
    # exactly one clip long: every view is the whole video
    for k in range(10):
        assert eval_clip_indices(64, 30.0, MVIT_CLIP, k).tolist() == MVIT_64
    # shorter than a clip: linspace over 64 positions, clamped, so the last frame repeats
    short = [0, 4, 8, 12, 16, 21, 25, 29, 33, 37, 39, 39, 39, 39, 39, 39]
    for k in range(10):
        assert eval_clip_indices(40, 30.0, MVIT_CLIP, k).tolist() == short
    assert train_clip_indices(40, 30.0, MVIT_CLIP, np.random.default_rng(3)).tolist() == short
    assert eval_clip_indices(1, 30.0, MVIT_CLIP, 4).tolist() == [0] * 16


def test_mvit_without_offset_sampling():
    spec = dataclasses.replace(MVIT_CLIP, offset_sampling=False)
    # start = delta * k / num_clips = 23.6 k; window from ceil(start), second pass placed at 0
    for k in range(10):
        first = math.ceil(236 * k / 10)
        assert eval_clip_indices(300, 30.0, spec, k).tolist() == [first + i for i in MVIT_64]


def test_mvit_decode_all_places_the_clip_on_the_whole_video():
    torch = pytest.importorskip("torch")
    for k in range(10):
        start = 21 * k
        want = torch.linspace(start, start + 64 / 30 * 25 - 1, 16).clamp(0, 249).long().tolist()
        assert eval_clip_indices(250, 25.0, MVIT_CLIP, k, decode_all=True).tolist() == want
    # with integer starts at 30 fps both paths agree
    for k in range(10):
        a = eval_clip_indices(300, 30.0, MVIT_CLIP, k, decode_all=True)
        assert np.array_equal(a, eval_clip_indices(300, 30.0, MVIT_CLIP, k))


def _official_pyslowfast(n, fps, clip_idx, num_clips, *, draw=None, pts_per_frame=512, decode_all=False):
    """pySlowFast 2021 (`pyav_decode` → `pyav_decode_stream` → `decode`) restated on a fake stream whose
    frame i has pts i * pts_per_frame, with torch doing the sampling, for 16 frames at stride 4 @ 30 fps."""
    import torch

    def start_end(video_size, clip_size, idx, clips):
        delta = max(video_size - clip_size, 0)
        if idx == -1:
            start = draw
        elif clips == 1:
            start = math.floor(delta / 2)
        else:
            start = idx * math.floor(delta / (clips - 1))
        return start, start + clip_size - 1

    clip_size = 4 * 16 / 30 * fps
    frames = list(range(n))
    if not decode_all:
        start_idx, end_idx = start_end(n, clip_size, clip_idx, num_clips)
        timebase = (n * pts_per_frame) / n
        start_pts, end_pts = int(start_idx * timebase), int(end_idx * timebase)
        kept, buffer_count = [], 0
        for i in range(n):
            pts = i * pts_per_frame
            if pts < start_pts:
                continue
            kept.append(i)
            if pts > end_pts:
                buffer_count += 1
                if buffer_count >= 0:
                    break
        frames = kept
        clip_idx, num_clips = 0, 1
    start, end = start_end(len(frames), clip_size, clip_idx, num_clips)
    index = torch.clamp(torch.linspace(start, end, 16), 0, len(frames) - 1).long()
    return np.asarray(frames)[index.numpy()]


@pytest.mark.parametrize("fps", [30.0, 25.0, 29.97, 24.0, 15.0, 60.0, 7.5])
def test_mvit_matches_the_official_two_pass_decode(fps):
    pytest.importorskip("torch")
    for n in [1, 10, 40, 63, 64, 65, 100, 250, 251, 300, 301, 599]:
        for k in range(10):
            got = eval_clip_indices(n, fps, MVIT_CLIP, k)
            assert np.array_equal(got, _official_pyslowfast(n, fps, k, 10)), (n, fps, k)
            got = eval_clip_indices(n, fps, MVIT_CLIP, k, decode_all=True)
            assert np.array_equal(got, _official_pyslowfast(n, fps, k, 10, decode_all=True)), (n, fps, k)
        got = eval_clip_indices(n, fps, MVIT_CLIP, 0, num_clips=1)
        assert np.array_equal(got, _official_pyslowfast(n, fps, 0, 1)), (n, fps)
        # training: the same uniform draw fed to both (a fine time base, as in YouTube mp4s)
        for seed in range(8):
            delta = max(n - MVIT_CLIP.clip_size(fps), 0)
            draw = np.random.default_rng(seed).uniform(0.0, delta)
            got = train_clip_indices(n, fps, MVIT_CLIP, np.random.default_rng(seed))
            want = _official_pyslowfast(n, fps, -1, 1, draw=draw, pts_per_frame=1 << 20)
            assert np.array_equal(got, want), (n, fps, seed)


def test_linspace_truncates_like_torch_float32():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for _ in range(3000):
        start = float(rng.uniform(0, 2000))
        end = start + float(rng.choice([63.0, 64 / 30 * 25 - 1, 64 / 30 * 29.97 - 1, 127.0, 15.0, 50.2]))
        ours = sampling._torch_linspace_f32(start, end, 16).astype(np.int64)
        assert np.array_equal(ours, torch.linspace(start, end, 16).long().numpy()), (start, end)
    assert sampling._torch_linspace_f32(0.0, 63.0, 16).astype(np.int64).tolist() == MVIT_64
    # a window where float64 arithmetic would pick frame 251 instead of torch's 252
    start = 213.62221850851137
    ours = sampling._torch_linspace_f32(start, start + 64 / 30 * 25 - 1, 16).astype(np.int64)
    assert ours[11] == 252 and int(np.linspace(start, start + 64 / 30 * 25 - 1, 16)[11]) == 251
    assert ours.tolist() == torch.linspace(start, start + 64 / 30 * 25 - 1, 16).long().tolist()


def test_mvit_train_clip_window():
    # 300 frames at 30 fps: a 64-frame window starting anywhere in [0, 236], always spanning 63 frames
    firsts = []
    for seed in range(300):
        idx = train_clip_indices(300, 30.0, MVIT_CLIP, np.random.default_rng(seed))
        assert idx[-1] - idx[0] == 63 and 0 <= idx[0] <= 236
        assert (idx - idx[0]).tolist() == MVIT_64
        firsts.append(int(idx[0]))
    assert min(firsts) < 20 and max(firsts) > 216 and len(set(firsts)) > 100


# ------------------------------------------------------------------------------ Swin (mmaction)


def test_swin_eval_4_clips_on_300_frames():
    # offsets int((i + 0.5) * (300 - 64 + 1) / 4) = 29, 88, 148, 207; 32 frames every 2
    for i, offset in enumerate([29, 88, 148, 207]):
        idx = eval_clip_indices(300, 30.0, SWIN_CLIP, i)
        assert idx.dtype == np.int64 and idx.tolist() == list(range(offset, offset + 64, 2))


def test_swin_eval_offsets_follow_the_spec_formula():
    for n in range(64, 1000):
        for i in range(4):
            offset = int((i + 0.5) * (n - 64 + 1) / 4)
            assert eval_clip_indices(n, 25.0, SWIN_CLIP, i).tolist() == list(range(offset, offset + 64, 2))
    # validation protocol: one clip at the centre offset
    assert eval_clip_indices(300, 30.0, SWIN_VAL_CLIP, 0)[0] == int(0.5 * 237)


def test_swin_exact_and_short_videos_loop():
    for i in range(4):
        assert eval_clip_indices(64, 30.0, SWIN_CLIP, i).tolist() == list(range(0, 64, 2))
        assert eval_clip_indices(63, 30.0, SWIN_CLIP, i).tolist() == list(range(0, 64, 2))  # max 62 < 63
    # shorter than a clip: offset 0 and indices wrap modulo the frame count ('loop')
    looped = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38]
    looped += [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]
    assert eval_clip_indices(40, 30.0, SWIN_CLIP, 2).tolist() == looped
    assert train_clip_indices(40, 30.0, SWIN_CLIP, np.random.default_rng(1)).tolist() == looped
    assert eval_clip_indices(5, 30.0, SWIN_CLIP, 0).tolist() == [(2 * j) % 5 for j in range(32)]


def test_swin_train_offset_is_uniform_over_the_valid_starts():
    offsets = [
        int(train_clip_indices(100, 30.0, SWIN_CLIP, np.random.default_rng(seed))[0]) for seed in range(400)
    ]
    assert set(offsets) == set(range(0, 37))  # randint(100 - 64 + 1)
    idx = train_clip_indices(100, 30.0, SWIN_CLIP, np.random.default_rng(7))
    assert idx.tolist() == list(range(idx[0], idx[0] + 64, 2))
    # the exact length has a single start
    assert train_clip_indices(64, 30.0, SWIN_CLIP, np.random.default_rng(7)).tolist() == list(range(0, 64, 2))


# ---------------------------------------------------------------------------------- both recipes


@pytest.mark.parametrize("spec", [MVIT_CLIP, SWIN_CLIP], ids=["mvit", "swin"])
def test_indices_always_in_range(spec):
    rng = np.random.default_rng(0)
    for n in [*range(1, 130), 199, 250, 300, 301, 1000, 5000]:
        for fps in (7.5, 24.0, 25.0, 29.97, 30.0, 50.0, 60.0):
            views = [eval_clip_indices(n, fps, spec, k) for k in range(spec.num_clips)]
            views.append(train_clip_indices(n, fps, spec, rng))
            views.append(eval_clip_indices(n, fps, spec, 0, decode_all=True))
            for idx in views:
                assert idx.dtype == np.int64 and idx.shape == (spec.num_frames,)
                assert idx.min() >= 0 and idx.max() <= n - 1, (n, fps)


@pytest.mark.parametrize("spec", [MVIT_CLIP, SWIN_CLIP], ids=["mvit", "swin"])
def test_eval_clips_move_forward_through_long_videos(spec):
    starts = [int(eval_clip_indices(1000, 30.0, spec, k)[0]) for k in range(spec.num_clips)]
    assert starts == sorted(starts) and len(set(starts)) == spec.num_clips
    assert eval_clip_indices(1000, 30.0, spec, spec.num_clips - 1)[-1] > 850


@pytest.mark.parametrize("spec", [MVIT_CLIP, SWIN_CLIP], ids=["mvit", "swin"])
def test_training_is_reproducible_from_the_generator(spec):
    a = train_clip_indices(500, 30.0, spec, np.random.default_rng(123))
    b = train_clip_indices(500, 30.0, spec, np.random.default_rng(123))
    assert np.array_equal(a, b)
    starts = {int(train_clip_indices(500, 30.0, spec, np.random.default_rng(s))[0]) for s in range(20)}
    assert len(starts) >= 15
    # one generator per (seed, epoch, sample): stable, and different across epochs and samples
    first = [int(train_clip_indices(500, 30.0, spec, sample_rng(0, 0, i))[0]) for i in range(20)]
    again = [int(train_clip_indices(500, 30.0, spec, sample_rng(0, 0, i))[0]) for i in range(20)]
    later = [int(train_clip_indices(500, 30.0, spec, sample_rng(0, 1, i))[0]) for i in range(20)]
    other = [int(train_clip_indices(500, 30.0, spec, sample_rng(1, 0, i))[0]) for i in range(20)]
    assert first == again and first != later and first != other and len(set(first)) >= 15


def test_sample_rng_rejects_negative_keys():
    with pytest.raises(ValueError):
        sample_rng(0, -1, 3)


def test_eval_view_order():
    # pySlowFast: view v → temporal v // crops, spatial v % crops
    assert eval_views(MVIT_CLIP) == [(v, 0) for v in range(10)]
    three = dataclasses.replace(MVIT_CLIP, num_crops=3, short_side=224)
    assert eval_views(three)[:7] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert len(eval_views(three)) == 30
    # mmaction: ThreeCrop + FormatShape stack crops outermost (N_crops x N_clips)
    assert eval_views(SWIN_CLIP) == [(t, s) for s in range(3) for t in range(4)]
    assert eval_views(SWIN_CLIP, num_clips=1, num_crops=1) == [(0, 0)]
    for spec in (MVIT_CLIP, three, SWIN_CLIP):
        views = eval_views(spec)
        assert sorted(views) == [(t, s) for t in range(spec.num_clips) for s in range(spec.num_crops)]


# ---------------------------------------------------------------------------------- spatial geometry


def test_resize_short_side_pyslowfast():
    assert resize_short_side(340, 256, 256, style="pyslowfast") == (340, 256)  # already there: untouched
    assert resize_short_side(320, 240, 256, style="pyslowfast") == (341, 256)  # floor(341.33)
    assert resize_short_side(240, 320, 256, style="pyslowfast") == (256, 341)
    assert resize_short_side(1280, 720, 256, style="pyslowfast") == (455, 256)  # floor(455.1)
    assert resize_short_side(300, 300, 256, style="pyslowfast") == (256, 256)
    assert eval_resize_size(640, 360, MVIT_CLIP) == (455, 256)


def test_resize_short_side_mmaction():
    assert resize_short_side(340, 256, 224, style="mmaction") == (298, 224)  # 297.5 + 0.5
    assert resize_short_side(320, 240, 224, style="mmaction") == (299, 224)  # 298.67 rounds up
    assert resize_short_side(240, 320, 224, style="mmaction") == (224, 299)
    assert resize_short_side(1280, 720, 224, style="mmaction") == (398, 224)  # 398.2
    assert eval_resize_size(340, 256, SWIN_VAL_CLIP) == (340, 256)
    with pytest.raises(ValueError):
        resize_short_side(0, 240, 224, style="mmaction")


def test_mvit_centre_crop_landscape_and_portrait():
    # 340x256 stays; centre offset ceil((340 - 224) / 2) = 58, ceil(32 / 2) = 16
    assert eval_crop_boxes(340, 256, MVIT_CLIP) == [(58, 16, 282, 240)]
    # 320x240 → 341x256: ceil(117 / 2) = 59 (pySlowFast rounds the centre up)
    assert eval_crop_boxes(320, 240, MVIT_CLIP) == [(59, 16, 283, 240)]
    assert eval_crop_boxes(240, 320, MVIT_CLIP) == [(16, 59, 240, 283)]
    # pySlowFast's 3-crop variant: start, centre, end of the long side (340x256 → floor(297.5) = 297)
    three = dataclasses.replace(MVIT_CLIP, num_crops=3, short_side=224)
    assert eval_resize_size(340, 256, three) == (297, 224)
    assert eval_crop_boxes(340, 256, three) == [(0, 0, 224, 224), (37, 0, 261, 224), (73, 0, 297, 224)]
    assert eval_crop_boxes(256, 340, three) == [(0, 0, 224, 224), (0, 37, 224, 261), (0, 73, 224, 297)]


def test_swin_three_crop_landscape_and_portrait():
    # 340x256 → 298x224; ThreeCrop order: left, right (2 * step), middle (step = 37)
    assert eval_crop_boxes(340, 256, SWIN_CLIP) == [(0, 0, 224, 224), (74, 0, 298, 224), (37, 0, 261, 224)]
    assert eval_crop_boxes(256, 340, SWIN_CLIP) == [(0, 0, 224, 224), (0, 74, 224, 298), (0, 37, 224, 261)]
    # odd slack: 301x224 keeps its size, step = 77 // 2 = 38, "right" starts at 76 and misses column 300
    assert eval_crop_boxes(301, 224, SWIN_CLIP) == [(0, 0, 224, 224), (76, 0, 300, 224), (38, 0, 262, 224)]
    # a square frame: three identical crops
    assert eval_crop_boxes(500, 500, SWIN_CLIP) == [(0, 0, 224, 224)] * 3
    # validation centre crop rounds down: (340 - 224) // 2 = 58, (256 - 224) // 2 = 16; 341 → 58 as well
    assert eval_crop_boxes(340, 256, SWIN_VAL_CLIP) == [(58, 16, 282, 240)]
    assert eval_crop_boxes(341, 256, SWIN_VAL_CLIP) == [(58, 16, 282, 240)]


@pytest.mark.parametrize("spec", [MVIT_CLIP, SWIN_CLIP, SWIN_VAL_CLIP], ids=["mvit", "swin", "swin_val"])
def test_crop_boxes_fit_the_resized_frame(spec):
    for w, h in [(340, 256), (256, 340), (320, 240), (1280, 720), (720, 1280), (171, 128), (225, 224)]:
        rw, rh = eval_resize_size(w, h, spec)
        assert min(rw, rh) == spec.short_side
        boxes = eval_crop_boxes(w, h, spec)
        assert len(boxes) == spec.num_crops
        for x0, y0, x1, y1 in boxes:
            assert x1 - x0 == y1 - y0 == spec.crop_size
            assert min(x0, y0) >= 0 and x1 <= rw and y1 <= rh
