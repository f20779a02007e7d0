"""Decode clips with PyAV (any codec FFmpeg reads: H.264, HEVC, AV1, VP9, ...): the ``"pyav"`` decoder.

* `decode_frames`: the requested frames (any order, repeats allowed), from memory. It demuxes the packets
  once (no decoding) to map frame indices to timestamps and keyframes, then for each run of requested
  frames seeks to the keyframe before the run's first frame and decodes up to its last frame; a run ends
  where a later keyframe would make seeking cheaper than decoding through. H.264 pictures that nothing
  references and the clip does not show are not decoded at all.
* `PyAVDecoder`: `decode_frames` as a `pipelines.decoders.Decoder`: it decodes in the source's worker
  processes (`pipelines.clip_source.ClipSource`, one decoder thread each: processes are the parallelism)
  and hands DALI the uint8 ``FHWC`` frames; its graph half adds nothing.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.clip_source import PAD_MODES, check_indices
from pipelines.decoders import Payload, Prepared

__all__ = ["PyAVDecoder", "decode_frames"]


# -------------------------------------------------------------------------------------------- decoding


def _rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _decode_sequential(video_bytes: bytes, wanted: set[int], last: int) -> dict[int, np.ndarray]:
    """Fallback: decode from the start, counting frames, up to ``last``."""
    import av

    got: dict[int, np.ndarray] = {}
    with av.open(io.BytesIO(video_bytes)) as c:
        stream = c.streams.video[0]
        for i, frame in enumerate(c.decode(stream)):
            if i in wanted:
                got[i] = _rgb(frame)
            if i >= last:
                break
    return got


def _decode_all(video_bytes: bytes) -> list[np.ndarray]:
    import av

    with av.open(io.BytesIO(video_bytes)) as c:
        return [_rgb(f) for f in c.decode(c.streams.video[0])]


SEEK_SKIP = 4  # skip at least this many unwanted frames by seeking rather than decoding through (a heuristic)


def _runs(wanted: list[int], keyframe_before: list[int]) -> list[list[int]]:
    """Split sorted frame indices into decode runs: a new run (a seek) where the next frame's keyframe
    lies at least ``SEEK_SKIP`` frames after the previous wanted frame, so a seek skips that many."""
    runs = [[wanted[0]]]
    for i in wanted[1:]:
        if keyframe_before[i] - runs[-1][-1] > SEEK_SKIP:
            runs.append([i])
        else:
            runs[-1].append(i)
    return runs


def _nonreference_probe(stream):
    """``probe(packet bytes) -> bool``: whether a packet is a picture no other picture references (its
    decoding can be left out when it is not wanted), for H.264 in length-prefixed form (MP4, MKV: ``avcC``
    extradata); None for other codecs and forms (nothing is left out). A picture's slices share their
    ``nal_ref_idc``, so the first slice NAL unit decides."""
    ctx = stream.codec_context
    extra = bytes(ctx.extradata or b"")
    if ctx.name != "h264" or len(extra) < 7 or extra[0] != 1:
        return None
    size = (extra[4] & 3) + 1  # lengthSizeMinusOne + 1

    def probe(data) -> bool:
        i, n = 0, len(data)
        while i + size < n:
            length = int.from_bytes(data[i : i + size], "big")
            header = data[i + size]
            if header & 0x1F in (1, 5):  # a coded slice (non-IDR, IDR)
                return header >> 5 == 0  # nal_ref_idc (forbidden_zero_bit is 0)
            i += size + length
        return False

    return probe


def _demux_table(container, stream, need: int) -> list[tuple[int | None, bool]]:
    """``(pts, keyframe)`` of the video packets in decode order, read until the ``need`` frames of
    smallest timestamp are known for certain: once a packet's ``dts`` exceeds the ``need``-th smallest
    ``pts`` seen, no later packet can come before it (decode timestamps never decrease and no frame is
    shown before it is decoded). Without usable ``dts`` (absent, decreasing, or after ``pts``) every
    packet is read. A clip in the middle of a video then demuxes half of it."""
    packets: list[tuple[int | None, bool]] = []
    early = True
    last_dts = None
    check_at = need
    for p in container.demux(stream):
        if not p.size or p.is_discard:
            continue
        pts = p.pts
        packets.append((pts, p.is_keyframe))
        if not early:
            continue
        dts = p.dts
        if pts is None or dts is None or dts > pts or (last_dts is not None and dts < last_dts):
            early = False
            continue
        last_dts = dts
        if len(packets) >= check_at:
            if dts > sorted(q for q, _ in packets)[need - 1]:
                break
            check_at = len(packets) + 8  # sort again a few packets later
    return packets


def decode_frames(
    video_bytes: bytes,
    indices: Sequence[int] | np.ndarray,
    *,
    pad_mode: str = "edge",
    threads: int = 0,
    stats: dict | None = None,
) -> np.ndarray:
    """Frames ``indices`` (0-based, presentation order) of a video held in memory, uint8 ``(T, H, W, 3)`` RGB.

    Any order, repeats allowed; returned in the order asked. Indices past the last frame repeat it with
    ``pad_mode="edge"`` (DALI's ``pad_mode`` too) and raise ``IndexError`` with ``"none"``. Equal to
    decoding the whole video with PyAV and indexing: frame ``i`` is the packet with the ``i``-th smallest
    timestamp, and only runs starting at a keyframe are decoded, and of those only the pictures that are
    asked for or referenced: an H.264 picture no other picture references (``nal_ref_idc`` 0, e.g. the
    B-frames of ``stts shard --reencode``) is not decoded unless asked for. ``threads``: FFmpeg's decoder
    threads (0: its own choice; 1 where processes are the parallelism, as in the loader's workers).
    ``stats``: if given, ``"decoded"`` and ``"skipped"`` packets are added to it.
    """
    import av

    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    idx = check_indices(indices, "decode_frames")
    with av.open(io.BytesIO(video_bytes)) as c:
        stream = c.streams.video[0]
        if threads:
            stream.thread_count = threads
        packets = _demux_table(c, stream, int(idx.max()) + 1)
        if not packets:
            raise ValueError("no video packets")
        if any(pts is None for pts, _ in packets):
            n = None  # no timestamps to seek by: count frames while decoding
        else:
            packets.sort()
            pts = [p for p, _ in packets]
            n = len(pts)
            if len(set(pts)) != n:
                n = None
        if n is not None:
            idx = _clamp(idx, n, pad_mode)
            wanted = sorted(set(idx.tolist()))
            keyframe_before, k = [], 0
            for i, (_, key) in enumerate(packets):
                k = i if key else k
                keyframe_before.append(k)
            index_of = {p: i for i, p in enumerate(pts)}
            got: dict[int, np.ndarray] = {}
            droppable = _nonreference_probe(stream)
            decoded = skipped = 0
            for run in _runs(wanted, keyframe_before):
                c.seek(pts[keyframe_before[run[0]]], stream=stream, backward=True, any_frame=False)
                position = -1  # the last frame decoded since the seek
                todo = set(run)
                done = False
                for packet in c.demux(stream):
                    if (
                        droppable is not None
                        and packet.size
                        and index_of.get(packet.pts, -1) not in todo
                        and droppable(memoryview(packet))
                    ):  # no other picture needs it, nor do we
                        skipped += 1
                        continue
                    decoded += 1
                    for frame in packet.decode():
                        i = index_of.get(frame.pts)
                        if i is None or (position < 0 and i > run[0]):
                            done = True  # a timestamp we cannot place, or the seek landed past the run
                            break
                        position = i
                        if i in todo:
                            got[i] = _rgb(frame)
                            todo.discard(i)
                        if i >= run[-1]:
                            done = True
                            break
                    if done:
                        break
                if todo:  # a timestamp we cannot place or a bad seek: decode from the start instead
                    got.update(_decode_sequential(video_bytes, todo, max(todo)))
                    if todo - got.keys():
                        raise RuntimeError(f"could not decode frames {sorted(todo - got.keys())}")
            if stats is not None:
                stats["decoded"] = stats.get("decoded", 0) + decoded
                stats["skipped"] = stats.get("skipped", 0) + skipped
            return np.stack([got[i] for i in idx.tolist()])
    # no usable timestamps: decode the whole video, counting frames
    frames = _decode_all(video_bytes)
    return np.stack([frames[i] for i in _clamp(idx, len(frames), pad_mode).tolist()])


def _clamp(idx: np.ndarray, n: int, pad_mode: str) -> np.ndarray:
    if idx.max() >= n:
        if pad_mode == "none":
            raise IndexError(f"frame {int(idx.max())} asked of a {n}-frame video (pad_mode='none')")
        idx = np.minimum(idx, n - 1)
    return idx


# --------------------------------------------------------------------------------------------- decoder


@dataclass(frozen=True)
class PyAVDecoder:
    """The ``"pyav"`` decoder (`pipelines.decoders.Decoder`): frames decoded in the source's workers."""

    name: str = "pyav"
    device: str = "cpu"
    payload: Payload = Payload("UINT8", 4, "FHWC", indexed=False)

    def prepare(
        self, video: bytes, ext: str, indices: np.ndarray, num_frames: int, pad_mode: str
    ) -> Prepared:
        stats: dict = {}
        frames = decode_frames(video, indices, pad_mode=pad_mode, threads=1, stats=stats)
        return Prepared(frames, np.arange(len(indices), dtype=np.int32), int(stats.get("decoded", 0)))

    def placeholder(self, frames: int, height: int, width: int) -> np.ndarray:
        return np.zeros((frames, height, width, 3), np.uint8)

    def frames(self, payload, indices, *, pad_mode: str = "edge"):
        return payload

    def lost_batch(self, error: BaseException) -> bool:
        return False
