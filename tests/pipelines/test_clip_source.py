"""The one source of samples for every decoder: epoch orders and rank slices, picklable for spawned workers,
faults flagged per sample, and its graph inside a caller's pipeline."""

from __future__ import annotations

import importlib.util
import math
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_shards

from pipelines.clip_source import (
    CentreClip,
    ClipPipeline,
    ClipSource,
    FaultMarks,
    clip_pipeline,
    clip_source_graph,
    key_of,
    sample_status,
)
from pipelines.dali_decode import DaliDecoder
from pipelines.pyav_feed import PyAVDecoder
from shards.format import list_samples

needs_dali = pytest.mark.skipif(
    importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None,
    reason="needs nvidia-dali",
)


@pytest.fixture(scope="module")
def vp9(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("vp9") / "shards", frames=32, codec="vp9")


class Info:
    """A stand-in for DALI's SampleInfo."""

    def __init__(self, iteration: int, idx_in_batch: int) -> None:
        self.iteration, self.idx_in_batch = iteration, idx_in_batch


@pytest.mark.parametrize("decoder", [PyAVDecoder(), DaliDecoder()])
def test_epochs_shuffle_and_ranks(vp9, decoder):
    tars, idxs, samples = vp9
    ids = {s.key: i for i, s in enumerate(list_samples(tars, idxs))}

    def keys(src: ClipSource, epoch: int) -> list[str]:
        start = epoch * src.iterations_per_epoch
        return [
            src.locate(start + it, j)[1].key
            for it in range(src.iterations_per_epoch)
            for j in range(src.batch_size)
        ][: src.samples_per_epoch]

    src = ClipSource(tars, idxs, batch_size=3, decoder=decoder, shuffle=True, seed=5)
    orders = [keys(src, e) for e in range(3)]
    for o in orders:
        assert sorted(o) == sorted(samples)
    assert orders[0] != orders[1] != orders[2]
    again = pickle.loads(pickle.dumps(src))  # what a spawned worker gets: the same order
    assert [keys(again, e) for e in range(3)] == orders
    assert keys(ClipSource(tars, idxs, batch_size=3, decoder=decoder), 0) == sorted(ids, key=ids.get)
    for k in (2, 3, 5):
        for epoch in range(2):
            ranks = [
                ClipSource(tars, idxs, batch_size=2, decoder=decoder, shuffle=True, shard_id=r, num_shards=k)
                for r in range(k)
            ]
            assert {r.iterations_per_epoch for r in ranks} == {math.ceil(math.ceil(8 / k) / 2)}
            seen = Counter(key for r in ranks for key in keys(r, epoch))
            assert seen == Counter(samples.keys())  # every sample exactly once across ranks


def test_outputs_pickle_and_bad_arguments(vp9):
    tars, idxs, _ = vp9
    src = ClipSource(tars, idxs, batch_size=2, decoder=PyAVDecoder(), frame_indices=CentreClip(4, 2))
    frames, label, key, indices, decode_indices, decoded, _ = pickle.loads(pickle.dumps(src)).clip(
        src.samples[0], 0
    )
    assert frames.shape == (4, 64, 64, 3) and label.dtype == np.int32 and indices.dtype == np.int32
    assert indices.tolist() == [12, 14, 16, 18] and decode_indices.tolist() == [0, 1, 2, 3]
    assert key_of(key) == src.samples[0].key and decoded.dtype == np.int32 and decoded >= 4
    dali = ClipSource(tars, idxs, batch_size=2, decoder=DaliDecoder(), frame_indices=CentreClip(4, 2))
    payload, _, _, indices, decode_indices, decoded, _ = dali.clip(dali.samples[0], 0)
    sample = dali.samples[0]
    assert payload.tobytes() == dali.read(sample.tar, *sample.members[sample.video_ext])
    assert indices.tolist() == decode_indices.tolist() == [12, 14, 16, 18] and decoded == 19
    with pytest.raises(ValueError, match="frame_indices"):
        ClipSource(tars, idxs, batch_size=2, decoder=PyAVDecoder(), frame_indices=lambda m: [0, -1]).clip(
            src.samples[0], 0
        )
    with pytest.raises(ValueError, match="shard_id"):
        ClipSource(tars, idxs, batch_size=2, decoder=PyAVDecoder(), shard_id=3, num_shards=3)
    with pytest.raises(ValueError, match="py_start_method"):
        clip_pipeline(tars, idxs, batch_size=2, py_start_method="forkserver")


@pytest.mark.parametrize("decoder", [PyAVDecoder(), DaliDecoder()])
def test_a_sample_that_cannot_be_read_is_flagged(vp9, tmp_path, decoder):
    """A video member that cannot be read (the tar was truncated): with ``skip_errors`` the source flags it
    and hands the decoder's placeholder (for DALI's decoders a video that decodes), the other samples come
    through."""
    tars, idxs, _ = vp9
    src = ClipSource(
        tars, idxs, batch_size=2, decoder=decoder, skip_errors=True, frame_indices=CentreClip(4, 2)
    )
    first = src.samples[0]
    broken = tmp_path / "broken.tar"
    offset, size = first.members[first.video_ext]
    broken.write_bytes(Path(first.tar).read_bytes()[: offset + size // 2])
    src.samples[0] = type(first)(first.key, str(broken), first.video, first.members)
    out = src(Info(0, 0))
    out = dict(zip(src.outputs, out, strict=True))
    assert "short read" in sample_status(out["status"]) and int(out["decoded"]) == 0
    assert out.get("decode_indices", np.zeros(4)).tolist() == [0, 0, 0, 0]
    if isinstance(decoder, DaliDecoder):  # a placeholder DALI's decoder reads: a one-frame video
        assert out["payload"].dtype == np.uint8 and out["payload"].ndim == 1
    else:
        assert out["payload"].shape == (4, 64, 64, 3) and not out["payload"].any()
    good = dict(zip(src.outputs, src(Info(0, 1)), strict=True))
    assert sample_status(good["status"]) is None and key_of(good["key"]) == src.samples[1].key


@needs_dali
@pytest.mark.parametrize("name", ["pyav", "dali-cpu"])
def test_clip_source_graph_inside_a_callers_pipeline(vp9, name):
    """`clip_source_graph` + the decoder's graph extend the caller's pipeline (a flip after them): the same
    clips as `clip_pipeline`; the caller's batch size must be the source's."""
    from nvidia.dali import fn, pipeline_def

    from pipelines.decoders import make_decoder

    tars, idxs, _ = vp9
    decoder = make_decoder(name)
    source = ClipSource(tars, idxs, batch_size=4, decoder=decoder, num_frames=4, stride=2, video_indices=True)
    assert source.outputs == ("payload", "label", "key", "indices") + ("decode_indices",) * (
        name != "pyav"
    ) + ("decoded",)

    @pipeline_def(batch_size=4, num_threads=1, device_id=None, py_num_workers=1, py_start_method="fork")
    def pipe():
        out = clip_source_graph(source)
        frames = fn.flip(decoder.frames(out.payload, out.decode_indices), horizontal=1)
        return frames, out.label, out.key, out.indices, out.decoded

    p = pipe()
    p.build()

    def read(cp, runs):
        out = []
        for _ in range(runs):
            frames, label, key, indices, *_ = cp.pipe.run()
            out += [(key_of(key.at(i)), int(label.at(i)), indices.at(i), frames.at(i)) for i in range(4)]
        return out

    ours = read(ClipPipeline(p, source.samples_per_epoch, source.iterations_per_epoch), 2)
    theirs = read(clip_pipeline(tars, idxs, batch_size=4, decoder=name, num_frames=4, stride=2), 2)
    assert [k for k, *_ in ours] == [k for k, *_ in theirs] and len(ours) == 8
    for a, b in zip(ours, theirs, strict=True):
        assert a[1] == b[1] and np.array_equal(a[2], b[2])
        assert np.array_equal(np.asarray(a[3]), np.asarray(b[3])[:, :, ::-1])

    @pipeline_def(batch_size=2, num_threads=1, device_id=None, py_num_workers=1, py_start_method="fork")
    def wrong_batch():
        return clip_source_graph(source)[0]

    with pytest.raises(ValueError, match="batch size"):
        wrong_batch()


def test_known_faults_are_not_read_again(vp9):
    """The loader marks a faulty sample once; the source's workers (here a pickled copy, as a spawned
    worker gets it) see the mark made after they started and skip the sample."""
    tars, idxs, _ = vp9
    marks = FaultMarks(8)
    src = ClipSource(tars, idxs, batch_size=2, decoder=DaliDecoder(), skip_errors=True, faults=marks)
    worker = pickle.loads(pickle.dumps(src))
    first = dict(zip(worker.outputs, worker(Info(0, 0)), strict=True))
    assert sample_status(first["status"]) is None
    marks.mark(src.index_of(src.samples[0].key))
    again = dict(zip(worker.outputs, worker(Info(0, 0)), strict=True))
    assert "failed before" in sample_status(again["status"]) and int(again["decoded"]) == 0
    assert sample_status(dict(zip(worker.outputs, worker(Info(0, 1)), strict=True))["status"]) is None
    path = marks.path
    del marks, src, worker
    assert not Path(path).exists()
