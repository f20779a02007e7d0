"""The MP4 index reader agrees with FFmpeg on good files and finds truncation on cut ones."""

from __future__ import annotations

import av
import pytest
from conftest import make_video, make_video_with_audio

from shards.mp4index import Mp4Truncated, read_mp4_index
from shards.probe import ProbeError, probe


def _pyav(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.demux(s) if _.size)
        return n, s.codec_context.name, s.codec_context.width, s.codec_context.height, float(s.average_rate)


@pytest.mark.parametrize("maker", ["plain", "audio_faststart"])
def test_index_matches_pyav(tmp_path, maker):
    if maker == "plain":  # moov at the end
        path = make_video(tmp_path / "v.mp4", frames=37, width=80, height=60, fps=25)
    else:  # moov first, with an AAC track
        path = make_video_with_audio(tmp_path / "v.mp4", frames=30, width=64, height=48)
    idx = read_mp4_index(path)
    n, codec, w, h, fps = _pyav(path)
    assert (idx.num_frames, idx.codec, idx.width, idx.height) == (n, codec, w, h)
    assert idx.fps == pytest.approx(fps, rel=1e-6)
    assert idx.has_audio == (maker != "plain")
    assert idx.last_sample_end <= path.stat().st_size


@pytest.mark.parametrize("fraction", [0.3, 0.8, 0.99])
def test_cut_files_are_truncated(tmp_path, fraction):
    path = make_video_with_audio(tmp_path / "v.mp4", frames=30)  # moov first: the cut hits the frames
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(Mp4Truncated):
        read_mp4_index(cut)
    with pytest.raises(ProbeError, match="truncated"):
        probe(cut, "fast")


def test_other_containers_are_left_to_ffmpeg(tmp_path):
    webm = make_video(tmp_path / "v.webm", codec="vp9")
    assert read_mp4_index(webm) is None
    text = tmp_path / "t.mp4"
    text.write_text("not a video\n" * 50)
    assert read_mp4_index(text) is None
    assert probe(webm, "fast").num_frames == 24
