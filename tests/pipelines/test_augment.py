"""The DALI augmentation graph on CPU, fed synthetic uint8 clips: evaluation views against numpy
references (sizes of `sampling.eval_resize_size`, boxes of `sampling.eval_crop_boxes`, exact normalisation),
training draws shared by all frames of a clip and reproducible per pipeline seed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipelines.augment import (
    AUG_SPECS,
    MVIT_AUG,
    SWIN_AUG,
    AugmentSpec,
    _resize_hw,
    eval_transform,
    train_transform,
)
from pipelines.sampling import MVIT_CLIP, SWIN_CLIP, eval_crop_boxes, eval_resize_size

pytest.importorskip("nvidia.dali")
from nvidia.dali import fn, pipeline_def, types  # noqa: E402


def run(transform, clips: list[np.ndarray], seed: int = 0, iterations: int = 1) -> list[list[np.ndarray]]:
    """Outputs of ``transform(frames)`` for a batch of ``clips`` (uint8 FHWC), per iteration."""

    @pipeline_def(batch_size=len(clips), num_threads=1, device_id=None, seed=seed, enable_conditionals=True)
    def pipe():
        frames = fn.external_source(source=lambda: clips, layout="FHWC", dtype=types.UINT8)
        return transform(frames)

    p = pipe()
    p.build()
    out = []
    for _ in range(iterations):
        (o,) = p.run()
        assert o.layout() == "CFHW"
        out.append([np.asarray(o.at(i)) for i in range(len(clips))])
    return out


def bilinear(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres, edge clamp, no antialiasing (F.interpolate's
    ``align_corners=False``), float64 HWC."""
    h, w = img.shape[:2]

    def axis(n_in: int, n_out: int):
        x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        x = np.clip(x, 0, n_in - 1)
        i0 = np.floor(x).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, x - i0

    y0, y1, fy = axis(h, out_h)
    x0, x1, fx = axis(w, out_w)
    img = img.astype(np.float64)
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def small(spec: AugmentSpec, short: int, crop: int, **kw) -> AugmentSpec:
    return dataclasses.replace(
        spec, clip=dataclasses.replace(spec.clip, short_side=short, crop_size=crop), **kw
    )


def test_specs() -> None:
    assert MVIT_AUG.mean == pytest.approx((114.75,) * 3) and MVIT_AUG.std == pytest.approx((57.375,) * 3)
    assert (MVIT_AUG.short_side, MVIT_AUG.crop_size, MVIT_AUG.randaugment, MVIT_AUG.erase_prob) == (
        256,
        224,
        (4, 7),
        0.25,
    )
    assert (SWIN_AUG.short_side, SWIN_AUG.train_short_side, SWIN_AUG.randaugment, SWIN_AUG.erase_prob) == (
        224,
        256,
        None,
        0.0,
    )
    assert SWIN_AUG.mean == (123.675, 116.28, 103.53) and SWIN_AUG.std == (58.395, 57.12, 57.375)
    assert set(AUG_SPECS) == {"mvit", "swin", "swin_val"}
    with pytest.raises(ValueError):
        dataclasses.replace(MVIT_AUG, flip_prob=1.5)


@pytest.mark.parametrize("clip", [MVIT_CLIP, SWIN_CLIP])
def test_resize_sizes_match_sampling(clip) -> None:
    """The graph's resize sizes equal `eval_resize_size` (same float64 rounding) for many frame sizes."""
    rng = np.random.default_rng(0)
    sizes = [(256, 256), (256, 340), (340, 256), (224, 398), (360, 480), (171, 128), (720, 1280)]
    sizes += [tuple(int(v) for v in rng.integers(100, 1000, 2)) for _ in range(41)]
    hs = [np.array(h, dtype=np.int64) for h, _ in sizes]
    ws = [np.array(w, dtype=np.int64) for _, w in sizes]

    @pipeline_def(batch_size=len(sizes), num_threads=1, device_id=None)
    def pipe():
        h = fn.external_source(source=lambda: hs, dtype=types.INT64)
        w = fn.external_source(source=lambda: ws, dtype=types.INT64)
        oh, ow = _resize_hw(h, w, clip.short_side, clip.style)
        return oh, ow

    p = pipe()
    p.build()
    oh, ow = p.run()
    got = [(int(ow.at(i)), int(oh.at(i))) for i in range(len(sizes))]
    assert got == [eval_resize_size(w, h, clip) for h, w in sizes]


EVAL_CASES = [
    (MVIT_AUG, 40, (60, 83), 1),
    (MVIT_AUG, 40, (60, 83), 3),
    (MVIT_AUG, 40, (97, 50), 3),
    (SWIN_AUG, 40, (50, 71), 1),
    (SWIN_AUG, 32, (50, 71), 3),
    (SWIN_AUG, 32, (93, 61), 3),
]


@pytest.mark.parametrize(("spec", "short", "hw", "num_crops"), EVAL_CASES)
def test_eval_matches_numpy(spec, short, hw, num_crops) -> None:
    """Random content: resize + every crop + normalise against numpy (bilinear, a rounding tolerance)."""
    spec = small(spec, short=short, crop=32)
    h, w = hw
    clip = np.random.default_rng(1).integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    rw, rh = eval_resize_size(w, h, spec.clip)
    mean, std = np.array(spec.mean), np.array(spec.std)
    resized = np.stack([bilinear(f, rw, rh) for f in clip])  # T,H,W,C
    for k, (x0, y0, x1, y1) in enumerate(eval_crop_boxes(w, h, spec.clip, num_crops=num_crops)):
        (out,) = run(lambda f, k=k: eval_transform(f, spec, k, num_crops), [clip])[0]
        assert out.shape == (3, 3, 32, 32) and out.dtype == np.float32
        ref = ((resized[:, y0:y1, x0:x1] - mean) / std).transpose(3, 0, 1, 2)
        assert np.abs(out - ref).max() <= 0.6 / std.min()  # DALI rounds the resized frame to uint8


@pytest.mark.parametrize(
    ("spec", "short", "hw", "num_crops"),
    [
        (MVIT_AUG, 40, (40, 47), 1),
        (MVIT_AUG, 40, (40, 47), 3),
        (MVIT_AUG, 40, (51, 40), 3),
        (SWIN_AUG, 40, (40, 47), 1),
        (SWIN_AUG, 32, (32, 41), 3),
        (SWIN_AUG, 32, (41, 32), 3),
    ],
)
def test_eval_crop_position_exact(spec, short, hw, num_crops) -> None:
    """No-op resize (short side = target): a marker pixel at each box's corner lands at (0, 0)."""
    spec = small(spec, short=short, crop=32)
    h, w = hw
    assert eval_resize_size(w, h, spec.clip) == (w, h)
    for k, (x0, y0, _, _) in enumerate(eval_crop_boxes(w, h, spec.clip, num_crops=num_crops)):
        clip = np.zeros((2, h, w, 3), dtype=np.uint8)
        clip[:, y0, x0] = 255
        (out,) = run(lambda f, k=k: eval_transform(f, spec, k, num_crops), [clip])[0]
        marker = out.max(axis=(0, 1))
        assert np.argwhere(marker == marker.max()).tolist() == [[0, 0]]


def test_eval_normalisation_exact() -> None:
    clip = np.full((2, 50, 60, 3), (10, 128, 250), dtype=np.uint8)
    for spec in (MVIT_AUG, SWIN_AUG):
        (out,) = run(lambda f, s=spec: eval_transform(f, small(s, 40, 32), 0, 1), [clip])[0]
        want = (np.array([10.0, 128.0, 250.0]) - np.array(spec.mean)) / np.array(spec.std)
        np.testing.assert_allclose(out, np.broadcast_to(want[:, None, None, None], out.shape), rtol=1e-6)
    # MViT: the 0-255 numbers are pySlowFast's /255 then (x - 0.45) / 0.225
    np.testing.assert_allclose(out[:, 0, 0, 0] * 0 + (128 / 255 - 0.45) / 0.225, (128 - 114.75) / 57.375)


def clip_of(seed: int, t: int = 4, h: int = 48, w: int = 64, same: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if same:
        return np.repeat(rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8), t, axis=0)
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


TRAIN_SPECS = {
    "mvit_no_erase": small(MVIT_AUG, 40, 32, erase_prob=0.0),
    "swin": small(SWIN_AUG, 40, 32, train_short_side=40),
}


@pytest.mark.parametrize("name", list(TRAIN_SPECS))
def test_train_same_draw_for_all_frames(name) -> None:
    """Identical frames in → identical frames out: crop, flip and RandAugment are drawn per clip."""
    spec = TRAIN_SPECS[name]
    clips = [clip_of(s) for s in range(4)]
    for batch in run(lambda f: train_transform(f, spec), clips, iterations=2):
        for out in batch:
            assert out.shape == (3, 4, 32, 32) and out.dtype == np.float32
            for t in range(1, 4):
                np.testing.assert_array_equal(out[:, t], out[:, 0])


def test_train_random_and_reproducible() -> None:
    spec = small(MVIT_AUG, 40, 32)
    clips = [clip_of(0)] * 4  # the same clip four times: different outputs come from the draws
    a = run(lambda f: train_transform(f, spec), clips, seed=7, iterations=2)
    b = run(lambda f: train_transform(f, spec), clips, seed=7, iterations=2)
    c = run(lambda f: train_transform(f, spec), clips, seed=8, iterations=1)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)
    outs = a[0] + a[1]
    assert all(not np.array_equal(outs[i], outs[j]) for i in range(8) for j in range(i))
    assert not np.array_equal(a[0][0], c[0][0])


def test_train_flip_only() -> None:
    """No crop, no RandAugment: each output is the clip or its mirror, both occur."""
    spec = small(MVIT_AUG, 40, 32, rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0), randaugment=None, erase_prob=0)
    clip = clip_of(3, h=32, w=32, same=False)
    ref = (clip.astype(np.float64) - 114.75) / 57.375
    ref = ref.transpose(3, 0, 1, 2)
    seen = set()
    for out in run(lambda f: train_transform(f, spec), [clip] * 8)[0]:
        if np.allclose(out, ref, atol=1e-5):
            seen.add("same")
        else:
            np.testing.assert_allclose(out, ref[..., ::-1], atol=1e-5)
            seen.add("mirror")
    assert seen == {"same", "mirror"}


@pytest.mark.parametrize("route", ["fused", "dali"])
def test_erasing_one_box_through_all_frames(route) -> None:
    """Constant clip, erasing always on: the changed pixels form one rectangle, the same in every frame
    and channel, filled with values that differ between frames (both routes: CPU kernel, GPU graph)."""
    spec = small(MVIT_AUG, 40, 32, randaugment=None, erase_prob=1.0)
    clip = np.full((4, 48, 64, 3), 100, dtype=np.uint8)
    const = (100 - 114.75) / 57.375
    areas = []
    for out in run(lambda f: train_transform(f, spec, route), [clip] * 6)[0]:
        changed = np.abs(out - const) > 1e-5  # C,T,H,W
        mask = changed[0, 0]
        assert (changed == mask).all()
        ys, xs = np.nonzero(mask)
        assert mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].all()
        areas.append(mask.sum() / mask.size)
        assert not np.array_equal(out[:, 0][:, mask], out[:, 1][:, mask])
    assert all(0.01 < a < 0.45 for a in areas) and len(set(areas)) > 1
    some = small(MVIT_AUG, 40, 32, randaugment=None, erase_prob=0.5)  # erased or untouched, both occur
    erased = [
        bool((np.abs(o - const) > 1e-5).any())
        for o in run(lambda f: train_transform(f, some, route), [clip] * 16)[0]
    ]
    assert 0 < sum(erased) < 16

    none = small(MVIT_AUG, 40, 32, randaugment=None, erase_prob=0.0)
    for out in run(lambda f: train_transform(f, none, route), [clip] * 2)[0]:
        np.testing.assert_allclose(out, const, atol=1e-5)
