"""DALI's CPU video decoder behind the clip source: the frames asked for, as PyAV decodes them from the same
bytes, with the sample's label and key, every sample once per epoch, ranks splitting the samples."""

from __future__ import annotations

import io
import json
import zlib

import av
import numpy as np
import pytest
from conftest import synthetic_shards

from pipelines.clip_source import CentreClip, SampleMeta, clip_pipeline, key_of
from pipelines.dali_decode import DaliDecoder
from pipelines.sampling import MVIT_CLIP, sample_rng, train_clip_indices

pytest.importorskip("nvidia.dali")

FRAMES = 40


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[list[str], list[str], dict[str, dict]]:
    """Synthetic VP9 shards (8 samples over train and val, 40 frames of 64x64); per key: label and bytes."""
    return synthetic_shards(tmp_path_factory.mktemp("dali_decode") / "shards", frames=FRAMES)


def pyav_frames(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def read(cp, iterations: int) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    """(key, label, indices, frames) per sample, the padded tail of each epoch dropped."""
    out = []
    for it in range(iterations):
        frames, label, key, indices, *_ = cp.pipe.run()
        batch = [(key_of(key.at(i)), int(label.at(i)), indices.at(i), frames.at(i)) for i in range(len(key))]
        done = (it % cp.iterations_per_epoch) * len(key)
        out += batch[: cp.samples_per_epoch - done]
    return out


def check_frames(samples: dict[str, dict], key: str, indices: np.ndarray, frames: np.ndarray) -> None:
    ref = pyav_frames(samples[key]["webm"])
    assert len(ref) == FRAMES
    assert frames.dtype == np.uint8 and frames.shape == (len(indices), 64, 64, 3)
    expected = ref[np.minimum(indices, FRAMES - 1)]  # pad_mode="edge": past the end, the last frame
    assert np.abs(frames.astype(np.int16) - expected).mean() < 3  # colour conversion differs slightly
    # and each frame is the one asked for, not a neighbour (the synthetic frames move)
    for f, i in zip(frames, np.minimum(indices, FRAMES - 1), strict=True):
        diffs = np.abs(ref.astype(np.int16) - f).mean(axis=(1, 2, 3))
        assert diffs.argmin() == i or np.array_equal(ref[diffs.argmin()], ref[i])


def test_centre_clip_matches_pyav_with_labels_and_keys(shards):
    tars, idxs, samples = shards
    cp = clip_pipeline(tars, idxs, batch_size=3, num_frames=4, stride=4)
    assert (cp.samples_per_epoch, cp.iterations_per_epoch) == (8, 3)
    got = read(cp, cp.iterations_per_epoch)
    assert sorted(k for k, *_ in got) == sorted(samples)  # every sample exactly once
    start = (FRAMES - 13) // 2
    for key, label, indices, frames in got:
        assert label == int(samples[key]["cls"]) == json.loads(samples[key]["json"])["label"]
        assert indices.tolist() == [start, start + 4, start + 8, start + 12]
        check_frames(samples, key, indices, frames)


def test_centre_clip_longer_than_the_video_repeats_the_last_frame(shards):
    tars, idxs, samples = shards
    cp = clip_pipeline(tars[:1], idxs[:1], batch_size=4, num_frames=16, stride=4)
    for key, _, indices, frames in read(cp, 1):
        assert indices.tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36] + [39] * 6
        check_frames(samples, key, indices, frames)


def indices_of(meta: SampleMeta) -> list[int]:
    """Unsorted, repeated and past-the-end indices from the sample's own key, numbers and epoch."""
    k = int(meta.key.rsplit("_", 1)[1])
    return [k + meta.epoch, meta.num_frames - 1, 3, 3, 45, 0, meta.label, int(meta.fps), meta.width // 8]


def test_python_indices_per_sample_and_epoch(shards):
    """Arbitrary indices from the sample's own key, numbers and epoch, under shuffling; across two epochs
    each sample is read once per epoch."""
    tars, idxs, samples = shards
    cp = clip_pipeline(tars, idxs, batch_size=3, frame_indices=indices_of, random_shuffle=True, seed=2)
    got = read(cp, 2 * cp.iterations_per_epoch)
    assert len(got) == 16
    for epoch, part in enumerate((got[:8], got[8:])):
        assert sorted(k for k, *_ in part) == sorted(samples)
        for key, label, indices, frames in part:
            assert label == int(samples[key]["cls"])
            assert indices.tolist() == [int(key[-6:]) + epoch, FRAMES - 1, 3, 3, 45, 0, label, 30, 8]
            check_frames(samples, key, indices, frames)
    assert [k for k, *_ in got[:8]] != [k for k, *_ in got[8:]]  # shuffled differently per epoch


def mvit_train(meta: SampleMeta) -> np.ndarray:
    rng = sample_rng(0, meta.epoch, zlib.crc32(meta.key.encode()))
    return train_clip_indices(meta.num_frames, meta.fps, MVIT_CLIP, rng)


def test_official_training_clips_through_the_pipeline(shards):
    tars, idxs, samples = shards
    cp = clip_pipeline(tars[:1], idxs[:1], batch_size=4, frame_indices=mvit_train)
    for key, _, indices, frames in read(cp, 1):
        rng = sample_rng(0, 0, zlib.crc32(key.encode()))
        assert indices.tolist() == train_clip_indices(FRAMES, 30.0, MVIT_CLIP, rng).tolist()
        assert frames.shape[0] == MVIT_CLIP.num_frames
        check_frames(samples, key, indices, frames)


def test_bad_indices_and_arguments_are_errors(shards):
    tars, idxs, _ = shards
    cp = clip_pipeline(tars[:1], idxs[:1], batch_size=2, frame_indices=lambda m: [0, -1])
    with pytest.raises(Exception, match="frame_indices"):
        cp.pipe.run()
    with pytest.raises(ValueError, match="device_id"):
        clip_pipeline(tars, idxs, batch_size=2, decoder="dali-gpu")
    with pytest.raises(ValueError, match="one .idx per tar"):
        clip_pipeline(tars, idxs[:1], batch_size=2)
    with pytest.raises(ValueError, match="device must be"):
        DaliDecoder(device="nvdec")


def test_ranks_split_the_samples_every_epoch(shards):
    """Three ranks of one epoch: each sample read by exactly one rank, the same one every epoch."""
    tars, idxs, samples = shards
    per_rank = []
    for rank in range(3):
        cp = clip_pipeline(tars, idxs, batch_size=2, num_frames=1, shard_id=rank, num_shards=3)
        assert (cp.samples_per_epoch, cp.iterations_per_epoch) == ([2, 3, 3][rank], 2)
        got = [k for k, *_ in read(cp, 2 * cp.iterations_per_epoch)]
        half = cp.samples_per_epoch
        assert got[:half] == got[half:] and len(set(got)) == half
        per_rank += got[:half]
    assert sorted(per_rank) == sorted(samples)


def test_gop_cut_same_frames_fewer_decoded(shards):
    """With the GOP cut (the default) DALI's decoder gets the clip's packets only: the same frames as from
    the whole video, bit for bit, at a cost that no longer grows with the clip's position."""
    tars, idxs, samples = shards
    late = CentreClip(4, 2)  # frames 16, 18, 20, 22 of 40: keyframe at 16
    whole = read(
        clip_pipeline(tars, idxs, batch_size=4, frame_indices=late, decoder=DaliDecoder(gop_cut=False)), 2
    )
    cut = read(clip_pipeline(tars, idxs, batch_size=4, frame_indices=late), 2)
    assert [k for k, *_ in cut] == [k for k, *_ in whole] and len(cut) == 8
    for (_, _, i1, f1), (_, _, i2, f2) in zip(cut, whole, strict=True):
        assert np.array_equal(i1, i2) and np.array_equal(f1, f2)
    video = samples[next(iter(samples))]["webm"]
    dec, uncut = DaliDecoder(), DaliDecoder(gop_cut=False)
    assert uncut.prepare(video, "webm", np.array([30, 34, 38]), FRAMES, "edge").decoded == 39  # from frame 0
    assert dec.prepare(video, "webm", np.array([30, 34, 38]), FRAMES, "edge").decoded == 39 - 16  # from 16
    assert uncut.prepare(video, "webm", np.array([2, 50]), FRAMES, "edge").decoded == FRAMES
    with pytest.raises(IndexError):
        dec.prepare(video, "webm", np.array([2, 50]), FRAMES, "none")
