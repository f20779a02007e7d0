"""A corrupt sample is skipped: a video whose bitstream is broken in the middle (the fast probe lets it into
the shard) is dropped and counted by both decoders, the job goes on, training batches stay full and as many
as documented, evaluation yields every good (video, view) exactly once."""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import corrupt_middle_packet, k400_rows, k400_stem, make_video, write_k400_csv

from pipelines import build_loader
from pipelines.augment import MVIT_AUG
from pipelines.clip_source import ClipSource, sample_status
from pipelines.pyav_feed import PyAVDecoder
from pipelines.sampling import MVIT_CLIP
from shards.build import ShardConfig, build_shards

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None,
    reason="needs nvidia-dali",
)

SMALL = replace(MVIT_CLIP, num_frames=8, sampling_rate=2, short_side=48, crop_size=32, num_clips=2)
RECIPE = (SMALL, replace(MVIT_AUG, clip=SMALL, randaugment=None))
SAMPLES, BAD_AT = 7, 2  # 6 good videos and a corrupt one, third in the shard
EXT = {"vp9": "webm", "mjpeg": "mkv"}


def faulty_shards(out: Path, codec: str) -> tuple[Path, str, list[str]]:
    """Shards (``--probe fast``) of one split ``val``: ``(dir, bad key, good keys)``. The bad video is 16
    frames long, so that every 8-frame clip at stride 2 reaches its corrupt middle packet."""
    root = out / "k400"
    rows = k400_rows()[:SAMPLES]
    write_k400_csv(root / "annotations" / "val.csv", [r["youtube_id"] for r in rows])
    keys = [k400_stem(r) for r in rows]
    for i, key in enumerate(keys):
        path = root / "val" / f"{key}.{EXT[codec]}"
        if i == BAD_AT:
            corrupt_middle_packet(make_video(path, codec=codec, frames=16, seed=i))
        else:
            make_video(path, codec=codec, frames=32, seed=i)
    cfg = ShardConfig(src="kinetics400", root=str(root), split="val", out=str(out / "shards"), probe="fast")
    report = build_shards(replace(cfg, workers=1))
    assert report.splits["val"].samples == SAMPLES  # the fast probe does not decode: the bad one is in
    return out / "shards", keys[BAD_AT], [k for i, k in enumerate(keys) if i != BAD_AT]


@pytest.fixture(scope="module")
def vp9(tmp_path_factory):
    return faulty_shards(tmp_path_factory.mktemp("bad_vp9"), "vp9")


@pytest.fixture(scope="module")
def mjpeg(tmp_path_factory):
    return faulty_shards(tmp_path_factory.mktemp("bad_mjpeg"), "mjpeg")


def check_train(loader, bad: str, good: list[str]) -> None:
    batches = list(loader)
    assert len(batches) == len(loader) == SAMPLES // 2  # as many full batches as without the fault
    for b in batches:
        assert b.video.shape == (2, 3, 8, 32, 32) and len(b.key) == 2 and b.label.shape == (2,)
    keys = [k for b in batches for k in b.key]
    assert bad not in keys and set(keys) <= set(good)
    # 7 samples in batches of 2: a pass reads 6 (or more after a fault), so it may not meet the bad one
    assert loader.skipped_keys.keys() <= {bad} and loader.pass_skipped == sum(loader.skipped_keys.values())


def check_epochs(loader, bad: str, good: list[str]) -> None:
    """Four passes: the bad sample is met and skipped in some of them, counted per pass and in total."""
    total = 0
    for epoch in range(4):
        loader.set_epoch(epoch)
        check_train(loader, bad, good)
        total += loader.pass_skipped
    assert loader.skipped == total >= 1


def check_eval(loader, bad: str, good: list[str]) -> None:
    batches = list(loader)
    seen = Counter((k, v) for b in batches for k, v in zip(b.key, b.view.tolist(), strict=True))
    assert seen == Counter({(k, v): 1 for k in good for v in range(2)})  # every good view once
    assert all(len(b.key) == 4 for b in batches[:-1])
    assert loader.skipped_keys == Counter({bad: 2}) and loader.pass_skipped == 2  # both clips of it


@pytest.mark.parametrize("decoder", ["pyav", "dali-cpu"])
def test_corrupt_sample_is_skipped_vp9(vp9, decoder, caplog):
    shards, bad, good = vp9
    train = build_loader(shards, "val", RECIPE, batch_size=2, decoder=decoder, seed=1)
    with caplog.at_level(logging.WARNING, logger="stts.pipelines"):
        check_epochs(train, bad, good)
    warnings = [r for r in caplog.records if r.name == "stts.pipelines"]
    assert len(warnings) == 1 and bad in warnings[0].getMessage()  # the first fault, then once per 100
    check_eval(build_loader(shards, "val", RECIPE, batch_size=4, decoder=decoder, train=False), bad, good)


def test_corrupt_sample_is_skipped_mjpeg_dali(mjpeg, caplog):
    shards, bad, good = mjpeg
    train = build_loader(shards, "val", RECIPE, batch_size=2, decoder="dali-cpu", seed=2, log_every=1)
    with caplog.at_level(logging.WARNING, logger="stts.pipelines"):
        check_epochs(train, bad, good)
    assert len([r for r in caplog.records if r.name == "stts.pipelines"]) == train.skipped  # log_every=1
    check_eval(build_loader(shards, "val", RECIPE, batch_size=4, decoder="dali-cpu", train=False), bad, good)


def test_two_ranks_same_batches_with_a_fault(vp9):
    shards, bad, good = vp9
    for decoder in ("pyav", "dali-cpu"):
        counts = []
        for rank in range(2):
            loader = build_loader(
                shards, "val", RECIPE, batch_size=2, rank=rank, world_size=2, decoder=decoder
            )
            batches = list(loader)
            assert all(len(b.key) == 2 and bad not in b.key for b in batches)
            counts.append(len(batches))
        assert counts == [len(loader)] * 2 == [1, 1]


def test_source_flags_the_bad_sample(vp9):
    shards, bad, _ = vp9
    tars = sorted(str(p) for p in shards.glob("val-*.tar"))
    idxs = [t[: -len(".tar")] + ".idx" for t in tars]
    kw = dict(batch_size=2, decoder=PyAVDecoder(), num_frames=8, stride=2, video_indices=True)
    src = ClipSource(tars, idxs, skip_errors=True, **kw)
    statuses = {s.key: src(_Info(i)) for i, s in enumerate(src.samples)}
    for key, (frames, _, _, indices, _, status) in statuses.items():
        assert frames.shape[:1] == indices.shape == (8,)
        assert (sample_status(status) is None) == (key != bad)
    assert "Invalid data" in sample_status(statuses[bad][5])
    strict = ClipSource(tars, idxs, **kw)
    with pytest.raises(Exception, match="Invalid data"):
        strict(_Info([s.key for s in strict.samples].index(bad)))


class _Info:
    """A stand-in for DALI's SampleInfo: sample ``i`` of the epoch, batches of 2."""

    def __init__(self, i: int) -> None:
        self.iteration, self.idx_in_batch = divmod(i, 2)
