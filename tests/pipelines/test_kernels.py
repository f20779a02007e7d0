"""The fused CPU kernels of the augmentation graph (`pipelines.kernels`): the crop box against pySlowFast's
algorithm, the resampler against a float64 reference, and the two routes of `train_transform` (fused
kernel on the CPU, DALI's resize + crop_mirror_normalize as on the GPU) against each other."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

pytest.importorskip("numba")

from pipelines.augment import MVIT_AUG, SWIN_AUG, train_transform  # noqa: E402
from pipelines.kernels import ATTEMPTS, GEOM_SIZE, UNIFORMS, resample_normalize, rrc_geometry  # noqa: E402


def pyslowfast_box(height, width, u, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """pySlowFast ``_get_param_spatial_crop`` (log-scale aspect, no h/w switch) with its random draws
    replaced by ``u``: ``(top, left, h, w)``."""
    for k in range(ATTEMPTS):
        target = height * width * (scale[0] + (scale[1] - scale[0]) * u[2 * k])
        log_r = (math.log(ratio[0]), math.log(ratio[1]))
        aspect = math.exp(log_r[0] + (log_r[1] - log_r[0]) * u[2 * k + 1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2 * ATTEMPTS] * (height - h + 1)), height - h)
            left = min(int(u[2 * ATTEMPTS + 1] * (width - w + 1)), width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def geometry(height, width, u, size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip=0.5):
    geom = np.zeros(GEOM_SIZE, np.float32)
    rrc_geometry(
        height, width, np.asarray(u, np.float32), float(size), scale[0], scale[1],
        math.log(ratio[0]), math.log(ratio[1]), ratio[0], ratio[1], flip, geom,
    )  # fmt: skip
    return geom


def test_box_is_pyslowfast_s() -> None:
    rng = np.random.default_rng(0)
    areas, aspects, flips = [], [], []
    for _ in range(2000):
        u = rng.random(UNIFORMS).astype(np.float32)
        height, width = int(rng.integers(100, 400)), int(rng.integers(100, 400))
        g = geometry(height, width, u)
        top, left, h, w = pyslowfast_box(height, width, u.astype(np.float64))
        assert (g[2], g[3] + 1 - g[2], g[6], g[7] + 1 - g[6]) == (top, h, left, w)
        assert g[0] == top and g[4] == left
        assert g[1] == pytest.approx(h / 224) and g[5] == pytest.approx(w / 224)
        assert top >= 0 and top + h <= height and left >= 0 and left + w <= width
        areas.append(h * w / (height * width))
        aspects.append(w / h)
        flips.append(g[8])
    areas, aspects = np.array(areas), np.array(aspects)
    assert areas.min() > 0.07 and areas.max() <= 1.0 and areas.max() > 0.9
    assert aspects.min() > 0.74 and aspects.max() < 1.35
    assert set(flips) == {0.0, 1.0} and abs(np.mean(flips) - 0.5) < 0.05


def test_box_fallback_is_a_centre_crop() -> None:
    u = np.full(UNIFORMS, 0.5, np.float32)
    # area 1 with aspect 1 cannot fit a 48x64 frame: the fallback crops 48x48 in the middle (ratio max 1)
    g = geometry(48, 64, u, size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert list(g[[2, 3, 6, 7]]) == [0, 47, 8, 55]
    # portrait beyond the range: full width, height from the smallest aspect
    g = geometry(200, 50, u, size=32, scale=(1.0, 1.0), ratio=(0.75, 4 / 3))
    assert (g[3] + 1 - g[2], g[7] + 1 - g[6]) == (round(50 / 0.75), 50)


def bilinear_crop(clip, top, left, h, w, size):
    """F.interpolate(bilinear, align_corners=False) of the crop, float64 FHWC."""

    def axis(n_in):
        x = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        i0 = np.floor(x).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), x - i0

    crop = clip[:, top : top + h, left : left + w].astype(np.float64)
    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    rows = crop[:, y0] * (1 - fy)[None, :, None, None] + crop[:, y1] * fy[None, :, None, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]


@pytest.mark.parametrize("box", [(3, 5, 30, 41), (0, 0, 48, 64), (10, 20, 7, 9), (40, 60, 8, 4)])
@pytest.mark.parametrize("mirror", [0, 1])
def test_resample_equals_reference(box, mirror) -> None:
    rng = np.random.default_rng(1)
    clip = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    top, left, h, w = box
    size = 24
    geom = np.array([top, h / size, top, top + h - 1, left, w / size, left, left + w - 1, mirror], np.float32)
    mean, std = np.array([110.0, 120.0, 130.0]), np.array([50.0, 60.0, 70.0])
    out = np.empty((3, 3, size, size), np.float32)
    resample_normalize(
        out, clip, geom, (1 / std).astype(np.float32), (-mean / std).astype(np.float32)
    )  # fmt: skip
    ref = (bilinear_crop(clip, top, left, h, w, size) - mean) / std
    if mirror:
        ref = ref[:, :, ::-1]
    np.testing.assert_allclose(out, ref.transpose(3, 0, 1, 2), atol=2e-5)


def smooth_clip(t, h, w, phase):
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [128 + 100 * np.sin(yy / 9 + xx / 13 + phase + c) for c in range(3)]
    return np.stack([np.stack(planes, -1) + 3 * k for k in range(t)]).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("spec", [MVIT_AUG, SWIN_AUG], ids=["mvit", "swin"])
def test_fused_and_dali_routes_agree(spec) -> None:
    """The CPU route (fused kernel) and the GPU route (DALI resize + crop_mirror_normalize), both run on the
    CPU with the same seed: the same boxes and flips, values equal up to DALI's uint8 rounding between
    resize and normalisation (and its reading of neighbours outside the box on the border rows)."""
    from nvidia.dali import fn, pipeline_def, types

    spec = dataclasses.replace(spec, randaugment=None, erase_prob=0.0)
    spec = dataclasses.replace(spec, clip=dataclasses.replace(spec.clip, crop_size=40), train_short_side=None)
    clips = [smooth_clip(3, 60 + 7 * i, 90 - 9 * i, i) for i in range(6)]
    outs = {}
    for route in ("fused", "dali"):

        @pipeline_def(batch_size=len(clips), num_threads=1, device_id=None, seed=5)
        def pipe(route=route):
            frames = fn.external_source(source=lambda: clips, layout="FHWC", dtype=types.UINT8)
            return train_transform(frames, spec, route)

        p = pipe()
        p.build()
        outs[route] = [[np.asarray(o.at(i)) for i in range(len(clips))] for o in (p.run()[0], p.run()[0])]
    step = 1 / min(spec.std)  # one uint8 level, normalised
    for a_run, b_run in zip(outs["fused"], outs["dali"], strict=True):
        for a, b in zip(a_run, b_run, strict=True):
            assert a.shape == b.shape == (3, 3, 40, 40)
            inner = np.abs(a - b)[:, :, 1:-1, 1:-1]
            assert inner.max() <= 0.5 * step + 1e-4  # half a uint8 step after normalisation
            assert np.abs(a - b).mean() < 0.5 * step
    # different draws between clips and runs (the same clip twice would give the same output)
    assert not np.allclose(outs["fused"][0][0], outs["fused"][1][0])


def test_bad_route() -> None:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        frames = fn.external_source(source=lambda: [np.zeros((2, 8, 8, 3), np.uint8)], layout="FHWC",
                                    dtype=types.UINT8)  # fmt: skip
        return train_transform(frames, dataclasses.replace(MVIT_AUG, randaugment=None), "magic")

    with pytest.raises(ValueError, match="route must be one of"):
        pipe()
