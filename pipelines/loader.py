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
evaluation), then the outputs; built with ``enable_conditionals=True`` when the recipe uses RandAugment
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
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipelines.augment import AUG_SPECS, AugmentSpec, eval_transform, train_transform
from pipelines.dali_decode import SampleMeta, check_reader, clip_graph, key_of
from pipelines.sampling import (
    CLIP_SPECS,
    ClipSpec,
    eval_clip_indices,
    eval_views,
    sample_rng,
    train_clip_indices,
)

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


def _read_split(shards_dir: Path, split: str) -> dict:
    path = shards_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in {shards_dir}: build the shards first (stts shard)")
    manifest = json.loads(path.read_text())
    splits = manifest.get("splits", {})
    if split not in splits:
        raise KeyError(f"{path}: no split {split!r} (has {sorted(splits)})")
    entry = splits[split]
    if not entry.get("shards") or entry.get("samples", 0) < 1:
        raise ValueError(f"{path}: split {split!r} has no samples")
    return entry


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


def _to_torch(tensor_list, device, dtype=None):
    """A dense DALI TensorList → a torch tensor on ``device`` (copied out of DALI's buffers)."""
    import torch

    if hasattr(tensor_list, "as_cpu") and type(tensor_list).__name__ == "TensorListGPU":
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = tensor_list.as_tensor()
        out = torch.empty(dense.shape(), dtype=dtype or torch.float32, device=device)
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(out.device))
        return out
    arr = np.array(tensor_list.as_tensor())
    out = torch.from_numpy(arr)
    if dtype is not None:
        out = out.to(dtype)
    return out.to(device)


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
    ) -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank}, {world_size}")
        if seed < 0 or epoch < 0:
            raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
        self.shards_dir = Path(shards_dir)
        entry = _read_split(self.shards_dir, split)
        self.split = split
        self.tars = [str(self.shards_dir / s["name"]) for s in entry["shards"]]
        self.idxs = [t[: -len(".tar")] + ".idx" for t in self.tars]
        self.num_samples = int(entry["samples"])
        self.codecs = sorted(entry.get("codecs", {}))
        self.clip, self.aug = _resolve_recipe(recipe, views)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.decoder = choose_decoder(decoder, self.codecs)
        self.train = train
        self.num_threads = num_threads
        self.epoch = epoch
        n, k = self.num_samples, world_size
        self.rank_samples = n * (rank + 1) // k - n * rank // k
        if self.rank_samples < 1:
            raise ValueError(f"rank {rank} of {world_size} gets no sample of the {n} in {split!r}")
        self.views = eval_views(self.clip)  # [(clip, crop)] in the official order
        self.view_index = {tc: v for v, tc in enumerate(self.views)}
        self.pipelines_built = 0  # DALI pipelines built so far: one per pass

    # ---- the loop's interface
    def __len__(self) -> int:
        if self.train:
            return max(1, (self.num_samples // self.world_size) // self.batch_size)
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

    def _pipeline(self, frame_indices, seed: int, shuffle: bool):
        """The pass's one DALI pipeline: decoder graph → augmentation → outputs ``(video, label, key)``
        in training, ``(crop_0, ..., crop_{n-1}, label, key)`` at evaluation, then the frame indices (built)."""
        from nvidia.dali import pipeline_def

        aug, train, crops = self.aug, self.train, self.clip.num_crops
        pyav = self.decoder == "pyav"
        kw: dict[str, Any] = {}
        source = None
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
            )
            # fork is unsafe once CUDA is up
            kw = dict(
                py_num_workers=self.num_threads,
                py_start_method="spawn" if torch.cuda.is_available() else "fork",
            )
        to_gpu = self._cuda_output and self.decoder != "dali-gpu"

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=self._device_id(),
            seed=seed,
            enable_conditionals=train and aug.randaugment is not None,
            **kw,
        )
        def pipe():
            if source is not None:
                from pipelines.pyav_feed import pyav_clip_graph

                frames, label, key, indices = pyav_clip_graph(source, prefetch_queue_depth=2)
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
                )
            if to_gpu:
                frames = frames.gpu()
            if train:
                return train_transform(frames, aug), label, key, indices
            return (*(eval_transform(frames, aug, c, crops) for c in range(crops)), label, key, indices)

        p = pipe()
        p.build()
        if source is None:
            check_reader(p, self.idxs, self.world_size)
        self.pipelines_built += 1
        return p

    def _runs(self, frame_indices, seed: int, shuffle: bool, runs: int):
        """Yield ``runs`` batches of the pass's pipeline as ``(epoch_of_run, kept, videos, labels, keys)``;
        ``videos`` is one output per crop (one in training) and ``kept`` how many leading samples are real
        (not padding) for evaluation."""
        pipe = self._pipeline(frame_indices, seed, shuffle)
        samples, iterations = self.rank_samples, self._iterations_per_epoch
        try:
            for it in range(runs):
                *videos, label, key, _ = pipe.run()  # the indices too: all outputs used
                read_epoch, pos = divmod(it, iterations)
                kept = min(self.batch_size, samples - pos * self.batch_size)
                labels = np.array(label.as_tensor()).astype(np.int64).reshape(-1)
                keys = [key_of(np.array(key[i])) for i in range(len(key))]
                yield read_epoch, kept, videos, labels, keys
        finally:
            del pipe

    @property
    def _iterations_per_epoch(self) -> int:
        """Pipeline runs per reading epoch: each rank reads ``ceil(N/k)`` samples (padded), whole batches."""
        return math.ceil(math.ceil(self.num_samples / self.world_size) / self.batch_size)

    def _iter_train(self) -> Iterator[Batch]:
        import torch

        epoch = self.epoch
        indices = TrainClipIndices(self.clip, self.seed, epoch)
        for _, _, (video,), labels, keys in self._runs(
            indices, _derived_seed(self.seed, epoch, 0), True, len(self)
        ):
            yield Batch(
                video=_to_torch(video, self.device),
                label=torch.from_numpy(labels).to(self.device),
                key=keys,
                view=torch.zeros(len(keys), dtype=torch.long, device=self.device),
            )

    def _iter_eval(self) -> Iterator[Batch]:
        pending: list[tuple[Any, np.ndarray, list[str], np.ndarray]] = []  # (video, label, key, view)
        pending_n = 0
        runs = self.clip.num_clips * self._iterations_per_epoch
        for t, kept, videos, labels, keys in self._runs(EvalClipIndices(self.clip), self.seed, False, runs):
            if kept <= 0:
                continue
            for s, out in enumerate(videos):
                video = _to_torch(out, self.device)[:kept]
                view = np.full(kept, self.view_index[(t, s)], dtype=np.int64)
                pending.append((video, labels[:kept], keys[:kept], view))
                pending_n += kept
            while pending_n >= self.batch_size:
                batch, pending, pending_n = _take(pending, self.batch_size)
                yield batch
        if pending_n:
            batch, pending, pending_n = _take(pending, pending_n)
            yield batch


def _take(pending: list, n: int) -> tuple[Batch, list, int]:
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
        video=torch.cat(videos),
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
    )
