"""Where every decoder's clips come from: one source of samples, in DALI's parallel worker processes.

`ClipSource` is a per-sample callable for ``fn.external_source(parallel=True, batch=False)``: given DALI's
``SampleInfo`` it decides which sample is read (deterministically, from the iteration and batch slot
alone, so any worker may compute any sample), reads its members straight from the shard tar by the
offsets of the ``.idx`` file, asks ``frame_indices(SampleMeta)`` which frames the clip shows, and hands
the decoder's own preparation of them to DALI (`pipelines.decoders.Decoder.prepare`: the decoded frames
for PyAV, the bytes of the clip's packets for DALI's decoders). Worker processes do this outside the
training process's interpreter lock, in parallel.

* Epochs and ranks (`shards.format.RankLayout`): rank ``r`` of ``k`` reads the positions
  ``[N*r//k, N*(r+1)//k)`` of the epoch's order, padded with its last sample to ``ceil(N/k)`` and to
  whole batches; an epoch is exactly ``iterations_per_epoch`` pipeline runs, a sample's reading epoch is
  its iteration divided by that, and the first ``samples_per_epoch`` samples of each epoch are the
  distinct ones. With ``shuffle`` the order is a permutation of all samples drawn from
  ``(seed, epoch)``, the same on every rank, so the ranks split it without overlap; without, the shards'
  order.
* Outputs per sample (`SampleOut`), on the CPU: ``payload`` (the decoder's, see its ``payload`` spec),
  ``label`` int32, ``key`` (the ``source_info`` string ``'tar:offset:member'`` as uint8; `key_of` reads
  it), ``indices`` int32 (the clip's frame indices in the video; with ``video_indices`` only),
  ``decode_indices`` int32 (the frames the decoder's graph takes from an ``indexed`` payload, in the
  payload's own numbering), ``decoded`` int32 (frames the decoder decodes for this clip: the loader's
  frames-per-clip statistic) and, with ``skip_errors``, ``status``.
* Faults (``skip_errors=True``, what the loader uses): a sample whose reading or preparation raises (a
  corrupt container or bitstream that ``--probe fast`` let in, a rotten file) does not end the job: the
  source returns a placeholder of the right rank and ``status``: ``b"\\x01"`` for a good sample,
  ``b"\\x00"`` + the one-line error for a bad one (`sample_status` reads it). Without it the error
  propagates (``pipe.run()`` raises).
* ``faults`` (`FaultMarks`): samples already known to be faulty (the loader marks each sample it
  skips): the source hands their placeholder and a flag without reading them again, so a corrupt sample
  costs DALI's decoders one lost run per loader, not one per run it falls in.
* ``items``: instead of the epoch layout, exactly these ``(epoch, key)`` once each, in order (padded with
  the last to whole batches): how the loader decodes again the good samples of a batch that DALI's
  decoder lost to another sample's fault.

`clip_source_graph` puts the source into a caller's ``pipeline_def``; `clip_pipeline` builds source +
decoder alone (``(frames, label, key, indices, decoded)`` per sample).
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from pipelines.sampling import ClipSpec, eval_clip_indices, sample_rng, train_clip_indices
from shards.format import RankLayout, ShardSample, list_samples, parse_i32

if TYPE_CHECKING:
    from pipelines.decoders import Decoder

__all__ = [
    "CentreClip",
    "FaultMarks",
    "ClipPipeline",
    "ClipSource",
    "EvalClipIndices",
    "SampleMeta",
    "SampleOut",
    "TrainClipIndices",
    "check_indices",
    "clip_pipeline",
    "clip_source_graph",
    "key_of",
    "sample_id",
    "sample_status",
]

PAD_MODES = ("edge", "none")


# ------------------------------------------------------------------------------------ frame indices


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


def sample_id(key: str) -> int:
    """A sample's stable id for `sample_rng`: ``crc32`` of its key (the same on every rank and worker)."""
    return zlib.crc32(key.encode())


@dataclass(frozen=True)
class TrainClipIndices:
    """``frame_indices`` for training: one random clip per (seed, epoch, sample). Picklable."""

    spec: ClipSpec
    seed: int
    epoch: int

    def __call__(self, meta: SampleMeta) -> np.ndarray:
        rng = sample_rng(self.seed, self.epoch, sample_id(meta.key))
        return train_clip_indices(meta.num_frames, meta.fps, self.spec, rng)


@dataclass(frozen=True)
class EvalClipIndices:
    """``frame_indices`` for evaluation: the source's reading epoch ``e`` gives temporal clip
    ``e % spec.num_clips``. Picklable."""

    spec: ClipSpec

    def __call__(self, meta: SampleMeta) -> np.ndarray:
        clip = meta.epoch % self.spec.num_clips
        return eval_clip_indices(meta.num_frames, meta.fps, self.spec, clip)


@dataclass(frozen=True)
class CentreClip:
    """The centre clip of ``num_frames`` frames ``stride`` apart, clamped to the video. Picklable."""

    num_frames: int = 16
    stride: int = 4

    def __call__(self, meta: SampleMeta) -> np.ndarray:
        n = meta.num_frames
        span = self.stride * (self.num_frames - 1) + 1
        start = max((n - span) // 2, 0)
        return np.clip(start + self.stride * np.arange(self.num_frames), 0, max(n - 1, 0)).astype(np.int32)


def check_indices(indices: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    """``indices`` as int64, or `ValueError` unless a non-empty 1-D list of integers >= 0."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
        raise ValueError(f"{what}: need a non-empty 1-D list of ints >= 0, got {idx}")
    return idx.astype(np.int64)


def key_of(source_info: bytes | np.ndarray) -> str:
    """The sample key from a ``key`` output (``'dir/name.tar:offset:KEY.ext'``; keys have no dots)."""
    text = bytes(np.asarray(source_info, dtype=np.uint8)).decode()
    return text.rsplit(":", 1)[1].partition(".")[0]


def sample_status(status: bytes | np.ndarray) -> str | None:
    """A ``status`` output read back: ``None`` for a good sample, else the error message."""
    raw = bytes(np.asarray(status, dtype=np.uint8))
    if raw[:1] == b"\x01":
        return None
    return raw[1:].decode(errors="replace") or "decode failed"


# --------------------------------------------------------------------------------------------- source


class SampleOut(NamedTuple):
    """Everything the source can say about one sample (see the module docstring; None where not given)."""

    payload: np.ndarray
    label: np.ndarray
    key: np.ndarray
    indices: np.ndarray | None
    decode_indices: np.ndarray | None
    decoded: np.ndarray
    status: np.ndarray | None


class ClipSource:
    """Per-sample source for DALI's parallel external source: ``info ->`` the fields of `SampleOut` that
    are given (``outputs``), in that order (see the module docstring). Picklable: the sample list and
    settings travel to spawned workers; open tar files are per process and not pickled."""

    def __init__(
        self,
        tars: Sequence[str | Path],
        idxs: Sequence[str | Path] | None = None,
        *,
        batch_size: int,
        decoder: Decoder,
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
        video_indices: bool = False,
        faults: FaultMarks | None = None,
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
        self.decoder = decoder
        self.frame_indices = CentreClip(num_frames, stride) if frame_indices is None else frame_indices
        self.seed = seed
        self.shuffle = shuffle
        self.pad_mode = pad_mode
        self.skip_errors = skip_errors
        self.faults = faults
        self.outputs = tuple(
            f
            for f in SampleOut._fields
            if (f != "indices" or video_indices)
            and (f != "decode_indices" or decoder.payload.indexed)
            and (f != "status" or skip_errors)
        )
        self.layout = RankLayout(len(self.samples), shard_id, num_shards)
        if self.layout.samples == 0:
            raise ValueError(f"shard {shard_id} of {num_shards} gets no sample of {len(self.samples)}")
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
        self._files: dict[str, _OpenFile] = {}
        self._order: tuple[int, np.ndarray] | None = None
        self._index: dict[str, int] | None = None

    @property
    def samples_per_epoch(self) -> int:
        return self.layout.samples

    @property
    def iterations_per_epoch(self) -> int:
        return self.layout.iterations(self.batch_size)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"] = {}
        state["_order"] = None
        state["_index"] = None
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

    def index_of(self, key: str) -> int:
        """The position of sample ``key`` in ``samples``."""
        if self._index is None:
            self._index = {s.key: i for i, s in enumerate(self.samples)}
        return self._index[key]

    def read(self, tar: str, offset: int, size: int) -> bytes:
        f = self._files.get(tar)
        if f is None or f.pid != os.getpid():
            f = self._files[tar] = _OpenFile(tar)
        return f.read(offset, size)

    def meta(self, sample: ShardSample, epoch: int) -> SampleMeta:
        label, n, fps, w, h = parse_i32(self.read(sample.tar, *sample.members["i32"]))
        return SampleMeta(sample.key, label, n, fps, w, h, epoch)

    def indices(self, meta: SampleMeta) -> np.ndarray:
        return check_indices(self.frame_indices(meta), f"frame_indices({meta.key})").astype(np.int32)

    def clip(self, sample: ShardSample, epoch: int) -> SampleOut:
        """One sample, every field but ``status`` (no fault handling)."""
        meta = self.meta(sample, epoch)
        indices = self.indices(meta)
        video = self.read(sample.tar, *sample.members[sample.video_ext])
        prepared = self.decoder.prepare(video, sample.video_ext, indices, meta.num_frames, self.pad_mode)
        key = np.frombuffer(sample.source_info.encode(), dtype=np.uint8).copy()
        return SampleOut(
            prepared.payload,
            np.array(meta.label, dtype=np.int32),
            key,
            indices,
            np.asarray(prepared.indices, dtype=np.int32),
            np.array(prepared.decoded, dtype=np.int32),
            None,
        )

    def __call__(self, info) -> tuple[np.ndarray, ...]:
        _tune_worker_malloc()
        epoch, sample = self.locate(info.iteration, info.idx_in_batch)
        if not self.skip_errors:
            out = self.clip(sample, epoch)
        elif self.faults is not None and self.index_of(sample.key) in self.faults:
            out = self._placeholder(sample, epoch, KnownFault("failed before in this loader; not read again"))
        else:
            try:
                out = self.clip(sample, epoch)._replace(status=np.frombuffer(b"\x01", np.uint8).copy())
            except Exception as e:  # noqa: BLE001 - any fault of one sample: flag it, keep the job going
                out = self._placeholder(sample, epoch, e)
        return tuple(getattr(out, f) for f in self.outputs)

    def _placeholder(self, sample: ShardSample, epoch: int, error: Exception) -> SampleOut:
        """The decoder's placeholder for the sample's clip, its label and key, and the error as ``status``."""
        label, width, height = 0, 64, 64
        frames = getattr(getattr(self.frame_indices, "spec", None), "num_frames", None)
        frames = frames or getattr(self.frame_indices, "num_frames", None) or 16
        try:
            meta = self.meta(sample, epoch)
            label, width, height = meta.label, max(meta.width, 2), max(meta.height, 2)
            frames = len(self.indices(meta))
        except Exception:  # noqa: BLE001, S110 - the defaults above stand
            pass
        message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        key = np.frombuffer(sample.source_info.encode(), dtype=np.uint8).copy()
        return SampleOut(
            self.decoder.placeholder(frames, height, width),
            np.array(label, dtype=np.int32),
            key,
            np.zeros(frames, np.int32),
            np.zeros(frames, np.int32),  # the placeholder's first frame, over and over
            np.array(0, dtype=np.int32),
            np.frombuffer(b"\x00" + message.encode(), np.uint8).copy(),
        )


class KnownFault(Exception):
    """A sample `FaultMarks` holds."""


class FaultMarks:
    """Which of ``count`` samples are known to be faulty: one byte each in a small file mapped into memory,
    written by the loader's process and read by the source's workers (forked or spawned: they find it by
    its path), for as long as the loader lives."""

    def __init__(self, count: int) -> None:
        import tempfile
        import weakref

        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.NamedTemporaryFile(prefix="stts-faults-", dir=folder, delete=False) as f:
            f.write(bytes(max(count, 1)))
            self.path = f.name
        self.count = count
        self._map: np.ndarray | None = None
        self._owner = os.getpid()
        weakref.finalize(self, _unlink, self.path, self._owner)

    def __getstate__(self) -> dict:
        return {"path": self.path, "count": self.count, "_map": None, "_owner": self._owner}

    def _view(self) -> np.ndarray:
        if self._map is None:
            writable = os.getpid() == self._owner
            self._map = np.memmap(self.path, np.uint8, "r+" if writable else "r", shape=(max(self.count, 1),))
        return self._map

    def mark(self, index: int) -> None:
        self._view()[index] = 1

    def __contains__(self, index: int) -> bool:
        return bool(self._view()[index])


def _unlink(path: str, owner: int) -> None:
    if os.getpid() == owner:
        with contextlib.suppress(OSError):
            os.unlink(path)


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


# ---------------------------------------------------------------------------------------------- graph


def clip_source_graph(source: ClipSource, prefetch_queue_depth: int = 2) -> SampleOut:
    """``source``'s outputs as a `SampleOut` of DataNodes (None for the fields it does not give), to be
    called inside the caller's ``pipeline_def``, whose batch size must be ``source.batch_size`` and which
    sets ``py_num_workers`` and ``py_start_method`` (the source runs in those worker processes)."""
    from nvidia.dali import fn, types
    from nvidia.dali.pipeline import Pipeline

    pipe = Pipeline.current()
    if pipe is None:
        raise RuntimeError(
            "clip_source_graph must be called while a pipeline is being defined (pipeline_def)"
        )
    if pipe.max_batch_size != source.batch_size:
        raise ValueError(f"pipeline batch size {pipe.max_batch_size} != source's {source.batch_size}")
    spec = source.decoder.payload
    kinds = {  # dtype, ndim, layout
        "payload": (getattr(types, spec.dtype), spec.ndim, spec.layout),
        "label": (types.INT32, 0, ""),
        "key": (types.UINT8, 1, ""),
        "indices": (types.INT32, 1, ""),
        "decode_indices": (types.INT32, 1, ""),
        "decoded": (types.INT32, 0, ""),
        "status": (types.UINT8, 1, ""),
    }
    nodes = fn.external_source(
        source=source,
        num_outputs=len(source.outputs),
        batch=False,
        parallel=True,
        prefetch_queue_depth=prefetch_queue_depth,
        dtype=[kinds[f][0] for f in source.outputs],
        ndim=[kinds[f][1] for f in source.outputs],
        layout=[kinds[f][2] for f in source.outputs],
    )
    given = {f: nodes[i] for i, f in enumerate(source.outputs)}  # no zip: DALI's autograph lacks strict=
    return SampleOut(*(given.get(f) for f in SampleOut._fields))


@dataclass(frozen=True)
class ClipPipeline:
    """A built pipeline whose ``run()`` gives ``(frames, label, key, indices, decoded)`` per sample: frames
    uint8 ``(T, H, W, 3)`` (``FHWC``, on the GPU with ``dali-gpu``), label int32, key (`key_of` reads it),
    the int32 frame indices of the clip in the video, the frames decoding it cost. Keep the first
    ``samples_per_epoch`` samples of each ``iterations_per_epoch`` runs (the rest is padding)."""

    pipe: object
    samples_per_epoch: int
    iterations_per_epoch: int


def clip_pipeline(
    tars: Sequence[str | Path],
    idxs: Sequence[str | Path] | None = None,
    *,
    batch_size: int,
    decoder: str | Decoder = "dali-cpu",
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
    py_start_method: str = "fork",
) -> ClipPipeline:
    """Clips of the shards decoded by ``decoder`` (a name of `pipelines.decoders.DECODERS` or a `Decoder`),
    alone in a pipeline: `ClipSource` in ``py_num_workers`` processes → the decoder's graph. Without
    ``frame_indices``, the `CentreClip` of ``num_frames`` frames ``stride`` apart. ``dali-gpu`` needs
    ``device_id``."""
    from nvidia.dali import pipeline_def

    from pipelines.decoders import make_decoder

    if py_start_method not in ("spawn", "fork"):
        raise ValueError(f"py_start_method must be 'spawn' or 'fork', got {py_start_method!r}")
    dec = make_decoder(decoder) if isinstance(decoder, str) else decoder
    if dec.device == "gpu" and device_id is None:
        raise ValueError(f"decoder {dec.name!r} needs a device_id")
    source = ClipSource(
        tars, idxs, batch_size=batch_size, decoder=dec, frame_indices=frame_indices, num_frames=num_frames,
        stride=stride, seed=seed, shuffle=random_shuffle, shard_id=shard_id, num_shards=num_shards,
        pad_mode=pad_mode, video_indices=True,
    )  # fmt: skip

    @pipeline_def(
        batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
        prefetch_queue_depth=prefetch_queue_depth, py_num_workers=py_num_workers,
        py_start_method=py_start_method,
    )  # fmt: skip
    def pipe():
        out = clip_source_graph(source, prefetch_queue_depth)
        frames = dec.frames(out.payload, out.decode_indices, pad_mode=pad_mode)
        return frames, out.label, out.key, out.indices, out.decoded

    p = pipe()
    p.build()
    return ClipPipeline(p, source.samples_per_epoch, source.iterations_per_epoch)
