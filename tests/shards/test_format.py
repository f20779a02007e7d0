"""The one reader of the shard format: manifest, .idx, .i32 and the per-rank layout."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from shards.format import (
    I32_FIELDS,
    RankLayout,
    idx_path,
    index_count,
    list_samples,
    pack_i32,
    parse_i32,
    read_index,
    read_manifest,
    read_split,
    shard_classes,
)


def test_i32_round_trip():
    data = pack_i32(7, 300, 29.97, 340, 256)
    assert len(data) == 4 * len(I32_FIELDS) == 20
    assert parse_i32(data) == (7, 300, 29.97, 340, 256)
    assert parse_i32(data).num_frames == 300
    with pytest.raises(ValueError, match="20 bytes"):
        parse_i32(data[:16])


@pytest.mark.parametrize("total", [1, 5, 8, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_rank_layout_covers_each_sample_once_and_pads_equally(total, world):
    if total < world:
        return  # a rank without samples is refused by the loader
    for batch in (1, 2, 3):
        layouts = [RankLayout(total, r, world) for r in range(world)]
        owned = Counter(p for lay in layouts for p in range(lay.begin, lay.begin + lay.samples))
        assert owned == Counter(range(total))
        assert {lay.iterations(batch) for lay in layouts} == {math.ceil(math.ceil(total / world) / batch)}
        for lay in layouts:
            positions = [
                lay.locate(it, slot, batch)
                for it in range(2 * lay.iterations(batch))
                for slot in range(batch)
            ]
            per_epoch = lay.iterations(batch) * batch
            for epoch in range(2):
                part = positions[epoch * per_epoch : (epoch + 1) * per_epoch]
                assert {e for e, _ in part} == {epoch}
                seen = [p for _, p in part]
                assert seen[: lay.samples] == list(range(lay.begin, lay.begin + lay.samples))
                assert set(seen[lay.samples :]) <= {lay.begin + lay.samples - 1}  # padding: the last
        assert len({lay.train_batches(batch) for lay in layouts}) == 1
    with pytest.raises(ValueError, match="rank"):
        RankLayout(4, 2, 2)


def test_manifest_and_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json in"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_manifest(tmp_path)
    tar = tmp_path / "val-000000.tar"
    tar.write_bytes(b"\0" * 4096)
    lines = ["v1.2 2", "i32 512 20 a_1.i32 mp4 1024 100 a_1.mp4", "i32 1536 20 b_2.i32 webm 2048 50 b_2.webm"]
    (tmp_path / "val-000000.idx").write_text("\n".join(lines) + "\n")
    manifest = {
        "classes": ["x", "y"],
        "splits": {"val": {"shards": [{"name": tar.name, "samples": 2}], "samples": 2, "codecs": {"vp9": 2}}},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    split = read_split(tmp_path, "val")
    assert split.tars == [str(tar)] and split.idxs == [idx_path(tar)] == [str(tmp_path / "val-000000.idx")]
    assert (split.samples, split.codecs) == (2, {"vp9": 2})
    with pytest.raises(KeyError, match="no split 'train'"):
        read_split(tmp_path, "train")
    assert shard_classes(tmp_path, "val") == ["x", "y"]
    with pytest.raises(ValueError, match="has no split 'test'"):
        shard_classes(tmp_path, "test")
    assert index_count(split.idxs[0]) == 2
    a, b = read_index(tar)
    assert (a.key, a.video, a.video_ext, a.members["mp4"]) == ("a_1", "a_1.mp4", "mp4", (1024, 100))
    assert b.source_info == f"{tar}:2048:b_2.webm"
    assert list_samples(split.tars) == [a, b]
    (tmp_path / "val-000000.idx").write_text("v1.2 3\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(ValueError, match="header says 3"):
        read_index(tar)
