"""Probing real (tiny) videos: what must be accepted, what must be rejected and with which reason, in
both probe modes (`full` decodes every frame, `fast` only demuxes)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from conftest import (
    corrupt_middle_packet,
    make_audio_only,
    make_odd_size_video,
    make_vfr_video,
    make_video,
    make_video_with_audio,
)

from shards.probe import PROBE_MODES, ProbeError, VideoInfo, probe

MODES = list(PROBE_MODES)


def test_modes():
    assert set(MODES) == {"full", "fast"}


# name -> (maker, expected num_frames, width, height, codec, fps, has_audio)
GOOD = {
    "h264.mp4": (lambda p: make_video(p), 24, 64, 48, "h264", 30.0, False),
    "vp9.webm": (lambda p: make_video(p, codec="vp9"), 24, 64, 48, "vp9", 30.0, False),
    "mjpeg.mkv": (lambda p: make_video(p, codec="mjpeg"), 24, 64, 48, "mjpeg", 30.0, False),
    "audio.mp4": (lambda p: make_video_with_audio(p), 24, 64, 48, "h264", 30.0, True),
    "odd444.mp4": (lambda p: make_odd_size_video(p), 24, 67, 49, "h264", 30.0, False),
    "oddj444.mkv": (
        lambda p: make_odd_size_video(p, codec="mjpeg", pix_fmt="yuvj444p"),
        24, 67, 49, "mjpeg", 30.0, False,
    ),
    "portrait.mp4": (lambda p: make_video(p, width=48, height=64), 24, 48, 64, "h264", 30.0, False),
    "25fps.webm": (lambda p: make_video(p, codec="vp9", fps=25, frames=20), 20, 64, 48, "vp9", 25.0, False),
}  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(GOOD))
def test_accepts_normal_videos(tmp_path, name, mode):
    maker, frames, width, height, codec, fps, has_audio = GOOD[name]
    path = tmp_path / name
    maker(path)
    info = probe(path, mode)
    assert isinstance(info, VideoInfo)
    assert info.num_frames == frames
    assert (info.width, info.height) == (width, height)
    assert info.codec == codec
    assert info.fps == pytest.approx(fps)
    assert info.duration == pytest.approx(frames / fps, abs=0.05)
    assert info.has_audio is has_audio
    if path.suffix == ".mp4":
        assert info.header_frames == frames  # mp4 says how many frames it holds
    d = info.to_dict()
    assert d["num_frames"] == frames and set(d) >= {"fps", "width", "height", "codec", "duration"}


@pytest.mark.parametrize("mode", MODES)
def test_variable_frame_rate_reports_the_real_average_rate(tmp_path, mode):
    path = make_vfr_video(tmp_path / "vfr.mkv", frames=30)
    info = probe(path, mode)
    assert info.num_frames == 30
    # 15 intervals of 33 ms and 14 of 67 ms: 29 intervals over 1.433 s, about 20.2 frames/s, not 30
    assert info.fps == pytest.approx(29 / 1.433, rel=0.01)
    assert info.duration == pytest.approx(1.466, abs=0.05)
    with av.open(str(path)) as c:
        assert len(list(c.decode(video=0))) == info.num_frames


@pytest.mark.parametrize("mode", MODES)
def test_full_and_fast_agree_on_good_videos(tmp_path, mode):
    path = make_video(tmp_path / "a.mp4", frames=30, width=80, height=60)
    other = "fast" if mode == "full" else "full"
    assert probe(path, mode) == probe(path, other)


# ---------------------------------------------------------------------------------------------- rejects
def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def make_bad(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "nope.mp4"
    if kind == "empty":
        path = tmp_path / "empty.mp4"
        path.write_bytes(b"")
        return path
    if kind == "text":
        path = tmp_path / "text.mp4"
        path.write_text("<html><body>This video is unavailable.</body></html>\n")
        return path
    if kind == "audio-only":
        return make_audio_only(tmp_path / "audio.mp4")
    if kind == "single-frame":
        return make_video(tmp_path / "one.mp4", frames=1)
    src = tmp_path / "src"
    src.mkdir()
    if kind == "truncated-mp4-faststart":  # moov up front: the index promises 24 frames
        return _truncate(make_video_with_audio(src / "a.mp4"), tmp_path / "t.mp4", 0.5)
    if kind == "truncated-mp4-moov-at-end":  # the index itself is lost
        return _truncate(make_video(src / "a.mp4"), tmp_path / "t.mp4", 0.5)
    if kind == "truncated-webm":
        return _truncate(make_video(src / "a.webm", codec="vp9"), tmp_path / "t.webm", 0.5)
    if kind == "truncated-mkv":
        return _truncate(make_video(src / "a.mkv", codec="mjpeg"), tmp_path / "t.mkv", 0.5)
    if kind == "truncated-vfr-mkv":
        return _truncate(make_vfr_video(src / "a.mkv"), tmp_path / "t.mkv", 0.7)
    raise AssertionError(kind)


# kind -> start(s) of the reason
BAD = {
    "missing": "missing",
    "empty": "empty file",
    "text": "not a readable video container",
    "audio-only": "no video stream",
    "single-frame": "not a video",
    "truncated-mp4-faststart": "truncated",
    # the index itself is lost (full: FFmpeg cannot open it; fast: the sample tables are not all there)
    "truncated-mp4-moov-at-end": ("not a readable video container", "truncated"),
    "truncated-webm": "truncated",
    "truncated-mkv": "truncated",
    "truncated-vfr-mkv": "truncated",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", list(BAD))
def test_rejects_broken_inputs_with_a_reason(tmp_path, kind, mode):
    path = make_bad(tmp_path, kind)
    with pytest.raises(ProbeError) as err:
        probe(path, mode)
    reason = str(err.value)
    assert reason.startswith(BAD[kind]), reason
    assert "\n" not in reason and len(reason) < 300


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_truncated_mp4_is_called_truncated_in_both_modes(tmp_path, mode):
    """The MP4 index is checked before decoding, so the reason says what happened, not how it failed."""
    path = make_bad(tmp_path, "truncated-mp4-faststart")
    with pytest.raises(
        ProbeError, match=r"^truncated: the media data is cut short \(\d+ of \d+ bytes present\)$"
    ):
        probe(path, mode)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_fast_probe_rejects_mp4_whose_last_frame_is_cut(tmp_path, fraction):
    src = make_video_with_audio(tmp_path / "a.mp4")
    bad = _truncate(src, tmp_path / "t.mp4", fraction)
    with pytest.raises(ProbeError, match=r"^truncated"):
        probe(bad, "fast")


@pytest.mark.parametrize("codec, ext", [("mjpeg", "mkv"), ("vp9", "webm")])
def test_corrupt_bitstream_full_rejects_fast_does_not(tmp_path, codec, ext):
    src = make_video(tmp_path / f"src.{ext}", codec=codec)
    bad = corrupt_middle_packet(src, tmp_path / f"bad.{ext}")
    with pytest.raises(ProbeError, match=r"^corrupt: decoding failed after \d+ frames"):
        probe(bad, "full")
    assert probe(bad, "fast").num_frames == 24  # documented: demuxing does not see bitstream damage


def test_unknown_mode(tmp_path):
    path = make_video(tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="unknown probe mode"):
        probe(path, "quick")


def test_probe_accepts_str_and_pathlike(tmp_path):
    path = make_video(tmp_path / "a.mp4")
    assert probe(str(path)) == probe(path)
