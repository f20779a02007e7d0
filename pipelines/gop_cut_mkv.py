"""Matroska / WebM for `pipelines.gop_cut`: the video track's blocks from the cluster structure, and a new
Matroska file of a run of them.

Reading walks the EBML tree (RFC 8794; Matroska element ids from RFC 9559) without decoding: per video
block its payload's position and size, its timestamp (cluster timestamp + the block's relative one, in
``TimestampScale`` units; Matroska stores presentation times, in decode order) and its keyframe flag
(a SimpleBlock's flag, or a BlockGroup without ReferenceBlock). Cues are not needed: a frame's index is
its timestamp's rank, which takes every block's timestamp.

Writing copies the EBML header and the video ``TrackEntry`` verbatim (codec id, CodecPrivate, colour,
DefaultDuration), and writes the run's blocks as SimpleBlocks with their original timestamps, payloads
and flags into as few clusters as the 16-bit relative timestamps allow; no Cues, no SeekHead (a decoder
reads it front to back).

Refused (``read`` returns None and the caller demuxes with PyAV): several video tracks, laced video
blocks, content encodings (header stripping, compression: the payloads are not the frames).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

EBML = 0x1A45DFA3
SEGMENT = 0x18538067
INFO = 0x1549A966
TIMESTAMP_SCALE = 0x2AD7B1
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_TYPE = 0x83
CODEC_ID = 0x86
CODEC_PRIVATE = 0x63A2
CONTENT_ENCODINGS = 0x6D80
CLUSTER = 0x1F43B675
CLUSTER_TIMESTAMP = 0xE7
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
REFERENCE_BLOCK = 0xFB
MUXING_APP = 0x4D80
WRITING_APP = 0x5741
# children of Segment: where a cluster of unknown size ends
_LEVEL1 = {0x114D9B74, INFO, TRACKS, 0x1C53BB6B, CLUSTER, 0x1254C367, 0x1043A770, 0x1941A469}
_UNKNOWN = -1
# the length of a variable-size integer from its first byte (0: invalid), and each length's value mask
_VLEN = bytes(next((n for n in range(1, 9) if b & (0x80 >> (n - 1))), 0) for b in range(256))
_MASK = [0] + [(1 << (7 * n)) - 1 for n in range(1, 9)]

CODECS = {
    "V_VP9": "vp9",
    "V_VP8": "vp8",
    "V_AV1": "av1",
    "V_MPEG4/ISO/AVC": "h264",
    "V_MPEGH/ISO/HEVC": "hevc",
    "V_MJPEG": "mjpeg",
    "V_MPEG4/ISO/ASP": "mpeg4",
}


def is_matroska(data: bytes) -> bool:
    return data[:4] == b"\x1a\x45\xdf\xa3"


def _id(buf: bytes, pos: int) -> tuple[int, int]:
    """An element id (marker bits kept, as ids are written) and the position after it."""
    b = buf[pos]
    n = 1 if b & 0x80 else 2 if b & 0x40 else 3 if b & 0x20 else 4 if b & 0x10 else 0
    if not n:
        raise ValueError(f"bad element id at {pos}")
    return int.from_bytes(buf[pos : pos + n], "big"), pos + n


def _size(buf: bytes, pos: int) -> tuple[int, int]:
    """A size (`_UNKNOWN` for the reserved all-ones value) and the position after it."""
    b = buf[pos]
    n = 1
    mask = 0x80
    while n <= 8 and not b & mask:
        n += 1
        mask >>= 1
    if n > 8:
        raise ValueError(f"bad element size at {pos}")
    value = int.from_bytes(buf[pos : pos + n], "big") & ((1 << (7 * n)) - 1)
    return (_UNKNOWN if value == (1 << (7 * n)) - 1 else value), pos + n


def _children(buf: bytes, start: int, end: int):
    """``(id, data start, data end)`` of the elements in ``buf[start:end]``."""
    pos = start
    while pos < end:
        eid, p = _id(buf, pos)
        size, p = _size(buf, p)
        if size == _UNKNOWN or p + size > end:
            raise ValueError("element of unknown size or running past its parent")
        yield eid, p, p + size
        pos = p + size


def _uint(buf: bytes, start: int, end: int) -> int:
    return int.from_bytes(buf[start:end], "big")


@dataclass(frozen=True, eq=False)
class MkvTrack:
    """One video track's blocks in file (decode) order, and what a cut copies."""

    exact: ClassVar[bool] = True  # the tables' timestamps are the demuxer's (repeats are checked later)

    codec: str
    nal_length: int | None
    offset: np.ndarray  # int64 position of each block's frame data
    size: np.ndarray  # int64
    pts: np.ndarray  # int64 absolute timestamp, TimestampScale units
    key: np.ndarray  # bool
    flags: np.ndarray  # uint8 SimpleBlock flags to write (keyframe, invisible, discardable)
    ebml_header: bytes
    timestamp_scale: int
    track_entry: bytes
    track_number: int

    def payload(self, data: bytes, i: int) -> memoryview:
        o = int(self.offset[i])
        return memoryview(data)[o : o + int(self.size[i])]

    def write(self, data: bytes, first: int, last: int) -> bytes:
        """A self-contained Matroska file of blocks ``first..last`` (decode positions)."""
        view = memoryview(data)
        track = _size_bytes(self.track_number)
        pts = self.pts[first : last + 1].tolist()
        offsets = self.offset[first : last + 1].tolist()
        sizes = self.size[first : last + 1].tolist()
        flags = self.flags[first : last + 1].tolist()
        clusters = []
        i = 0
        n = len(pts)
        while i < n:
            base = pts[i]
            parts = [_element(CLUSTER_TIMESTAMP, _uint_bytes(base))]
            while i < n and -32768 <= pts[i] - base <= 32767:
                head = track + struct.pack(">hB", pts[i] - base, flags[i])
                parts += [
                    _head(SIMPLE_BLOCK, len(head) + sizes[i]),
                    head,
                    view[offsets[i] : offsets[i] + sizes[i]],
                ]
                i += 1
            body = b"".join(parts)
            clusters += [_head(CLUSTER, len(body)), body]
        info = _element(
            INFO,
            _element(TIMESTAMP_SCALE, _uint_bytes(self.timestamp_scale))
            + _element(MUXING_APP, b"stts gop_cut")
            + _element(WRITING_APP, b"stts gop_cut"),
        )
        tracks = _element(TRACKS, self.track_entry)
        body = b"".join([info, tracks, *clusters])
        return b"".join([self.ebml_header, _head(SEGMENT, len(body)), body])


def read(data: bytes) -> MkvTrack | None:
    """The video track of a Matroska or WebM file held in memory, or None (see the module docstring)."""
    try:
        return _read(data)
    except (ValueError, IndexError, struct.error):
        return None


def _read(data: bytes) -> MkvTrack | None:
    eid, p = _id(data, 0)
    size, p = _size(data, p)
    if eid != EBML or size == _UNKNOWN:
        return None
    header = data[: p + size]
    eid, p = _id(data, p + size)
    if eid != SEGMENT:
        return None
    size, p = _size(data, p)
    end = len(data) if size == _UNKNOWN else min(p + size, len(data))
    scale = 1_000_000
    video: list[tuple[int, bytes, str, bytes | None, bool]] = []
    blocks: list[int] = []  # per block, flat: start, end, cluster timestamp, keyframe or -1
    number = None
    pos = p
    while pos < end:
        eid, q = _id(data, pos)
        size, q = _size(data, q)
        if eid == CLUSTER:
            if number is None:
                return None  # blocks before the tracks are known
            pos = _cluster(data, q, end if size == _UNKNOWN else q + size, blocks)
            continue
        if size == _UNKNOWN:
            return None
        if eid == INFO:
            for cid, s, e in _children(data, q, q + size):
                if cid == TIMESTAMP_SCALE:
                    scale = _uint(data, s, e)
        elif eid == TRACKS:
            video = list(_tracks(data, q, q + size))
            if len(video) != 1:
                return None
            number = video[0][0]
        pos = q + size
    if not blocks or number is None:
        return None
    tn, entry, codec_id, private, encoded = video[0]
    if encoded:
        return None
    # the block headers, all at once: track number (one byte for numbers below 127), int16 timestamp
    # relative to the cluster's, flags
    table = np.array(blocks, dtype=np.int64).reshape(-1, 4)
    start, stop = table[:, 0], table[:, 1]
    if int(stop.max()) > len(data) or int((stop - start).min()) < 4:
        return None  # a block cut short: let the demuxer judge
    raw = np.frombuffer(data, np.uint8)
    first = raw[start]
    if not (first & 0x80).all():
        return None  # a track number of two bytes or more
    video_blocks = (first & 0x7F) == tn
    start, stop, table = start[video_blocks], stop[video_blocks], table[video_blocks]
    if not len(start):
        return None
    rel = raw[start + 1].astype(np.int64) * 256 + raw[start + 2]
    pts = table[:, 2] + np.where(rel >= 32768, rel - 65536, rel)
    flags = raw[start + 3]
    grouped = table[:, 3] >= 0  # a Block's flags have no keyframe bit: its group says
    flags = np.where(grouped, (flags & 0x7F) | np.where(table[:, 3] == 1, 0x80, 0), flags).astype(np.uint8)
    if (flags & 0x06).any():
        return None  # laced video: several frames in one block
    if pts.min() < 0:
        return None
    codec = CODECS.get(codec_id, codec_id)
    nal_length = None
    if private and codec in ("h264", "hevc") and private[0] == 1:
        nal_length = (private[4 if codec == "h264" else 21] & 3) + 1
    return MkvTrack(
        codec=codec,
        nal_length=nal_length,
        offset=start + 4,
        size=stop - start - 4,
        pts=pts,
        key=(flags & 0x80) != 0,
        flags=flags & 0x89,  # keyframe, invisible, discardable; no lacing
        ebml_header=header,
        timestamp_scale=scale,
        track_entry=entry,
        track_number=tn,
    )


def _tracks(data: bytes, start: int, end: int):
    """``(number, TrackEntry bytes, codec id, CodecPrivate, has content encodings)`` per video track."""
    for eid, s, e in _children(data, start, end):
        if eid != TRACK_ENTRY:
            continue
        number = kind = 0
        codec_id = ""
        private = None
        encoded = False
        for cid, cs, ce in _children(data, s, e):
            if cid == TRACK_NUMBER:
                number = _uint(data, cs, ce)
            elif cid == TRACK_TYPE:
                kind = _uint(data, cs, ce)
            elif cid == CODEC_ID:
                codec_id = data[cs:ce].rstrip(b"\0").decode("ascii", "replace")
            elif cid == CODEC_PRIVATE:
                private = data[cs:ce]
            elif cid == CONTENT_ENCODINGS:
                encoded = True
        if kind == 1:
            # the entry with its id and size, as written
            head = _head(TRACK_ENTRY, e - s)
            yield number, head + data[s:e], codec_id, private, encoded


def _cluster(data: bytes, start: int, end: int, blocks: list) -> int:
    """Add ``block start, end, cluster timestamp, keyframe or -1`` (flat) for each block of the cluster at
    ``data[start:end]`` (``end`` is the segment's end for a cluster of unknown size); returns where the
    cluster ends. The loop that runs once per frame: kept to a few operations per element."""
    base = 0
    pos = start
    vlen, mask, from_bytes, extend = _VLEN, _MASK, int.from_bytes, blocks.extend
    while pos < end:
        eid = data[pos]
        if eid & 0x80:  # the ids met here are 1 byte (timestamp, blocks, groups, position, void, CRC)
            q = pos + 1
        else:
            eid, q = _id(data, pos)
            if eid in _LEVEL1:
                return pos  # the next top-level element: a cluster of unknown size ends here
        b = data[q]
        n = vlen[b]
        size = b & 0x7F if n == 1 else from_bytes(data[q : q + n], "big") & mask[n]
        if not n or size == mask[n]:
            raise ValueError(f"bad or unknown element size inside a cluster at {q}")
        q += n
        if eid == SIMPLE_BLOCK:
            extend((q, q + size, base, -1))
        elif eid == BLOCK_GROUP:
            block = None
            referenced = 0
            for cid, s, ce in _children(data, q, q + size):
                if cid == BLOCK:
                    block = (s, ce)
                elif cid == REFERENCE_BLOCK:
                    referenced = 1
            if block is not None:
                extend((block[0], block[1], base, 1 - referenced))
        elif eid == CLUSTER_TIMESTAMP:
            base = from_bytes(data[q : q + size], "big")
        pos = q + size
    return pos


def _head(eid: int, size: int) -> bytes:
    """An element's id and an 8-byte size (fixed width: no second pass over the body)."""
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big") + (size | (1 << 56)).to_bytes(8, "big")


def _element(eid: int, body: bytes) -> bytes:
    return _head(eid, len(body)) + body


def _size_bytes(value: int) -> bytes:
    """The shortest EBML encoding of ``value`` (a track number in a block header)."""
    n = 1
    while value >= (1 << (7 * n)) - 1:
        n += 1
    return (value | (1 << (7 * n))).to_bytes(n, "big")


def _uint_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
