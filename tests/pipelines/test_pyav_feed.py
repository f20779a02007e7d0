"""The PyAV decoder: exact frames for any codec (H.264 too), through the clip source the same clips as DALI's
own decoder on VP9, every sample once per epoch, ranks splitting the samples."""

from __future__ import annotations

import importlib.util
import io
import json
import zlib
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import synthetic_shards

from pipelines.clip_source import SampleMeta, clip_pipeline, key_of
from pipelines.pyav_feed import PyAVDecoder, decode_frames
from pipelines.sampling import MVIT_CLIP, sample_rng, train_clip_indices
from shards.format import list_samples, parse_i32, read_member

FRAMES = 32
needs_dali = pytest.mark.skipif(
    importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None,
    reason="needs nvidia-dali",
)


def make_shards(out: Path, codec: str) -> tuple[list[str], list[str], dict[str, dict]]:
    return synthetic_shards(out, frames=FRAMES, codec=codec)


@pytest.fixture(scope="module")
def vp9(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("vp9") / "shards", "vp9")


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("h264") / "shards", "h264")


@pytest.fixture(params=["vp9", "h264"])
def shards(request):
    return request.param, *request.getfixturevalue(request.param)


def video_of(members: dict) -> bytes:
    return next(members[e] for e in ("mp4", "webm", "mkv") if e in members)


def full_decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def mvit_train(meta: SampleMeta) -> np.ndarray:
    """Module level, so spawned DALI workers can unpickle it."""
    rng = sample_rng(0, meta.epoch, zlib.crc32(meta.key.encode()))
    return train_clip_indices(meta.num_frames, meta.fps, MVIT_CLIP, rng)


def read(cp, iterations: int) -> list[tuple[str, bytes, int, np.ndarray, np.ndarray]]:
    """(key, key bytes, label, indices, frames) per sample, the padded tail of each epoch dropped."""
    out = []
    for it in range(iterations):
        frames, label, key, indices, *_ = cp.pipe.run()
        batch = [
            (key_of(key.at(i)), bytes(key.at(i)), int(label.at(i)), indices.at(i), frames.at(i))
            for i in range(len(key))
        ]
        done = (it % cp.iterations_per_epoch) * len(key)
        out += batch[: cp.samples_per_epoch - done]
    return out


def test_shard_reader_reads_members_by_offset(shards):
    _, tars, idxs, samples = shards
    listed = list_samples(tars, idxs)
    assert sorted(s.key for s in listed) == sorted(samples)
    for s in listed:
        for ext, (offset, size) in s.members.items():
            assert read_member(s.tar, offset, size) == samples[s.key][ext]
        label, n, fps, w, h = parse_i32(samples[s.key]["i32"])
        meta = json.loads(samples[s.key]["json"])
        assert (
            (label, n, fps, w, h)
            == (int(samples[s.key]["cls"]), FRAMES, 30.0, 64, 64)
            == (
                meta["label"],
                meta["num_frames"],
                meta["fps"],
                meta["width"],
                meta["height"],
            )
        )


def test_decode_frames_equals_full_decode_indexed(shards):
    _, _, _, samples = shards
    rng = np.random.default_rng(0)
    for members in samples.values():
        data = video_of(members)
        ref = full_decode(data)
        assert len(ref) == FRAMES
        cases = [
            np.arange(FRAMES),
            np.array([31, 0, 17, 17, 5, 16, 15]),  # out of order, repeated, both sides of a keyframe
            np.array([2, 30]),  # far apart: two seeks
            *(rng.integers(0, FRAMES, rng.integers(1, 12)) for _ in range(6)),
        ]
        stats: dict = {}
        for idx in cases:
            got = decode_frames(data, idx, stats=stats)
            assert got.dtype == np.uint8 and got.shape == (len(idx), 64, 64, 3)
            assert np.array_equal(got, ref[idx])
        if "mp4" in members:  # H.264: 3 unreferenced B-frames in 4 are left out
            assert stats["skipped"] > 0.3 * stats["decoded"]
        else:
            assert stats["skipped"] == 0
        assert np.array_equal(decode_frames(data, [FRAMES + 5, 3]), ref[[FRAMES - 1, 3]])  # edge padding
        with pytest.raises(IndexError):
            decode_frames(data, [FRAMES], pad_mode="none")
    with pytest.raises(ValueError, match="decode_frames"):
        decode_frames(data, [1, -1])


def test_demux_stops_once_the_first_frames_are_certain(shards):
    """The packet table is read only until the ``need`` earliest frames are known for certain (H.264 with
    B-frames reorders: decode order is not presentation order), and those are the full table's."""
    from pipelines.pyav_feed import _demux_table

    _, _, _, samples = shards
    for members in samples.values():
        with av.open(io.BytesIO(video_of(members))) as c:
            full = _demux_table(c, c.streams.video[0], FRAMES + 1)  # never certain early: reads all
        assert len(full) == FRAMES
        for need in (1, 5, 12, 20):
            with av.open(io.BytesIO(video_of(members))) as c:
                part = _demux_table(c, c.streams.video[0], need)
            assert need <= len(part) < FRAMES
            assert sorted(part)[:need] == sorted(full)[:need]


@needs_dali
def test_h264_clips_through_the_pipeline(h264):
    tars, idxs, samples = h264
    cp = clip_pipeline(
        tars, idxs, batch_size=3, decoder="pyav", frame_indices=mvit_train, py_num_workers=2,
        py_start_method="spawn",
    )  # fmt: skip
    assert (cp.samples_per_epoch, cp.iterations_per_epoch) == (8, 3)
    got = read(cp, 2 * cp.iterations_per_epoch)
    for epoch in range(2):
        clips = got[8 * epoch : 8 * (epoch + 1)]
        assert sorted(k for k, *_ in clips) == sorted(samples)  # every sample once per epoch
        for key, raw, label, indices, frames in clips:
            rng = sample_rng(0, epoch, zlib.crc32(key.encode()))
            assert indices.tolist() == train_clip_indices(FRAMES, 30.0, MVIT_CLIP, rng).tolist()
            assert label == int(samples[key]["cls"])
            assert raw.decode().endswith(f":{key}.mp4")
            assert np.array_equal(frames, full_decode(samples[key]["mp4"])[indices])
    # the same clips with DALI's CPU decoder: it cannot read H.264
    with pytest.raises(RuntimeError):
        clip_pipeline(tars, idxs, batch_size=3, num_frames=4).pipe.run()


@needs_dali
def test_vp9_same_clips_as_dali_decoder(vp9):
    tars, idxs, samples = vp9
    kw = dict(batch_size=3, frame_indices=mvit_train, random_shuffle=True, seed=4)
    ours = read(clip_pipeline(tars, idxs, decoder="pyav", **kw), 6)
    theirs = read(clip_pipeline(tars, idxs, decoder="dali-cpu", **kw), 6)
    assert len(ours) == len(theirs) == 16
    for (k1, raw1, l1, i1, f1), (k2, raw2, l2, i2, f2) in zip(ours, theirs, strict=True):
        assert (k1, raw1, l1, i1.tolist()) == (k2, raw2, l2, i2.tolist())  # same order, keys, labels
        assert f1.shape == f2.shape == (16, 64, 64, 3)
        assert np.abs(f1.astype(np.int16) - f2).mean() < 3  # colour conversion differs slightly
    # the decoders' own numbers: PyAV decodes the keyframe run up to each frame, DALI from the first frame
    assert (
        PyAVDecoder().prepare(vp9[2][ours[0][0]]["webm"], "webm", np.array([20, 24]), FRAMES, "edge").decoded
        == 9
    )
    assert (
        PyAVDecoder().prepare(vp9[2][ours[0][0]]["webm"], "webm", np.array([5]), FRAMES, "edge").decoded == 6
    )


@needs_dali
def test_ranks_through_the_pipeline_cover_every_sample_once(vp9):
    tars, idxs, samples = vp9
    seen = Counter()
    for rank in range(3):
        cp = clip_pipeline(
            tars,
            idxs,
            batch_size=2,
            decoder="pyav",
            num_frames=2,
            shard_id=rank,
            num_shards=3,
            random_shuffle=True,
            py_num_workers=1,
        )
        assert cp.iterations_per_epoch == 2  # ceil(ceil(8 / 3) / 2)
        seen.update(k for k, *_ in read(cp, cp.iterations_per_epoch))
    assert seen == Counter(samples.keys())
