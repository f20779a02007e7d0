"""Frame-index sampling and evaluation crop geometry: pure functions shared by every decoder.

Everything here maps numbers to numbers (frame counts, fps, frame sizes → frame indices, sizes, boxes); no
decoding, no tensors, no global random state. A decoder (DALI, PyAV) asks for the indices of one clip in
the *whole* decoded video (0-based, always within ``[0, num_video_frames - 1]``) and fetches those frames.

Two official conventions, one per half of the STTS code (spec §6, §7.1, §8):

* ``"pyslowfast"`` (MViT-B 16x4, pySlowFast 2021 ``decoder.py``). The clip covers
  ``sampling_rate * num_frames / target_fps * fps`` source frames (64 at 30 fps, 53.33 at 25 fps).
  First pass, ``get_start_end_idx`` on the container's frame count: training start uniform in
  ``[0, delta]``, ``delta = max(#frames - clip_size, 0)``; test start ``clip_idx * floor(delta / (num_clips
  - 1))``, or ``floor(delta / 2)`` for one clip (``DATA.USE_OFFSET_SAMPLING``); end = start + clip_size - 1.
  Selective decoding keeps the frames whose timestamps lie in ``[start, end]`` plus the first frame after
  ``end`` (``pyav_decode_stream`` with ``buffer_size=0`` keeps one frame past the window). Second pass on
  those decoded frames: the same window size placed at the centre (``floor(delta' / 2)``), then
  ``torch.linspace(start, end, num_frames)`` in float32, clamped to the decoded range and truncated.
  Videos shorter than a clip therefore repeat their last frame.
* ``"mmaction"`` (Video Swin-B, mmaction2 0.x ``SampleFrames``). Native frames: ``clip_len`` frames every
  ``frame_interval``; the clip spans ``clip_len * frame_interval`` frames (64). Training offset
  ``randint(#frames - 64 + 1)`` (0 when the video is shorter); test offsets
  ``int(i * avg + avg / 2)``, ``avg = (#frames - 64 + 1) / num_clips`` (all 0 when the video is shorter
  than 64 frames); indices past the end wrap around modulo the frame count (``out_of_bound_opt='loop'``).

Training takes a ``numpy.random.Generator`` (``sample_rng`` derives one per (seed, epoch, sample)), so a
sample's clip does not depend on which worker or rank draws it. Training crops (random resized crop,
flip) happen on the device and are not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "CLIP_SPECS",
    "MVIT_CLIP",
    "SWIN_CLIP",
    "SWIN_VAL_CLIP",
    "ClipSpec",
    "eval_clip_indices",
    "eval_crop_boxes",
    "eval_resize_size",
    "eval_views",
    "resize_short_side",
    "sample_rng",
    "train_clip_indices",
]

Style = Literal["pyslowfast", "mmaction"]
TimeBase = Literal["target_fps", "native"]
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ClipSpec:
    """How one clip is cut from a video, and how evaluation views are laid out.

    num_frames: frames per clip fed to the model (MViT 16, Swin 32; mmaction's ``clip_len``).
    sampling_rate: distance between two sampled frames in the time base (MViT 4, Swin 2; mmaction's
        ``frame_interval``).
    time_base: ``"target_fps"`` — the stride is counted in frames of a ``target_fps`` video and rescaled
        by the video's own fps (pySlowFast ``DATA.TARGET_FPS``); ``"native"`` — in the video's own frames.
    style: which official code's placement and rounding rules apply (see the module docstring).
    target_fps: the reference frame rate of the ``"target_fps"`` time base.
    num_clips: temporal clips per video at evaluation (MViT ``TEST.NUM_ENSEMBLE_VIEWS`` 10, Swin 4).
    num_crops: spatial crops per clip at evaluation (MViT 1 centre, Swin 3).
    short_side: the evaluation resize of the frame's short side (MViT 256, Swin 224).
    crop_size: side of the square evaluation crop (224).
    offset_sampling: pySlowFast ``DATA.USE_OFFSET_SAMPLING`` (True in the MViT configs); False gives the
        older ``delta * clip_idx / num_clips`` placement and a second pass placed at the start.
    """

    num_frames: int
    sampling_rate: int
    time_base: TimeBase
    style: Style
    target_fps: float = 30.0
    num_clips: int = 1
    num_crops: int = 1
    short_side: int = 256
    crop_size: int = 224
    offset_sampling: bool = True

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.sampling_rate < 1:
            raise ValueError(
                f"num_frames and sampling_rate must be >= 1, got {self.num_frames}, {self.sampling_rate}"
            )
        if self.time_base not in ("target_fps", "native"):
            raise ValueError(f"time_base must be 'target_fps' or 'native', got {self.time_base!r}")
        if self.style not in ("pyslowfast", "mmaction"):
            raise ValueError(f"style must be 'pyslowfast' or 'mmaction', got {self.style!r}")
        if self.style == "mmaction" and self.time_base != "native":
            raise ValueError("mmaction's SampleFrames counts native frames: use time_base='native'")
        if self.time_base == "target_fps" and not self.target_fps > 0:
            raise ValueError(f"target_fps must be > 0, got {self.target_fps}")
        if self.num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {self.num_clips}")
        if self.num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3 (both official codes), got {self.num_crops}")
        if self.crop_size < 1 or self.short_side < self.crop_size:
            raise ValueError(f"need 1 <= crop_size <= short_side, got {self.crop_size}, {self.short_side}")

    @property
    def frame_interval(self) -> int:
        """mmaction's name for ``sampling_rate``."""
        return self.sampling_rate

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    def clip_size(self, fps: float) -> float:
        """The clip's extent in source frames (pySlowFast's ``clip_size``, mmaction's ``ori_clip_len``):
        ``sampling_rate * num_frames / target_fps * fps`` for the ``target_fps`` time base (that exact
        float expression), ``num_frames * sampling_rate`` for ``native``."""
        if self.time_base == "native":
            return float(self.num_frames * self.sampling_rate)
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"a target_fps time base needs the video's fps > 0, got {fps}")
        return self.sampling_rate * self.num_frames / self.target_fps * fps


# MViT-B 16x4 (pySlowFast): 16 frames at stride 4 on a 30-fps time base; test 10 clips x 1 centre crop,
# short side 256 (DATA.TRAIN_JITTER_SCALES[0]) then a 224 crop.
MVIT_CLIP = ClipSpec(
    num_frames=16,
    sampling_rate=4,
    time_base="target_fps",
    style="pyslowfast",
    target_fps=30.0,
    num_clips=10,
    num_crops=1,
    short_side=256,
    crop_size=224,
    offset_sampling=True,
)
# Video Swin-B (mmaction2): 32 frames at interval 2 in native frames; test 4 clips x 3 crops, short side 224.
SWIN_CLIP = ClipSpec(
    num_frames=32,
    sampling_rate=2,
    time_base="native",
    style="mmaction",
    num_clips=4,
    num_crops=3,
    short_side=224,
    crop_size=224,
)
# Video Swin validation during training (spec §8.2): 1 centre clip, short side 256, centre crop 224.
SWIN_VAL_CLIP = ClipSpec(
    num_frames=32,
    sampling_rate=2,
    time_base="native",
    style="mmaction",
    num_clips=1,
    num_crops=1,
    short_side=256,
    crop_size=224,
)
# Keyed by model family (`stts.registry.family_of`), plus Swin's validation protocol.
CLIP_SPECS: dict[str, ClipSpec] = {"mvit": MVIT_CLIP, "swin": SWIN_CLIP, "swin_val": SWIN_VAL_CLIP}


def sample_rng(seed: int, epoch: int, sample: int) -> np.random.Generator:
    """A generator owned by one (seed, epoch, sample index): the same clip whatever worker or rank
    decodes the sample, a different one every epoch."""
    if min(seed, epoch, sample) < 0:
        raise ValueError(f"seed, epoch and sample must be >= 0, got {seed}, {epoch}, {sample}")
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, sample]))


# ---------------------------------------------------------------------------------------------------------
# temporal sampling


def train_clip_indices(
    num_video_frames: int,
    fps: float,
    spec: ClipSpec,
    rng: np.random.Generator,
    *,
    decode_all: bool = False,
) -> np.ndarray:
    """Frame indices (int64, shape ``(spec.num_frames,)``) of one random training clip.

    ``num_video_frames`` is the video's frame count (pySlowFast: the container's ``stream.frames``;
    mmaction: ``len(decord.VideoReader)``), ``fps`` its average frame rate (unused for a native time base).
    ``decode_all`` (pySlowFast only): the container reported no duration, so pySlowFast decoded the whole
    video and placed the clip once on the full frame list instead of decoding a window.
    """
    n = _check_frames(num_video_frames)
    if spec.style == "mmaction":
        return _mmaction_indices(n, spec, _mmaction_train_offset(n, spec, rng))
    return _pyslowfast_indices(n, fps, spec, -1, 1, rng, decode_all)


def eval_clip_indices(
    num_video_frames: int,
    fps: float,
    spec: ClipSpec,
    clip_idx: int,
    *,
    num_clips: int | None = None,
    decode_all: bool = False,
) -> np.ndarray:
    """Frame indices (int64, shape ``(spec.num_frames,)``) of the ``clip_idx``-th of ``num_clips``
    (default ``spec.num_clips``) evaluation clips. Deterministic. See `train_clip_indices` for the rest."""
    n = _check_frames(num_video_frames)
    num_clips = spec.num_clips if num_clips is None else num_clips
    if num_clips < 1 or not 0 <= clip_idx < num_clips:
        raise ValueError(f"clip_idx must be in [0, {num_clips}), got {clip_idx}")
    if spec.style == "mmaction":
        return _mmaction_indices(n, spec, _mmaction_test_offset(n, spec, clip_idx, num_clips))
    return _pyslowfast_indices(n, fps, spec, clip_idx, num_clips, None, decode_all)


def eval_views(
    spec: ClipSpec, *, num_clips: int | None = None, num_crops: int | None = None
) -> list[tuple[int, int]]:
    """All evaluation views of one video as ``(temporal_index, spatial_index)`` in the official order;
    the temporal index goes to `eval_clip_indices`, the spatial one indexes `eval_crop_boxes`.

    pySlowFast (MViT): view v → (v // crops, v % crops), clip-major. (pySlowFast's own spatial index for a
    single crop is 1, "centre"; here it is 0, the position in `eval_crop_boxes`' one-box list.)
    mmaction (Swin): ``ThreeCrop`` then ``FormatShape`` stack the views crop-major, N_crops x N_clips:
    view v → (v % clips, v // clips). Either way each video's scores are reduced over all its views.
    """
    clips = spec.num_clips if num_clips is None else num_clips
    crops = spec.num_crops if num_crops is None else num_crops
    if clips < 1 or crops not in (1, 3):
        raise ValueError(f"need num_clips >= 1 and num_crops in (1, 3), got {clips}, {crops}")
    if spec.style == "mmaction":
        return [(v % clips, v // clips) for v in range(clips * crops)]
    return [(v // crops, v % crops) for v in range(clips * crops)]


def _check_frames(num_video_frames: int) -> int:
    n = int(num_video_frames)
    if n != num_video_frames or n < 1:
        raise ValueError(f"num_video_frames must be a positive integer, got {num_video_frames}")
    return n


def _pyslowfast_start(
    delta: float, clip_idx: int, num_clips: int, offset_sampling: bool, rng: np.random.Generator | None
) -> float:
    """pySlowFast ``get_start_end_idx``'s start (delta = max(video_size - clip_size, 0))."""
    if clip_idx == -1:
        assert rng is not None
        return float(rng.uniform(0.0, delta))
    if offset_sampling:
        if num_clips == 1:
            return float(math.floor(delta / 2))
        return float(clip_idx * math.floor(delta / (num_clips - 1)))
    return delta * clip_idx / num_clips


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` (default float32) bit for bit as the CPU kernel computes it:
    float32 ends and step, first half ``start + step * i``, second half ``end - step * (steps - 1 - i)``,
    each a fused multiply-add (one rounding). The products are exact in float64 and the sums too for the
    magnitudes of frame indices, so one float64 evaluation rounded to float32 is that single rounding.
    Truncating these values picks the frames, so the float32 rounding matters now and then: from start
    213.6222 over a 25-fps clip the 12th value is 252.0 in float32 and 251.99999 in float64."""
    s = np.float32(start)
    e = np.float32(end)
    if steps == 1:
        return np.array([s], dtype=np.float32)
    step = np.float32(np.float32(e - s) / np.float32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    low = np.float64(step) * i + np.float64(s)
    high = np.float64(e) - np.float64(step) * (steps - 1 - i)
    return np.where(i < steps // 2, low, high).astype(np.float32)


def _temporal_sampling(num_decoded: int, start: float, end: float, num_samples: int) -> np.ndarray:
    """pySlowFast ``temporal_sampling``: linspace, clamp to the decoded frames, truncate (``.long()``)."""
    index = _torch_linspace_f32(start, end, num_samples)
    index = np.clip(index, np.float32(0), np.float32(num_decoded - 1))
    return index.astype(np.int64)


def _pyslowfast_indices(
    n: int,
    fps: float,
    spec: ClipSpec,
    clip_idx: int,
    num_clips: int,
    rng: np.random.Generator | None,
    decode_all: bool,
) -> np.ndarray:
    clip_size = spec.clip_size(fps)
    if decode_all:
        # no duration in the container: one placement on the whole decoded video
        start = _pyslowfast_start(max(n - clip_size, 0.0), clip_idx, num_clips, spec.offset_sampling, rng)
        return _temporal_sampling(n, start, start + clip_size - 1, spec.num_frames)

    # first pass: the window to decode, in frames of the container's count
    start = _pyslowfast_start(max(n - clip_size, 0.0), clip_idx, num_clips, spec.offset_sampling, rng)
    end = start + clip_size - 1
    # frames whose time lies in [start, end], plus the one decoded frame after the window that
    # pyav_decode_stream keeps, cut at the end of the video. Frame i is taken to sit at i * duration /
    # frames (pySlowFast's own assumption); with pts window int(start * pts_per_frame) .. the real decoder
    # agrees exactly for integer starts (evaluation) and integer pts per frame, and for a random start
    # less than one pts tick past an integer keeps one frame earlier (probability 1 / pts_per_frame).
    first = min(math.ceil(start), n - 1)
    last = min(max(math.floor(end), first - 1) + 1, n - 1)
    num_decoded = last - first + 1
    # second pass on the decoded frames: clip_idx 0 of 1 clip → centre with offset sampling, else 0
    start2 = _pyslowfast_start(max(num_decoded - clip_size, 0.0), 0, 1, spec.offset_sampling, None)
    return first + _temporal_sampling(num_decoded, start2, start2 + clip_size - 1, spec.num_frames)


def _mmaction_train_offset(n: int, spec: ClipSpec, rng: np.random.Generator) -> int:
    """``SampleFrames._get_train_clips`` with num_clips = 1 (training always samples one clip):
    avg_interval = n - ori_clip_len + 1; a random offset in [0, avg_interval) when positive, else 0."""
    avg_interval = n - spec.num_frames * spec.sampling_rate + 1
    return int(rng.integers(avg_interval)) if avg_interval > 0 else 0


def _mmaction_test_offset(n: int, spec: ClipSpec, clip_idx: int, num_clips: int) -> int:
    """``SampleFrames._get_test_clips``: int(i * avg + avg / 2), avg = (n - ori_clip_len + 1) / num_clips,
    or 0 for every clip when n <= ori_clip_len - 1."""
    ori_clip_len = spec.num_frames * spec.sampling_rate
    if n <= ori_clip_len - 1:
        return 0
    avg_interval = (n - ori_clip_len + 1) / float(num_clips)
    return int(np.float64(clip_idx) * avg_interval + avg_interval / 2.0)


def _mmaction_indices(n: int, spec: ClipSpec, offset: int) -> np.ndarray:
    """offset + arange(clip_len) * frame_interval, wrapped modulo the frame count ('loop')."""
    inds = offset + np.arange(spec.num_frames, dtype=np.int64) * spec.sampling_rate
    return np.mod(inds, n)


# ---------------------------------------------------------------------------------------------------------
# spatial geometry at evaluation


def resize_short_side(width: int, height: int, size: int, *, style: Style) -> tuple[int, int]:
    """(width, height) after resizing the short side to ``size`` with the aspect ratio kept.

    pySlowFast (``random_short_side_scale_jitter`` with min = max): unchanged when the short side already
    equals ``size``, else the long side becomes ``floor(long / short * size)``.
    mmaction (``Resize(scale=(-1, size))`` → ``mmcv.rescale_size``): factor ``size / short``, each side
    ``int(side * factor + 0.5)``.
    """
    if width < 1 or height < 1 or size < 1:
        raise ValueError(f"width, height and size must be >= 1, got {width}, {height}, {size}")
    if style == "pyslowfast":
        if (width <= height and width == size) or (height <= width and height == size):
            return width, height
        if width < height:
            return size, int(math.floor((float(height) / width) * size))
        return int(math.floor((float(width) / height) * size)), size
    if style == "mmaction":
        factor = min(math.inf / max(height, width), size / min(height, width))
        return int(width * float(factor) + 0.5), int(height * float(factor) + 0.5)
    raise ValueError(f"style must be 'pyslowfast' or 'mmaction', got {style!r}")


def eval_resize_size(width: int, height: int, spec: ClipSpec) -> tuple[int, int]:
    """(width, height) of a ``width`` x ``height`` frame after the evaluation resize (short side →
    ``spec.short_side``)."""
    return resize_short_side(width, height, spec.short_side, style=spec.style)


def eval_crop_boxes(width: int, height: int, spec: ClipSpec, *, num_crops: int | None = None) -> list[Box]:
    """The evaluation crops of a ``width`` x ``height`` frame as ``(x0, y0, x1, y1)`` (end exclusive) in
    the *resized* frame (`eval_resize_size`), in the official order; `eval_views`' spatial index
    indexes this list.

    pySlowFast (``uniform_crop``): centre offset ``ceil((side - crop) / 2)`` on both axes; with 3 crops the
    long axis gets [start, centre, end] (left, centre, right; top, centre, bottom for portrait frames).
    mmaction: 1 crop is ``CenterCrop`` (offset ``(side - crop) // 2``); 3 crops are ``ThreeCrop`` along
    the long side, in its order [left/top 0, right/bottom ``2 * step``, middle ``step``] with
    ``step = (long - crop) // 2`` (so "right" misses the last column when long - crop is odd).
    """
    crops = spec.num_crops if num_crops is None else num_crops
    if crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {crops}")
    w, h = eval_resize_size(width, height, spec)
    c = spec.crop_size
    if w < c or h < c:
        raise ValueError(f"resized frame {w}x{h} is smaller than the {c} crop")

    def box(x: int, y: int) -> Box:
        return (x, y, x + c, y + c)

    if spec.style == "pyslowfast":
        x_centre = int(math.ceil((w - c) / 2))
        y_centre = int(math.ceil((h - c) / 2))
        if crops == 1:
            return [box(x_centre, y_centre)]
        if h > w:
            return [box(x_centre, 0), box(x_centre, y_centre), box(x_centre, h - c)]
        return [box(0, y_centre), box(x_centre, y_centre), box(w - c, y_centre)]

    if crops == 1:
        return [box((w - c) // 2, (h - c) // 2)]
    if h == c:
        step = (w - c) // 2
        return [box(0, 0), box(2 * step, 0), box(step, 0)]
    if w == c:
        step = (h - c) // 2
        return [box(0, 0), box(0, 2 * step), box(0, step)]
    raise ValueError(f"ThreeCrop needs the crop to span one side of the resized {w}x{h} frame (crop {c})")
