"""Fused CPU kernels of the augmentation graph, compiled with numba and run by DALI's ``numba_function``.

DALI's CPU ``fn.random_resized_crop`` + ``fn.crop_mirror_normalize`` cost about 28 ms of one core per
16x224² clip (measured on the 2-core CI machine: its generic separable resampler, then a second pass
that normalises); on the CPU that was most of the loader's own work besides decoding. Here one pass
does crop + bilinear resize + flip + normalisation + ``CFHW`` layout (about 6-8 ms per clip), and the
random crop box follows pySlowFast's ``_get_param_spatial_crop`` (torchvision's algorithm: 10 attempts
of area U(scale) and log-uniform aspect, then the centre-crop fallback) instead of DALI's own.

Two operators, built once per process (`geometry_op`, `resample_op`: compiling one costs a few seconds,
using it in a new pipeline nothing):

* ``geometry``: per clip, ``(frame shape, uniforms) → geom`` float32 ``[9]``: for each axis (y, then x)
  ``offset, scale, lo, hi`` of the source coordinate ``offset + (o + 0.5) * scale - 0.5`` of output
  pixel ``o``, clamped to ``[lo, hi]`` (torch's ``F.interpolate(..., "bilinear", align_corners=False)``
  on the cropped region: neighbours never come from outside the crop), then ``mirror`` (0/1).
* ``resample``: ``(frames uint8 FHWC, geom) → float32 (3, T, S, S)``: bilinear, in float32 (no uint8
  rounding between resize and normalisation, as pySlowFast, which normalises first), ``(x - mean) / std``.

The GPU graph uses the same ``geom`` with DALI's own ``fn.resize`` (region of interest) and
``fn.crop_mirror_normalize`` (`pipelines.augment`); tests run both routes on the CPU and compare them.
"""

from __future__ import annotations

import math
import threading

import numpy as np

__all__ = [
    "GEOM_SIZE",
    "UNIFORMS",
    "geometry_op",
    "paste",
    "paste_op",
    "resample_normalize",
    "resample_op",
    "rrc_geometry",
]

ATTEMPTS = 10  # pySlowFast / torchvision
UNIFORMS = 2 * ATTEMPTS + 3  # (area, log aspect) per attempt, top, left, flip
GEOM_SIZE = 9

try:  # numba is a dependency; the fallback keeps the module importable (tests then say why they skip)
    from numba import njit
except ImportError:  # pragma: no cover - numba is pinned in pyproject.toml
    njit = None


def _jit(fn):
    return fn if njit is None else njit(cache=True, fastmath=True, nogil=True)(fn)


def _rrc_geometry(
    height, width, u, size, scale_lo, scale_hi, log_lo, log_hi, ratio_lo, ratio_hi, flip_p, geom
):
    """pySlowFast's random resized crop box for a ``height`` x ``width`` frame from ``u`` (UNIFORMS
    uniforms in [0, 1)), as ``geom`` (see the module docstring) for a ``size`` x ``size`` output."""
    area = height * width
    h = w = 0
    top = left = 0
    found = False
    for k in range(ATTEMPTS):
        target = area * (scale_lo + (scale_hi - scale_lo) * u[2 * k])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[2 * k + 1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2 * ATTEMPTS] * (height - h + 1)), height - h)  # randint(0, height - h)
            left = min(int(u[2 * ATTEMPTS + 1] * (width - w + 1)), width - w)
            found = True
            break
    if not found:  # the fallback: a central crop of the whole frame, aspect clamped to the range
        ratio = width / height
        if ratio < ratio_lo:
            w = width
            h = int(round(w / ratio_lo))
        elif ratio > ratio_hi:
            h = height
            w = int(round(h * ratio_hi))
        else:
            w = width
            h = height
        top = (height - h) // 2
        left = (width - w) // 2
    geom[0] = top
    geom[1] = h / size
    geom[2] = top
    geom[3] = top + h - 1
    geom[4] = left
    geom[5] = w / size
    geom[6] = left
    geom[7] = left + w - 1
    geom[8] = 1.0 if u[2 * ATTEMPTS + 2] < flip_p else 0.0


def _axis(n_out, offset, scale, lo, hi, mirror, i0, i1, wt):
    for o in range(n_out):
        s = offset + (o + 0.5) * scale - 0.5
        if s < lo:
            s = lo
        if s > hi:
            s = hi
        a = int(s)
        b = a + 1 if a < hi else a
        j = n_out - 1 - o if mirror else o
        i0[j] = a
        i1[j] = b
        wt[j] = s - a


def _hrow(src, ix0, ix1, wx, dst):
    """One source row (W, 3) uint8 → the output's columns, planar float32 ``dst`` (3, size_x)."""
    for x in range(dst.shape[1]):
        a = ix0[x]
        b = ix1[x]
        f = wx[x]
        for c in range(3):
            va = np.float32(src[a, c])
            dst[c, x] = va + (np.float32(src[b, c]) - va) * f


def _resample_normalize(out, frames, geom, mul, add):
    """``out[c, t] = resize(frames[t, ..., c]) * mul[c] + add[c]`` with ``geom``'s sampling grid (see the
    module docstring); separable: each output row blends two horizontally resampled source rows, kept in
    a two-row cache (no per-call buffer the size of the crop)."""
    n_t = frames.shape[0]
    size_y = out.shape[2]
    size_x = out.shape[3]
    iy0 = np.empty(size_y, np.int64)
    iy1 = np.empty(size_y, np.int64)
    wy = np.empty(size_y, np.float32)
    ix0 = np.empty(size_x, np.int64)
    ix1 = np.empty(size_x, np.int64)
    wx = np.empty(size_x, np.float32)
    _axis(size_y, geom[0], geom[1], geom[2], geom[3], False, iy0, iy1, wy)
    _axis(size_x, geom[4], geom[5], geom[6], geom[7], geom[8] > 0.5, ix0, ix1, wx)
    cache = np.empty((2, 3, size_x), np.float32)
    for t in range(n_t):
        frame = frames[t]
        held0 = -1  # source row in cache[0]
        held1 = -1  # source row in cache[1]
        for y in range(size_y):
            a = iy0[y]
            b = iy1[y]
            if a != held0:
                if a == held1:  # moving down by one row: the lower row becomes the upper one
                    cache[0, :, :] = cache[1]
                else:
                    _hrow(frame[a], ix0, ix1, wx, cache[0])
                held0 = a
            if b != held1:
                if b == held0:
                    cache[1, :, :] = cache[0]
                else:
                    _hrow(frame[b], ix0, ix1, wx, cache[1])
                held1 = b
            f = wy[y]
            for c in range(3):
                m = mul[c]
                k = add[c]
                ra = cache[0, c]
                rb = cache[1, c]
                o = out[c, t, y]
                for x in range(size_x):
                    o[x] = (ra[x] + (rb[x] - ra[x]) * f) * m + k


def _paste(out, video, noise, box):
    """``out`` = ``video`` (C, T, H, W) with ``noise`` (C, T, h, w) pasted at ``box`` (top, left)."""
    out[:] = video
    top = box[0]
    left = box[1]
    h = noise.shape[2]
    w = noise.shape[3]
    for c in range(out.shape[0]):
        for t in range(out.shape[1]):
            out[c, t, top : top + h, left : left + w] = noise[c, t]


_axis = _jit(_axis)
paste = _jit(_paste)
_hrow = _jit(_hrow)
rrc_geometry = _jit(_rrc_geometry)
resample_normalize = _jit(_resample_normalize)

# ------------------------------------------------------------------------------------- DALI operators

_ops: dict[tuple, object] = {}
_lock = threading.Lock()


def _not_converted(fn):
    """Keep DALI's conditionals (autograph, ``enable_conditionals=True``) out of these builders: it would
    rewrite the kernels' Python before numba compiles them."""
    try:
        from nvidia.dali.pipeline import do_not_convert
    except ImportError:  # pragma: no cover - DALI is a dependency
        return fn
    return do_not_convert(fn)


def _need_numba() -> None:
    if njit is None:
        raise ImportError("numba is not installed: the CPU augmentation kernels need it (pip install numba)")


def _numba_op(key: tuple, make):
    """The DALI operator for ``key``, built once per process (compiling one costs seconds, using it in a
    new pipeline nothing). ``make(types)`` returns ``(run, setup, in_types, ins_ndim, out_ndim)`` of an
    operator with one float32 output."""
    with _lock:
        if key not in _ops:
            _need_numba()
            from nvidia.dali import types
            from nvidia.dali.plugin.numba import NumbaFunction

            run, setup, in_types, ins_ndim, out_ndim = make(types)
            _ops[key] = NumbaFunction(
                run_fn=run, setup_fn=setup, out_types=[types.FLOAT], in_types=in_types, outs_ndim=[out_ndim],
                ins_ndim=ins_ndim,
            )  # fmt: skip
        return _ops[key]


@_not_converted
def geometry_op(size: int, scale: tuple[float, float], ratio: tuple[float, float], flip_prob: float):
    """DALI operator ``(shape int64 [4] of an FHWC clip, uniforms float32 [UNIFORMS]) → geom float32
    [GEOM_SIZE]``: pySlowFast's random resized crop to ``size``² and a flip with ``flip_prob``."""
    s, (a_lo, a_hi), (r_lo, r_hi), p = float(size), scale, ratio, float(flip_prob)
    log_lo, log_hi = math.log(r_lo), math.log(r_hi)

    def make(types):
        def setup(outs, ins):
            for i in range(len(outs[0])):
                outs[0][i][0] = GEOM_SIZE

        def run(geom, shape, u):
            rrc_geometry(shape[1], shape[2], u, s, a_lo, a_hi, log_lo, log_hi, r_lo, r_hi, p, geom)

        return run, setup, [types.INT64, types.FLOAT], [1, 1], 1

    return _numba_op(("geometry", s, float(a_lo), float(a_hi), float(r_lo), float(r_hi), p), make)


@_not_converted
def resample_op(size: int, mean: tuple[float, ...], std: tuple[float, ...]):
    """DALI operator ``(frames uint8 FHWC, geom float32 [GEOM_SIZE]) → float32 (3, T, size, size)``,
    normalised ``(x - mean) / std`` per channel (0-255 scale)."""
    n = int(size)
    mul = np.array([1.0 / v for v in std], np.float32)
    add = np.array([-m / v for m, v in zip(mean, std, strict=True)], np.float32)

    def make(types):
        def setup(outs, ins):
            for i in range(len(outs[0])):
                outs[0][i][0] = 3
                outs[0][i][1] = ins[0][i][0]
                outs[0][i][2] = n
                outs[0][i][3] = n

        def run(out, frames, geom):
            resample_normalize(out, frames, geom, mul, add)

        return run, setup, [types.UINT8, types.FLOAT], [4, 1], 4

    return _numba_op(("resample", n, tuple(float(m) for m in mean), tuple(float(v) for v in std)), make)


@_not_converted
def paste_op():
    """DALI operator ``(video float32 (C, T, H, W), noise float32 (C, T, h, w), box int64 [2]) → the video
    with the noise in the box``: random erasing's fill on the CPU, where DALI's arithmetic took several
    full-size passes and full-size noise (about 190 ms per erased 16x224² clip against a few ms)."""

    def make(types):
        def setup(outs, ins):
            for i in range(len(outs[0])):
                for d in range(4):
                    outs[0][i][d] = ins[0][i][d]

        def run(out, video, noise, box):
            paste(out, video, noise, box)

        return run, setup, [types.FLOAT, types.FLOAT, types.INT64], [4, 4, 1], 4

    return _numba_op(("paste",), make)
