"""The evaluation views of one video file (or one shard sample), through the loader's own DALI graph.

For `stts predict` / `stts viz`: a single video, any container or codec PyAV reads, turned into exactly
the views the evaluation loader would give the model for it:

1. probe: frame count and fps with PyAV (`shards.probe.probe`, the function the sharder records them
   with, so a file and its shard sample get the same clips); a shard sample takes them from its ``.i32``;
2. frame indices of every temporal clip: `pipelines.sampling.eval_clip_indices` (the recipe's rules);
3. decode those frames with PyAV (`pipelines.pyav_feed.decode_frames`: one pass, seeking by keyframe);
4. the one augmentation graph, `pipelines.augment.eval_transform`, in a CPU DALI pipeline fed the uint8
   ``FHWC`` clips through an external source: resize, crop(s), normalise → float ``(3, T, crop, crop)``;
5. views stacked in the official order of `pipelines.sampling.eval_views` → ``(V, 3, T, crop, crop)``.

Recipes are the zoo's (`CLIP_SPECS` / `AUG_SPECS`) adapted to the model's input (`recipe_for_model`): a
debug MViT (8 frames, 64² crop) keeps MViT's stride, time base, placement and the 256/224 ratio of resize
to crop (short side 73).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.augment import AugmentSpec, eval_transform
from pipelines.recipes import recipe_for_model
from pipelines.sampling import ClipSpec, eval_clip_indices, eval_crop_boxes, eval_views

__all__ = [
    "VideoReadError",
    "VideoViews",
    "read_shard_sample",
    "recipe_for_model",
    "shard_sample_views",
    "video_file_views",
    "views_from_bytes",
]


class VideoReadError(Exception):
    """A video that cannot be used; the message names the file (or shard sample) and says why."""


@dataclass
class VideoViews:
    """Every evaluation view of one video.

    video: float32 ``(V, 3, T, crop, crop)``, normalised, views in `eval_views` order (``views[v]`` is
        ``(temporal clip, spatial crop)``).
    indices: int64 ``(num_clips, T)``, each temporal clip's frame indices in the video.
    frames: uint8 ``(num_clips, T, H, W, 3)``, the decoded frames of each clip (before resize/crop).
    boxes: the crop boxes ``(x0, y0, x1, y1)`` in the resized frame (`eval_crop_boxes`).
    """

    name: str
    clip: ClipSpec
    aug: AugmentSpec
    num_frames: int
    fps: float
    width: int
    height: int
    views: list[tuple[int, int]]
    video: Any  # torch.Tensor
    indices: np.ndarray
    frames: np.ndarray
    boxes: list[tuple[int, int, int, int]]

    def view_index(self, clip: int, crop: int) -> int:
        return self.views.index((clip, crop))

    def pixels(self, view: int) -> np.ndarray:
        """What the model saw in view ``view`` as uint8 RGB ``(T, crop, crop, 3)``: the resized, cropped
        frames (the normalisation undone, then rounded)."""
        x = self.video[view].detach().cpu().numpy().transpose(1, 2, 3, 0)  # (T, H, W, 3)
        x = x * np.asarray(self.aug.std, np.float32) + np.asarray(self.aug.mean, np.float32)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- DALI

_PIPELINES: dict[tuple, Any] = {}  # (aug spec, crops, batch size) -> built pipeline; reused across files


def _transform_pipeline(aug: AugmentSpec, num_crops: int, batch_size: int):
    """A CPU pipeline: external source ``frames`` (uint8 FHWC clips) → one `eval_transform` per crop."""
    key = (aug, num_crops, batch_size)
    if key not in _PIPELINES:
        from nvidia.dali import fn, pipeline_def, types

        # synchronous: we feed one batch and run once, so no prefetching
        @pipeline_def(
            batch_size=batch_size,
            num_threads=min(4, os.cpu_count() or 1),
            device_id=None,
            prefetch_queue_depth=1,
            exec_async=False,
            exec_pipelined=False,
        )
        def pipe():
            frames = fn.external_source(name="frames", layout="FHWC", dtype=types.UINT8, ndim=4)
            return tuple(eval_transform(frames, aug, c, num_crops) for c in range(num_crops))

        p = pipe()
        p.build()
        _PIPELINES[key] = p
    return _PIPELINES[key]


def _transform(clips: list[np.ndarray], aug: AugmentSpec, num_crops: int) -> list[np.ndarray]:
    """Per crop, float32 ``(num_clips, 3, T, crop, crop)``."""
    pipe = _transform_pipeline(aug, num_crops, len(clips))
    pipe.feed_input("frames", [np.ascontiguousarray(c) for c in clips], layout="FHWC")
    outputs = pipe.run()
    return [np.array(o.as_tensor()) for o in outputs]


# ------------------------------------------------------------------------------------------- entries


def views_from_bytes(
    data: bytes,
    num_frames: int,
    fps: float,
    clip: ClipSpec,
    aug: AugmentSpec,
    *,
    name: str = "<video>",
) -> VideoViews:
    """All views of a video held in memory whose frame count and fps are known (steps 2–5 above)."""
    import torch

    from pipelines.pyav_feed import decode_frames

    if aug.clip != clip:  # the clip spec governs the geometry, as in the loader
        aug = replace(aug, clip=clip)
    indices = np.stack([eval_clip_indices(num_frames, fps, clip, t) for t in range(clip.num_clips)])
    try:
        decoded = decode_frames(data, indices.reshape(-1))
    except Exception as err:  # noqa: BLE001 - PyAV raises many kinds; all mean "this file is unusable"
        raise VideoReadError(f"{name}: cannot decode frames: {' '.join(str(err).split())[:200]}") from None
    frames = decoded.reshape(clip.num_clips, clip.num_frames, *decoded.shape[1:])
    height, width = frames.shape[2:4]
    try:
        boxes = eval_crop_boxes(width, height, clip)
    except ValueError as err:
        raise VideoReadError(f"{name}: {err}") from None
    per_crop = _transform(list(frames), aug, clip.num_crops)
    views = eval_views(clip)
    video = torch.from_numpy(np.stack([per_crop[s][t] for t, s in views]))
    return VideoViews(
        name=name,
        clip=clip,
        aug=aug,
        num_frames=int(num_frames),
        fps=float(fps),
        width=int(width),
        height=int(height),
        views=views,
        video=video,
        indices=indices,
        frames=frames,
        boxes=boxes,
    )


def video_file_views(path: str | os.PathLike, clip: ClipSpec, aug: AugmentSpec) -> VideoViews:
    """All evaluation views of the video file ``path`` (see the module docstring); `VideoReadError`
    naming the file if it cannot be read."""
    from shards.probe import ProbeError, probe

    path = Path(path)
    try:
        info = probe(path, "full")
        data = path.read_bytes()
    except ProbeError as err:
        raise VideoReadError(f"{path}: {err}") from None
    except OSError as err:
        raise VideoReadError(f"{path}: cannot read: {err.strerror}") from None
    return views_from_bytes(data, info.num_frames, info.fps, clip, aug, name=str(path))


@dataclass
class ShardSampleData:
    key: str
    video: bytes
    num_frames: int
    fps: float
    meta: dict  # the sample's .json (empty if it has none)


def read_shard_sample(shards_dir: str | os.PathLike, key: str, split: str = "val") -> ShardSampleData:
    """One sample of a split's shards by key (located through the ``.idx`` files, read by offset)."""
    from shards.format import list_samples, parse_i32, read_manifest, read_member

    shards_dir = Path(shards_dir)
    try:
        splits = read_manifest(shards_dir).get("splits", {})
    except (OSError, ValueError):
        raise VideoReadError(
            f"{shards_dir}: no readable manifest.json (build the shards with `stts shard`)"
        ) from None
    if split not in splits:
        raise VideoReadError(f"{shards_dir}: no split {split!r} (has {', '.join(sorted(splits))})")
    tars = [str(shards_dir / s["name"]) for s in splits[split]["shards"]]
    try:
        samples = {s.key: s for s in list_samples(tars)}
    except (OSError, ValueError) as err:
        raise VideoReadError(f"{shards_dir}: cannot read the {split} index: {err}") from None
    if key not in samples:
        some = ", ".join(sorted(samples)[:3])
        raise VideoReadError(f"{shards_dir}: no sample {key!r} in {split} (keys look like {some})")
    s = samples[key]
    _, n, fps, _, _ = parse_i32(read_member(s.tar, *s.members["i32"]))
    ext = s.video_ext
    meta = json.loads(read_member(s.tar, *s.members["json"])) if "json" in s.members else {}
    return ShardSampleData(key, read_member(s.tar, *s.members[ext]), n, fps, meta)


def shard_sample_views(
    shards_dir: str | os.PathLike, key: str, clip: ClipSpec, aug: AugmentSpec, *, split: str = "val"
) -> tuple[VideoViews, dict]:
    """All evaluation views of shard sample ``key`` (frame count and fps from its ``.i32``, as the loader
    reads them), and the sample's ``.json`` metadata."""
    sample = read_shard_sample(shards_dir, key, split)
    name = f"{shards_dir}:{split}:{key}"
    return views_from_bytes(sample.video, sample.num_frames, sample.fps, clip, aug, name=name), sample.meta
