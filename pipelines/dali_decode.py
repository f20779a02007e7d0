"""Decode clips (chosen frame indices) from the shards inside one DALI pipeline, with label and key.

One graph (`clip_graph`, called inside a caller's ``pipeline_def``; `clip_pipeline` builds it alone) reads
the WebDataset shards (``fn.readers.webdataset`` with our ``.idx`` files), takes the
sample's numbers from its ``.i32`` member (label, num_frames, fps*1000, width, height; see
``shards.build.I32_FIELDS``) and decodes only the frames of one clip with ``fn.decoders.video(frames=...)``,
a per-sample argument input. Which frames, two ways:

* in the graph (``frame_indices=None``): the centre clip of ``num_frames`` frames ``stride`` apart,
  indices ``clamp(start + stride * arange(num_frames), 0, n - 1)`` with ``start = max((n - span) // 2, 0)``,
  ``span = stride * (num_frames - 1) + 1``; DALI arithmetic only, no Python in the loop;
* in Python (``frame_indices=f``): ``fn.python_function`` calls ``f(SampleMeta)`` once per sample with that
  sample's own key, numbers and epoch, so indices can never be attached to the wrong sample whatever the
  shuffling, sharding or prefetching (an external source keyed by sample order could be). ``f`` may return
  any non-negative indices, in any order, repeated or not, any count; ``pipelines.sampling`` gives the
  official ones (``train_clip_indices`` with ``sample_rng(seed, epoch, key)``, ``eval_clip_indices``).

Measured with DALI 2.4 on CPU (VP9 224x224, 300 frames, GOP 16, one thread): a 16x4 clip costs 17 ms at
the start of the video and ~50-70 ms at frame 200 (the decoder's cost grows with the position of the
last frame asked for: it does not seek to the keyframe before it, MJPEG too), the whole video 148 ms.
Indices past the end follow ``pad_mode`` (``"edge"`` repeats the last frame; ``"none"`` is an error with
``frames``). The CPU decoder reads VP8, VP9 and MJPEG only; ``device="gpu"`` swaps in the ``"mixed"``
decoder (NVDEC: H.264, HEVC, AV1 too) with the same graph, untested here.

Epochs: the reader pads (``pad_last_batch=True``, ``stick_to_shard=True``): each of ``k`` shards reads
``ceil(N / k)`` samples per epoch, its own ``shard_samples`` distinct ones and then its last one repeated,
padded to whole batches, so an epoch is exactly ``iterations_per_epoch`` pipeline runs and a sample's epoch
is the iteration divided by that. Keep the first ``samples_per_epoch`` samples of each epoch (what DALI's
iterators do given ``reader_name``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.format import VIDEO_EXTS, RankLayout, index_count, parse_i32

__all__ = [
    "READER",
    "VIDEO_EXT",
    "ClipPipeline",
    "SampleMeta",
    "check_reader",
    "clip_graph",
    "clip_layout",
    "clip_pipeline",
    "key_of",
    "shard_samples",
    "total_samples",
]

VIDEO_EXT = ";".join(VIDEO_EXTS)  # the reader's ext list
READER = "reader"
DECODER_DEVICE = {"cpu": "cpu", "gpu": "mixed"}


@dataclass(frozen=True)
class SampleMeta:
    """What ``frame_indices`` sees of one sample: its key, its ``.i32`` numbers and the reading epoch."""

    key: str
    label: int
    num_frames: int
    fps: float
    width: int
    height: int
    epoch: int


FrameIndexFn = Callable[[SampleMeta], "Sequence[int] | np.ndarray"]


def key_of(source_info: bytes | np.ndarray) -> str:
    """The sample key from DALI's ``source_info`` (``'dir/name.tar:offset:KEY.ext'``; keys have no dots)."""
    text = bytes(np.asarray(source_info, dtype=np.uint8)).decode()
    member = text.rsplit(":", 1)[1]
    return member.partition(".")[0]


def total_samples(idx_paths: Sequence[str | Path]) -> int:
    """Samples in the shards, from the ``.idx`` headers."""
    return sum(index_count(p) for p in idx_paths)


def shard_samples(idx_paths: Sequence[str | Path], shard_id: int = 0, num_shards: int = 1) -> int:
    """Distinct samples one reader shard reads per epoch (`shards.format.RankLayout`, DALI's own split)."""
    return RankLayout(total_samples(idx_paths), shard_id, num_shards).samples


def _meta(i32: np.ndarray, source_info: np.ndarray, epoch: np.ndarray) -> SampleMeta:
    label, n, fps, w, h = parse_i32(np.asarray(i32).tobytes())
    return SampleMeta(key_of(source_info), label, n, fps, w, h, int(epoch))


def _python_indices(
    fn_: FrameIndexFn, iterations: int, journal: dict | None = None
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    def call(i32: np.ndarray, source_info: np.ndarray, iteration: np.ndarray) -> np.ndarray:
        it = int(iteration)
        meta = _meta(i32, source_info, it // iterations)
        idx = np.asarray(fn_(meta))
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
            raise ValueError(f"frame_indices({meta.key}): need a non-empty 1-D list of ints >= 0, got {idx}")
        idx = idx.astype(np.int32)
        if journal is not None:  # what the decoder is about to be asked, by pipeline iteration
            journal.setdefault(it, []).append((meta.key, idx))
        return idx

    return call


@dataclass(frozen=True)
class ClipPipeline:
    """A built pipeline whose ``run()`` gives ``(frames, label, key, indices)`` per sample.

    frames: uint8 ``(T, H, W, 3)`` (layout ``FHWC``); label: int32 scalar; key: ``source_info`` as uint8
    bytes (``key_of`` reads it); indices: the int32 frame indices asked of the decoder.
    """

    pipe: object
    samples_per_epoch: int
    iterations_per_epoch: int


def clip_layout(
    idxs: Sequence[str | Path], batch_size: int, shard_id: int = 0, num_shards: int = 1
) -> tuple[int, int, int]:
    """``(samples_per_epoch, padded, iterations_per_epoch)`` of reader shard ``shard_id`` of ``num_shards``
    with batches of ``batch_size``: its distinct samples, what it reads per epoch (``ceil(N / k)``, padded
    with its last sample) and the pipeline runs per epoch (see the module docstring)."""
    layout = RankLayout(total_samples(idxs), shard_id, num_shards)
    return layout.samples, layout.padded, layout.iterations(batch_size)


def clip_graph(
    tars: Sequence[str | Path],
    idxs: Sequence[str | Path],
    *,
    num_frames: int = 16,
    stride: int = 4,
    frame_indices: FrameIndexFn | None = None,
    device: str = "cpu",
    shard_id: int = 0,
    num_shards: int = 1,
    random_shuffle: bool = False,
    initial_fill: int = 256,
    pad_mode: str = "edge",
    journal: dict | None = None,
):
    """The clip-decoding graph, to be called inside the caller's ``pipeline_def`` (its batch size sets the
    epoch layout): ``(frames, label, key, indices)`` DataNodes, as `ClipPipeline` describes.

    ``device="gpu"`` decodes with the ``"mixed"`` backend (the pipeline then needs a ``device_id``) and
    gives gpu frames; label, key and indices are cpu. The reader is named `READER`.

    ``journal`` (with ``frame_indices`` only): a dict that receives, for every pipeline iteration, the
    ``(key, indices)`` of each sample about to be decoded (``journal[iteration]``, a list); the caller
    prunes it. It names the samples of a batch whose decoding failed (`pipe.run()` raised), whose outputs
    never come back (see ``pipelines.loader``).
    """
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath
    from nvidia.dali.pipeline import Pipeline

    _check_args(tars, idxs, num_frames, stride, device)
    pipe = Pipeline.current()
    if pipe is None:
        raise RuntimeError("clip_graph must be called while a pipeline is being defined (pipeline_def)")
    _, _, iterations = clip_layout(idxs, pipe.max_batch_size, shard_id, num_shards)
    python_indices = None if frame_indices is None else _python_indices(frame_indices, iterations, journal)

    def iteration_of(info) -> np.ndarray:  # SampleInfo: the pipeline iteration this sample is read in
        return np.array(info.iteration, dtype=np.int32)

    video, i32 = fn.readers.webdataset(
        paths=[str(t) for t in tars],
        index_paths=[str(i) for i in idxs],
        ext=[VIDEO_EXT, "i32"],
        missing_component_behavior="error",
        shard_id=shard_id,
        num_shards=num_shards,
        random_shuffle=random_shuffle,
        initial_fill=initial_fill,
        pad_last_batch=True,
        stick_to_shard=True,
        name=READER,
    )
    key = fn.get_property(video, key="source_info")
    meta = fn.reinterpret(i32, dtype=types.INT32, shape=[5])  # little-endian hosts only
    label = meta[0]
    if python_indices is None:
        n = meta[1]
        span = stride * (num_frames - 1) + 1
        start = dmath.max((n - span) // 2, 0)
        offsets = types.Constant(np.arange(num_frames, dtype=np.int32) * stride)
        indices = fn.cast(dmath.clamp(start + offsets, 0, n - 1), dtype=types.INT32)
    else:
        iteration = fn.external_source(source=iteration_of, batch=False, dtype=types.INT32, ndim=0)
        indices = fn.python_function(i32, key, iteration, function=python_indices)
    frames = fn.decoders.video(video, device=DECODER_DEVICE[device], frames=indices, pad_mode=pad_mode)
    return frames, label, key, indices


def _check_args(tars, idxs, num_frames: int, stride: int, device: str) -> None:
    if device not in DECODER_DEVICE:
        raise ValueError(f"device must be one of {sorted(DECODER_DEVICE)}, got {device!r}")
    if len(tars) != len(idxs) or not tars:
        raise ValueError("need one .idx per tar, and at least one tar")
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames}, {stride}")


def check_reader(pipe, idxs: Sequence[str | Path], num_shards: int) -> None:
    """Check a built pipeline's `READER` sees the samples and padding `clip_layout` expects."""
    layout = RankLayout(total_samples(idxs), 0, num_shards)
    meta = pipe.reader_meta(READER)
    if meta["epoch_size"] != layout.total or meta["epoch_size_padded"] != layout.padded * num_shards:
        raise RuntimeError(
            f"reader sees {meta}, expected {layout.total} samples padded to {layout.padded} per shard"
        )


def clip_pipeline(
    tars: Sequence[str | Path],
    idxs: Sequence[str | Path],
    *,
    batch_size: int,
    num_frames: int = 16,
    stride: int = 4,
    frame_indices: FrameIndexFn | None = None,
    device: str = "cpu",
    device_id: int | None = None,
    num_threads: int = 2,
    seed: int = 0,
    shard_id: int = 0,
    num_shards: int = 1,
    random_shuffle: bool = False,
    initial_fill: int = 256,
    pad_mode: str = "edge",
    prefetch_queue_depth: int = 2,
) -> ClipPipeline:
    """Build the clip-decoding pipeline over shard tars and their ``.idx`` files (see the module docstring):
    `clip_graph` alone in a pipeline.

    ``device="cpu"`` decodes on the CPU (``device_id=None`` is fine); ``device="gpu"`` decodes with the
    ``"mixed"`` backend and needs ``device_id``. ``num_frames``/``stride`` are used only without
    ``frame_indices``.
    """
    from nvidia.dali import pipeline_def

    _check_args(tars, idxs, num_frames, stride, device)
    if device == "gpu" and device_id is None:
        raise ValueError("device='gpu' needs a device_id")
    samples, _, iterations = clip_layout(idxs, batch_size, shard_id, num_shards)

    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=seed,
        prefetch_queue_depth=prefetch_queue_depth,
    )
    def pipe():
        return clip_graph(
            tars,
            idxs,
            num_frames=num_frames,
            stride=stride,
            frame_indices=frame_indices,
            device=device,
            shard_id=shard_id,
            num_shards=num_shards,
            random_shuffle=random_shuffle,
            initial_fill=initial_fill,
            pad_mode=pad_mode,
        )

    p = pipe()
    p.build()
    check_reader(p, idxs, num_shards)
    return ClipPipeline(p, samples, iterations)
