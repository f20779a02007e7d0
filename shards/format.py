"""The shard format, read in one place: ``manifest.json``, the ``.idx`` files, the ``.i32`` member, and how
a split's samples are shared out to ranks epoch after epoch.

`shards.build` and `shards.writer` write it; the loader, `stts eval`, the trainer, `stts predict`/`viz`
and the benchmarks read it through this module only, so the format has one reader.

* ``manifest.json`` (`read_manifest`, `read_split`, `shard_classes`): format version, dataset, classes,
  and per split its shards (name, samples, bytes), sample count, codecs, rejects and options. The loader
  trusts its sizes and fails loudly without it.
* ``{split}-NNNNNN.idx`` beside each tar (`read_index`, `list_samples`, `index_count`): DALI's webdataset
  index, version ``v1.2``: a header ``"v1.2 <samples>"``, then one line per sample listing
  ``"<ext> <data offset> <size> <member name>"`` for each of its members.
* ``KEY.i32`` (`parse_i32`, `pack_i32`): five little-endian int32, `I32_FIELDS`: label, frame count,
  fps x 1000, width, height: the numbers a clip's frame indices need, without parsing JSON.
* `RankLayout`: rank ``r`` of ``k`` owns the samples ``[N*r//k, N*(r+1)//k)`` of an epoch's order and
  reads ``ceil(N/k)`` per epoch, the extra ones repeating its last sample (the layout of DALI's readers
  with ``pad_last_batch=True, stick_to_shard=True``), so every rank runs the same number of batches.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "DALI_INDEX_VERSION",
    "I32_FIELDS",
    "MANIFEST",
    "MANIFEST_VERSION",
    "VIDEO_EXTS",
    "I32",
    "RankLayout",
    "ShardSample",
    "Split",
    "idx_path",
    "index_count",
    "list_samples",
    "pack_i32",
    "parse_i32",
    "read_index",
    "read_manifest",
    "read_member",
    "read_split",
    "shard_classes",
]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
DALI_INDEX_VERSION = "v1.2"
I32_FIELDS = ("label", "num_frames", "fps_x1000", "width", "height")
_I32 = struct.Struct("<5i")
VIDEO_EXTS = ("mp4", "webm", "mkv")  # the video member of a sample has one of these extensions
# shards probed before the codec's own name was recorded list FFmpeg's decoder instead
_DECODER_CODECS = {"libdav1d": "av1", "libaom-av1": "av1"}


# ------------------------------------------------------------------------------------------ manifest


def read_manifest(shards_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a shards folder; `FileNotFoundError` / `ValueError` saying what to do."""
    path = Path(shards_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {shards_dir}: build the shards first (stts shard)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{path} is not valid JSON: rebuild the shards with `stts shard`") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a shards manifest: rebuild the shards with `stts shard`")
    return manifest


@dataclass(frozen=True)
class Split:
    """One split of a shards folder as the manifest lists it."""

    name: str
    tars: list[str]
    samples: int
    codecs: dict[str, int]  # codec -> samples

    @property
    def idxs(self) -> list[str]:
        return [idx_path(t) for t in self.tars]


def read_split(shards_dir: str | os.PathLike, split: str) -> Split:
    """``split``'s shards from the manifest; `KeyError` naming the splits there are, `ValueError` if empty."""
    manifest = read_manifest(shards_dir)
    splits = manifest.get("splits", {})
    if split not in splits:
        raise KeyError(f"{Path(shards_dir) / MANIFEST}: no split {split!r} (has {sorted(splits)})")
    entry = splits[split]
    if not entry.get("shards") or entry.get("samples", 0) < 1:
        raise ValueError(f"{Path(shards_dir) / MANIFEST}: split {split!r} has no samples")
    tars = [str(Path(shards_dir) / s["name"]) for s in entry["shards"]]
    codecs: dict[str, int] = {}
    for name, n in entry.get("codecs", {}).items():
        codec = _DECODER_CODECS.get(name, name)
        codecs[codec] = codecs.get(codec, 0) + int(n)
    return Split(split, tars, int(entry["samples"]), codecs)


def shard_classes(shards_dir: str | os.PathLike, split: str | None = None) -> list[str]:
    """The class names of a shards folder (the manifest's, else ``classes.txt``), after checking that
    ``split`` (if given) exists; `ValueError` with a one-line reason otherwise."""
    data = Path(shards_dir)
    try:
        manifest = read_manifest(data)
    except FileNotFoundError:
        raise ValueError(
            f"no {MANIFEST} in {data}: give the folder `stts shard --out` wrote (or build it first)"
        ) from None
    splits = manifest.get("splits", {})
    if split is not None and split not in splits:
        raise ValueError(
            f"{data} has no split {split!r} (it has {', '.join(sorted(splits)) or 'none'}); pick --split"
        )
    classes = manifest.get("classes")
    if not classes and (data / "classes.txt").is_file():
        classes = [ln.strip() for ln in (data / "classes.txt").read_text().splitlines() if ln.strip()]
    if not classes:
        raise ValueError(f"{data}: no class list in {MANIFEST} or classes.txt; rebuild the shards")
    return list(classes)


# --------------------------------------------------------------------------------------------- .idx


@dataclass(frozen=True)
class ShardSample:
    """One sample of a shard: its key, tar, video member name and each member's ``(offset, size)``."""

    key: str
    tar: str
    video: str  # the video member's name, e.g. "KEY.webm"
    members: dict[str, tuple[int, int]]  # ext -> (data offset in the tar, size)

    @property
    def video_ext(self) -> str:
        return self.video.partition(".")[2]

    @property
    def source_info(self) -> str:
        """What DALI's webdataset reader calls a sample's ``source_info``: ``'tar:offset:member'``."""
        return f"{self.tar}:{self.members[self.video_ext][0]}:{self.video}"


def idx_path(tar: str | os.PathLike) -> str:
    """The ``.idx`` file beside a shard tar."""
    tar = str(tar)
    return (tar[: -len(".tar")] if tar.endswith(".tar") else tar) + ".idx"


def _header(idx: str | os.PathLike, line: str) -> int:
    fields = line.split()
    if len(fields) != 2 or fields[0] != DALI_INDEX_VERSION or not fields[1].isdigit():
        raise ValueError(f"{idx}: not a {DALI_INDEX_VERSION} webdataset index (header {fields})")
    return int(fields[1])


def index_count(idx: str | os.PathLike) -> int:
    """Samples in one shard, from its ``.idx`` header alone."""
    with open(idx, encoding="utf-8") as f:
        return _header(idx, f.readline())


def read_index(tar: str | os.PathLike, idx: str | os.PathLike | None = None) -> list[ShardSample]:
    """The samples of one shard in index (= tar) order, located by its ``.idx``."""
    idx = idx_path(tar) if idx is None else idx
    with open(idx, encoding="utf-8") as f:
        count = _header(idx, f.readline())
        lines = [line.split() for line in f if line.strip()]
    if len(lines) != count:
        raise ValueError(f"{idx}: header says {count} samples, found {len(lines)}")
    samples = []
    for fields in lines:
        if len(fields) % 4:
            raise ValueError(f"{idx}: bad line {' '.join(fields)!r}")
        members: dict[str, tuple[int, int]] = {}
        video = key = None
        for j in range(0, len(fields), 4):
            ext, offset, size, name = fields[j : j + 4]
            members[ext] = (int(offset), int(size))
            key = name.partition(".")[0]
            if ext in VIDEO_EXTS:
                video = name
        if video is None or "i32" not in members:
            raise ValueError(f"{idx}: sample {key} lacks a video ({', '.join(VIDEO_EXTS)}) or an .i32 member")
        samples.append(ShardSample(key, str(tar), video, members))
    return samples


def list_samples(
    tars: Sequence[str | os.PathLike], idxs: Sequence[str | os.PathLike] | None = None
) -> list[ShardSample]:
    """Every sample of the shards, in shard order then index order (the order an epoch permutes)."""
    idxs = [idx_path(t) for t in tars] if idxs is None else idxs
    if len(tars) != len(idxs) or not tars:
        raise ValueError("need one .idx per tar, and at least one tar")
    return [s for t, i in zip(tars, idxs, strict=True) for s in read_index(t, i)]


def read_member(tar: str | os.PathLike, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of ``tar`` (a member's data, as located by the ``.idx``)."""
    with open(tar, "rb") as f:
        data = os.pread(f.fileno(), size, offset)
    if len(data) != size:
        raise ValueError(f"{tar}: short read at {offset} ({len(data)} of {size} bytes)")
    return data


# --------------------------------------------------------------------------------------------- .i32


class I32(NamedTuple):
    label: int
    num_frames: int
    fps: float
    width: int
    height: int


def pack_i32(label: int, num_frames: int, fps: float, width: int, height: int) -> bytes:
    return _I32.pack(label, num_frames, round(fps * 1000), width, height)


def parse_i32(data: bytes) -> I32:
    """The ``.i32`` member: ``(label, num_frames, fps, width, height)``."""
    if len(data) != _I32.size:
        raise ValueError(f".i32 member must be {_I32.size} bytes, got {len(data)}")
    label, n, fps_x1000, w, h = _I32.unpack(data)
    return I32(label, n, fps_x1000 / 1000, w, h)


# ------------------------------------------------------------------------------------- rank layout


@dataclass(frozen=True)
class RankLayout:
    """Which samples of an epoch's order rank ``rank`` of ``world_size`` reads, for ``total`` samples.

    The rank owns positions ``[begin, begin + samples)`` (``begin = N*r//k``) and reads ``padded =
    ceil(N/k)`` per epoch: its own, then its last one repeated, and then up to whole batches, so that
    every rank runs the same number of pipeline iterations per epoch whatever ``N mod k``."""

    total: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {self.rank}, {self.world_size}")
        if self.total < 0:
            raise ValueError(f"total must be >= 0, got {self.total}")

    @property
    def begin(self) -> int:
        return self.total * self.rank // self.world_size

    @property
    def samples(self) -> int:
        """Distinct samples of this rank per epoch."""
        return self.total * (self.rank + 1) // self.world_size - self.begin

    @property
    def padded(self) -> int:
        """Samples every rank reads per epoch (its own, then its last repeated)."""
        return math.ceil(self.total / self.world_size)

    def iterations(self, batch_size: int) -> int:
        """Pipeline iterations per epoch with batches of ``batch_size`` (the last one padded)."""
        return math.ceil(self.padded / batch_size)

    def locate(self, iteration: int, slot: int, batch_size: int) -> tuple[int, int]:
        """``(epoch, position in the epoch's order)`` read at pipeline ``iteration``, batch ``slot``."""
        if self.samples < 1:
            raise ValueError(f"rank {self.rank} of {self.world_size} gets no sample of {self.total}")
        epoch, it = divmod(iteration, self.iterations(batch_size))
        return epoch, self.begin + min(it * batch_size + slot, self.samples - 1)

    def train_batches(self, batch_size: int) -> int:
        """Full training batches per epoch, the same on every rank: ``max(1, (N // k) // batch_size)``."""
        return max(1, (self.total // self.world_size) // batch_size)
