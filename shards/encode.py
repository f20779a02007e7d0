"""Video encoding with PyAV: the one place that knows codec settings.

Used by `--reencode`, by the synthetic dataset and by the tests that make their own videos. Settings are
chosen so that the same frames give the same bytes on every run (single-threaded encoders, fixed GOP,
no scene-cut keyframes), which the shard contract's byte-identical re-runs rely on.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# codec name -> (PyAV encoder, container extension, pixel format)
CODECS: dict[str, tuple[str, str, str]] = {
    "h264": ("libx264", "mp4", "yuv420p"),
    "vp9": ("libvpx-vp9", "webm", "yuv420p"),
    "mjpeg": ("mjpeg", "mkv", "yuvj420p"),
}

# Codecs that DALI's CPU video decoder can read (the GPU decoder reads all of CODECS and more).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})


def extension_for(codec: str) -> str:
    return CODECS[codec][1]


def _encoder_options(codec: str, gop: int, crf: int | None) -> dict[str, str]:
    if codec == "h264":
        return {
            "preset": "veryfast",
            "crf": str(23 if crf is None else crf),
            # A fixed GOP: every `gop` frames a keyframe, none in between, so random access costs at
            # most gop-1 extra decoded frames. Three B-frames between references, never referenced
            # themselves (no B-pyramid): a loader skips the ones a clip does not show (decoding only
            # the reference chain and its own frames: pipelines.pyav_feed.decode_frames).
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3:b-adapt=0:b-pyramid=none",
            "threads": "1",
        }
    if codec == "vp9":
        return {
            "deadline": "realtime",
            "cpu-used": "8",
            "crf": str(32 if crf is None else crf),
            "b": "0",
            "threads": "1",
            "row-mt": "0",
            "lag-in-frames": "0",
        }
    if codec == "mjpeg":
        return {"qscale": "3" if crf is None else str(crf)}
    raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")


def even_size(width: int, height: int) -> tuple[int, int]:
    """yuv420p needs even sizes."""
    return max(2, width - width % 2), max(2, height - height % 2)


def short_side_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Output size keeping the aspect ratio with the short side at `short_side`; never upscales."""
    if short_side is None or min(width, height) <= short_side:
        return even_size(width, height)
    if width <= height:
        return even_size(short_side, round(height * short_side / width))
    return even_size(round(width * short_side / height), short_side)


class VideoEncoder:
    """Write frames (RGB uint8 arrays or av.VideoFrame) to a video file, one frame per `write` call."""

    def __init__(
        self,
        path: str | Path,
        *,
        codec: str = "h264",
        fps: float | Fraction = 30,
        width: int,
        height: int,
        gop: int = 16,
        crf: int | None = None,
    ):
        encoder, _, pix_fmt = CODECS[codec]
        self.codec = codec
        self.width, self.height = even_size(width, height)
        rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
        self._container = av.open(str(path), mode="w", options={"fflags": "+bitexact"})
        self._stream = self._container.add_stream(
            encoder, rate=rate, options=_encoder_options(codec, gop, crf)
        )
        self._stream.width = self.width
        self._stream.height = self.height
        self._stream.pix_fmt = pix_fmt
        self._stream.codec_context.gop_size = gop
        self._stream.codec_context.flags |= av.codec.context.Flags.bitexact
        self._pix_fmt = pix_fmt
        self._time_base = 1 / rate
        self.frames = 0

    def write(self, frame) -> None:
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if frame.width != self.width or frame.height != self.height or frame.format.name != self._pix_fmt:
            frame = frame.reformat(
                width=self.width, height=self.height, format=self._pix_fmt, interpolation="AREA"
            )
        frame.pts = self.frames
        # pts counts frames in the codec's time base; a decoded frame still carries its source's
        frame.time_base = self._time_base
        # ... and its source's picture type, which the encoder would obey (libx264 forces I/P/B from it):
        # the GOP structure must be ours, not the source's
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    codec: str = "h264",
    fps: float = 30,
    gop: int = 16,
    crf: int | None = None,
) -> int:
    """Encode RGB uint8 frames (H, W, 3) into `path`; returns the number of frames written."""
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    with VideoEncoder(path, codec=codec, fps=fps, width=width, height=height, gop=gop, crf=crf) as enc:
        enc.write(first)
        for frame in frames:
            enc.write(frame)
        return enc.frames
