"""GOP cutting: hand a video decoder only the packets one clip needs, in a small container of its own.

Why: DALI's ``fn.decoders.video(..., frames=...)`` never seeks. Read in the DALI source (github
NVIDIA/DALI, 2025-26; the CPU and ``mixed`` decoders share ``FramesDecoderBase``; files under
dali/operators/video/; the 2.4.0 wheel behaves as read, measured here):
``decoder/video_decoder_base.h`` makes one decoder per sample over its bytes (``CreateDecoder``) and asks
it for the sorted frame ids (``DecodeFrames``); ``frames_decoder_base.cc`` ``SeekFrame`` without a frame
index moves only forward, decoding every frame in between (``ReadNextFrame(nullptr)``), so frame ``f``
costs the decoding of frames ``0..f``. Measured with DALI 2.4 on this CPU (VP9 320x136, GOP 16, 16
frames): a clip at frame 230 took 90 ms, at frame 0 9 ms.

What the decoder gets instead: the packets from a keyframe at or before the clip's first frame up to
the last packet needed to show its last frame, stream-copied (no re-encoding) into a new container,
and the clip's indices rebased to it. Decoding that gives the frames a decode of the whole video gives
at the original indices (tests/pipelines/test_gop_cut.py: PyAV and DALI's CPU decoder bit for bit, each
against its own decode of the whole video; NVDEC likewise where CUDA is).

Frame numbering, as everywhere in the project (``shards.probe`` counts a video's frames, the shards'
``.i32`` records them, ``pipelines.sampling`` picks among them, ``pyav_feed.decode_frames`` decodes
them): frame ``i`` is the packet with the ``i``-th smallest presentation timestamp, one frame per packet.
DALI agrees: the CPU decoder numbers frames in the order ``avcodec_receive_frame`` returns them, which
is presentation order (``FramesDecoderCpu::ReadRegularFrame``, frames_decoder_cpu.cc); NVDEC's decoder
buffers decoded pictures and returns the one with the smallest packet pts first
(``FramesDecoderGpu::ReadNextFrameWithoutIndex``, frames_decoder_gpu.cc); its frame count is the
container's ``nb_frames`` (MP4) or a count of the stream's packets (Matroska: ``NumFrames`` /
``ParseNumFrames``, frames_decoder_base.cc). Timestamps are only ordered, never converted to frame
numbers, so variable frame rates need nothing special.

Where a cut may start (a *cut point*, a frame index ``k``): a packet the container marks as a keyframe,
whose decode position equals its presentation index ``k``, with packets ``0..k-1`` exactly the frames
``0..k-1`` (nothing decoded before it is shown after it, nothing decoded after it is shown before it:
no open-GOP leading pictures). H.264 must in addition start with an IDR slice and HEVC with an IRAP
picture (NAL types 16-21), the same test DALI applies to the keyframes of its own index
(``FramesDecoderBase::BuildIndex``); HEVC forbids trailing pictures to reference anything before their
IRAP, H.264 promises it only after an IDR. VP8/VP9/AV1 keyframes reset every reference; MJPEG frames
are all keyframes. A clip whose best cut point is frame 0 gets the video unchanged (nothing to gain).

Containers: MP4 from its sample tables (`pipelines.gop_cut_mp4`, the tables ``shards.mp4index`` reads),
Matroska/WebM from its cluster structure (`pipelines.gop_cut_mkv`); both write the cut themselves, a
fraction of a millisecond (``benchmarks/bench_gop_cut.py``). Anything they refuse (fragmented MP4,
dropping edit lists, laced or encoded Matroska blocks, another container) is demuxed with PyAV and
remuxed with it into Matroska, which libavformat reads for both DALI decoders (NVDEC's bitstream
filter is chosen for "QuickTime / MOV" and "Matroska / WebM": ``FramesDecoderGpu::InitBitStreamFilter``).
Videos whose timestamps do not order the frames (missing or repeated pts, frames an edit list drops)
are never cut.

No DALI import here: this runs in the loader's worker processes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pipelines import gop_cut_mkv, gop_cut_mp4

__all__ = ["CutClip", "PacketIndex", "cut_clip", "index_video"]

PAD_MODES = ("edge", "none")
DEMUXERS = ("auto", "pyav")


class _Track(Protocol):
    """A container reader's view of the video stream, packets in decode order."""

    codec: str
    nal_length: int | None  # bytes of an H.264/HEVC NAL unit's length prefix; None: Annex B
    pts: np.ndarray  # presentation timestamps
    key: np.ndarray  # the container's keyframe flags
    exact: bool  # whether the timestamps order the frames as a decoder shows them

    def payload(self, data: bytes, i: int) -> memoryview | bytes: ...

    def write(self, data: bytes, first: int, last: int) -> bytes: ...


@dataclass(frozen=True)
class CutClip:
    """What to hand the decoder for one clip.

    data: the container to decode: the cut, or the video's own bytes when the clip's cut point is frame 0.
    indices: int32, the clip's frames in ``data`` (same order and repeats as asked; past the video's end
      clamped to its last frame with ``pad_mode="edge"``), for the decoder's ``frames=``.
    frames_decoded: packets a decoder that never seeks decodes for the clip: from ``data``'s first packet
      to the last one needed to show the clip's last frame (decode order).
    start: the video's frame index at which ``data`` begins (0 when unchanged).
    """

    data: bytes
    indices: np.ndarray
    frames_decoded: int
    start: int


@dataclass(frozen=True, eq=False)
class PacketIndex:
    """A video's packet structure, enough to cut any clip of it (`index_video` builds it; build it once
    per video when several clips of it are cut, as at evaluation).

    num_frames: the video's frames (packets of its video stream).
    codec: FFmpeg's name for the codec.
    container: who reads and writes cuts: ``"mp4"``, ``"matroska"`` (our own readers) or ``"pyav"``.
    reach: ``reach[f]``, the last decode position needed to show frames ``0..f`` (int64).
    candidates: frame indices where a cut may start as far as timestamps and keyframe flags say
      (ascending); the codec check of the module docstring runs on them when first used.
    """

    num_frames: int
    codec: str
    container: str
    reach: np.ndarray
    candidates: np.ndarray
    track: _Track = field(repr=False)
    checked: dict = field(default_factory=dict, repr=False)  # candidate -> passes the codec check

    def cut_point(self, data: bytes, first: int) -> int:
        """The last cut point at or before frame ``first`` (0 if none)."""
        j = int(np.searchsorted(self.candidates, first, side="right")) - 1
        while j >= 0:
            k = int(self.candidates[j])
            if k == 0:
                return 0
            ok = self.checked.get(k)
            if ok is None:
                ok = self.checked[k] = _random_access(
                    self.codec, self.track.payload(data, k), self.track.nal_length
                )
            if ok:
                return k
            j -= 1
        return 0


def index_video(data: bytes, ext: str = "", *, demuxer: str = "auto") -> PacketIndex:
    """The `PacketIndex` of a video held in memory (MP4, Matroska or WebM by their own tables; else, or
    with ``demuxer="pyav"``, by demuxing with PyAV). ``ext`` (the shard member's extension) only names the
    video in errors; the bytes say what they are. Raises ValueError when nothing can read it."""
    if demuxer not in DEMUXERS:
        raise ValueError(f"demuxer must be one of {DEMUXERS}, got {demuxer!r}")
    track: _Track | None = None
    container = "pyav"
    if demuxer == "auto":
        if gop_cut_mp4.is_mp4(data):
            track, container = gop_cut_mp4.read(data), "mp4"
        elif gop_cut_mkv.is_matroska(data):
            track, container = gop_cut_mkv.read(data), "matroska"
    if track is None:
        track, container = _PyAVTrack.read(data, ext), "pyav"
    return _index(track, container)


def cut_clip(
    data: bytes,
    ext: str,
    indices,
    *,
    index: PacketIndex | None = None,
    pad_mode: str = "edge",
) -> CutClip:
    """The packets of ``data`` (a video's bytes; ``ext`` its extension, for errors) that frames ``indices``
    need (0-based, presentation order, any order, repeats allowed), as a container a decoder reads from
    its first packet, with the indices rebased; see the module docstring and `CutClip`.

    ``index``: the video's `PacketIndex` when the caller keeps one (else it is built here: well under a
    millisecond for MP4 and Matroska). ``pad_mode``: indices past the last frame repeat it (``"edge"``,
    what DALI's ``pad_mode="edge"`` does) or raise IndexError (``"none"``).
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
        raise ValueError(f"cut_clip: need a non-empty 1-D list of ints >= 0, got {idx}")
    if index is None:
        index = index_video(data, ext)
    n = index.num_frames
    if idx.max() >= n:
        if pad_mode == "none":
            raise IndexError(f"frame {int(idx.max())} asked of a video of {n} frames")
        idx = np.minimum(idx, n - 1)
    idx = idx.astype(np.int32)
    first, last = int(idx.min()), int(idx.max())
    k = index.cut_point(data, first)
    decoded = int(index.reach[last]) - k + 1
    if k == 0:
        return CutClip(data, idx, decoded, 0)
    return CutClip(index.track.write(data, k, int(index.reach[last])), idx - np.int32(k), decoded, k)


def _index(track: _Track, container: str) -> PacketIndex:
    pts = np.asarray(track.pts)
    n = len(pts)
    if n == 0:
        raise ValueError("no video packets")
    positions = np.arange(n)
    order = np.argsort(pts, kind="stable")  # decode position of each frame
    if not track.exact or (n > 1 and (np.diff(pts[order]) == 0).any()):
        # timestamps that do not order the frames: never cut, count frames in decode order
        return PacketIndex(n, track.codec, container, positions, np.zeros(1, np.int64), track)
    rank = np.empty(n, np.int64)
    rank[order] = positions  # frame index of each decode position
    seen = np.maximum.accumulate(rank)
    clean = (rank == positions) & (np.r_[-1, seen[:-1]] == positions - 1)
    candidates = np.flatnonzero(clean & np.asarray(track.key, bool))
    if not candidates.size or candidates[0] != 0:
        candidates = np.r_[0, candidates]
    return PacketIndex(n, track.codec, container, np.maximum.accumulate(order), candidates, track)


# ------------------------------------------------------------------------------------- random access


def _nal_headers(payload, nal_length: int | None):
    """The first byte of each NAL unit of an H.264/HEVC packet: length-prefixed (``nal_length`` bytes)
    when the container's avcC/hvcC says so, else Annex B (start codes). Not guessed from the bytes, as
    DALI's ``find_next_nal_unit`` does: a 4-byte length of 256-511 begins like a start code."""
    buf = bytes(payload[:4096])
    if nal_length:
        pos = 0
        while pos + nal_length < len(buf):
            length = int.from_bytes(buf[pos : pos + nal_length], "big")
            yield buf[pos + nal_length]
            pos += nal_length + length
        return
    pos = buf.find(b"\0\0\1")
    while 0 <= pos < len(buf) - 3:
        yield buf[pos + 3]
        pos = buf.find(b"\0\0\1", pos + 3)


def _random_access(codec: str, payload, nal_length: int | None) -> bool:
    """Whether a keyframe packet may start a decode: H.264's first slice is IDR, HEVC's first picture
    IRAP; other codecs' keyframe flags are taken as they are. (Only the first 4 KiB are searched: the
    parameter sets and SEI before a first slice are far smaller.)"""
    if codec == "h264":
        for h in _nal_headers(payload, nal_length):
            t = h & 0x1F
            if 1 <= t <= 5:
                return t == 5
        return False
    if codec == "hevc":
        for h in _nal_headers(payload, nal_length):
            t = (h >> 1) & 0x3F
            if t < 32:
                return 16 <= t <= 21
        return False
    return True


# ---------------------------------------------------------------------------------------- PyAV path


class _PyAVTrack:
    """The fallback: packets demuxed with PyAV, cuts remuxed with PyAV into Matroska."""

    def __init__(self, codec: str, nal_length, pts, key, keyframes: dict, exact: bool):
        self.codec = codec
        self.nal_length = nal_length
        self.pts = pts
        self.key = key
        self.keyframes = keyframes  # decode position -> payload (keyframes only: the codec check)
        self.exact = exact

    @classmethod
    def read(cls, data: bytes, ext: str) -> _PyAVTrack:
        import av

        try:
            with av.open(io.BytesIO(data)) as c:
                if not c.streams.video:
                    raise ValueError("no video stream")
                stream = c.streams.video[0]
                ctx = stream.codec_context
                extra = bytes(ctx.extradata or b"")
                nal_length = None
                if extra[:1] == b"\1" and ctx.name in ("h264", "hevc") and len(extra) > 21:
                    nal_length = (extra[4 if ctx.name == "h264" else 21] & 3) + 1
                pts, key, keyframes = [], [], {}
                exact = len(c.streams.video) == 1
                for p in c.demux(stream):
                    if not p.size or p.is_discard:
                        # a frame an edit list drops is decoded but never shown: not a frame of the
                        # video (as decode_frames counts), and the cuts could not reproduce it
                        exact = exact and not p.is_discard
                        continue
                    if p.pts is None:
                        exact = False  # no order
                    if p.is_keyframe:
                        keyframes[len(pts)] = bytes(p)
                    pts.append(p.pts if p.pts is not None else len(pts))
                    key.append(p.is_keyframe)
                return cls(
                    ctx.name, nal_length, np.asarray(pts, np.int64), np.asarray(key, bool), keyframes, exact
                )
        except (av.FFmpegError, UnicodeDecodeError) as err:
            what = f"the {ext} video" if ext else "the video"
            raise ValueError(f"cannot demux {what}: {' '.join(str(err).split())[:200]}") from None

    def payload(self, data: bytes, i: int) -> bytes:
        return self.keyframes[i]

    def write(self, data: bytes, first: int, last: int) -> bytes:
        import av

        out = io.BytesIO()
        with av.open(io.BytesIO(data)) as c, av.open(out, "w", format="matroska") as o:
            stream = c.streams.video[0]
            copy = o.add_stream_from_template(stream)
            i = 0
            for p in c.demux(stream):
                if not p.size:
                    continue
                if i > last:
                    break
                if i >= first:
                    p.stream = copy
                    o.mux(p)
                i += 1
        return out.getvalue()
