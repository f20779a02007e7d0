"""Decode clips with PyAV (any codec FFmpeg reads: H.264, HEVC, AV1, VP9, ...) and feed them to DALI.

The third decoder of the one DALI graph (see ``pipelines.dali_decode`` for the other two): Python worker
processes read samples straight from the shard tars (members located by the ``.idx`` files, read by offset,
no tar scan), decode the frames of one clip with PyAV and hand ``(frames, label, key, indices)`` to DALI
through a parallel ``fn.external_source`` (``parallel=True``, ``batch=False``, a picklable callable taking
``SampleInfo``), so the same downstream graph applies whatever decoded the frames.

* ``list_samples`` / ``read_member`` / ``parse_i32``: the shards seen from Python.
* ``decode_frames``: the requested frames (any order, repeats allowed), from memory. It demuxes the packets
  once (no decoding) to map frame indices to timestamps and keyframes, then for each run of requested
  frames seeks to the keyframe before the run's first frame and decodes up to its last frame; a run ends
  where a later keyframe would make seeking cheaper than decoding through.
* ``PyAVClipSource``: the per-sample callable, deterministic in ``SampleInfo``: same epoch layout as
  ``dali_decode.clip_pipeline`` (shard ``i`` of ``k`` reads ``[N*i//k, N*(i+1)//k)`` of the epoch's order,
  padded with its last sample to ``ceil(N/k)`` and to whole batches; keep the first ``samples_per_epoch``
  samples of each epoch). With ``shuffle`` the order is a permutation of all samples drawn from
  ``(seed, epoch)``, the same on every rank, so ranks still split it without overlap.
* Decode faults (``skip_errors=True``, what the loader uses): a sample whose reading or decoding raises
  (a corrupt bitstream that ``--probe fast`` let through, a rotten file) does not end the job: the source
  returns a placeholder of the right rank (zeros, the clip's frame count, the ``.i32`` frame size) and a
  fifth output, ``status``: uint8 bytes, ``b"\\x01"`` for a good sample, ``b"\\x00"`` + the one-line error for
  a bad one (``sample_status`` reads it). The consumer drops the flagged samples (``pipelines.loader``).
  Without ``skip_errors`` the error propagates (``pipe.run()`` raises), as before.
* ``items``: instead of the epoch layout, read exactly these ``(epoch, key)`` once each, in order (padded
  with the last to whole batches): the loader re-decodes with it the good samples of a batch that DALI's
  own decoder lost to a fault.
* ``pyav_clip_graph``: the source as ``(frames, label, key, indices)`` DataNodes inside a caller's
  ``pipeline_def`` (``dali_decode.clip_graph``'s counterpart: the loader adds the augmentation after it);
  ``pyav_clip_pipeline``: that graph alone, the same signature and outputs as
  ``dali_decode.clip_pipeline`` (frames uint8 ``FHWC``, label int32, key as ``source_info``-style uint8
  bytes that ``dali_decode.key_of`` reads, indices int32), on the CPU.

Frame indices come from the same ``frame_indices(SampleMeta)`` callable as ``dali_decode`` (or the centre
clip of ``num_frames`` frames ``stride`` apart). With ``py_start_method="spawn"`` it must be picklable (a
module-level function, a ``functools.partial`` of one, or an instance of a module-level class).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.dali_decode import ClipPipeline, FrameIndexFn, SampleMeta
from shards.format import RankLayout, ShardSample, list_samples, parse_i32

__all__ = [
    "CentreClip",
    "PyAVClipSource",
    "decode_frames",
    "pyav_clip_graph",
    "pyav_clip_pipeline",
    "sample_status",
]

PAD_MODES = ("edge", "none")


# -------------------------------------------------------------------------------------------- decoding


def _check_indices(indices: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
        raise ValueError(f"{what}: need a non-empty 1-D list of ints >= 0, got {idx}")
    return idx.astype(np.int64)


def _rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _decode_sequential(video_bytes: bytes, wanted: set[int], last: int) -> dict[int, np.ndarray]:
    """Fallback: decode from the start, counting frames, up to ``last``."""
    import av

    got: dict[int, np.ndarray] = {}
    with av.open(io.BytesIO(video_bytes)) as c:
        stream = c.streams.video[0]
        for i, frame in enumerate(c.decode(stream)):
            if i in wanted:
                got[i] = _rgb(frame)
            if i >= last:
                break
    return got


def _decode_all(video_bytes: bytes) -> list[np.ndarray]:
    import av

    with av.open(io.BytesIO(video_bytes)) as c:
        return [_rgb(f) for f in c.decode(c.streams.video[0])]


SEEK_SKIP = 4  # skip at least this many unwanted frames by seeking rather than decoding through (a heuristic)


def _runs(wanted: list[int], keyframe_before: list[int]) -> list[list[int]]:
    """Split sorted frame indices into decode runs: a new run (a seek) where the next frame's keyframe
    lies at least ``SEEK_SKIP`` frames after the previous wanted frame, so a seek skips that many."""
    runs = [[wanted[0]]]
    for i in wanted[1:]:
        if keyframe_before[i] - runs[-1][-1] > SEEK_SKIP:
            runs.append([i])
        else:
            runs[-1].append(i)
    return runs


def _nonreference_probe(stream):
    """``probe(packet bytes) -> bool``: whether a packet is a picture no other picture references (its
    decoding can be left out when it is not wanted), for H.264 in length-prefixed form (MP4, MKV: ``avcC``
    extradata); None for other codecs and forms (nothing is left out). A picture's slices share their
    ``nal_ref_idc``, so the first slice NAL unit decides."""
    ctx = stream.codec_context
    extra = bytes(ctx.extradata or b"")
    if ctx.name != "h264" or len(extra) < 7 or extra[0] != 1:
        return None
    size = (extra[4] & 3) + 1  # lengthSizeMinusOne + 1

    def probe(data) -> bool:
        i, n = 0, len(data)
        while i + size < n:
            length = int.from_bytes(data[i : i + size], "big")
            header = data[i + size]
            if header & 0x1F in (1, 5):  # a coded slice (non-IDR, IDR)
                return header >> 5 == 0  # nal_ref_idc (forbidden_zero_bit is 0)
            i += size + length
        return False

    return probe


def _demux_table(container, stream, need: int) -> list[tuple[int | None, bool]]:
    """``(pts, keyframe)`` of the video packets in decode order, read until the ``need`` frames of
    smallest timestamp are known for certain: once a packet's ``dts`` exceeds the ``need``-th smallest
    ``pts`` seen, no later packet can come before it (decode timestamps never decrease and no frame is
    shown before it is decoded). Without usable ``dts`` (absent, decreasing, or after ``pts``) every
    packet is read. A clip in the middle of a video then demuxes half of it."""
    packets: list[tuple[int | None, bool]] = []
    early = True
    last_dts = None
    check_at = need
    for p in container.demux(stream):
        if not p.size or p.is_discard:
            continue
        pts = p.pts
        packets.append((pts, p.is_keyframe))
        if not early:
            continue
        dts = p.dts
        if pts is None or dts is None or dts > pts or (last_dts is not None and dts < last_dts):
            early = False
            continue
        last_dts = dts
        if len(packets) >= check_at:
            if dts > sorted(q for q, _ in packets)[need - 1]:
                break
            check_at = len(packets) + 8  # sort again a few packets later
    return packets


def decode_frames(
    video_bytes: bytes,
    indices: Sequence[int] | np.ndarray,
    *,
    pad_mode: str = "edge",
    threads: int = 0,
    stats: dict | None = None,
) -> np.ndarray:
    """Frames ``indices`` (0-based, presentation order) of a video held in memory, uint8 ``(T, H, W, 3)`` RGB.

    Any order, repeats allowed; returned in the order asked. Indices past the last frame repeat it with
    ``pad_mode="edge"`` (DALI's ``pad_mode`` too) and raise ``IndexError`` with ``"none"``. Equal to
    decoding the whole video with PyAV and indexing: frame ``i`` is the packet with the ``i``-th smallest
    timestamp, and only runs starting at a keyframe are decoded, and of those only the pictures that are
    asked for or referenced: an H.264 picture no other picture references (``nal_ref_idc`` 0, e.g. the
    B-frames of ``stts shard --reencode``) is not decoded unless asked for. ``threads``: FFmpeg's decoder
    threads (0: its own choice; 1 where processes are the parallelism, as in the loader's workers).
    ``stats``: if given, ``"decoded"`` and ``"skipped"`` packets are added to it.
    """
    import av

    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    idx = _check_indices(indices, "decode_frames")
    with av.open(io.BytesIO(video_bytes)) as c:
        stream = c.streams.video[0]
        if threads:
            stream.thread_count = threads
        packets = _demux_table(c, stream, int(idx.max()) + 1)
        if not packets:
            raise ValueError("no video packets")
        if any(pts is None for pts, _ in packets):
            n = None  # no timestamps to seek by: count frames while decoding
        else:
            packets.sort()
            pts = [p for p, _ in packets]
            n = len(pts)
            if len(set(pts)) != n:
                n = None
        if n is not None:
            idx = _clamp(idx, n, pad_mode)
            wanted = sorted(set(idx.tolist()))
            keyframe_before, k = [], 0
            for i, (_, key) in enumerate(packets):
                k = i if key else k
                keyframe_before.append(k)
            index_of = {p: i for i, p in enumerate(pts)}
            got: dict[int, np.ndarray] = {}
            droppable = _nonreference_probe(stream)
            decoded = skipped = 0
            for run in _runs(wanted, keyframe_before):
                c.seek(pts[keyframe_before[run[0]]], stream=stream, backward=True, any_frame=False)
                position = -1  # the last frame decoded since the seek
                todo = set(run)
                done = False
                for packet in c.demux(stream):
                    if (
                        droppable is not None
                        and packet.size
                        and index_of.get(packet.pts, -1) not in todo
                        and droppable(memoryview(packet))
                    ):  # no other picture needs it, nor do we
                        skipped += 1
                        continue
                    decoded += 1
                    for frame in packet.decode():
                        i = index_of.get(frame.pts)
                        if i is None or (position < 0 and i > run[0]):
                            done = True  # a timestamp we cannot place, or the seek landed past the run
                            break
                        position = i
                        if i in todo:
                            got[i] = _rgb(frame)
                            todo.discard(i)
                        if i >= run[-1]:
                            done = True
                            break
                    if done:
                        break
                if todo:  # a timestamp we cannot place or a bad seek: decode from the start instead
                    got.update(_decode_sequential(video_bytes, todo, max(todo)))
                    if todo - got.keys():
                        raise RuntimeError(f"could not decode frames {sorted(todo - got.keys())}")
            if stats is not None:
                stats["decoded"] = stats.get("decoded", 0) + decoded
                stats["skipped"] = stats.get("skipped", 0) + skipped
            return np.stack([got[i] for i in idx.tolist()])
    # no usable timestamps: decode the whole video, counting frames
    frames = _decode_all(video_bytes)
    return np.stack([frames[i] for i in _clamp(idx, len(frames), pad_mode).tolist()])


def _clamp(idx: np.ndarray, n: int, pad_mode: str) -> np.ndarray:
    if idx.max() >= n:
        if pad_mode == "none":
            raise IndexError(f"frame {int(idx.max())} asked of a {n}-frame video (pad_mode='none')")
        idx = np.minimum(idx, n - 1)
    return idx


# ---------------------------------------------------------------------------------------- DALI source


@dataclass(frozen=True)
class CentreClip:
    """``dali_decode``'s in-graph clip as a ``frame_indices`` callable: ``num_frames`` frames ``stride``
    apart, centred, clamped to the video (picklable, so spawned workers can use it)."""

    num_frames: int = 16
    stride: int = 4

    def __call__(self, meta: SampleMeta) -> np.ndarray:
        n = meta.num_frames
        span = self.stride * (self.num_frames - 1) + 1
        start = max((n - span) // 2, 0)
        return np.clip(start + self.stride * np.arange(self.num_frames), 0, max(n - 1, 0)).astype(np.int32)


class PyAVClipSource:
    """Per-sample source for DALI's parallel external source: ``info -> (frames, label, key, indices)``.

    The sample read at pipeline iteration ``it``, batch slot ``j`` is fixed by ``(it, j)`` alone (see the
    module docstring for the epoch layout), so any worker may compute any sample. Picklable: the sample list
    and settings travel to spawned workers; open tar files are per process and not pickled.
    """

    def __init__(
        self,
        tars: Sequence[str | Path],
        idxs: Sequence[str | Path],
        *,
        batch_size: int,
        frame_indices: FrameIndexFn | None = None,
        num_frames: int = 16,
        stride: int = 4,
        seed: int = 0,
        shuffle: bool = False,
        shard_id: int = 0,
        num_shards: int = 1,
        pad_mode: str = "edge",
        skip_errors: bool = False,
        items: Sequence[tuple[int, str]] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_shards < 1 or not 0 <= shard_id < num_shards:
            raise ValueError(f"need 0 <= shard_id < num_shards, got {shard_id}, {num_shards}")
        if num_frames < 1 or stride < 1:
            raise ValueError(f"num_frames and stride must be >= 1, got {num_frames}, {stride}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.samples = list_samples(tars, idxs)
        self.batch_size = batch_size
        self.frame_indices = CentreClip(num_frames, stride) if frame_indices is None else frame_indices
        self.seed = seed
        self.shuffle = shuffle
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.pad_mode = pad_mode
        self.layout = RankLayout(len(self.samples), shard_id, num_shards)
        if self.layout.samples == 0:
            raise ValueError(f"shard {shard_id} of {num_shards} gets no sample of {len(self.samples)}")
        self.skip_errors = skip_errors
        self.items: list[tuple[int, ShardSample]] | None = None
        if items is not None:
            by_key = {s.key: s for s in self.samples}
            missing = [k for _, k in items if k not in by_key]
            if not items or missing:
                raise ValueError(
                    f"items: need at least one, all keys of these shards (unknown: {missing[:3]})"
                )
            self.items = [(int(e), by_key[k]) for e, k in items]
            self.layout = RankLayout(len(self.items))  # read once, in the order given
        self.samples_per_epoch = self.layout.samples
        self.iterations_per_epoch = self.layout.iterations(batch_size)
        self._files: dict[str, object] = {}
        self._order: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"] = {}
        state["_order"] = None
        return state

    def order(self, epoch: int) -> np.ndarray:
        """All samples (indices into ``samples``) in ``epoch``'s order, the same on every rank (kept for
        the last epoch asked: drawing a permutation of a Kinetics-size list costs milliseconds)."""
        cached = self._order
        if cached is not None and cached[0] == epoch:
            return cached[1]
        everything = np.arange(len(self.samples))
        if self.shuffle:
            everything = np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))
        self._order = (epoch, everything)
        return everything

    def locate(self, iteration: int, idx_in_batch: int) -> tuple[int, ShardSample]:
        """``(epoch, sample)`` read at pipeline ``iteration``, batch slot ``idx_in_batch``."""
        epoch, position = self.layout.locate(iteration, idx_in_batch, self.batch_size)
        if self.items is not None:
            return self.items[position]
        return epoch, self.samples[int(self.order(epoch)[position])]

    def _read(self, tar: str, offset: int, size: int) -> bytes:
        f = self._files.get(tar)
        if f is None or getattr(f, "pid", None) != os.getpid():
            f = self._files[tar] = _OpenFile(tar)
        return f.read(offset, size)

    def meta(self, sample: ShardSample, epoch: int) -> SampleMeta:
        label, n, fps, w, h = parse_i32(self._read(sample.tar, *sample.members["i32"]))
        return SampleMeta(sample.key, label, n, fps, w, h, epoch)

    def clip(self, sample: ShardSample, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        meta = self.meta(sample, epoch)
        indices = _check_indices(self.frame_indices(meta), f"frame_indices({meta.key})").astype(np.int32)
        ext = sample.video.partition(".")[2]
        frames = decode_frames(
            self._read(sample.tar, *sample.members[ext]), indices, pad_mode=self.pad_mode, threads=1
        )
        key = np.frombuffer(sample.source_info.encode(), dtype=np.uint8).copy()
        return frames, np.array(meta.label, dtype=np.int32), key, indices

    def __call__(self, info) -> tuple[np.ndarray, ...]:
        _tune_worker_malloc()
        epoch, sample = self.locate(info.iteration, info.idx_in_batch)
        if not self.skip_errors:
            return self.clip(sample, epoch)
        try:
            return (*self.clip(sample, epoch), np.frombuffer(b"\x01", np.uint8).copy())
        except Exception as e:  # noqa: BLE001 - any fault of one sample: flag it, keep the job going
            return self._placeholder(sample, epoch, e)

    def _placeholder(self, sample: ShardSample, epoch: int, error: Exception) -> tuple[np.ndarray, ...]:
        """Zeros shaped like the sample's clip, its label and key, and the error as ``status``."""
        label, width, height = 0, 64, 64
        frames = getattr(getattr(self.frame_indices, "spec", None), "num_frames", None)
        frames = frames or getattr(self.frame_indices, "num_frames", None) or 16
        try:
            meta = self.meta(sample, epoch)
            label, width, height = meta.label, max(meta.width, 2), max(meta.height, 2)
            frames = len(_check_indices(self.frame_indices(meta), "frame_indices"))
        except Exception:  # noqa: BLE001, S110 - the defaults above stand
            pass
        message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        key = np.frombuffer(sample.source_info.encode(), dtype=np.uint8).copy()
        return (
            np.zeros((frames, height, width, 3), np.uint8),
            np.array(label, dtype=np.int32),
            key,
            np.zeros(frames, np.int32),
            np.frombuffer(b"\x00" + message.encode(), np.uint8).copy(),
        )


_malloc_tuned_pid: int | None = None
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def _tune_worker_malloc() -> None:
    """In a loader worker process (once): keep freed memory in glibc's heap instead of handing it back to
    the kernel. Each clip opens a fresh decoder whose frame buffers (and the RGB arrays) are a few hundred
    KB, above glibc's mmap threshold: every clip then paid its page faults again, about a third of the
    decoding time (measured: 12-15 ms of system time per 16-frame VP9 clip, 3-5 ms with this). Only in
    worker processes (the user's own process is left alone); a no-op without glibc."""
    global _malloc_tuned_pid
    pid = os.getpid()
    if _malloc_tuned_pid == pid:
        return
    _malloc_tuned_pid = pid
    import multiprocessing

    if multiprocessing.parent_process() is None:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):  # not glibc
        pass


def sample_status(status: bytes | np.ndarray) -> str | None:
    """A ``status`` output read back: ``None`` for a good sample, else the error message."""
    raw = bytes(np.asarray(status, dtype=np.uint8))
    if raw[:1] == b"\x01":
        return None
    return raw[1:].decode(errors="replace") or "decode failed"


class _OpenFile:
    """A tar opened once per process (a forked worker must not share its parent's file offset)."""

    def __init__(self, path: str) -> None:
        self.pid = os.getpid()
        self.file = open(path, "rb")  # noqa: SIM115 - kept open for the worker's life

    def read(self, offset: int, size: int) -> bytes:
        data = os.pread(self.file.fileno(), size, offset)
        if len(data) != size:
            raise ValueError(f"{self.file.name}: short read at {offset} ({len(data)} of {size} bytes)")
        return data


def pyav_clip_graph(source: PyAVClipSource, prefetch_queue_depth: int = 2):
    """``source``'s clips as ``(frames, label, key, indices)`` DataNodes, to be called inside the caller's
    ``pipeline_def``, which must have ``source.batch_size`` as its batch size and set ``py_num_workers`` and
    ``py_start_method`` (the parallel external source runs ``source`` in those worker processes). With
    ``source.skip_errors``, a fifth node: ``status`` (`sample_status` reads it)."""
    from nvidia.dali import fn, types
    from nvidia.dali.pipeline import Pipeline

    pipe = Pipeline.current()
    if pipe is None:
        raise RuntimeError("pyav_clip_graph must be called while a pipeline is being defined (pipeline_def)")
    if pipe.max_batch_size != source.batch_size:
        raise ValueError(f"pipeline batch size {pipe.max_batch_size} != source's {source.batch_size}")
    extra = 1 if source.skip_errors else 0
    return tuple(
        fn.external_source(
            source=source,
            num_outputs=4 + extra,
            batch=False,
            parallel=True,
            prefetch_queue_depth=prefetch_queue_depth,
            dtype=[types.UINT8, types.INT32, types.UINT8, types.INT32] + [types.UINT8] * extra,
            ndim=[4, 0, 1, 1] + [1] * extra,
            layout=["FHWC", "", "", ""] + [""] * extra,
        )
    )


def pyav_clip_pipeline(
    tars: Sequence[str | Path],
    idxs: Sequence[str | Path],
    *,
    batch_size: int,
    num_frames: int = 16,
    stride: int = 4,
    frame_indices: FrameIndexFn | None = None,
    device_id: int | None = None,
    num_threads: int = 2,
    seed: int = 0,
    shard_id: int = 0,
    num_shards: int = 1,
    random_shuffle: bool = False,
    pad_mode: str = "edge",
    prefetch_queue_depth: int = 2,
    py_num_workers: int = 2,
    py_start_method: str = "spawn",
) -> ClipPipeline:
    """``dali_decode.clip_pipeline`` with PyAV decoding in ``py_num_workers`` worker processes: a
    `PyAVClipSource` through `pyav_clip_graph`, alone in a pipeline.

    Outputs per sample, on the CPU: frames uint8 ``(T, H, W, 3)`` (``FHWC``), label int32, key (the
    ``source_info`` string as uint8; ``dali_decode.key_of`` reads it), indices int32. ``random_shuffle``
    draws a permutation per epoch from ``seed`` (no shuffle buffer, so no ``initial_fill``). ``device_id``
    is only for a downstream graph that moves the frames to the GPU.
    """
    from nvidia.dali import pipeline_def

    check_start_method(py_start_method)
    source = PyAVClipSource(
        tars,
        idxs,
        batch_size=batch_size,
        frame_indices=frame_indices,
        num_frames=num_frames,
        stride=stride,
        seed=seed,
        shuffle=random_shuffle,
        shard_id=shard_id,
        num_shards=num_shards,
        pad_mode=pad_mode,
    )

    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=seed,
        prefetch_queue_depth=prefetch_queue_depth,
        py_num_workers=py_num_workers,
        py_start_method=py_start_method,
    )
    def pipe():
        return pyav_clip_graph(source, prefetch_queue_depth)

    p = pipe()
    p.build()
    return ClipPipeline(p, source.samples_per_epoch, source.iterations_per_epoch)


def check_start_method(py_start_method: str) -> None:
    if py_start_method not in ("spawn", "fork"):
        raise ValueError(f"py_start_method must be 'spawn' or 'fork', got {py_start_method!r}")
