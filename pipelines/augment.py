"""The one DALI augmentation graph: decoded clip (uint8 ``FHWC``) → normalised float clip (``CFHW``).

Every decoder (DALI cpu / "mixed", PyAV feed) hands its frames to `eval_transform` or `train_transform`
inside its own pipeline, so the loader's batches are ``(B, 3, T, H, W)`` float32 whatever the backend.
Both functions only add DALI operators to the pipeline being defined; they work on cpu or gpu frames
(the geometry is computed from the frames' run-time shape, which DALI keeps on the cpu).

Evaluation (spec §7.1), per view: short side → ``spec.short_side`` with exactly the output size of
`pipelines.sampling.eval_resize_size` (computed in the graph with the same float64 expressions and passed
to ``fn.resize`` as ``resize_x``/``resize_y``, not ``resize_shorter``, whose own rounding of the long side
differs from pySlowFast's floor), bilinear, no antialiasing (``F.interpolate`` / cv2 do not antialias);
the crop box of `pipelines.sampling.eval_crop_boxes` cut with ``fn.slice`` at absolute pixel anchors;
``fn.crop_mirror_normalize`` to float32 with the recipe's mean/std and ``output_layout="CFHW"``.

Training (spec §6), one random draw per clip, the same for all its frames (DALI per-sample arguments
apply to a whole ``FHWC`` sequence):

* Swin: resize short side → 256 first (mmaction ``Resize``), then the random resized crop.
* MViT: RandAugment on the decoded frames (`nvidia.dali.auto_aug.rand_augment.rand_augment`, which takes
  ``FHWC`` videos and draws one op sequence per sample; needs a pipeline built with
  ``enable_conditionals=True``). Differences from timm's ``rand-m7-n4-mstd0.5-inc1``: the magnitude is
  fixed at 7/10 (``num_magnitude_bins=11``, no ``mstd`` noise); every chosen op is applied (timm applies
  each with p 0.5); DALI's suite has ``identity`` and lacks ``invert`` and ``solarize_add``; its posterize
  range is 8→4 bits (timm's increasing posterize 4→0); warp ops use bilinear (timm bicubic) and fill 128.
  Translation is ``0.45 * short side`` at full magnitude, as pySlowFast's ``translate_const``.
* random resized crop to ``crop_size``² with pySlowFast's box (`pipelines.kernels.rrc_geometry`: area
  U(0.08, 1), log-uniform aspect in [3/4, 4/3], 10 attempts, then its centre-crop fallback), bilinear
  without antialiasing on the cropped region (``F.interpolate(..., align_corners=False)``), horizontal
  flip p 0.5, normalisation to float32 ``CFHW``. On the CPU one fused numba kernel does all of it
  (`pipelines.kernels`, ~4x cheaper than DALI's CPU resize + crop_mirror_normalize); on the GPU (or with
  ``route="dali"``) the same box and flip go to ``fn.resize`` (region of interest) and
  ``fn.crop_mirror_normalize``. MViT's "normalise, then crop" order is the same: both steps are linear
  (the DALI route rounds the resized crop to uint8 in between).
* MViT random erasing p 0.25 (timm ``RandomErasing`` "pixel" mode, cube): one box for all frames, area
  U(0.02, 0.33) of the crop, log-aspect U(log 0.3, log 1/0.3), sides ``round(sqrt(area * ratio))`` ×
  ``round(sqrt(area / ratio))``, filled with per-pixel N(0, 1) values drawn per frame. One attempt whose
  sides are clamped to the crop (timm retries up to 10 times and erases nothing if all fail).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pipelines.sampling import CLIP_SPECS, ClipSpec

__all__ = [
    "AUG_SPECS",
    "MVIT_AUG",
    "SWIN_AUG",
    "SWIN_VAL_AUG",
    "AugmentSpec",
    "eval_transform",
    "train_transform",
]

MMACTION_MEAN = (123.675, 116.28, 103.53)
MMACTION_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class AugmentSpec:
    """Spatial augmentation and normalisation of one recipe; mean/std are on the 0–255 scale.

    clip: the `ClipSpec` whose ``style`` (rounding rules), ``short_side`` and ``crop_size`` the
        evaluation transform follows.
    mean, std: per channel (RGB), 0–255 scale (MViT's 0.45/0.225 on [0, 1] become 114.75/57.375).
    train_short_side: resize the short side to this before the random resized crop (Swin 256), or None
        (MViT crops the decoded frame).
    rrc_scale, rrc_ratio: random resized crop area fraction and aspect ratio ranges.
    flip_prob: horizontal flip probability.
    randaugment: ``(n, m)`` on timm's 0–10 magnitude scale, or None.
    erase_prob: random erasing probability (0 disables it); erase_scale/erase_ratio as timm's.
    """

    clip: ClipSpec
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_short_side: int | None = None
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    randaugment: tuple[int, int] | None = None
    randaugment_translate: float = 0.45
    erase_prob: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 1 / 3)
    erase_ratio: tuple[float, float] = (0.3, 1 / 0.3)

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"need 3 means and 3 positive stds, got {self.mean}, {self.std}")
        if not (0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1):
            raise ValueError(f"rrc_scale must satisfy 0 < lo <= hi <= 1, got {self.rrc_scale}")
        if not (0 < self.rrc_ratio[0] <= self.rrc_ratio[1]):
            raise ValueError(f"rrc_ratio must satisfy 0 < lo <= hi, got {self.rrc_ratio}")
        for name in ("flip_prob", "erase_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.randaugment is not None:
            n, m = self.randaugment
            if n < 1 or not 0 <= m <= 10:
                raise ValueError(f"randaugment needs n >= 1 and 0 <= m <= 10, got {self.randaugment}")
        if self.train_short_side is not None and self.train_short_side < self.crop_size:
            raise ValueError(f"train_short_side {self.train_short_side} < crop {self.crop_size}")

    @property
    def short_side(self) -> int:
        return self.clip.short_side

    @property
    def crop_size(self) -> int:
        return self.clip.crop_size


# MViT-B 16x4 (pySlowFast, spec §6.1 / §7.1): [0, 1] mean 0.45 std 0.225 → ×255.
MVIT_AUG = AugmentSpec(
    clip=CLIP_SPECS["mvit"],
    mean=(0.45 * 255,) * 3,
    std=(0.225 * 255,) * 3,
    randaugment=(4, 7),
    erase_prob=0.25,
)
# Video Swin-B (mmaction2, spec §6.2 / §7.1): 0–255 mean/std; train resize 256 then RRC 224.
SWIN_AUG = AugmentSpec(clip=CLIP_SPECS["swin"], mean=MMACTION_MEAN, std=MMACTION_STD, train_short_side=256)
SWIN_VAL_AUG = AugmentSpec(
    clip=CLIP_SPECS["swin_val"], mean=MMACTION_MEAN, std=MMACTION_STD, train_short_side=256
)
AUG_SPECS: dict[str, AugmentSpec] = {"mvit": MVIT_AUG, "swin": SWIN_AUG, "swin_val": SWIN_VAL_AUG}


# ---------------------------------------------------------------------------------------------------------
# graph helpers (DALI arithmetic on per-sample scalars)


def _frame_hw(frames):
    """Per-sample (H, W) of an ``FHWC`` clip as int64 cpu scalars."""
    from nvidia.dali import types

    shape = frames.shape(dtype=types.INT64)
    return shape[1], shape[2]


def _where(cond, a, b):
    """``a`` where ``cond`` (a boolean node) else ``b``, element-wise, in DALI arithmetic."""
    from nvidia.dali import fn, types

    c = fn.cast(cond, dtype=types.INT64)
    return c * a + (1 - c) * b


def _resize_hw(h, w, size: int, style: str):
    """`sampling.resize_short_side` in the graph: (out_h, out_w) int64, same float64 expressions."""
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath

    hf, wf = fn.cast(h, dtype=types.FLOAT64), fn.cast(w, dtype=types.FLOAT64)
    if style == "pyslowfast":
        long_w = fn.cast(dmath.floor((wf / hf) * size), dtype=types.INT64)  # landscape: W long
        long_h = fn.cast(dmath.floor((hf / wf) * size), dtype=types.INT64)  # portrait: H long
        portrait = w < h
        out_w = _where(portrait, size, long_w)
        out_h = _where(portrait, long_h, size)
        keep = ((w <= h) & (w == size)) | ((h <= w) & (h == size))
        return _where(keep, h, out_h), _where(keep, w, out_w)
    if style == "mmaction":
        factor = size / fn.cast(dmath.min(h, w), dtype=types.FLOAT64)
        out_w = fn.cast(dmath.floor(wf * factor + 0.5), dtype=types.INT64)
        out_h = fn.cast(dmath.floor(hf * factor + 0.5), dtype=types.INT64)
        return out_h, out_w
    raise ValueError(f"style must be 'pyslowfast' or 'mmaction', got {style!r}")


def _crop_anchor(h, w, spec: ClipSpec, crop_index: int, num_crops: int):
    """`sampling.eval_crop_boxes(...)[crop_index]`'s (y0, x0) in the graph, for resized size (h, w)."""
    c = spec.crop_size
    if spec.style == "pyslowfast":
        yc, xc = (h - c + 1) // 2, (w - c + 1) // 2  # ceil((side - c) / 2)
        if num_crops == 1:
            return yc, xc
        if crop_index == 1:
            return yc, xc
        portrait = h > w  # the long axis gets [start, centre, end]
        y_long = 0 * h if crop_index == 0 else h - c
        x_long = 0 * w if crop_index == 0 else w - c
        return _where(portrait, y_long, yc), _where(portrait, xc, x_long)
    if num_crops == 1:
        return (h - c) // 2, (w - c) // 2
    # ThreeCrop along the long side: [0, 2 * step, step]; landscape when the height is the crop.
    landscape = h == c
    mult = (0, 2, 1)[crop_index]
    x = mult * ((w - c) // 2)
    y = mult * ((h - c) // 2)
    return _where(landscape, 0 * h, y), _where(landscape, x, 0 * w)


def _normalize(frames, spec: AugmentSpec, mirror=None):
    from nvidia.dali import fn, types

    kwargs = {} if mirror is None else {"mirror": mirror}
    return fn.crop_mirror_normalize(
        frames,
        dtype=types.FLOAT,
        output_layout="CFHW",
        mean=list(spec.mean),
        std=list(spec.std),
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------------------
# public transforms


def eval_transform(frames, spec: AugmentSpec, crop_index: int = 0, num_crops: int | None = None):
    """One evaluation view of ``frames`` (uint8 ``FHWC`` DataNode): resize, crop ``crop_index`` of
    ``num_crops`` (default ``spec.clip.num_crops``) as `sampling.eval_crop_boxes`, normalise → float32
    ``(3, T, crop, crop)`` layout ``CFHW``."""
    from nvidia.dali import fn, types

    clip = spec.clip
    crops = clip.num_crops if num_crops is None else num_crops
    if crops not in (1, 3) or not 0 <= crop_index < crops:
        raise ValueError(
            f"need num_crops in (1, 3) and 0 <= crop_index < num_crops, got {crop_index}, {crops}"
        )
    h, w = _frame_hw(frames)
    out_h, out_w = _resize_hw(h, w, clip.short_side, clip.style)
    resized = fn.resize(
        frames,
        resize_x=fn.cast(out_w, dtype=types.FLOAT),
        resize_y=fn.cast(out_h, dtype=types.FLOAT),
        interp_type=types.INTERP_LINEAR,
        antialias=False,
    )
    y0, x0 = _crop_anchor(out_h, out_w, clip, crop_index, crops)
    c = clip.crop_size
    anchor = fn.cast(fn.stack(y0, x0), dtype=types.INT64)
    cropped = fn.slice(
        resized,
        anchor,
        types.Constant([c, c], dtype=types.INT64),
        axis_names="HW",
        out_of_bounds_policy="error",
    )
    return _normalize(cropped, spec)


def needs_conditionals(spec: AugmentSpec) -> bool:
    """Whether `train_transform` with ``spec`` uses DALI conditionals (``enable_conditionals=True``)."""
    return spec.randaugment is not None or spec.erase_prob > 0


def train_transform(frames, spec: AugmentSpec, route: str | None = None):
    """One training augmentation of ``frames`` (uint8 ``FHWC`` DataNode) → float32 ``(3, T, crop, crop)``
    ``CFHW``; every random draw is per clip. RandAugment (``spec.randaugment``) and random erasing
    (``spec.erase_prob``) need the pipeline to be defined with ``enable_conditionals=True``
    (`needs_conditionals`).

    ``route``: how the random resized crop, flip and normalisation run: ``"fused"`` (one numba kernel,
    `pipelines.kernels`; the CPU default) or ``"dali"`` (DALI's ``fn.resize`` on the crop box +
    ``fn.crop_mirror_normalize``; the GPU default). Both draw the same box and flip."""
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath

    if spec.train_short_side is not None:
        h, w = _frame_hw(frames)
        out_h, out_w = _resize_hw(h, w, spec.train_short_side, spec.clip.style)
        frames = fn.resize(
            frames,
            resize_x=fn.cast(out_w, dtype=types.FLOAT),
            resize_y=fn.cast(out_h, dtype=types.FLOAT),
            interp_type=types.INTERP_LINEAR,
            antialias=False,
        )
    if spec.randaugment is not None:
        from nvidia.dali.auto_aug import rand_augment

        n, m = spec.randaugment
        h, w = _frame_hw(frames)
        short = fn.cast(dmath.min(h, w), dtype=types.FLOAT)
        with _without_dali_experimental_alias_warnings():
            frames = rand_augment.rand_augment(
                frames,
                n=n,
                m=m,
                num_magnitude_bins=11,
                shape=fn.stack(short, short),
                max_translate_rel=spec.randaugment_translate,
            )
    route = route or ("dali" if frames.device == "gpu" else "fused")
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if route == "fused" and frames.device == "gpu":
        raise ValueError("route 'fused' runs on the CPU; GPU frames take route 'dali'")
    out = _resized_crop_normalize(frames, spec, route)
    if spec.erase_prob > 0:
        out = _random_erase(out, spec, route)
    return out


ROUTES = ("fused", "dali")


@contextmanager
def _without_dali_experimental_alias_warnings() -> Iterator[None]:
    """DALI's own RandAugment (2.4) calls its deprecated aliases ``fn.experimental.filter`` and
    ``fn.experimental.equalize`` (nvidia/dali/auto_aug/augmentations.py), a DeprecationWarning each time a
    graph is defined, that the user can do nothing about. DALI warns inside ``catch_warnings()`` +
    ``simplefilter("default")`` (``_handle_op_deprecation`` in nvidia/dali/ops/__init__.py), which overrides
    any ``warnings.filterwarnings``; so, during this call only, the display hook drops DeprecationWarnings
    raised from DALI's own files about ``fn.experimental.`` aliases, and shows everything else as before."""
    import nvidia.dali

    dali_dir = os.path.dirname(nvidia.dali.__file__) + os.sep
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if (
            issubclass(category, DeprecationWarning)
            and str(filename).startswith(dali_dir)
            and "fn.experimental." in str(message)
        ):
            return
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _resized_crop_normalize(frames, spec: AugmentSpec, route: str):
    """Random resized crop (pySlowFast's box, `pipelines.kernels.rrc_geometry`), flip, normalisation to
    float32 ``CFHW``, by ``route`` (see `train_transform`)."""
    from nvidia.dali import fn, types

    from pipelines.kernels import UNIFORMS, geometry_op, resample_op

    c = spec.crop_size
    uniforms = fn.random.uniform(range=[0.0, 1.0], shape=[UNIFORMS])
    geom = geometry_op(c, spec.rrc_scale, spec.rrc_ratio, spec.flip_prob)(
        frames.shape(dtype=types.INT64), uniforms
    )
    if route == "fused":
        return fn.reshape(resample_op(c, spec.mean, spec.std)(frames, geom), layout="CFHW")  # no copy
    # geom (kernels docstring): y offset/scale/lo/hi, x offset/scale/lo/hi, mirror; the box is [lo, hi]
    resized = fn.resize(
        frames,
        size=[c, c],
        roi_start=fn.stack(geom[2], geom[6]),
        roi_end=fn.stack(geom[3] + 1.0, geom[7] + 1.0),
        roi_relative=False,
        interp_type=types.INTERP_LINEAR,
        antialias=False,
    )
    return _normalize(resized, spec, fn.cast(geom[8], dtype=types.INT32))


def _random_erase(video, spec: AugmentSpec, route: str):
    """timm ``RandomErasing`` (pixel mode, one box for all frames) on a float ``CFHW`` clip of
    ``crop_size``² frames: inside the box the values become N(0, 1), drawn per pixel and frame.

    Route ``"fused"`` (CPU): noise is drawn for the box only (an empty box when the clip is not erased)
    and pasted by one kernel (`pipelines.kernels.paste_op`): ~10 ms per clip where DALI's arithmetic
    took ~50. Route ``"dali"`` (GPU): the whole erase is inside a DALI conditional, so the clips that are
    not erased pay nothing for it; it needs ``enable_conditionals=True`` (see `train_transform`)."""
    from nvidia.dali import fn
    from nvidia.dali import math as dmath

    c = spec.crop_size

    def box():
        area = fn.random.uniform(range=[spec.erase_scale[0] * c * c, spec.erase_scale[1] * c * c])
        log_r = fn.random.uniform(range=[math.log(spec.erase_ratio[0]), math.log(spec.erase_ratio[1])])
        ratio = dmath.exp(log_r)
        bh = dmath.clamp(dmath.floor(dmath.sqrt(area * ratio) + 0.5), 1.0, float(c))
        bw = dmath.clamp(dmath.floor(dmath.sqrt(area / ratio) + 0.5), 1.0, float(c))
        # top/left uniform over the valid integer positions [0, c - side]
        top = dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * (c - bh + 1))
        left = dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * (c - bw + 1))
        return bh, bw, top, left

    if route == "fused":
        # no conditional (its split and merge copy every clip): a box of size 0 when not erasing, and
        # noise drawn for the box only, pasted by one kernel
        from nvidia.dali import types

        from pipelines.kernels import paste_op

        erase = fn.cast(fn.random.coin_flip(probability=spec.erase_prob), dtype=types.INT32)
        bh, bw, top, left = box()
        shape = video.shape(dtype=types.INT32)
        bh = fn.cast(bh, dtype=types.INT32) * erase
        bw = fn.cast(bw, dtype=types.INT32) * erase
        noise = fn.random.normal(shape=fn.stack(shape[0], shape[1], bh, bw), dtype=types.FLOAT)
        pasted = paste_op()(video, noise, fn.cast(fn.stack(top, left), dtype=types.INT64))
        return fn.reshape(pasted, layout="CFHW")  # no copy
    if fn.random.coin_flip(probability=spec.erase_prob):
        bh, bw, top, left = box()
        ones = video * 0.0 + 1.0
        keep = fn.erase(
            ones, anchor=fn.stack(top, left), shape=fn.stack(bh, bw), axis_names="HW", fill_value=0.0
        )
        video = video * keep + fn.random.normal(video) * (1.0 - keep)
    return video
