"""Re-encode a source video for fast random access: smaller, short GOP, optional lower frame rate.

Short GOPs make random clip access several times cheaper for every decoder (a clip needs at most
gop-1 frames decoded before its first frame), and storing at the recipe's sampling rate (e.g. 7.5 fps
for MViT 16x4) means a clip decodes 4x fewer frames.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

from .encode import CODECS, VideoEncoder, extension_for, short_side_size


@dataclass(frozen=True)
class ReencodeSpec:
    short_side: int | None = 320  # None keeps the size
    gop: int = 16
    codec: str = "h264"
    fps: float | None = None  # None keeps the source's (average) frame rate
    crf: int | None = None  # None: the codec's default quality in shards.encode

    def __post_init__(self):
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        if self.short_side is not None and self.short_side < 16:
            raise ValueError(f"short side {self.short_side} is too small (at least 16)")
        if self.gop < 1:
            raise ValueError("gop must be at least 1")
        if self.fps is not None and self.fps <= 0:
            raise ValueError("fps must be positive")

    @property
    def extension(self) -> str:
        return extension_for(self.codec)

    def to_dict(self) -> dict:
        return asdict(self)


def reencode(
    src: str | Path, dst: str | Path, spec: ReencodeSpec, *, source_fps: float | None = None
) -> dict:
    """Decode `src`, resize, resample in time and encode into `dst`. Returns the new video's metadata.

    Output is constant frame rate: `spec.fps` (never above the source's) or the source's average rate
    (`source_fps`, as the probe measured it: a variable-frame-rate file's header rate can be far off).
    Frames are placed by their timestamps, so the duration is kept whatever the source's timing.
    """
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        rate = source_fps or stream.average_rate or stream.guessed_rate or 30
        src_fps = Fraction(rate).limit_denominator(1001)
        out_fps = src_fps if spec.fps is None else min(Fraction(spec.fps).limit_denominator(1001), src_fps)
        width, height = short_side_size(
            stream.codec_context.width, stream.codec_context.height, spec.short_side
        )
        encoder = VideoEncoder(
            dst, codec=spec.codec, fps=out_fps, width=width, height=height, gop=spec.gop, crf=spec.crf
        )
        try:
            last_slot = -1
            t0 = None
            for i, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else i / float(src_fps)
                t0 = t if t0 is None else t0
                slot = math.floor((t - t0) * float(out_fps) + 1e-6)
                # output frame `slot` covers [slot, slot + 1) / out_fps and shows the first source frame
                # in it; an interval a variable-rate source leaves empty repeats the next frame, so that
                # the duration is kept
                while last_slot < slot:
                    encoder.write(frame)
                    last_slot += 1
        finally:
            encoder.close()
    frames = encoder.frames
    return {
        "num_frames": frames,
        "fps": round(float(out_fps), 6),
        "width": encoder.width,
        "height": encoder.height,
        "codec": spec.codec,
        "duration": round(frames / float(out_fps), 6),
    }
