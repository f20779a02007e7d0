"""GOP cutting: a clip's packets in a container of their own decode to the frames a decode of the whole
video gives at the clip's indices (PyAV bit for bit on every codec; DALI's CPU decoder on VP9 and MJPEG;
DALI's NVDEC decoder on H.264 and HEVC with CUDA), and the cut starts at the latest keyframe it may."""

from __future__ import annotations

import io
import pickle
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import frames_rgb

from pipelines.gop_cut import CutClip, cut_clip, index_video
from pipelines.pyav_feed import decode_frames
from pipelines.sampling import (
    MVIT_CLIP,
    SWIN_CLIP,
    ClipSpec,
    eval_clip_indices,
    sample_rng,
    train_clip_indices,
)

FRAMES = 100


def encode(
    path: Path,
    codec: str,
    *,
    frames: int = FRAMES,
    size: tuple[int, int] = (64, 48),
    gop: int | None = 16,
    options: dict | None = None,
    pix_fmt: str = "yuv420p",
    durations: list[int] | None = None,
    audio: bool = False,
    fmt_options: dict | None = None,
    stream: bool = False,
) -> bytes:
    """Encode moving frames; ``durations``: per-frame durations in milliseconds (variable frame rate);
    ``stream``: written to a pipe (no seeking back: Matroska's segment size stays unknown)."""
    w, h = size
    target = _Pipe(path) if stream else str(path)
    fmt = path.suffix[1:] if stream else None
    with av.open(target, "w", format=fmt, options=fmt_options or {}) as c:
        vs = c.add_stream(codec, rate=30, options=options or {})
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        if gop:
            vs.codec_context.gop_size = gop
        if durations:
            vs.codec_context.time_base = Fraction(1, 1000)
        aus = c.add_stream("aac", rate=44100) if audio else None
        t = 0
        for i, img in enumerate(frames_rgb(frames, w, h, seed=1)):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            if durations:
                vf.pts, vf.time_base = t, Fraction(1, 1000)
                t += durations[i % len(durations)]
            else:
                vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
            if aus is not None:
                af = av.AudioFrame.from_ndarray(np.zeros((1, 1470), np.float32), format="fltp", layout="mono")
                af.sample_rate, af.pts = 44100, i * 1470
                for p in aus.encode(af):
                    c.mux(p)
        for s in (vs, aus):
            if s is not None:
                for p in s.encode(None):
                    c.mux(p)
    if stream:
        path.write_bytes(target.buffer.getvalue())
    return path.read_bytes()


class _Pipe:
    def __init__(self, path: Path):
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)

    def seekable(self) -> bool:
        return False


def as_block_groups(data: bytes) -> bytes:
    """The Matroska file with each SimpleBlock rewritten as a BlockGroup (a Block without the keyframe
    bit, and a ReferenceBlock unless it is a keyframe), as other muxers write them."""
    from pipelines import gop_cut_mkv as mkv

    def element(eid: int, body: bytes) -> bytes:
        return mkv._head(eid, len(body)) + body

    eid, p = mkv._id(data, 0)
    size, p = mkv._size(data, p)
    out = [data[: p + size]]
    eid, p = mkv._id(data, p + size)
    size, p = mkv._size(data, p)
    body = []
    for eid, s, e in mkv._children(data, p, p + size):
        if eid != mkv.CLUSTER:
            body.append(element(eid, data[s:e]))
            continue
        cluster = []
        for cid, cs, ce in mkv._children(data, s, e):
            block = data[cs:ce]
            if cid == mkv.SIMPLE_BLOCK:
                key = block[3] & 0x80
                group = element(mkv.BLOCK, block[:3] + bytes([block[3] & 0x7F]) + block[4:])
                if not key:
                    group += element(mkv.REFERENCE_BLOCK, b"\xff")  # -1: the block before
                cluster.append(element(mkv.BLOCK_GROUP, group))
            else:
                cluster.append(element(cid, block))
        body.append(element(mkv.CLUSTER, b"".join(cluster)))
    out.append(element(mkv.SEGMENT, b"".join(body)))
    return b"".join(out)


X264_SHARD = {
    "preset": "veryfast",
    "x264-params": "keyint=16:min-keyint=16:scenecut=0:bframes=3:b-adapt=0:b-pyramid=none",
    "threads": "1",
}
X264_ODD = {**X264_SHARD, "x264-params": X264_SHARD["x264-params"].replace("=16", "=8")}
VP9 = {"deadline": "realtime", "cpu-used": "8", "threads": "1", "lag-in-frames": "0"}
# name -> (codec, container, encode kwargs)
KINDS = {
    # as shards/encode.py re-encodes: GOP 16, three unreferenced B-frames
    "h264-shard": ("libx264", "mp4", {"options": X264_SHARD}),
    # as cameras and YouTube write H.264: long GOP, B-pyramid, scene cuts, audio interleaved
    "h264-raw": (
        "libx264",
        "mp4",
        {
            "gop": None,
            "options": {"x264-params": "keyint=40:bframes=3:b-pyramid=normal", "threads": "1"},
            "audio": True,
        },
    ),
    # open GOP: keyframes (recovery-point I) with leading B-frames, where a cut must not start
    "h264-open-gop": (
        "libx264",
        "mp4",
        {"gop": None, "options": {"x264-params": "keyint=20:open-gop=1", "threads": "1"}},
    ),
    "h264-mkv-vfr": ("libx264", "mkv", {"options": X264_SHARD, "durations": [33, 67, 20]}),
    "h264-mp4-vfr": ("libx264", "mp4", {"options": X264_SHARD, "durations": [33, 67, 20]}),
    "h264-odd": (
        "libx264",
        "mp4",
        {"options": X264_ODD, "size": (321, 179), "pix_fmt": "yuv444p", "frames": 24},
    ),
    "h264-fragmented": (
        "libx264",
        "mp4",
        {"options": X264_SHARD, "fmt_options": {"movflags": "frag_keyframe+empty_moov"}},
    ),
    "hevc": (
        "libx265",
        "mp4",
        {"gop": None, "options": {"x265-params": "keyint=16:min-keyint=16:no-open-gop=1:log-level=error"}},
    ),
    "hevc-open-gop": (
        "libx265",
        "mp4",
        {"gop": None, "options": {"x265-params": "keyint=16:min-keyint=16:log-level=error"}},
    ),
    "vp9": ("libvpx-vp9", "webm", {"options": VP9}),
    "vp9-stream": ("libvpx-vp9", "webm", {"options": VP9, "stream": True}),
    "vp9-vfr": ("libvpx-vp9", "webm", {"options": VP9, "durations": [33, 67, 20]}),
    "vp9-mp4": ("libvpx-vp9", "mp4", {"options": VP9}),
    "mjpeg": ("mjpeg", "mkv", {"gop": None, "pix_fmt": "yuvj420p"}),
    "mjpeg-odd": ("mjpeg", "mkv", {"gop": None, "pix_fmt": "yuvj444p", "size": (321, 179), "frames": 24}),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, tuple[bytes, str, np.ndarray]]:
    """name -> (bytes, extension, every frame as PyAV decodes the whole file)."""
    out = {}
    folder = tmp_path_factory.mktemp("gop_cut")
    for name, (codec, ext, kw) in KINDS.items():
        data = encode(folder / f"{name}.{ext}", codec, **kw)
        out[name] = (data, ext, full_decode(data))
    groups = as_block_groups(out["h264-mkv-vfr"][0])
    out["h264-mkv-block-groups"] = (groups, "mkv", full_decode(groups))
    return out


def full_decode(data: bytes, frames: int | None = None) -> np.ndarray:
    """The first ``frames`` (all) frames, decoded front to back as DALI decodes."""
    out = []
    with av.open(io.BytesIO(data)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == frames:
                break
    return np.stack(out)


def keyframes(data: bytes) -> list[int]:
    """Frame indices of the packets the container flags as keyframes."""
    with av.open(io.BytesIO(data)) as c:
        packets = [(p.pts, p.is_keyframe) for p in c.demux(video=0) if p.size]
    ranks = {pts: i for i, pts in enumerate(sorted(p for p, _ in packets))}
    return sorted(ranks[p] for p, key in packets if key)


def clips(n: int) -> list[np.ndarray]:
    """Indices as the loader asks them: official train and eval clips, and the awkward ones."""
    rng = sample_rng(0, 0, 7)
    short = ClipSpec(num_frames=4, sampling_rate=2, time_base="native", style="mmaction")
    return [
        train_clip_indices(n, 30, MVIT_CLIP, rng),
        train_clip_indices(n, 30, MVIT_CLIP, rng),
        eval_clip_indices(n, 30, SWIN_CLIP, 3, num_clips=4),  # wraps around: unsorted, whole video
        *(eval_clip_indices(n, 30, short, t, num_clips=5) for t in range(1, 5)),
        np.arange(4),  # the start
        np.arange(n // 2, n // 2 + 5),  # the middle
        np.array([n - 2, n - 1, n - 1, n - 1]),  # the end, clamped as the sampling functions pad
        np.array([n - 3, n + 5, n + 40]),  # past the end: the last frame (pad_mode "edge")
        np.array([n // 2 + 3] * 3 + [n // 2 - 7]),  # repeats, unsorted
        np.array([n - 4, n // 3, n // 2, n // 3 + 1]),  # unsorted
    ]


def check(ref: np.ndarray, idx: np.ndarray, cut: CutClip, *, seeking: bool = True) -> None:
    """The cut's frames at the rebased indices are the video's at the asked ones, read front to back as
    DALI reads (frame i of the cut is frame start + i of the video, up to the clip's last frame; after it
    may come an anchor the clip's B-frames needed, without its own B-frames) and, with ``seeking``, as
    the PyAV feed reads (`decode_frames`, which seeks in the cut)."""
    want = ref[np.minimum(idx, len(ref) - 1)]
    assert cut.indices.dtype == np.int32 and cut.indices.shape == idx.shape
    end = int(cut.indices.max()) + 1
    front = full_decode(cut.data, end)
    np.testing.assert_array_equal(front, ref[cut.start : cut.start + end])
    np.testing.assert_array_equal(front[cut.indices], want)
    if seeking:
        np.testing.assert_array_equal(decode_frames(cut.data, cut.indices), want)


@pytest.mark.parametrize("name", [*KINDS, "h264-mkv-block-groups"])
def test_cut_decodes_to_the_frames_of_a_full_decode(videos, name):
    data, ext, ref = videos[name]
    index = index_video(data, ext)
    assert index.num_frames == len(ref)
    expected = {"mp4": "mp4", "mkv": "matroska", "webm": "matroska"}[ext]
    if name == "vp9-stream":
        assert b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff" in data  # a segment of unknown size
    if name == "h264-mkv-block-groups":
        np.testing.assert_array_equal(ref, videos["h264-mkv-vfr"][2])  # the same video
        assert index.candidates.tolist() == index_video(videos["h264-mkv-vfr"][0]).candidates.tolist()
    assert index.container == ("pyav" if name == "h264-fragmented" else expected)
    starts = set()
    for i, idx in enumerate(clips(len(ref))):
        cut = cut_clip(data, ext, idx, index=index)
        check(ref, idx, cut, seeking=i % 2 == 0)
        starts.add(cut.start)
        if cut.start:  # the same kind of container, Matroska from PyAV
            assert cut.data[:4] == (data[:4] if index.container == "mp4" else b"\x1a\x45\xdf\xa3")
            assert len(cut.data) < len(data)
        else:
            assert cut.data is data
    if name.startswith("hevc-open") or name in ("h264-raw", "h264-open-gop"):
        return
    assert len(starts) > 2  # the clips really were cut


@pytest.mark.parametrize("name", ["h264-shard", "h264-mkv-vfr", "hevc", "vp9", "mjpeg"])
def test_cut_starts_at_the_last_keyframe_and_decodes_no_more_than_needed(videos, name):
    data, ext, ref = videos[name]
    keys = keyframes(data)
    reorder = 3 if name.startswith(("h264", "hevc")) else 0  # B-frames: a later anchor is decoded first
    for first in range(0, len(ref) - 8, 5):
        idx = np.arange(first, first + 8)
        cut = cut_clip(data, ext, idx)
        assert cut.start == max(k for k in keys if k <= first)
        ideal = idx.max() - cut.start + 1
        assert ideal <= cut.frames_decoded <= ideal + reorder
        if name == "h264-shard":
            assert cut.start == first // 16 * 16


def test_open_gop_keyframes_are_not_cut_points(videos):
    """x264's open-GOP I-frames and x265's CRA pictures have leading pictures that reference the GOP
    before: a cut never starts there, only at an IDR (here: the first frame only)."""
    for name in ("h264-open-gop", "hevc-open-gop"):
        data, ext, ref = videos[name]
        assert len(keyframes(data)) > 2  # the container does flag them
        assert all(cut_clip(data, ext, np.arange(i, i + 4)).start == 0 for i in range(0, len(ref) - 4, 7))


def test_raw_h264_cuts_at_its_idr_frames_only(videos):
    data, ext, ref = videos["h264-raw"]
    index = index_video(data, ext)
    idr = [int(k) for k in index.candidates if index.cut_point(data, int(k)) == k]
    assert idr and idr[0] == 0
    for first in (10, 45, 90):
        assert cut_clip(data, ext, [first, first + 5], index=index).start == max(k for k in idr if k <= first)


def test_pyav_remux_gives_the_same_frames(videos):
    for name in ("h264-shard", "vp9", "mjpeg", "hevc"):
        data, ext, ref = videos[name]
        index = index_video(data, ext, demuxer="pyav")
        assert index.container == "pyav"
        own = index_video(data, ext)
        for idx in clips(len(ref))[::3]:
            a = cut_clip(data, ext, idx, index=index)
            b = cut_clip(data, ext, idx, index=own)
            assert (a.start, a.frames_decoded) == (b.start, b.frames_decoded)
            np.testing.assert_array_equal(a.indices, b.indices)
            check(ref, idx, a)


def test_edit_list_that_drops_frames_is_never_cut(videos):
    """An MP4 edit list starting 3 frames late: libavformat decodes those frames but never shows them,
    so the video has 3 frames fewer; no cut (a cut could not drop them the same way)."""
    data, ext, ref = videos["h264-shard"]
    buf = bytearray(data)
    at = buf.find(b"elst") + 4
    version, count = buf[at], struct.unpack_from(">I", buf, at + 4)[0]
    assert version == 0 and count == 1
    media_time = struct.unpack_from(">i", buf, at + 12)[0]
    struct.pack_into(">i", buf, at + 12, media_time + 3 * 512)  # 512 ticks per frame at 30 fps
    dropped = bytes(buf)
    ref = full_decode(dropped)
    assert len(ref) == FRAMES - 3
    index = index_video(dropped, ext)
    assert (index.container, index.num_frames) == ("pyav", FRAMES - 3)
    for idx in clips(len(ref))[-8:]:
        cut = cut_clip(dropped, ext, idx, index=index)
        assert cut.start == 0 and cut.data is dropped
        check(ref, idx, cut)


def test_arguments_and_bad_input(videos):
    data, ext, ref = videos["vp9"]
    n = len(ref)
    with pytest.raises(IndexError, match=f"of {n} frames"):
        cut_clip(data, ext, [n], pad_mode="none")
    for bad in ([], [-1], [[1, 2]], [1.5]):
        with pytest.raises(ValueError, match="non-empty 1-D list of ints"):
            cut_clip(data, ext, bad)
    with pytest.raises(ValueError, match="pad_mode"):
        cut_clip(data, ext, [1], pad_mode="wrap")
    with pytest.raises(ValueError, match="demuxer"):
        index_video(data, ext, demuxer="ffmpeg")
    with pytest.raises(ValueError, match="cannot demux the mp4 video"):
        index_video(b"\0\0\0\x20ftypisom" + bytes(100), "mp4")
    # a cut MP4/Matroska header followed by garbage is not read as ours, and PyAV says what is wrong
    with pytest.raises(ValueError, match="cannot demux"):
        index_video(data[:200], ext)
    index = index_video(data, ext)
    assert pickle.loads(pickle.dumps(index)).num_frames == n  # for worker processes


# --------------------------------------------------------------------------------------------------- DALI


@pytest.fixture(scope="module")
def dali_cpu():
    """``decode(data, indices)`` with DALI's CPU video decoder, as the loader calls it."""
    pytest.importorskip("nvidia.dali")
    return _dali_decoder("cpu", None)


def _dali_decoder(device: str, device_id):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=device_id, prefetch_queue_depth=1)
    def pipe():
        video = fn.external_source(name="video", dtype=types.UINT8, ndim=1)
        frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
        return fn.decoders.video(video, device=device, frames=frames, pad_mode="edge")

    p = pipe()
    p.build()

    def decode(data: bytes, indices: np.ndarray) -> np.ndarray:
        p.feed_input("video", [np.frombuffer(data, np.uint8)])
        p.feed_input("frames", [np.asarray(indices, np.int32)])
        (out,) = p.run()
        if device != "cpu":
            out = out.as_cpu()
        return np.array(out.at(0))

    return decode


def assert_frames_asked(frames: np.ndarray, ref: np.ndarray, idx: np.ndarray, tolerance: float = 5) -> None:
    """DALI's colour conversion is not PyAV's (the CPU decoder's swscale bilinear with full chroma
    interpolation differs on these noisy frames by a mean of up to 4.1 of 255): each frame is within
    ``tolerance`` of the frame asked for, and nearer to it than to any other frame (neighbours differ by
    8-10)."""
    idx = np.minimum(idx, len(ref) - 1)
    for frame, i in zip(frames.astype(np.int16), idx, strict=True):
        diffs = np.abs(ref.astype(np.int16) - frame).mean(axis=(1, 2, 3))
        assert diffs[i] < tolerance and (diffs.argmin() == i or np.array_equal(ref[diffs.argmin()], ref[i]))


@pytest.mark.parametrize("name", ["vp9", "vp9-vfr", "vp9-mp4", "mjpeg", "mjpeg-odd"])
def test_dali_cpu_decodes_the_cut_to_the_frames_of_the_whole_video(videos, dali_cpu, name):
    data, ext, ref = videos[name]
    index = index_video(data, ext)
    cut_any = False
    for idx in clips(len(ref))[::2]:
        cut = cut_clip(data, ext, idx, index=index)
        cut_any |= cut.start > 0
        whole = dali_cpu(data, idx)
        np.testing.assert_array_equal(dali_cpu(cut.data, cut.indices), whole)  # the same decoder: exact
        assert_frames_asked(whole, ref, idx)
    assert cut_any


def cuda_devices() -> int:
    try:
        from nvidia.dali.backend import GetCUDADeviceCount

        return GetCUDADeviceCount()
    except (ImportError, RuntimeError):
        return 0


@pytest.fixture(scope="module")
def gpu_videos(tmp_path_factory) -> dict[str, tuple[bytes, str, np.ndarray]]:
    """The NVDEC cases at 192x160: NVDEC decodes nothing smaller than 144x144 in HEVC and 128x128 in VP9
    (its capability table; DALI refuses smaller videos: ``NVDECCache::GetDecoder``)."""
    out = {}
    folder = tmp_path_factory.mktemp("gop_cut_gpu")
    for name in GPU_KINDS:
        codec, ext, kw = KINDS[name]
        data = encode(folder / f"{name}.{ext}", codec, **{**kw, "size": (192, 160)})
        out[name] = (data, ext, full_decode(data))
    return out


GPU_KINDS = ["h264-shard", "h264-raw", "h264-mkv-vfr", "hevc", "vp9"]


@pytest.mark.gpu
@pytest.mark.skipif(cuda_devices() == 0, reason="needs CUDA")
@pytest.mark.parametrize("name", GPU_KINDS)
def test_dali_nvdec_decodes_the_cut_to_the_frames_of_the_whole_video(gpu_videos, name):
    """The ``mixed`` (NVDEC) decoder, which orders frames itself (the smallest packet pts first among
    the decoded pictures): H.264 with B-frames (MP4, and Matroska at a variable frame rate), HEVC, VP9;
    whole video vs cut exact, and each frame the one asked for (NVDEC's YUV->RGB is DALI's own CUDA
    kernel: a looser bound against PyAV, the nearest-frame test unchanged)."""
    decode = _dali_decoder("mixed", 0)
    data, ext, ref = gpu_videos[name]
    index = index_video(data, ext)
    cut_any = False
    for idx in clips(len(ref)):
        cut = cut_clip(data, ext, idx, index=index)
        cut_any |= cut.start > 0
        whole = decode(data, idx)
        np.testing.assert_array_equal(decode(cut.data, cut.indices), whole)
        assert_frames_asked(whole, ref, idx, tolerance=8)
    assert cut_any
