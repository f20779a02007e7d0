"""MP4 for `pipelines.gop_cut`: the video track's packets from its sample tables, and a new MP4 of a run.

Reading costs no FFmpeg: ``moov``'s sample tables give every sample's file offset and size (``stsz``,
``stsc``, ``stco``/``co64``), decode time (``stts``), composition offset (``ctts``) and whether it is a
sync sample (``stss``; none means all are). A packet's presentation time is decode time + composition
offset, as libavformat's mov demuxer computes it.

Writing copies the sample entry (``stsd``: codec, ``avcC``/``hvcC`` parameter sets, colour, aspect)
verbatim and writes fresh tables for the run's samples, moov before mdat, one chunk, no edit list. The
composition offsets are shifted to be non-negative (``ctts`` version 0), which keeps the run's
presentation order and gives no packet a negative timestamp (DALI's frame index, when it builds one,
leaves those out: ``FramesDecoderBase::BuildIndex``, dali/operators/video/frames_decoder_base.cc).

Refused (``read`` returns None and the caller demuxes with PyAV): fragmented files, several video tracks
or sample entries, ``stz2`` sizes, and edit lists that make libavformat drop frames (an edit starting
after the first frame's composition time or ending before the last one's; its ``mov_fix_index`` marks
those samples discarded), since a cut could not reproduce them. The edit list FFmpeg writes for B-frames
(one edit at the first frame's composition time) and leading empty edits only shift timestamps.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from shards.mp4index import FOURCC_CODECS, iter_boxes

_TOP = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"uuid", b"meta", b"pdin"}
_PATH = {b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def is_mp4(data: bytes) -> bool:
    return len(data) >= 12 and data[4:8] in _TOP


@dataclass(frozen=True, eq=False)
class Mp4Track:
    """One video track's samples in decode order, and the boxes a cut copies."""

    exact: ClassVar[bool] = True  # the tables' timestamps are the demuxer's (repeats are checked later)

    codec: str
    nal_length: int | None  # bytes of each NAL unit's length prefix (H.264/HEVC), else None
    offset: np.ndarray  # int64 file offset of each sample
    size: np.ndarray  # int64
    duration: np.ndarray  # int64 decode-time delta of each sample (stts)
    cts_offset: np.ndarray | None  # int64 composition offset of each sample (ctts), None without ctts
    pts: np.ndarray  # int64 presentation time (decode time + composition offset), media timescale
    key: np.ndarray  # bool sync sample
    has_stss: bool
    ftyp: bytes
    mvhd_timescale: int
    tkhd: bytes  # whole boxes, copied
    mdhd: bytes
    hdlr: bytes
    vmhd: bytes
    stsd: bytes

    def payload(self, data: bytes, i: int) -> memoryview:
        o = int(self.offset[i])
        return memoryview(data)[o : o + int(self.size[i])]

    def write(self, data: bytes, first: int, last: int) -> bytes:
        """A self-contained MP4 of samples ``first..last`` (decode positions)."""
        sel = slice(first, last + 1)
        n = last - first + 1
        sizes = self.size[sel]
        durations = self.duration[sel]
        media_duration = int(durations.sum())
        movie_duration = media_duration * self.mvhd_timescale // _mdhd_timescale(self.mdhd)
        stbl = [self.stsd, _stts(durations)]
        if self.cts_offset is not None:
            off = self.cts_offset[sel]
            stbl.append(_ctts(off - min(int(off.min()), 0)))
        if self.has_stss:
            sync = (np.flatnonzero(self.key[sel]) + 1).astype(">u4")
            stbl.append(_full_box(b"stss", 0, 0, struct.pack(">I", len(sync)) + sync.tobytes()))
        stbl.append(_full_box(b"stsz", 0, 0, struct.pack(">II", 0, n) + sizes.astype(">u4").tobytes()))
        stbl.append(_full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, n, 1)))
        # stco last, in the last box at every level, so that its one offset is moov's last 4 bytes
        stbl.append(_full_box(b"stco", 0, 0, struct.pack(">II", 1, 0)))
        dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1) + _full_box(b"url ", 0, 1, b"")))
        minf = _box(b"minf", self.vmhd, dinf, _box(b"stbl", *stbl))
        mdia = _box(b"mdia", _patch_duration(self.mdhd, media_duration), self.hdlr, minf)
        trak = _box(b"trak", _patch_tkhd(self.tkhd, movie_duration), mdia)
        moov = bytearray(_box(b"moov", _mvhd(self.mvhd_timescale, movie_duration), trak))
        mdat_size = 8 + int(sizes.sum())
        struct.pack_into(">I", moov, len(moov) - 4, len(self.ftyp) + len(moov) + 8)
        view = memoryview(data)
        parts = [self.ftyp, moov, struct.pack(">I4s", mdat_size, b"mdat")]
        starts = self.offset[sel]
        ends = starts + sizes
        # one slice per run of adjacent samples (samples of a track are usually contiguous between the
        # audio chunks), not one per sample
        breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, n], strict=True):
            parts.append(view[int(starts[a]) : int(ends[b - 1])])
        return b"".join(parts)


def read(data: bytes) -> Mp4Track | None:
    """The video track of an unfragmented MP4 held in memory, or None (see the module docstring)."""
    try:
        return _read(data)
    except (ValueError, struct.error, IndexError, KeyError):
        return None


def _read(data: bytes) -> Mp4Track | None:
    ftyp = b""
    moov = None
    for kind, start, end in iter_boxes(data, 0, len(data)):
        if kind == b"ftyp":
            ftyp = data[start - 8 : end]
        elif kind == b"moov":
            moov = (start, end)
        elif kind == b"moof":
            return None  # fragmented: the samples are described outside moov
    if moov is None:
        return None
    mvhd_timescale = 0
    video = []
    for kind, start, end in iter_boxes(data, *moov):
        if kind == b"mvhd":
            mvhd_timescale = struct.unpack_from(">I", data, start + (20 if data[start] == 1 else 12))[0]
        elif kind == b"trak":
            boxes: dict[bytes, tuple[int, int]] = {}
            _collect(data, start, end, boxes)
            hdlr = boxes.get(b"hdlr")
            if hdlr is not None and data[hdlr[0] + 8 : hdlr[0] + 12] == b"vide":
                video.append(boxes)
    if len(video) != 1 or not mvhd_timescale:
        return None
    return _track(data, video[0], ftyp, mvhd_timescale)


def _collect(data: bytes, start: int, end: int, into: dict) -> None:
    for kind, s, e in iter_boxes(data, start, end):
        if kind in _PATH:
            _collect(data, s, e, into)
        else:
            into.setdefault(kind, (s, e))


def _track(data: bytes, b: dict, ftyp: bytes, mvhd_timescale: int) -> Mp4Track | None:
    needed = (b"tkhd", b"mdhd", b"hdlr", b"stsd", b"stts", b"stsz", b"stsc")
    if any(k not in b for k in needed) or (b"stco" not in b and b"co64" not in b):
        return None

    def whole(kind: bytes) -> bytes:
        s, e = b[kind]
        return data[s - 8 : e]

    s = b[b"stsd"][0]
    if struct.unpack_from(">I", data, s + 4)[0] != 1:
        return None  # several sample descriptions: a cut would have to carry them all
    entry_size, fourcc = struct.unpack_from(">I4s", data, s + 8)
    codec = FOURCC_CODECS.get(fourcc, fourcc.decode("latin-1").strip())
    nal_length = _nal_length(data, s + 8 + 8 + 78, s + 8 + entry_size)

    s = b[b"stsz"][0]
    sample_size, count = struct.unpack_from(">II", data, s + 4)
    if not count:
        return None
    if sample_size:
        size = np.full(count, sample_size, np.int64)
    else:
        size = np.frombuffer(data, ">u4", count, s + 12).astype(np.int64)

    if b"stco" in b:
        s = b[b"stco"][0]
        chunks = np.frombuffer(data, ">u4", struct.unpack_from(">I", data, s + 4)[0], s + 8)
    else:
        s = b[b"co64"][0]
        chunks = np.frombuffer(data, ">u8", struct.unpack_from(">I", data, s + 4)[0], s + 8)
    chunks = chunks.astype(np.int64)
    s = b[b"stsc"][0]
    n = struct.unpack_from(">I", data, s + 4)[0]
    stsc = np.frombuffer(data, ">u4", 3 * n, s + 8).reshape(n, 3).astype(np.int64)
    first_chunk = np.append(stsc[:, 0], len(chunks) + 1)
    per_chunk = np.repeat(stsc[:, 1], np.diff(first_chunk))
    if n == 0 or stsc[0, 0] != 1 or len(per_chunk) != len(chunks) or per_chunk.sum() != count:
        return None
    chunk_of = np.repeat(np.arange(len(chunks)), per_chunk)
    end = np.cumsum(size)
    chunk_first = np.cumsum(per_chunk) - per_chunk  # index of each chunk's first sample
    before = (end - size)[chunk_first]  # bytes of the samples before each chunk's first
    offset = chunks[chunk_of] + (end - size) - before[chunk_of]
    if int((offset + size).max()) > len(data):
        return None  # truncated: let the demuxer say so

    s = b[b"stts"][0]
    n = struct.unpack_from(">I", data, s + 4)[0]
    stts = np.frombuffer(data, ">u4", 2 * n, s + 8).reshape(n, 2).astype(np.int64)
    duration = np.repeat(stts[:, 1], stts[:, 0])
    if len(duration) != count:
        return None
    dts = np.cumsum(duration) - duration

    cts_offset = None
    if b"ctts" in b:
        s = b[b"ctts"][0]
        n = struct.unpack_from(">I", data, s + 4)[0]
        # signed whatever the version: libavformat reads both as int32 (version 0 files with negative
        # offsets exist)
        ctts = np.frombuffer(data, ">i4", 2 * n, s + 8).reshape(n, 2).astype(np.int64)
        cts_offset = np.repeat(ctts[:, 1], ctts[:, 0])
        if len(cts_offset) != count:
            return None
    pts = dts if cts_offset is None else dts + cts_offset

    key = np.ones(count, bool)
    has_stss = b"stss" in b
    if has_stss:
        s = b[b"stss"][0]
        n = struct.unpack_from(">I", data, s + 4)[0]
        sync = np.frombuffer(data, ">u4", n, s + 8).astype(np.int64) - 1
        if n and (sync.min() < 0 or sync.max() >= count):
            return None
        key[:] = False
        key[sync] = True

    mdhd = whole(b"mdhd")
    if b"elst" in b and not _edits_drop_nothing(data, b[b"elst"][0], pts, mvhd_timescale, mdhd):
        return None
    vmhd = whole(b"vmhd") if b"vmhd" in b else _full_box(b"vmhd", 0, 1, bytes(8))
    return Mp4Track(
        codec=codec,
        nal_length=nal_length,
        offset=offset,
        size=size,
        duration=duration,
        cts_offset=cts_offset,
        pts=pts,
        key=key,
        has_stss=has_stss,
        ftyp=ftyp or _box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomiso2mp41"),
        mvhd_timescale=mvhd_timescale,
        tkhd=whole(b"tkhd"),
        mdhd=mdhd,
        hdlr=whole(b"hdlr"),
        vmhd=vmhd,
        stsd=whole(b"stsd"),
    )


def _nal_length(data: bytes, start: int, end: int) -> int | None:
    """The NAL length prefix size from the sample entry's avcC (byte 4) or hvcC (byte 21) child box."""
    try:
        for kind, s, _ in iter_boxes(data, start, end):
            if kind == b"avcC":
                return (data[s + 4] & 3) + 1
            if kind == b"hvcC":
                return (data[s + 21] & 3) + 1
    except ValueError:
        return None
    return None


def _edits_drop_nothing(data: bytes, s: int, pts: np.ndarray, mvhd_timescale: int, mdhd: bytes) -> bool:
    """Whether the edit list only shifts timestamps: empty edits, then one edit at rate 1 that starts at
    or before the first composition time and ends after the last."""
    version = data[s]
    n = struct.unpack_from(">I", data, s + 4)[0]
    fmt, step = (">QqhH", 20) if version == 1 else (">IihH", 12)
    edits = [struct.unpack_from(fmt, data, s + 8 + i * step) for i in range(n)]
    while edits and edits[0][1] == -1:
        edits.pop(0)
    if len(edits) > 1:
        return False
    if not edits:
        return True
    duration, media_time, rate, _ = edits[0]
    if rate != 1 or media_time > int(pts.min()) or duration == 0:
        return False
    return media_time + duration * _mdhd_timescale(mdhd) / mvhd_timescale > int(pts.max())


def _mdhd_timescale(mdhd: bytes) -> int:
    return struct.unpack_from(">I", mdhd, 8 + (20 if mdhd[8] == 1 else 12))[0]


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, version: int, flags: int, body: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), body)


def _runs(values: np.ndarray) -> np.ndarray:
    """Run-length pairs ``(count, value)`` as a big-endian uint32 table."""
    starts = np.r_[0, np.flatnonzero(np.diff(values)) + 1]
    counts = np.diff(np.r_[starts, len(values)])
    return np.stack([counts, values[starts]], axis=1).astype(">u4")


def _stts(durations: np.ndarray) -> bytes:
    table = _runs(durations)
    return _full_box(b"stts", 0, 0, struct.pack(">I", len(table)) + table.tobytes())


def _ctts(offsets: np.ndarray) -> bytes:
    table = _runs(offsets)
    return _full_box(b"ctts", 0, 0, struct.pack(">I", len(table)) + table.tobytes())


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _mvhd(timescale: int, duration: int) -> bytes:
    body = struct.pack(">IIIIIH10x", 0, 0, timescale, duration, 0x10000, 0x100) + _MATRIX
    return _full_box(b"mvhd", 0, 0, body + bytes(24) + struct.pack(">I", 2))


def _patch_tkhd(tkhd: bytes, duration: int) -> bytes:
    """The source's tkhd (its matrix and display size kept) as track 1 of ``duration``."""
    out = bytearray(tkhd)
    if out[8] == 1:
        struct.pack_into(">I", out, 28, 1)
        struct.pack_into(">Q", out, 36, duration)
    else:
        struct.pack_into(">I", out, 20, 1)
        struct.pack_into(">I", out, 28, min(duration, 0xFFFFFFFF))
    return bytes(out)


def _patch_duration(mdhd: bytes, duration: int) -> bytes:
    out = bytearray(mdhd)
    if out[8] == 1:
        struct.pack_into(">Q", out, 32, duration)
    else:
        struct.pack_into(">I", out, 24, min(duration, 0xFFFFFFFF))
    return bytes(out)
