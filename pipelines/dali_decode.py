"""DALI's video decoders (``"dali-cpu"``, and ``"dali-gpu"`` on NVDEC) as a `pipelines.decoders.Decoder`.

The source's workers hand ``fn.decoders.video`` the bytes of a clip's video member as a uint8 1-D payload
and the clip's frame indices; the graph decodes those frames (uint8 ``FHWC``; on the GPU with the
``"mixed"`` backend). The CPU backend reads VP8, VP9 and MJPEG only (`shards.encode.DALI_CPU_CODECS`);
the mixed one what the GPU's NVDEC reads (`pipelines.nvdec`).

What a clip costs: DALI 2.4's decoder does not seek. Given ``frames=``, it decodes from the first frame of
the payload up to the last frame asked for (measured on CPU, VP9 224x224, 300 frames, GOP 16: a 16x4
clip costs 17 ms at the start of the video and ~50-70 ms at frame 200, the whole video 148 ms). So the
source's workers hand it the clip's GOPs only (`pipelines.gop_cut.cut_clip`: the packets from the
keyframe at or before the clip's first frame to its last frame, stream-copied into a small container,
indices rebased), and the frames it decodes for a clip are the cut's packets (``decoded``: the
``frames_decoded`` of the cut), not ``min(max(indices), num_frames - 1) + 1`` as for the whole video
(``gop_cut=False``).

The mixed backend decodes the samples of a batch in parallel, each on its own thread of the operator's
thread pool (``num_threads`` threads, pinned to cores with ``affine``), each thread with its own NVDEC
session; the driver spreads the sessions over the GPU's NVDEC engines (DALI source,
``dali/operators/video/decoder/video_decoder_base.h``: ``thread_pool_`` built from ``num_threads``,
``device_id`` and ``affine`` for ``device == "mixed"``, one ``AddWork`` per sample in ``RunImpl``).

Faults: a corrupt packet makes ``fn.decoders.video`` raise from the ``pipe.run()`` of its batch, within
milliseconds (measured on CPU with VP9 and MJPEG: no hang, no garbage frames), and the pipeline carries on
with the next batch; the batch's outputs are lost, good samples included (`DaliDecoder.lost_batch`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from pipelines.decoders import Payload, Prepared

__all__ = ["DECODER_DEVICE", "DaliDecoder"]

DECODER_DEVICE = {"cpu": "cpu", "gpu": "mixed"}
_OPERATOR = (
    "decoders.video"  # how DALI names the operator in its errors: "... `nvidia.dali.fn.decoders.video` ..."
)


@dataclass(frozen=True)
class DaliDecoder:
    """``"dali-cpu"`` (``device="cpu"``) or ``"dali-gpu"`` (``device="gpu"``: NVDEC). ``affine``: pin the
    mixed decoder's threads to cores (DALI's default; no effect on the CPU backend). ``gop_cut``: hand the
    decoder only the clip's packets (`pipelines.gop_cut`); without it the whole video."""

    device: str = "cpu"
    affine: bool = True
    gop_cut: bool = True
    payload: Payload = Payload("UINT8", 1, "", indexed=True)

    def __post_init__(self) -> None:
        if self.device not in DECODER_DEVICE:
            raise ValueError(f"device must be one of {sorted(DECODER_DEVICE)}, got {self.device!r}")

    @property
    def name(self) -> str:
        return "dali-gpu" if self.device == "gpu" else "dali-cpu"

    def prepare(
        self, video: bytes, ext: str, indices: np.ndarray, num_frames: int, pad_mode: str
    ) -> Prepared:
        if self.gop_cut:
            from pipelines.gop_cut import cut_clip

            cut = cut_clip(video, ext, indices, pad_mode=pad_mode)
            return Prepared(np.frombuffer(cut.data, np.uint8), cut.indices, cut.frames_decoded)
        last = int(np.max(indices))
        if pad_mode == "none" and last >= num_frames:
            raise IndexError(f"frame {last} asked of a {num_frames}-frame video (pad_mode='none')")
        decoded = min(last, max(num_frames, 1) - 1) + 1  # from the first frame on: no seeking
        return Prepared(np.frombuffer(video, np.uint8), indices, decoded)

    def placeholder(self, frames: int, height: int, width: int) -> np.ndarray:
        """A one-frame MJPEG video (any backend reads it): a batch holding a sample that could not be
        prepared must still decode; the loader drops the sample by its status."""
        return _blank_video()

    def frames(self, payload, indices, *, pad_mode: str = "edge"):
        from nvidia.dali import fn

        extra = {"affine": self.affine} if self.device == "gpu" else {}
        return fn.decoders.video(
            payload, device=DECODER_DEVICE[self.device], frames=indices, pad_mode=pad_mode, **extra
        )

    def lost_batch(self, error: BaseException) -> bool:
        return isinstance(error, RuntimeError) and _OPERATOR in str(error)


_BLANK: np.ndarray | None = None


def _blank_video() -> np.ndarray:
    global _BLANK
    if _BLANK is None:
        import av

        buf = io.BytesIO()
        with av.open(buf, "w", format="matroska") as c:
            stream = c.add_stream("mjpeg", rate=1)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            for packet in (*stream.encode(frame), *stream.encode(None)):
                c.mux(packet)
        _BLANK = np.frombuffer(buf.getvalue(), np.uint8)
    return _BLANK
