"""Read an MP4's sample tables without FFmpeg: the fast probe for the commonest Kinetics container.

Opening a file with PyAV costs a few milliseconds (it probes streams by decoding); the index in the `moov`
box already says how many frames there are, where the last one lies in the file, the frame size and the
codec. A file whose last video sample ends past the end of the file is truncated. Anything this reader
does not understand (fragmented MP4, odd boxes) returns None and the caller demuxes with PyAV instead.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

# sample entry fourcc -> FFmpeg decoder name
FOURCC_CODECS = {
    b"avc1": "h264",
    b"avc3": "h264",
    b"hvc1": "hevc",
    b"hev1": "hevc",
    b"vp09": "vp9",
    b"vp08": "vp8",
    b"av01": "av1",
    b"mp4v": "mpeg4",
    b"jpeg": "mjpeg",
    b"mjpa": "mjpeg",
}
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


@dataclass(frozen=True)
class Mp4Video:
    num_frames: int
    fps: float
    width: int
    height: int
    codec: str
    duration: float
    last_sample_end: int  # byte offset just after the last video sample
    has_audio: bool


class Mp4Truncated(Exception):
    pass


def iter_boxes(buf: bytes, start: int, end: int):
    """``(fourcc, payload start, box end)`` of the boxes in ``buf[start:end]``, one level deep."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", buf, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError("box runs past its parent")
        yield kind, pos + header, pos + size
        pos += size


def _top_level(f, file_size: int) -> tuple[bytes | None, bool]:
    """The moov box's bytes (None if absent) and whether the file is fragmented."""
    moov = None
    fragmented = False
    pos = 0
    while pos + 8 <= file_size:
        f.seek(pos)
        head = f.read(16)
        size, kind = struct.unpack_from(">I4s", head, 0)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", head, 8)[0]
            header = 16
        elif size == 0:
            size = file_size - pos
        if size < header:
            raise ValueError("bad box size")
        if pos + size > file_size:
            if kind == b"moov":
                raise Mp4Truncated("the moov box is cut short")
            if kind == b"mdat":
                raise Mp4Truncated(f"the media data is cut short ({file_size - pos} of {size} bytes present)")
            break
        if kind == b"moov":
            f.seek(pos)
            moov = f.read(size)
        elif kind == b"moof":
            fragmented = True
        pos += size
    return moov, fragmented


def _track(buf: bytes, start: int, end: int) -> dict:
    info: dict = {}

    def walk(s: int, e: int) -> None:
        for kind, bs, be in iter_boxes(buf, s, e):
            if kind in _CONTAINERS:
                walk(bs, be)
            elif kind == b"hdlr":
                info["handler"] = buf[bs + 8 : bs + 12]
            elif kind == b"mdhd":
                if buf[bs] == 1:
                    info["timescale"], info["duration"] = struct.unpack_from(">IQ", buf, bs + 20)
                else:
                    info["timescale"], info["duration"] = struct.unpack_from(">II", buf, bs + 12)
            elif kind == b"stsd":
                entry = bs + 8
                _, fourcc = struct.unpack_from(">I4s", buf, entry)
                info["fourcc"] = fourcc
                info["width"], info["height"] = struct.unpack_from(">HH", buf, entry + 32)
            elif kind == b"stsz":
                sample_size, count = struct.unpack_from(">II", buf, bs + 4)
                info["count"] = count
                info["sizes"] = (sample_size, bs + 12)
            elif kind in (b"stco", b"co64"):
                n = struct.unpack_from(">I", buf, bs + 4)[0]
                fmt = ">I" if kind == b"stco" else ">Q"
                info["chunks"] = n
                if n:
                    offsets = struct.unpack_from(f">{n}{fmt[1]}", buf, bs + 8)
                    info["last_chunk"], info["max_chunk"] = offsets[-1], max(offsets)
            elif kind == b"stts":
                n = struct.unpack_from(">I", buf, bs + 4)[0]
                pairs = struct.unpack_from(f">{2 * n}I", buf, bs + 8)
                info["stts_ticks"] = sum(c * d for c, d in zip(pairs[::2], pairs[1::2], strict=True))
            elif kind == b"stsc":
                n = struct.unpack_from(">I", buf, bs + 4)[0]
                if n:
                    info["last_spc"] = struct.unpack_from(">I", buf, bs + 8 + (n - 1) * 12 + 4)[0]

    walk(start, end)
    return info


def read_mp4_index(path: str | os.PathLike) -> Mp4Video | None:
    """The video track's index, None when this is not a plain (unfragmented) MP4 we can read.
    Raises Mp4Truncated when the index points past the end of the file."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
            return None
        try:
            moov, fragmented = _top_level(f, file_size)
        except (ValueError, struct.error):
            return None
    if moov is None or fragmented:
        return None
    try:
        tracks = [_track(moov, s, e) for kind, s, e in iter_boxes(moov, 8, len(moov)) if kind == b"trak"]
    except (ValueError, struct.error, IndexError):
        return None
    video = [t for t in tracks if t.get("handler") == b"vide"]
    if not video:
        return None  # let the demuxer say what it is
    t = video[0]
    codec = FOURCC_CODECS.get(t.get("fourcc", b""))
    needed = ("timescale", "duration", "count", "sizes", "chunks", "width", "height")
    if codec is None or any(k not in t for k in needed) or not t["timescale"] or not t["count"]:
        return None
    count = t["count"]
    sample_size, table = t["sizes"]
    spc = min(t.get("last_spc", 1), count)
    if sample_size:
        last_bytes = sample_size * spc
    else:
        last_bytes = sum(struct.unpack_from(f">{spc}I", moov, table + (count - spc) * 4))
    end = t.get("last_chunk", 0) + last_bytes
    if end > file_size or t.get("max_chunk", 0) >= file_size:
        raise Mp4Truncated(f"the last frame ends at byte {end}, past the end of the file ({file_size} bytes)")
    # the sum of frame durations (stts) is what decoders report; mdhd's duration may include a delay
    duration = (t.get("stts_ticks") or t["duration"]) / t["timescale"]
    return Mp4Video(
        num_frames=count,
        fps=count / duration if duration > 0 else 0.0,
        width=t["width"],
        height=t["height"],
        codec=codec,
        duration=duration,
        last_sample_end=end,
        has_audio=any(x.get("handler") == b"soun" for x in tracks),
    )
