"""The decoders behind one small protocol, and the choice among them.

A decoder has two halves, so that `pipelines.loader` never branches on which one it drives:

* ``prepare`` runs in the source's worker processes (`pipelines.clip_source.ClipSource`), per sample: from
  the video member's bytes and the clip's frame indices it makes the ``payload`` the DALI graph receives
  and says how many frames decoding the clip costs. PyAV decodes the frames there
  (`pipelines.pyav_feed.PyAVDecoder`); DALI's decoders get the bytes of the packets the clip needs
  (`pipelines.dali_decode.DaliDecoder`).
* ``frames`` adds the decoder's operators to the pipeline being defined: payload (and, for an ``indexed``
  payload, the frame indices into it) → uint8 ``FHWC`` frames (on the GPU for ``dali-gpu``). Nothing for
  PyAV; ``fn.decoders.video`` for DALI.

Faults reach the loader in one of two forms, the same for every decoder: a sample the source could not
prepare comes flagged in its ``status`` output (the decoder's ``placeholder`` stands in for it), and a
batch whose graph failed raises from ``pipe.run()``; ``lost_batch(error)`` says whether that error is the
decoder's (DALI's video decoder raises for the whole batch when one bitstream is corrupt), which the
loader then resolves sample by sample with `probe_sample`.

Names (``decoder=``): ``"dali-gpu"`` (NVDEC through DALI's ``mixed`` backend), ``"dali-cpu"`` (DALI's CPU
decoder: VP8, VP9, MJPEG), ``"pyav"`` (FFmpeg: anything), ``"auto"`` (`choose_decoder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "DECODERS",
    "Decoder",
    "Payload",
    "Prepared",
    "choose_decoder",
    "make_decoder",
    "probe_sample",
]

DECODERS = ("auto", "dali-gpu", "dali-cpu", "pyav")


@dataclass(frozen=True)
class Payload:
    """What the source hands the graph per sample: DALI type name (``"UINT8"``), rank and layout, and
    whether the graph also takes frame indices into it (``indexed``)."""

    dtype: str
    ndim: int
    layout: str
    indexed: bool


@dataclass(frozen=True)
class Prepared:
    """A sample prepared for the graph: the payload, the indices the graph takes from it (the payload's own
    numbering) and the frames decoding the clip costs."""

    payload: np.ndarray
    indices: np.ndarray
    decoded: int


class Decoder(Protocol):
    name: str
    device: str  # "cpu" or "gpu": where `frames` leaves the frames
    payload: Payload

    def prepare(
        self, video: bytes, ext: str, indices: np.ndarray, num_frames: int, pad_mode: str
    ) -> Prepared: ...

    def placeholder(self, frames: int, height: int, width: int) -> np.ndarray: ...

    def frames(self, payload: Any, indices: Any | None, *, pad_mode: str = "edge") -> Any: ...

    def lost_batch(self, error: BaseException) -> bool: ...


def make_decoder(name: str, **settings: Any) -> Decoder:
    """The decoder called ``name`` (not ``"auto"``: see `choose_decoder`); ``settings`` go to DALI's
    decoders (``affine``)."""
    if name == "pyav":
        from pipelines.pyav_feed import PyAVDecoder

        return PyAVDecoder()
    if name in ("dali-cpu", "dali-gpu"):
        from pipelines.dali_decode import DaliDecoder

        return DaliDecoder(device="gpu" if name == "dali-gpu" else "cpu", **settings)
    raise ValueError(f"decoder must be one of {DECODERS[1:]}, got {name!r}")


def choose_decoder(decoder: str, codecs: set[str] | list[str], device=None) -> str:
    """``"auto"`` → ``"dali-gpu"`` when the batches go to a CUDA ``device`` (None: the default CUDA device
    if there is one), else ``"dali-cpu"`` when every codec is one DALI's CPU decoder reads, else
    ``"pyav"``: a CPU device never gets ``dali-gpu``. Anything else is returned as given (after checking
    its name)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder != "auto":
        return decoder
    import torch

    from shards.encode import DALI_CPU_CODECS

    on_gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if on_gpu and torch.cuda.is_available():
        return "dali-gpu"
    if codecs and set(codecs) <= DALI_CPU_CODECS:
        return "dali-cpu"
    return "pyav"


def probe_sample(video: bytes, indices: np.ndarray) -> str | None:
    """Whether the reference decoder (PyAV) decodes this clip: None, or the error in one line. What the
    loader asks of each sample of a batch that a DALI decoder lost."""
    from pipelines.pyav_feed import decode_frames

    try:
        decode_frames(video, indices)
    except Exception as e:  # noqa: BLE001 - any failure marks the sample
        return f"{type(e).__name__}: {e}"
    return None
