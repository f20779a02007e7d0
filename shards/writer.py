"""Deterministic WebDataset tar shards with DALI index files, written atomically.

A shard is written under a temporary name and renamed only once it and its `.idx` are complete, so a
file named `{split}-NNNNNN.tar` is always whole. Tar headers carry no time, owner or mode that differs
between runs, and members of a sample are written in sorted order: the same samples give the same bytes.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

# DALI's webdataset index format (`shards.format`), written while we write the tar: no shard is read twice
from .format import DALI_INDEX_VERSION


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@dataclass
class ShardInfo:
    name: str
    samples: int
    bytes: int
    keys: list[str] = field(default_factory=list)


Member = bytes | Path  # bytes, or a file whose bytes are copied as they are


def member_size(data: Member) -> int:
    return len(data) if isinstance(data, bytes) else os.path.getsize(data)


def _final_size(offset: int) -> int:
    """Tar size once closed: two zero blocks end the archive, then zeros up to a whole record, as
    tar(1) and tarfile write it."""
    end = offset + 2 * tarfile.BLOCKSIZE
    return end + (-end % tarfile.RECORDSIZE)


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    # GNU format: names longer than 100 bytes get a ././@LongLink entry instead of failing
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


class _OpenShard:
    """One tar being written. Members are written straight to the file (header, data, padding), which
    is what tarfile does, without its per-block copy loop."""

    def __init__(self, out: Path, name: str, fsync: bool = True):
        self.fsync = fsync
        self.final = out / name
        self.tmp = out / f".{name}.tmp"
        self.idx_final = self.final.with_suffix(".idx")
        self.idx_tmp = out / f".{self.idx_final.name}.tmp"
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - open until finish() or discard()
        self.offset = 0
        self.index_lines: list[str] = []
        self.keys: list[str] = []

    def add(self, key: str, members: dict[str, Member]) -> None:
        entries = []
        for ext in sorted(members):
            data = members[ext]
            size = member_size(data)
            name = f"{key}.{ext}"
            header = _tar_header(name, size)
            pad = -size % tarfile.BLOCKSIZE
            self.file.write(header)
            if isinstance(data, bytes):
                self.file.write(data)
            else:
                self._copy_file(data, size)
            self.file.write(b"\0" * pad)
            entries.append(f"{ext} {self.offset + len(header)} {size} {name}")
            self.offset += len(header) + size + pad
        self.index_lines.append(" ".join(entries))
        self.keys.append(key)

    def _copy_file(self, path: Path, size: int) -> None:
        # the kernel copies file to file: the video bytes never pass through Python
        self.file.flush()
        with open(path, "rb") as src:
            done = 0
            while done < size:
                sent = os.sendfile(self.file.fileno(), src.fileno(), done, size - done)
                if sent == 0:
                    raise OSError(f"{path} shrank while being copied")
                done += sent

    def size(self) -> int:
        return self.offset

    def finish(self) -> ShardInfo:
        end = _final_size(self.offset)
        self.file.write(b"\0" * (end - self.offset))
        self.file.flush()
        if self.fsync:
            # on disk before it gets its final name: a shard that looks complete survives a power cut
            os.fsync(self.file.fileno())
        self.file.close()
        index = f"{DALI_INDEX_VERSION} {len(self.keys)}\n" + "".join(line + "\n" for line in self.index_lines)
        with open(self.idx_tmp, "w", encoding="utf-8") as f:
            f.write(index)
        os.replace(self.idx_tmp, self.idx_final)
        # the tar is renamed last: its final name is the mark of a complete shard
        os.replace(self.tmp, self.final)
        return ShardInfo(self.final.name, len(self.keys), end, list(self.keys))

    def discard(self) -> None:
        self.file.close()
        for p in (self.tmp, self.idx_tmp):
            p.unlink(missing_ok=True)


class ShardWriter:
    """Appends samples to `{split}-NNNNNN.tar`, starting a new shard at `max_count` samples or before a
    sample would take the shard past `max_size` bytes (a sample larger than that gets a shard alone)."""

    def __init__(
        self,
        out: Path,
        split: str,
        *,
        max_count: int,
        max_size: int,
        start_index: int = 0,
        on_shard=None,
        fsync: bool = True,
    ):
        self.fsync = fsync
        self.out = Path(out)
        self.split = split
        self.max_count = max_count
        self.max_size = max_size
        self.index = start_index
        self.on_shard = on_shard  # called with each finished ShardInfo
        self.finished: list[ShardInfo] = []
        self._shard: _OpenShard | None = None

    def add(self, key: str, members: dict[str, Member]) -> None:
        incoming = sum(
            len(_tar_header(f"{key}.{ext}", size)) + size + (-size % tarfile.BLOCKSIZE)
            for ext, size in ((ext, member_size(v)) for ext, v in members.items())
        )
        shard = self._shard
        if shard is not None and (
            len(shard.keys) >= self.max_count or _final_size(shard.size() + incoming) > self.max_size
        ):
            self.flush()
        if self._shard is None:
            self._shard = _OpenShard(self.out, shard_name(self.split, self.index), self.fsync)
        self._shard.add(key, members)

    def flush(self) -> None:
        """Finish the open shard, if any."""
        if self._shard is None:
            return
        info = self._shard.finish()
        self._shard = None
        self.index += 1
        self.finished.append(info)
        if self.on_shard is not None:
            self.on_shard(info)

    def discard(self) -> None:
        if self._shard is not None:
            self._shard.discard()
            self._shard = None
