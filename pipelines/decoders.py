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
    "DecodeSettings",
    "Decoder",
    "Payload",
    "Prepared",
    "choose_decoder",
    "decode_settings",
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


@dataclass(frozen=True)
class DecodeSettings:
    """How a pass decodes: ``num_threads`` DALI threads (for ``dali-gpu`` also the concurrent NVDEC
    sessions), ``num_workers`` source processes, ``decode_batch`` samples per pipeline run (re-sliced into
    training batches), ``prefetch_queue_depth`` runs made ahead, ``affine``: pin the NVDEC threads to cores."""

    num_threads: int
    num_workers: int
    decode_batch: int
    prefetch_queue_depth: int
    affine: bool


# Per-device defaults. How many clips decode at once is the hardware's business, not the training batch's
# (MViT trains with 2 videos per GPU):
#
# * dali-gpu: DALI's mixed video decoder decodes the samples of one run in parallel, one per thread of its
#   own pool of ``num_threads`` threads, each thread with its NVDEC session (DALI source,
#   dali/operators/video/decoder/video_decoder_base.h; DALI issue #6387: "only fn.decoders.video supports
#   parallel decoding of samples", where one pipeline over the one-sequence-at-a-time video *readers* kept
#   ~14 % of a GH200's 7 NVDECs busy and seven pipelines ~89-100 %). The driver spreads sessions over the
#   engines (NVDEC application note: "NVIDIA driver takes care of load balancing among multiple NVDEC
#   engines"), and one session cannot exceed one engine's speed. So one pipeline, two threads per engine
#   (a session also demuxes and sets up on the CPU while the engine works: one waiting per engine keeps
#   it busy), and a decode batch of two samples per thread (so that the pool balances samples of unequal
#   length within a run instead of waiting on the slowest of one each), re-sliced into training batches.
#   Several pipelines per process would buy the same concurrency at the price of a copy of every buffer,
#   thread pool, prefetch queue and source worker per pipeline, and a merge of their outputs back into
#   the (seed, epoch) order. Threads not pinned (``affine=False``): they mostly wait on NVDEC, and pinned
#   by NVML's CPU affinity the threads of the 8 processes of a node would crowd the same GPU-local cores
#   (DALI PR #1465 made pinning optional for the mixed image decoder for that reason).
# * CPU decoders: DALI's CPU decoder runs one sample per thread of the pipeline's pool, PyAV one per source
#   process: the same two samples per decoding thread or process per run. Two threads by default (the CPU
#   also trains); the source's processes only read and cut packets for DALI's decoders (half as many).
_DEFAULT_CPU_THREADS = 2
_THREADS_PER_ENGINE = 2
_SAMPLES_PER_THREAD = 2
_UNKNOWN_ENGINES = 2  # a GPU whose NVDEC count neither the driver nor the datasheet table gives


def decode_settings(
    decoder: str,
    batch_size: int,
    *,
    engines: int | None = None,
    num_threads: int | None = None,
    num_workers: int | None = None,
    decode_batch: int | None = None,
    prefetch_queue_depth: int | None = None,
    affine: bool | None = None,
) -> DecodeSettings:
    """``decoder``'s settings for training batches of ``batch_size`` clips on a GPU with ``engines`` NVDEC
    engines (``dali-gpu``); what is given overrides the default (the comment above says why each is)."""
    if decoder == "dali-gpu":
        threads = num_threads or _THREADS_PER_ENGINE * (engines or _UNKNOWN_ENGINES)
    else:
        threads = num_threads or _DEFAULT_CPU_THREADS
    workers = num_workers or (threads if decoder == "pyav" else max(1, threads // 2))
    decoding = workers if decoder == "pyav" else threads
    settings = DecodeSettings(
        num_threads=threads,
        num_workers=workers,
        decode_batch=decode_batch or max(batch_size, _SAMPLES_PER_THREAD * decoding),
        prefetch_queue_depth=prefetch_queue_depth or 2,
        affine=(decoder != "dali-gpu") if affine is None else affine,
    )
    for name in ("num_threads", "num_workers", "decode_batch", "prefetch_queue_depth"):
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(settings, name)}")
    return settings


def probe_sample(video: bytes, indices: np.ndarray) -> str | None:
    """Whether the reference decoder (PyAV) decodes this clip: None, or the error in one line. What the
    loader asks of each sample of a batch that a DALI decoder lost."""
    from pipelines.pyav_feed import decode_frames

    try:
        decode_frames(video, indices)
    except Exception as e:  # noqa: BLE001 - any failure marks the sample
        return f"{type(e).__name__}: {e}"
    return None
