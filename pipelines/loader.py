"""`build_loader`: shards → batches of clips, the same `Batch` whatever decoded them.

One loader, three interchangeable decoders behind one protocol (`pipelines.decoders`; ``decoder=``):
``"dali-gpu"`` (NVDEC), ``"dali-cpu"`` (DALI's CPU decoder: VP8, VP9, MJPEG) and ``"pyav"`` (FFmpeg, any
codec); ``"auto"`` picks one (`pipelines.decoders.choose_decoder`).

One DALI pipeline per pass, stage by stage; a run of it decodes ``decode_batch`` samples, a number set by
the hardware (`pipelines.decoders.decode_settings`: on an H100 28 clips over 14 NVDEC sessions), not by
the training batch:

1. `pipelines.clip_source.ClipSource` in DALI's parallel worker processes: which sample (the epoch's
   order and the rank's slice, `shards.format.RankLayout`), its ``.i32`` numbers, the clip's frame indices
   (`TrainClipIndices` / `EvalClipIndices`: the official `pipelines.sampling` rules), and the decoder's
   ``prepare``: after it, per sample, the decoder's payload, label, key and a fault status;
2. the decoder's graph (``frames``): after it, the clip's uint8 ``FHWC`` frames, on the GPU for dali-gpu
   (moved there for the others when the batches are wanted on a GPU);
3. the augmentation graph (`pipelines.augment`: ``train_transform`` ``num_sample`` times, or
   ``eval_transform`` once per spatial crop): float ``CFHW`` clips (float16 on a GPU when asked);
4. out of DALI (`pipelines.batching`): on a GPU the outputs are bound to the consumer's CUDA stream and
   taken over without a copy, labels follow from pinned memory without blocking (no host sync per batch);
   on the CPU one copy into reused memory. The flagged samples are dropped and the rest cut into `Batch`es
   of ``batch_size`` in ``dtype``. ``loader.pipelines_built`` counts the pipelines.

Epochs and ranks: rank ``r`` of ``k`` reads the positions ``[N*r//k, N*(r+1)//k)`` of the epoch's order,
padded with its last sample to ``ceil(N/k)`` and to whole runs. Every pass (``iter(loader)``) builds a
fresh pipeline seeded from ``(seed, epoch)``:

* training: a new order (a permutation of all samples drawn from ``(seed, epoch)``, split across ranks)
  and new clips (``train_clip_indices`` with ``sample_rng(seed, epoch, crc32(key))``, the same clip
  whatever rank or worker decodes the sample) every epoch; every rank yields ``max(1, (N // k) //
  batch_size)`` full batches (the tail is dropped; with fewer samples than a batch, one batch padded by
  repeating samples);
* evaluation: every video of the rank's slice × every view, each exactly once, padding dropped; the
  source reads the slice once per temporal clip (its reading epoch ``t`` is the clip index) and the
  augmentation graph cuts all the spatial crops of each decoded clip. Batches hold ``batch_size`` views
  (the last one fewer); ``view`` is the index into `pipelines.sampling.eval_views`.

Decode faults at run time (a corrupt bitstream that ``--probe fast`` let into a shard, a file that rotted):
the sample is skipped and counted, the job goes on and never waits on it. Two ways a fault arrives, the
same for every decoder:

* the source could not read or prepare the sample (PyAV's decoding, or the cut for DALI's decoders): the
  sample comes with a ``status`` flag (and the decoder's placeholder); the loader drops it after
  augmentation;
* the decoder's graph failed (DALI 2.4's ``fn.decoders.video`` raises on a corrupt VP9 or MJPEG packet,
  "Failed to send packet to decoder: Invalid data", from the ``pipe.run()`` of that batch, within
  milliseconds, and carries on with the next batch; the failed batch's outputs are lost, good samples
  included): the source's layout says which samples that run held; the loader decodes each of them with
  PyAV at the same indices (in process, a few clips per fault): those that fail are the faulty ones; if
  PyAV decodes them all, every sample of the batch is counted as faulty (DALI could not decode it; we
  cannot tell which). DALI reports the error with the batch it belongs to, so no timeout is needed: a
  decoder that never returns was not seen in any test (no watchdog can interrupt a C++ call safely).
* Training: bad samples are dropped and the batches refilled from the following samples, so every batch
  is full and every rank still yields ``len(loader)`` batches. At the end of the rank's slice the refill
  reads on into the next reading of it (the same clips, since the clip depends on the pass's epoch): a
  few samples of the epoch's start may then be seen twice. The good samples of a lost batch are dropped
  with it (not counted as skipped). A reading of the whole slice without any decodable sample is an error.
* Evaluation: the bad video's views (each temporal clip that failed, all its crops) are skipped and
  counted; the good samples of a lost batch are decoded again at the end of the pass by a small
  PyAV-fed pipeline with the same augmentation graph (their colour conversion differs slightly), so every
  good (video, view) is still yielded exactly once; only the last batch may be shorter.
* Counters: ``skipped`` (total since the loader was made), ``pass_skipped`` and ``skipped_keys`` (a
  ``Counter`` key → faults, this pass; a fault is one failed clip read). A one-line warning goes to the
  ``"stts.pipelines"`` logger at the first fault and then once every ``log_every`` faults.

Decoding cost: ``frames_per_clip`` (this pass), from ``decoded_frames`` / ``decoded_clips`` (since the
loader was made): the frames the decoder decoded per clip it delivered.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.augment import AUG_SPECS, AugmentSpec, eval_transform, needs_conditionals, train_transform
from pipelines.batching import DTYPES, Batch, Chunk, HostBuffers, interleave, take, to_device, to_torch
from pipelines.clip_source import (
    ClipSource,
    EvalClipIndices,
    FaultMarks,
    TrainClipIndices,
    clip_source_graph,
    key_of,
    sample_status,
)
from pipelines.decoders import DECODERS, choose_decoder, decode_settings, make_decoder, probe_sample
from pipelines.sampling import CLIP_SPECS, ClipSpec, eval_views
from shards.format import RankLayout, read_split

__all__ = ["DECODERS", "Batch", "VideoLoader", "build_loader", "choose_decoder"]

log = logging.getLogger("stts.pipelines")


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


class _Run:
    """One pipeline run, out of DALI: the augmented videos (one TensorList per output), and per sample the
    label, key and whether it is good."""

    def __init__(self, videos: list, labels: np.ndarray, keys: list[str], ok: np.ndarray) -> None:
        self.videos, self.labels, self.keys, self.ok = videos, labels, keys, ok


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
        num_threads: int | None = None,
        epoch: int = 0,
        log_every: int = 100,
        num_sample: int = 1,
        dtype=None,
        decode_batch: int | None = None,
        num_workers: int | None = None,
        prefetch_queue_depth: int | None = None,
        affine: bool | None = None,
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
        self.dtype = torch.float32 if dtype is None else dtype
        if not isinstance(self.dtype, torch.dtype) or str(self.dtype).removeprefix("torch.") not in DTYPES:
            raise ValueError(f"dtype must be one of torch.{', torch.'.join(DTYPES)}, got {dtype!r}")
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.decoder = choose_decoder(decoder, self.codecs, self.device)
        engines = None
        if self.decoder == "dali-gpu":  # refuse what NVDEC cannot decode now, not batch after batch later
            from pipelines.nvdec import check_codecs, gpu_capabilities

            caps = gpu_capabilities(self.device if self.device.type == "cuda" else None)
            check_codecs(self.codecs, caps, where=f"the {split!r} shards of {self.shards_dir}")
            engines = caps.engines
        self.settings = decode_settings(
            self.decoder, batch_size, engines=engines, num_threads=num_threads,
            num_workers=num_workers, decode_batch=decode_batch, prefetch_queue_depth=prefetch_queue_depth,
            affine=affine,
        )  # fmt: skip
        gpu_settings = {"affine": self.settings.affine} if self.decoder == "dali-gpu" else {}
        self._decoder = make_decoder(self.decoder, **gpu_settings)
        self.train = train
        self.num_threads = self.settings.num_threads
        self.decode_batch = self.settings.decode_batch  # samples per pipeline run, re-sliced into batches
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
        self.pipelines_built = 0  # DALI pipelines built so far: one per pass (+1 for a lost batch's recovery)
        self.log_every = log_every
        self.skipped = 0  # decode faults since the loader was made
        self.pass_skipped = 0  # ... in the current (last) pass
        self.skipped_keys: Counter = Counter()  # key -> faults in the current (last) pass
        self._faults: FaultMarks | None = None  # samples known to be faulty, shared with the source
        self._index_of = None  # key -> position in the shards (the source's)
        self.decoded_frames = self.decoded_clips = 0  # since the loader was made
        self._pass_decoded = [0, 0]  # frames, clips in the current (last) pass

    # ---- the loop's interface
    def __len__(self) -> int:
        if self.train:
            return self.layout.train_batches(self.batch_size)
        return -(-self.rank_samples * len(self.views) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    @property
    def frames_per_clip(self) -> float | None:
        """Frames the decoder decoded per clip it delivered in the current (last) pass (None before any)."""
        frames, clips = self._pass_decoded
        return frames / clips if clips else None

    def __iter__(self) -> Iterator[Batch]:
        return self._iter_train() if self.train else self._iter_eval()

    # ---- pipelines
    @property
    def _cuda_output(self) -> bool:
        return self.device.type == "cuda"

    def _device_id(self, decoder) -> int | None:
        if decoder.device != "gpu" and not self._cuda_output:
            return None
        import torch

        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def _start_method(self, decoder) -> str:
        """How the source's workers start: fork (fast) unless CUDA is or will be up in this process (DALI
        refuses to fork then: the child would inherit a CUDA context it cannot use)."""
        import torch

        cuda = self._cuda_output or decoder.device == "gpu" or torch.cuda.is_initialized()
        return "spawn" if cuda else "fork"

    def _pipeline(self, frame_indices, seed: int, shuffle: bool, items=None):
        """The pass's DALI pipeline (stages 1-3 of the module docstring) and its source; its outputs are
        ``(video, label, key)`` in training (``num_sample`` videos), ``(crop_0, ..., crop_{n-1}, label,
        key)`` at evaluation, then per sample ``decoded`` and ``status``. ``items``: a PyAV-fed pipeline
        reading just these ``(epoch, key)`` (the good samples of a lost batch)."""
        import torch
        from nvidia.dali import fn, pipeline_def, types

        half = self._cuda_output and self.dtype == torch.float16
        aug, train, crops = self.aug, self.train, self.clip.num_crops
        decoder = self._decoder if items is None else make_decoder("pyav")
        if self._faults is None:
            self._faults = FaultMarks(self.num_samples)
        source = ClipSource(
            self.tars, self.idxs, batch_size=self.decode_batch, decoder=decoder, frame_indices=frame_indices,
            seed=seed, shuffle=shuffle, shard_id=self.rank, num_shards=self.world_size, skip_errors=True,
            items=items, faults=self._faults,
        )  # fmt: skip
        self._index_of = source.index_of
        to_gpu = self._cuda_output and decoder.device != "gpu"

        @pipeline_def(
            batch_size=self.decode_batch,
            num_threads=self.num_threads,
            prefetch_queue_depth=self.settings.prefetch_queue_depth,
            device_id=self._device_id(decoder),
            seed=seed,
            enable_conditionals=train and needs_conditionals(aug),
            py_num_workers=self.settings.num_workers,
            py_start_method=self._start_method(decoder),
        )
        def pipe():
            out = clip_source_graph(source, self.settings.prefetch_queue_depth)
            label, key, decoded, status = out.label, out.key, out.decoded, out.status
            frames = decoder.frames(out.payload, out.decode_indices)
            if to_gpu:
                frames = frames.gpu()
            if train:  # repeated augmentation: num_sample independent draws on the same decoded frames
                clips = tuple(train_transform(frames, aug) for _ in range(self.num_sample))
            else:
                clips = tuple(eval_transform(frames, aug, c, crops) for c in range(crops))
            if half:  # the batch in the training precision straight out of DALI (bfloat16: no DALI type)
                clips = tuple(fn.cast(c, dtype=types.FLOAT16) for c in clips)
            return (*clips, label, key, decoded, status)

        p = pipe()
        p.build()
        self.pipelines_built += 1
        return p, source

    # ---- decode faults
    def _begin_pass(self) -> None:
        self.pass_skipped = 0
        self.skipped_keys = Counter()
        self._pass_decoded = [0, 0]

    def _fault(self, key: str, reason: str) -> None:
        if self._faults is not None and self._index_of is not None:
            self._faults.mark(self._index_of(key))  # the source will not read it again
        self.skipped += 1
        self.pass_skipped += 1
        self.skipped_keys[key] += 1
        if (self.skipped - 1) % self.log_every == 0:
            log.warning(
                "skipped sample %s of %s (%s): decode fault %d (logged once per %d)",
                key, self.split, " ".join(reason.split())[:200], self.skipped, self.log_every,
            )  # fmt: skip

    def _probe_lost_batch(self, source: ClipSource, it: int, error: Exception) -> list[str]:
        """The decoder's graph lost run ``it``: find its faulty samples by decoding each with PyAV at the
        same frame indices; count them. Returns the keys of the good ones (lost with the batch)."""
        unique: dict[str, Any] = {}
        for j in range(source.batch_size):
            epoch, sample = source.locate(it, j)
            unique.setdefault(sample.key, (sample, epoch))
        bad: dict[str, str] = {}
        for key, (sample, epoch) in unique.items():
            try:
                indices = source.indices(source.meta(sample, epoch))
                video = source.read(sample.tar, *sample.members[sample.video_ext])
            except Exception as e:  # noqa: BLE001 - an unreadable sample is a faulty one
                bad[key] = f"{type(e).__name__}: {e}"
                continue
            reason = probe_sample(video, indices)
            if reason is not None:
                bad[key] = reason
        if not bad:  # PyAV reads them all: DALI's decoder alone fails; the culprit is unknown
            dali_msg = next((ln for ln in str(error).splitlines() if "failed" in ln.lower()), "DALI error")
            bad = {k: f"DALI decoder: {dali_msg}" for k in unique}
        for key, reason in bad.items():
            self._fault(key, reason)
        return [k for k in unique if k not in bad]

    def _outputs(self, pipe):
        """One run's outputs. For a GPU the outputs are bound to the consumer's current CUDA stream: the
        host does not wait for the GPU (DALI's default executor; ``Pipeline.run(cuda_stream)``)."""
        if not self._cuda_output:
            return pipe.run()
        import torch

        return pipe.run(torch.cuda.current_stream(self.device))

    def _run(self, pipe, source: ClipSource, it: int) -> tuple[_Run | None, list[str]]:
        """Pipeline run ``it``: the run's outputs, or None and the good keys it lost (module docstring)."""
        try:
            *videos, label, key, decoded, status = self._outputs(pipe)
        except RuntimeError as e:
            if not source.decoder.lost_batch(e):
                raise
            return None, self._probe_lost_batch(source, it, e)
        labels = np.array(label.as_tensor()).astype(np.int64).reshape(-1)
        keys = [key_of(np.array(key[i])) for i in range(len(key))]
        ok = np.ones(len(keys), dtype=bool)
        for i in range(len(keys)):
            reason = sample_status(np.array(status[i]))
            ok[i] = reason is None
            if reason is not None:
                self._fault(keys[i], reason)
        frames = int(np.array(decoded.as_tensor()).reshape(-1)[ok].sum())
        self.decoded_frames += frames
        self.decoded_clips += int(ok.sum())
        self._pass_decoded[0] += frames
        self._pass_decoded[1] += int(ok.sum())
        return _Run(videos, labels, keys, ok), []

    def _iter_train(self) -> Iterator[Batch]:

        self._begin_pass()
        epoch, target, size = self.epoch, len(self), self.batch_size * self.num_sample
        indices = TrainClipIndices(self.clip, self.seed, epoch)
        pipe, source = self._pipeline(indices, _derived_seed(self.seed, epoch, 0), True)
        # a whole reading of the slice, and the runs made ahead before a fault was known
        patience = source.iterations_per_epoch + 2 * self.settings.prefetch_queue_depth
        pending: list[Chunk] = []
        pending_n = yielded = it = last_good = 0
        try:
            while yielded < target:
                if it - last_good > patience:
                    raise RuntimeError(
                        f"{self.split}: no decodable sample in {it - last_good} batches "
                        f"(a whole reading of rank {self.rank}'s slice); {self.pass_skipped} skipped"
                    )
                run, _ = self._run(pipe, source, it)
                it += 1
                if run is None:
                    continue
                if run.ok.any():
                    last_good = it
                    # a video's num_sample clips side by side: [v0 a, v0 b, v1 a, v1 b, ...]
                    reps = self.num_sample
                    chunk = interleave(run.videos, self.device, self._host, self.dtype)
                    ok, labels = np.repeat(run.ok, reps), np.repeat(run.labels, reps)
                    keys = [k for k in run.keys for _ in range(reps)]
                    if not ok.all():
                        chunk = chunk[to_device(np.flatnonzero(ok), chunk.device)]
                    good = [k for k, g in zip(keys, ok, strict=True) if g]
                    pending.append(Chunk(chunk, labels[ok], good, np.zeros(len(good), dtype=np.int64)))
                    pending_n += len(good)
                while pending_n >= size and yielded < target:
                    batch, pending, pending_n = take(pending, size, self._host)
                    yielded += 1
                    yield batch
        finally:
            del pipe

    def _iter_eval(self) -> Iterator[Batch]:
        self._begin_pass()
        pending: list[Chunk] = []
        pending_n, size = 0, self.batch_size
        indices = EvalClipIndices(self.clip)
        lost: list[tuple[int, str]] = []  # (temporal clip, key): good samples of lost batches
        pipe, source = self._pipeline(indices, self.seed, False)
        per_run, iterations = source.batch_size, source.iterations_per_epoch
        try:
            for it in range(self.clip.num_clips * iterations):
                t, pos = divmod(it, iterations)
                kept = min(per_run, self.rank_samples - pos * per_run)
                run, lost_keys = self._run(pipe, source, it)
                lost.extend((t, k) for k in lost_keys)
                if run is None or kept <= 0:
                    continue
                pending_n += self._add_views(pending, run, kept, lambda _i, t=t: t)
                while pending_n >= size:
                    batch, pending, pending_n = take(pending, size, self._host)
                    yield batch
        finally:
            del pipe
        if lost:  # decode them again with PyAV: one small pipeline, the same augmentation graph
            pipe, source = self._pipeline(indices, self.seed, False, items=lost)
            try:
                for it in range(source.iterations_per_epoch):
                    run, _ = self._run(pipe, source, it)
                    kept = min(per_run, len(lost) - it * per_run)
                    clips = [t for t, _ in lost[it * per_run : it * per_run + kept]]
                    pending_n += self._add_views(pending, run, kept, clips.__getitem__)
                    while pending_n >= size:
                        batch, pending, pending_n = take(pending, size, self._host)
                        yield batch
            finally:
                del pipe
        if pending_n:
            batch, pending, pending_n = take(pending, pending_n, self._host)
            yield batch

    def _add_views(self, pending: list[Chunk], run: _Run, kept: int, clip_of) -> int:
        """Append the good ones of a run's first ``kept`` samples, every crop, to ``pending``; returns how
        many views were added. ``clip_of(i)``: the temporal clip of sample ``i``."""

        ok = run.ok[:kept]
        if not ok.any():
            return 0
        rows = np.flatnonzero(ok)
        added = 0
        for s, tl in enumerate(run.videos):
            video = to_torch(tl, self.device, self._host, self.dtype)[:kept]
            if not ok.all():
                video = video[to_device(rows, video.device)]
            view = np.array([self.view_index[(clip_of(i), s)] for i in rows], dtype=np.int64)
            pending.append(Chunk(video, run.labels[rows], [run.keys[i] for i in rows], view))
            added += len(rows)
        return added


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
    num_threads: int | None = None,
    epoch: int = 0,
    log_every: int = 100,
    num_sample: int = 1,
    dtype=None,
    decode_batch: int | None = None,
    num_workers: int | None = None,
    prefetch_queue_depth: int | None = None,
    affine: bool | None = None,
) -> VideoLoader:
    """Batches of clips from ``shards_dir``'s ``split`` (see the module docstring).

    recipe: ``"mvit"`` / ``"swin"`` (`CLIP_SPECS` / `AUG_SPECS`) or an explicit ``(ClipSpec, AugmentSpec)``
        (the ClipSpec given replaces the AugmentSpec's own).
    device: where the batches' tensors live (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
    decoder: ``"auto"``, ``"dali-gpu"``, ``"dali-cpu"`` or ``"pyav"``.
    train: random clips + training augmentation, reshuffled per epoch (`set_epoch`); else every view of
        every video of this rank's slice once.
    views: ``(num_clips, num_crops)`` at evaluation (default: the recipe's, MViT 10×1, Swin 4×3).
    num_threads, num_workers, decode_batch, prefetch_queue_depth, affine: how the pass decodes (DALI
        threads, source processes, samples per DALI run, runs made ahead, NVDEC threads pinned to cores);
        None: the device's default (`pipelines.decoders.decode_settings`; on an H100 14 NVDEC threads and
        runs of 28 clips, on the CPU 2 threads). ``loader.settings`` holds what was chosen.
    log_every: warn (logger ``"stts.pipelines"``) at the first decode fault, then once per this many.
    num_sample: training only: repeated augmentation, ``num_sample`` independently augmented clips of each
        decoded video, side by side in the batch (``batch_size · num_sample`` clips per batch; MViT recipe 2).
    dtype: the batches' video dtype, ``torch.float32`` (default), ``torch.float16`` or ``torch.bfloat16``: the
        training precision, so that no cast of the batch is left to the loop (on a GPU float16 comes out of
        DALI; bfloat16, which DALI lacks, is cast on the consumer's stream; on the CPU while copying out).
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
        dtype=dtype,
        decode_batch=decode_batch,
        num_workers=num_workers,
        prefetch_queue_depth=prefetch_queue_depth,
        affine=affine,
    )
