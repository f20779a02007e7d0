"""What this GPU's NVDEC decodes, and the check ``dali-gpu`` runs before the first batch.

A shard whose codec NVDEC cannot decode would fail every batch that holds one of its samples (DALI's
decoder raises for the whole batch; see `pipelines.loader`): the loader refuses it up front instead, in
one line that names the codec and the fix.

Who answers, in order (`gpu_capabilities`):

1. the driver itself: ``cuvidGetDecoderCaps`` from ``libnvcuvid.so.1`` (installed with the NVIDIA
   driver), asked for each codec at 8-bit 4:2:0 on the current device; it also reports how many NVDEC
   engines serve that codec (``nNumNVDECs``). Layout of ``CUVIDDECODECAPS`` and the ``cudaVideoCodec``
   numbers: ``cuviddec.h`` of the Video Codec SDK (12.x/13.x; the fields read here have kept their offsets
   since the struct appeared, ``nNumNVDECs`` was a reserved byte before, read as 0).
   NVML cannot answer this (it reports decoder utilisation, not decodable codecs) and DALI 2.4 exposes no
   capability query in Python (``nvidia.dali.backend`` has device counts and versions only).
2. the support matrix by architecture (`ARCH_CODECS`), from NVIDIA's NVDEC Application Note, Video Codec
   SDK 13.0, table "NVDEC Hardware Capabilities"
   (https://docs.nvidia.com/video-technologies/video-codec-sdk/13.0/nvdec-application-note/index.html):
   AV1 Main decoding only from GA10x (Ampere except GA100) and Ada on, not on Turing, GA100 (A100) or
   Hopper (H100, H200), whose NVDEC is Turing's; HEVC and VP9 from Pascal on (select 2nd-generation
   Maxwell GPUs too); VP8 from 2nd-generation Maxwell; H.264, MPEG-2, MPEG-4, VC-1 everywhere. The
   architecture comes from the CUDA compute capability. MJPEG: DALI's ``fn.decoders.video`` documents it
   for the mixed backend on every GPU (``fn.decoders.video.__doc__``: "VP8, VP9, MJPEG: supported by both
   CPU and Mixed backends").

`check_codecs` compares the split's codecs (the manifest's ``codecs``) with the answer.
"""

from __future__ import annotations

import ctypes
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ARCH_CODECS",
    "NVDEC_ENGINES",
    "Capabilities",
    "UnsupportedCodec",
    "architecture",
    "check_codecs",
    "gpu_capabilities",
    "table_capabilities",
]

_BASE = frozenset({"h264", "mpeg2video", "mpeg4", "vc1", "mjpeg"})
_PASCAL = _BASE | {"vp8", "hevc", "vp9"}
# architecture -> codecs its NVDEC decodes (8-bit 4:2:0), NVDEC Application Note (Video Codec SDK 13.0)
ARCH_CODECS: dict[str, frozenset[str]] = {
    "maxwell1": _BASE,
    "maxwell2": _BASE | {"vp8"},  # HEVC and VP9 in select 2nd-generation Maxwell GPUs only: not assumed
    "pascal": _PASCAL,
    "volta": _PASCAL,
    "turing": _PASCAL,  # also GA100 (A100) and Hopper (H100, H200): NVDEC of Turing's architecture
    "ampere": _PASCAL | {"av1"},  # GA10x
    "ada": _PASCAL | {"av1"},
    "blackwell": _PASCAL | {"av1"},
}
# NVDEC engines per GPU where the driver does not say (datasheets: H100 and H200 "7 NVDEC", A100 "5 NVDEC")
NVDEC_ENGINES = {"H100": 7, "H200": 7, "H800": 7, "GH200": 7, "A100": 5, "A800": 5}

# cudaVideoCodec (cuviddec.h)
_CUDA_VIDEO_CODEC = {
    "mpeg1video": 0,
    "mpeg2video": 1,
    "mpeg4": 2,
    "vc1": 3,
    "h264": 4,
    "mjpeg": 5,
    "hevc": 8,
    "vp8": 9,
    "vp9": 10,
    "av1": 11,
}
_CHROMA_420 = 1


class UnsupportedCodec(ValueError):
    """The shards hold a codec this GPU's NVDEC does not decode."""


@dataclass(frozen=True)
class Capabilities:
    """What one GPU's NVDEC decodes: its name, the codecs (FFmpeg decoder names), how many NVDEC engines
    it has (None: unknown) and where the answer came from (``"driver"`` or ``"table"``)."""

    gpu: str
    codecs: frozenset[str]
    engines: int | None
    source: str


def architecture(major: int, minor: int) -> str:
    """The NVDEC generation of a CUDA compute capability (GA100 and Hopper have Turing's NVDEC)."""
    if major >= 10:
        return "blackwell"
    if major == 9:
        return "turing"  # Hopper
    if (major, minor) == (8, 0):
        return "turing"  # GA100
    if major == 8:
        return "ada" if minor >= 9 else "ampere"
    if (major, minor) == (7, 5):
        return "turing"
    if major == 7:
        return "volta"
    if major == 6:
        return "pascal"
    if (major, minor) >= (5, 2):
        return "maxwell2"
    return "maxwell1"


def table_capabilities(gpu: str, major: int, minor: int) -> Capabilities:
    """The support matrix's answer for a GPU of compute capability ``major.minor`` named ``gpu``."""
    engines = next((n for name, n in NVDEC_ENGINES.items() if re.search(rf"\b{name}\b", gpu)), None)
    return Capabilities(gpu, ARCH_CODECS[architecture(major, minor)], engines, "table")


def _driver_caps(codec_id: int) -> tuple[bool, int] | None:
    """``(supported, NVDEC engines)`` from ``cuvidGetDecoderCaps`` on the current CUDA context; None when
    the library or the call is not available."""
    try:
        lib = ctypes.CDLL("libnvcuvid.so.1")
        fn = lib.cuvidGetDecoderCaps
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p]
    fn.restype = ctypes.c_int
    buf = ctypes.create_string_buffer(256)  # CUVIDDECODECAPS is 96 bytes today; the rest stays zero
    struct.pack_into("<iiI", buf, 0, codec_id, _CHROMA_420, 0)  # eCodecType, eChromaFormat, nBitDepthMinus8
    if fn(ctypes.addressof(buf)) != 0:  # CUDA_SUCCESS
        return None
    supported, engines = struct.unpack_from("<BB", buf, 24)  # bIsSupported, nNumNVDECs
    return bool(supported), engines


def gpu_capabilities(device=None) -> Capabilities:
    """What the NVDEC of CUDA ``device`` (default: the current one) decodes: the driver's answer where it
    gives one, else the support matrix by architecture (module docstring)."""
    import torch

    index = None if device is None else torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    props = torch.cuda.get_device_properties(index)
    table = table_capabilities(props.name, props.major, props.minor)
    with torch.cuda.device(index):  # cuvid asks the calling thread's current context: this GPU's, for now
        torch.empty(1, device=f"cuda:{index}")  # ... and make sure it exists
        answers = {codec: _driver_caps(cid) for codec, cid in _CUDA_VIDEO_CODEC.items()}
    if any(a is None for a in answers.values()):
        return table
    engines = max((n for ok, n in answers.values() if ok), default=0) or table.engines
    codecs = frozenset(c for c, (ok, _) in answers.items() if ok)
    # DALI's documentation promises MJPEG on the mixed backend whatever NVDEC reports for JPEG
    return Capabilities(props.name, codecs | {"mjpeg"}, engines, "driver")


def check_codecs(codecs: Iterable[str], caps: Capabilities, *, where: str = "the shards") -> None:
    """`UnsupportedCodec`, in one line naming the codec and the fix, unless every codec is decodable."""
    missing = sorted(set(codecs) - caps.codecs)
    if missing:
        names = ", ".join(missing)
        raise UnsupportedCodec(
            f"{where} hold {names} video, which this GPU's NVDEC ({caps.gpu}) cannot decode: re-encode them "
            f"(stts shard ... --reencode --codec h264) or load them with decoder='pyav'"
        )
