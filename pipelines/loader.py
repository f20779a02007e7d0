"""`build_loader`: shards → batches of clips, the same `Batch` whatever decoded them.

One loader, three interchangeable decoders (``decoder=``):

* ``"dali-gpu"``: `pipelines.dali_decode.clip_graph` with the ``"mixed"`` (NVDEC) decoder; any codec
  NVDEC reads. Chosen by ``"auto"`` whenever ``torch.cuda.is_available()`` (untested without a GPU);
* ``"dali-cpu"``: the same graph on the CPU; VP8, VP9 and MJPEG only (`shards.encode.DALI_CPU_CODECS`).
  Chosen by ``"auto"`` without CUDA when every codec the manifest lists for the split is one of those;
* ``"pyav"``: `pipelines.pyav_feed.pyav_clip_graph`, PyAV in worker processes; any codec. ``"auto"``'s
  fallback.

All three take their frame indices from the same `pipelines.sampling` functions through one picklable
``frame_indices(SampleMeta)`` callable (`TrainClipIndices`, `EvalClipIndices`) and hand the uint8 ``FHWC``
clips to the same augmentation graph (`pipelines.augment.train_transform` / ``eval_transform``).

One DALI pipeline per pass: the decoder's graph (`pipelines.dali_decode.clip_graph` or
`pipelines.pyav_feed.pyav_clip_graph`), then the augmentation graph (one output per spatial crop at
evaluation), then the outputs; built with ``enable_conditionals=True`` when the recipe uses RandAugment or erasing
and with ``py_num_workers`` / ``py_start_method`` for the PyAV source. ``loader.pipelines_built`` counts them.

Epochs and ranks (the reader's layout, see `pipelines.dali_decode`): rank ``r`` of ``k`` reads the samples
``[N*r//k, N*(r+1)//k)`` of the epoch's order, padded with its last sample to ``ceil(N/k)`` and to whole
batches. Every pass (``iter(loader)``) builds fresh pipelines seeded from ``(seed, epoch)``:

* training: a new order (DALI: the reader's shuffle buffer within the rank's slice; PyAV: a global
  permutation split across ranks) and new clips (``train_clip_indices`` with
  ``sample_rng(seed, epoch, crc32(key))``, the same clip whatever rank or worker decodes the sample) every
  epoch; every rank yields ``max(1, (N // k) // batch_size)`` full batches (the tail is dropped; with
  fewer samples than a batch, one batch padded by repeating samples);
* evaluation: every video of the rank's slice × every view, each exactly once, padding dropped; the
  decoder reads the slice once per temporal clip (its reading epoch ``t`` is the clip index) and the
  augmentation graph cuts all the spatial crops of each decoded clip. Batches hold ``batch_size`` views
  (the last one fewer); ``view`` is the index into `pipelines.sampling.eval_views`.

Decode faults at run time (a corrupt bitstream that ``--probe fast`` let into a shard, a file that rotted):
the sample is skipped and counted, the job goes on and never waits on it.

* ``"pyav"``: the source catches any error of one sample (``skip_errors``) and hands DALI a zero
  placeholder plus a ``status`` flag; the loader drops the flagged samples after augmentation.
* ``"dali-cpu"`` / ``"dali-gpu"``: DALI 2.4's ``fn.decoders.video`` raises on a corrupt VP9 or MJPEG
  packet ("Failed to send packet to decoder: Invalid data"), from the ``pipe.run()`` of that batch, within
  milliseconds (measured: no hang, no garbage frames), and the pipeline carries on with the next batch
  (the reader has moved on); the failed batch's outputs are lost, good samples included. The graph keeps
  a journal (``clip_graph(journal=...)``: the keys and frame indices asked at each iteration), so the
  loader knows which samples that batch held; it decodes each of them with PyAV at the same indices (in
  process, a few clips per fault): those that fail are the faulty ones; if PyAV decodes them all, every
  sample of the batch is counted as faulty (DALI could not decode it; we cannot tell which). No rebuild
  is needed. DALI reports the error with the batch it belongs to, so no timeout is needed either: a
  decoder that never returns was not seen in any test (no watchdog can interrupt a C++ call safely).
* Training: bad samples are dropped and the batches refilled from the following samples, so every batch
  is full and every rank still yields ``len(loader)`` batches. At the end of the rank's slice the
  refill reads on into the pipeline's next reading of it (the reader wraps; the same clips, since the
  clip depends on the pass's epoch): a few samples of the epoch's start may then be seen twice. With
  DALI's decoders the good samples of a failed batch are dropped with it (not counted as skipped).
  A reading of the whole slice without any decodable sample is an error.
* Evaluation: the bad video's views (each temporal clip that failed, all its crops) are skipped and
  counted; the good samples of a failed DALI batch are decoded again at the end of the pass by a small
  PyAV-fed pipeline with the same augmentation graph (their colour conversion differs slightly), so every
  good (video, view) is still yielded exactly once; only the last batch may be shorter.
* Counters: ``skipped`` (total since the loader was made), ``pass_skipped`` and ``skipped_keys`` (a
  ``Counter`` key → faults, this pass; a fault is one failed clip read). A one-line warning goes to the
  ``"stts.pipelines"`` logger at the first fault and then once every ``log_every`` faults.
"""

from __future__ import annotations

import logging
import math
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipelines.augment import AUG_SPECS, AugmentSpec, eval_transform, needs_conditionals, train_transform
from pipelines.dali_decode import SampleMeta, check_reader, clip_graph, key_of
from pipelines.sampling import (
    CLIP_SPECS,
    ClipSpec,
    eval_clip_indices,
    eval_views,
    sample_rng,
    train_clip_indices,
)
from shards.format import RankLayout, read_split

__all__ = [
    "DECODERS",
    "Batch",
    "EvalClipIndices",
    "TrainClipIndices",
    "VideoLoader",
    "build_loader",
    "choose_decoder",
]

DECODERS = ("auto", "dali-gpu", "dali-cpu", "pyav")
log = logging.getLogger("stts.pipelines")


class Batch(NamedTuple):
    """video: float32 ``(B, 3, T, H, W)`` on the loader's device; label: int64 ``(B,)``; key: the sample
    keys; view: int64 ``(B,)``, the index into `eval_views` (0 in training)."""

    video: Any
    label: Any
    key: list[str]
    view: Any


# ------------------------------------------------------------------------------------ frame indices


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
    """``frame_indices`` for evaluation: the decoder's reading epoch ``e`` gives temporal clip
    ``e % spec.num_clips``. Picklable."""

    spec: ClipSpec

    def __call__(self, meta: SampleMeta) -> np.ndarray:
        clip = meta.epoch % self.spec.num_clips
        return eval_clip_indices(meta.num_frames, meta.fps, self.spec, clip)


# ------------------------------------------------------------------------------------------ helpers


def choose_decoder(decoder: str, codecs: set[str] | list[str]) -> str:
    """``"auto"`` → ``"dali-gpu"`` with CUDA, else ``"dali-cpu"`` when every codec is one DALI's CPU
    decoder reads, else ``"pyav"``. Anything else is returned as given (after checking its name)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder != "auto":
        return decoder
    import torch

    from shards.encode import DALI_CPU_CODECS

    if torch.cuda.is_available():
        return "dali-gpu"
    if codecs and set(codecs) <= DALI_CPU_CODECS:
        return "dali-cpu"
    return "pyav"


def _resolve_recipe(recipe, views: tuple[int, int] | None) -> tuple[ClipSpec, AugmentSpec]:
    if isinstance(recipe, str):
        if recipe not in CLIP_SPECS or recipe not in AUG_SPECS:
            raise ValueError(f"unknown recipe {recipe!r}; known: {sorted(set(CLIP_SPECS) & set(AUG_SPECS))}")
        clip, aug = CLIP_SPECS[recipe], AUG_SPECS[recipe]
    else:
        clip, aug = recipe
        if not isinstance(clip, ClipSpec) or not isinstance(aug, AugmentSpec):
            raise TypeError(f"recipe must be a name or (ClipSpec, AugmentSpec), got {recipe!r}")
    if views is not None:
        clips, crops = views
        clip = replace(clip, num_clips=int(clips), num_crops=int(crops))
    if aug.clip != clip:  # the clip spec given governs the evaluation geometry too
        aug = replace(aug, clip=clip)
    return clip, aug


def _derived_seed(seed: int, epoch: int, salt: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, salt]).generate_state(1)[0] & 0x7FFFFFFF)


class HostBuffers:
    """Reusable host memory for the CPU batches. A fresh 77 MB batch buffer costs its page faults and the
    kernel's zeroing every time (~2 ms of CPU per 16x224² clip, measured); a buffer here is handed out
    again only once nothing refers to it any more: no tensor, view or slice of it alive (``torch.from_numpy``
    keeps a reference to the array for as long as any tensor shares its storage; CPython's reference counts
    make the test exact). At most ``keep`` buffers are kept."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._bufs: list[np.ndarray] = []
        self.reused = 0

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        for i in range(len(self._bufs)):
            # references when free: the list's and getrefcount's argument
            if (
                self._bufs[i].shape == shape
                and self._bufs[i].dtype == dtype
                and sys.getrefcount(self._bufs[i]) == 2
            ):
                self.reused += 1
                return self._bufs[i]
        buf = np.empty(shape, dtype)  # numpy's large buffers use huge pages: ~4x fewer faults than torch's
        if len(self._bufs) < self.keep:
            self._bufs.append(buf)
        return buf


def _to_torch(tensor_list, device, pool: HostBuffers, dtype=None):
    """A dense DALI TensorList → a torch tensor on ``device`` (copied out of DALI's buffers; on the CPU
    into ``pool``'s memory)."""
    import torch

    if hasattr(tensor_list, "as_cpu") and type(tensor_list).__name__ == "TensorListGPU":
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = tensor_list.as_tensor()
        out = torch.empty(dense.shape(), dtype=dtype or torch.float32, device=device)
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(out.device))
        return out
    view = np.asarray(tensor_list.as_tensor())  # DALI's memory, valid until the next run: copy it now
    arr = pool.empty(view.shape, view.dtype)
    np.copyto(arr, view)
    out = torch.from_numpy(arr)
    if dtype is not None:
        out = out.to(dtype)
    return out.to(device)


def _interleave(videos, device, pool: HostBuffers):
    """The ``num_sample`` outputs of one run, each ``(B, ...)``, as one ``(B * num_sample, ...)`` tensor with a
    video's clips side by side: ``[v0 a, v0 b, v1 a, v1 b, ...]``. On the CPU one copy out of DALI, into
    `HostBuffers` (``torch.stack`` / ``torch.cat`` allocate without huge pages: measured 9 ms of page
    faults per 16x224² clip)."""
    import torch

    if len(videos) == 1:
        return _to_torch(videos[0], device, pool)
    if type(videos[0]).__name__ == "TensorListGPU":
        return torch.stack([_to_torch(v, device, pool) for v in videos], dim=1).flatten(0, 1)
    first = np.asarray(videos[0].as_tensor())
    shape = (first.shape[0], len(videos), *first.shape[1:])
    out = pool.empty(shape, first.dtype)
    for r, v in enumerate(videos):
        out[:, r] = first if r == 0 else np.asarray(v.as_tensor())
    return torch.from_numpy(out).flatten(0, 1).to(device)


def _cat(tensors: list, pool: HostBuffers):
    """``torch.cat`` that, on the CPU, writes into `HostBuffers` memory."""
    import torch

    if len(tensors) == 1:
        return tensors[0]
    if tensors[0].device.type != "cpu":
        return torch.cat(tensors)
    shape = (sum(t.shape[0] for t in tensors), *tensors[0].shape[1:])
    dtype = tensors[0].numpy().dtype
    out = pool.empty(shape, dtype)
    return torch.cat(tensors, out=torch.from_numpy(out))


# --------------------------------------------------------------------------------------------- loader


class VideoLoader:
    """What `build_loader` returns: ``len()``, ``set_epoch()``, iteration over `Batch`es."""

    def __init__(
        self,
        shards_dir: str | Path,
        split: str,
        recipe,
        *,
        batch_size: int,
        device="cpu",
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        decoder: str = "auto",
        train: bool = True,
        views: tuple[int, int] | None = None,
        num_threads: int = 2,
        epoch: int = 0,
        log_every: int = 100,
        num_sample: int = 1,
    ) -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank}, {world_size}")
        if seed < 0 or epoch < 0:
            raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        if num_sample < 1:
            raise ValueError(f"num_sample must be >= 1, got {num_sample}")
        self.num_sample = num_sample if train else 1
        self.shards_dir = Path(shards_dir)
        entry = read_split(self.shards_dir, split)
        self.split = split
        self.tars, self.idxs = entry.tars, entry.idxs
        self.num_samples = entry.samples
        self.codecs = sorted(entry.codecs)
        self.clip, self.aug = _resolve_recipe(recipe, views)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.decoder = choose_decoder(decoder, self.codecs)
        self.train = train
        self.num_threads = num_threads
        self.epoch = epoch
        self.layout = RankLayout(self.num_samples, rank, world_size)
        self.rank_samples = self.layout.samples
        if self.rank_samples < 1:
            raise ValueError(
                f"rank {rank} of {world_size} gets no sample of the {self.num_samples} in {split!r}"
            )
        self.views = eval_views(self.clip)  # [(clip, crop)] in the official order
        self.view_index = {tc: v for v, tc in enumerate(self.views)}
        self._host = HostBuffers()  # reused batch memory on the CPU
        self.pipelines_built = 0  # DALI pipelines built so far: one per pass (+1 for a DALI fault's recovery)
        self.log_every = log_every
        self.skipped = 0  # decode faults since the loader was made
        self.pass_skipped = 0  # ... in the current (last) pass
        self.skipped_keys: Counter = Counter()  # key -> faults in the current (last) pass
        self._samples: dict | None = None  # key -> ShardSample, for probing a failed DALI batch

    # ---- the loop's interface
    def __len__(self) -> int:
        if self.train:
            return self.layout.train_batches(self.batch_size)
        return math.ceil(self.rank_samples * len(self.views) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        return self._iter_train() if self.train else self._iter_eval()

    # ---- pipelines
    @property
    def _cuda_output(self) -> bool:
        return self.device.type == "cuda"

    def _device_id(self) -> int | None:
        if self.decoder != "dali-gpu" and not self._cuda_output:
            return None
        import torch

        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def _pipeline(self, frame_indices, seed: int, shuffle: bool, items=None):
        """The pass's one DALI pipeline: decoder graph → augmentation → outputs ``(video, label, key)``
        in training, ``(crop_0, ..., crop_{n-1}, label, key)`` at evaluation, then the frame indices and,
        from the PyAV source, the status (built); and the DALI decoder's journal (or None). ``items``: a
        PyAV-fed pipeline reading just these ``(epoch, key)`` (a failed DALI batch's good samples)."""
        from nvidia.dali import pipeline_def

        aug, train, crops = self.aug, self.train, self.clip.num_crops
        pyav = self.decoder == "pyav" or items is not None
        kw: dict[str, Any] = {}
        source = None
        journal: dict | None = None
        if pyav:
            import torch

            from pipelines.pyav_feed import PyAVClipSource

            source = PyAVClipSource(
                self.tars,
                self.idxs,
                batch_size=self.batch_size,
                frame_indices=frame_indices,
                seed=seed,
                shuffle=shuffle,
                shard_id=self.rank,
                num_shards=self.world_size,
                skip_errors=True,
                items=items,
            )
            # fork is unsafe once CUDA is up
            kw = dict(
                py_num_workers=self.num_threads,
                py_start_method="spawn" if torch.cuda.is_available() else "fork",
            )
        else:
            journal = {}
        to_gpu = self._cuda_output and (pyav or self.decoder != "dali-gpu")

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=self._device_id(),
            seed=seed,
            enable_conditionals=train and needs_conditionals(aug),
            **kw,
        )
        def pipe():
            if source is not None:
                from pipelines.pyav_feed import pyav_clip_graph

                frames, label, key, indices, status = pyav_clip_graph(source, prefetch_queue_depth=2)
                extra = (indices, status)
            else:
                frames, label, key, indices = clip_graph(
                    self.tars,
                    self.idxs,
                    frame_indices=frame_indices,
                    device="gpu" if self.decoder == "dali-gpu" else "cpu",
                    shard_id=self.rank,
                    num_shards=self.world_size,
                    random_shuffle=shuffle,
                    initial_fill=max(1, min(256, self.rank_samples)),
                    journal=journal,
                )
                extra = (indices,)
            if to_gpu:
                frames = frames.gpu()
            if train:  # repeated augmentation: num_sample independent draws on the same decoded frames
                clips = tuple(train_transform(frames, aug) for _ in range(self.num_sample))
                return (*clips, label, key, *extra)
            return (*(eval_transform(frames, aug, c, crops) for c in range(crops)), label, key, *extra)

        p = pipe()
        p.build()
        if source is None:
            check_reader(p, self.idxs, self.world_size)
        self.pipelines_built += 1
        return p, journal

    @property
    def _iterations_per_epoch(self) -> int:
        """Pipeline runs per reading epoch: each rank reads ``ceil(N/k)`` samples (padded), whole batches."""
        return self.layout.iterations(self.batch_size)

    # ---- decode faults
    def _begin_pass(self) -> None:
        self.pass_skipped = 0
        self.skipped_keys = Counter()

    def _fault(self, key: str, reason: str) -> None:
        self.skipped += 1
        self.pass_skipped += 1
        self.skipped_keys[key] += 1
        if (self.skipped - 1) % self.log_every == 0:
            log.warning(
                "skipped sample %s of %s (%s): decode fault %d (logged once per %d)",
                key, self.split, " ".join(reason.split())[:200], self.skipped, self.log_every,
            )  # fmt: skip

    def _probe_failed_batch(self, entries: list, error: Exception) -> list[str]:
        """A DALI batch failed: find its faulty samples by decoding each with PyAV at the same frame
        indices; count them. Returns the keys of the good ones (lost with the batch)."""
        from pipelines.pyav_feed import decode_frames
        from shards.format import list_samples, read_member

        if self._samples is None:
            self._samples = {s.key: s for s in list_samples(self.tars, self.idxs)}
        unique: dict[str, Any] = {}
        for key, idx in entries:
            unique.setdefault(key, idx)
        bad: dict[str, str] = {}
        for key, idx in unique.items():
            sample = self._samples.get(key)
            try:
                ext = sample.video.partition(".")[2]
                decode_frames(read_member(sample.tar, *sample.members[ext]), idx)
            except Exception as e:  # noqa: BLE001 - any failure marks the sample
                bad[key] = f"{type(e).__name__}: {e}"
        if not bad:  # PyAV reads them all: DALI's decoder alone fails; the culprit is unknown
            dali_msg = next((ln for ln in str(error).splitlines() if "failed" in ln.lower()), "DALI error")
            bad = {k: f"DALI decoder: {dali_msg}" for k in unique}
        for key, reason in bad.items():
            self._fault(key, reason)
        return [k for k in unique if k not in bad]

    def _run(self, pipe, journal: dict | None, it: int):
        """Pipeline run ``it``: ``(videos, labels, keys, ok)`` or, when DALI's decoder failed on the batch,
        ``None`` and the good keys it lost (see the module docstring)."""
        try:
            *videos, label, key, _indices, status = pipe.run() if journal is None else (*pipe.run(), None)
        except RuntimeError as e:
            if journal is None or "decoders.video" not in str(e):
                raise
            return None, self._probe_failed_batch(journal.pop(it, []), e)
        finally:
            if journal is not None:
                for old in [i for i in journal if i <= it]:
                    del journal[old]
        labels = np.array(label.as_tensor()).astype(np.int64).reshape(-1)
        keys = [key_of(np.array(key[i])) for i in range(len(key))]
        ok = np.ones(len(keys), dtype=bool)
        if status is not None:
            from pipelines.pyav_feed import sample_status

            for i in range(len(keys)):
                reason = sample_status(np.array(status[i]))
                ok[i] = reason is None
                if reason is not None:
                    self._fault(keys[i], reason)
        return (videos, labels, keys, ok), []

    def _iter_train(self) -> Iterator[Batch]:
        import torch

        self._begin_pass()
        epoch, target, size = self.epoch, len(self), self.batch_size * self.num_sample
        indices = TrainClipIndices(self.clip, self.seed, epoch)
        pipe, journal = self._pipeline(indices, _derived_seed(self.seed, epoch, 0), True)
        pending: list = []
        pending_n = yielded = it = last_good = 0
        try:
            while yielded < target:
                if it - last_good > self._iterations_per_epoch:
                    raise RuntimeError(
                        f"{self.split}: no decodable sample in {it - last_good} batches "
                        f"(a whole reading of rank {self.rank}'s slice); {self.pass_skipped} skipped"
                    )
                out, _ = self._run(pipe, journal, it)
                it += 1
                if out is None:
                    continue
                videos, labels, keys, ok = out
                if ok.any():
                    last_good = it
                    # a video's num_sample clips side by side: [v0 a, v0 b, v1 a, v1 b, ...]
                    reps = self.num_sample
                    chunk = _interleave(videos, self.device, self._host)
                    ok, labels = np.repeat(ok, reps), np.repeat(labels, reps)
                    keys = [k for k in keys for _ in range(reps)]
                    mask = torch.from_numpy(ok)
                    chunk = chunk if ok.all() else chunk[mask.to(chunk.device)]
                    good = [k for k, g in zip(keys, ok, strict=True) if g]
                    pending.append((chunk, labels[ok], good, np.zeros(len(good), dtype=np.int64)))
                    pending_n += len(good)
                while pending_n >= size and yielded < target:
                    batch, pending, pending_n = _take(pending, size, self._host)
                    yielded += 1
                    yield batch
        finally:
            del pipe

    def _iter_eval(self) -> Iterator[Batch]:
        self._begin_pass()
        pending: list[tuple[Any, np.ndarray, list[str], np.ndarray]] = []  # (video, label, key, view)
        pending_n = 0
        iterations, size = self._iterations_per_epoch, self.batch_size
        indices = EvalClipIndices(self.clip)
        lost: list[tuple[int, str]] = []  # (temporal clip, key): good samples of failed DALI batches
        pipe, journal = self._pipeline(indices, self.seed, False)
        try:
            for it in range(self.clip.num_clips * iterations):
                t, pos = divmod(it, iterations)
                kept = min(size, self.rank_samples - pos * size)
                out, lost_keys = self._run(pipe, journal, it)
                lost.extend((t, k) for k in lost_keys)
                if out is None or kept <= 0:
                    continue
                pending_n += self._add_views(pending, out, kept, lambda _i, t=t: t)
                while pending_n >= size:
                    batch, pending, pending_n = _take(pending, size, self._host)
                    yield batch
        finally:
            del pipe
        if lost:  # re-decode them with PyAV: one small pipeline, the same augmentation graph
            pipe, _ = self._pipeline(indices, self.seed, False, items=lost)
            try:
                for it in range(math.ceil(len(lost) / size)):
                    out, _ = self._run(pipe, None, it)
                    kept = min(size, len(lost) - it * size)
                    clips = [t for t, _ in lost[it * size : it * size + kept]]
                    pending_n += self._add_views(pending, out, kept, clips.__getitem__)
                    while pending_n >= size:
                        batch, pending, pending_n = _take(pending, size, self._host)
                        yield batch
            finally:
                del pipe
        if pending_n:
            batch, pending, pending_n = _take(pending, pending_n, self._host)
            yield batch

    def _add_views(self, pending: list, out, kept: int, clip_of) -> int:
        """Append the good ones of a run's first ``kept`` samples, every crop, to ``pending``; returns how
        many views were added. ``clip_of(i)``: the temporal clip of sample ``i``."""
        import torch

        videos, labels, keys, ok = out
        ok = ok[:kept]
        if not ok.any():
            return 0
        rows = np.flatnonzero(ok)
        added = 0
        for s, tl in enumerate(videos):
            video = _to_torch(tl, self.device, self._host)[:kept]
            if not ok.all():
                video = video[torch.from_numpy(rows).to(video.device)]
            view = np.array([self.view_index[(clip_of(i), s)] for i in rows], dtype=np.int64)
            pending.append((video, labels[rows], [keys[i] for i in rows], view))
            added += len(rows)
        return added


def _take(pending: list, n: int, pool: HostBuffers) -> tuple[Batch, list, int]:
    """The first ``n`` views of the pending chunks as one `Batch`, and what is left."""
    import torch

    videos, labels, keys, views = [], [], [], []
    got = 0
    rest = list(pending)
    while got < n:
        video, label, key, view = rest.pop(0)
        m = min(n - got, len(key))
        videos.append(video[:m])
        labels.append(label[:m])
        keys.extend(key[:m])
        views.append(view[:m])
        if m < len(key):
            rest.insert(0, (video[m:], label[m:], key[m:], view[m:]))
        got += m
    device = videos[0].device
    batch = Batch(
        video=_cat(videos, pool),
        label=torch.from_numpy(np.concatenate(labels)).to(device),
        key=keys,
        view=torch.from_numpy(np.concatenate(views)).to(device),
    )
    return batch, rest, sum(len(k) for _, _, k, _ in rest)


def build_loader(
    shards_dir: str | Path,
    split: str,
    recipe: str | tuple[ClipSpec, AugmentSpec],
    *,
    batch_size: int,
    device="cpu",
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    decoder: str = "auto",
    train: bool = True,
    views: tuple[int, int] | None = None,
    num_threads: int = 2,
    epoch: int = 0,
    log_every: int = 100,
    num_sample: int = 1,
) -> VideoLoader:
    """Batches of clips from ``shards_dir``'s ``split`` (see the module docstring).

    recipe: ``"mvit"`` / ``"swin"`` (`CLIP_SPECS` / `AUG_SPECS`) or an explicit ``(ClipSpec, AugmentSpec)``
        (the ClipSpec given replaces the AugmentSpec's own).
    device: where the batches' tensors live (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
    decoder: ``"auto"``, ``"dali-gpu"``, ``"dali-cpu"`` or ``"pyav"``.
    train: random clips + training augmentation, reshuffled per epoch (`set_epoch`); else every view of
        every video of this rank's slice once.
    views: ``(num_clips, num_crops)`` at evaluation (default: the recipe's, MViT 10×1, Swin 4×3).
    num_threads: DALI threads per pipeline (and PyAV worker processes).
    log_every: warn (logger ``"stts.pipelines"``) at the first decode fault, then once per this many.
    num_sample: training only: repeated augmentation, ``num_sample`` independently augmented clips of each
        decoded video, side by side in the batch (``batch_size · num_sample`` clips per batch; MViT recipe 2).
    """
    return VideoLoader(
        shards_dir,
        split,
        recipe,
        batch_size=batch_size,
        device=device,
        rank=rank,
        world_size=world_size,
        seed=seed,
        decoder=decoder,
        train=train,
        views=views,
        num_threads=num_threads,
        epoch=epoch,
        log_every=log_every,
        num_sample=num_sample,
    )
