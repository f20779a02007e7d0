"""The shards as DALI reads them: `fn.readers.webdataset` with the `.idx` files we write (CPU only), every
sample once per epoch, bytes and labels as in the sources; re-encoded shards decode with DALI's CPU video
decoder to the recorded frame count and size."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from conftest import (
    k400_class_names,
    k400_rows,
    k400_stem,
    make_odd_size_video,
    make_video,
    make_video_with_audio,
)

from shards.build import ShardConfig, build_shards
from shards.reencode import ReencodeSpec

dali = pytest.importorskip("nvidia.dali")
from nvidia.dali import fn, pipeline_def  # noqa: E402

CLASSES = k400_class_names()
ROWS = {r["youtube_id"]: r for r in k400_rows()}
VIDEO_EXT = "mp4;webm;mkv"
GOOD_IDS = [
    "--nQbRBEz2s",
    "_DNb_6w2cZM",
    "-10xhPhBo0k",
    "2BwBZ9IQzAk",
    "T_-aThrMoNs",
    "chN87Lwj4RM",
    "GuFI_K7gqwY",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Class folders (verbatim names) with mp4, webm and mkv files, odd sizes, audio, and one broken file."""
    root = tmp_path_factory.mktemp("dali_download") / "k400"
    videos = [
        ("--nQbRBEz2s", "mp4", lambda p: make_video(p, seed=1)),
        ("_DNb_6w2cZM", "webm", lambda p: make_video(p, codec="vp9", seed=2)),
        ("-10xhPhBo0k", "mkv", lambda p: make_video(p, codec="mjpeg", seed=3)),
        ("2BwBZ9IQzAk", "mp4", lambda p: make_odd_size_video(p)),
        ("T_-aThrMoNs", "webm", lambda p: make_video(p, codec="vp9", width=48, height=64, seed=4)),
        ("chN87Lwj4RM", "mp4", lambda p: make_video_with_audio(p)),
        ("GuFI_K7gqwY", "mkv", lambda p: make_odd_size_video(p, codec="mjpeg", pix_fmt="yuvj444p")),
    ]
    assert [v[0] for v in videos] == GOOD_IDS
    for yid, ext, maker in videos:
        row = ROWS[yid]
        maker(root / "val" / row["label"] / f"{k400_stem(row)}.{ext}")
    broken = root / "val" / "abseiling" / f"{k400_stem(ROWS['p1VKQa4N-hg'])}.mp4"
    broken.parent.mkdir(parents=True)
    broken.write_text("not a video")
    return root


def build(tree: Path, out: Path, **kw) -> dict:
    build_shards(ShardConfig(src="kinetics400", out=str(out), root=str(tree), split="val", workers=2, **kw))
    return json.loads((out / "manifest.json").read_text())


def shard_paths(out: Path, manifest: dict) -> tuple[list[str], list[str]]:
    tars = [str(out / s["name"]) for s in manifest["splits"]["val"]["shards"]]
    return tars, [t[: -len(".tar")] + ".idx" for t in tars]


def read_epoch(
    tars: list[str], idxs: list[str] | None, exts: list[str], batch_size: int = 3, decode: bool = False
):
    """Run the reader for one epoch; returns (epoch_size, [(member name, [arrays per ext])])."""

    @pipeline_def(batch_size=batch_size, num_threads=1, device_id=None, seed=0)
    def pipe():
        outputs = fn.readers.webdataset(
            paths=tars,
            index_paths=idxs,
            ext=exts,
            missing_component_behavior="error",
            name="reader",
        )
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        info = fn.get_property(outputs[0], key="source_info")
        if decode:
            outputs[0] = fn.decoders.video(outputs[0], device="cpu")
        return (info, *outputs)

    p = pipe()
    p.build()
    epoch = p.epoch_size("reader")
    samples = []
    for _ in range(math.ceil(epoch / batch_size)):
        info, *outs = p.run()
        for i in range(len(info)):
            samples.append((bytes(info.at(i)).decode(), [o.at(i) for o in outs]))
    return epoch, samples[:epoch]


def key_of(source_info: str) -> tuple[str, str]:
    """'path/val-000000.tar:offset:KEY.ext' -> (tar name, KEY)."""
    path, _, rest = source_info.partition(".tar:")
    name = rest.split(":", 1)[1]
    return Path(path + ".tar").name, name.partition(".")[0]


def test_webdataset_reader_reads_every_sample_once(tree, tmp_path):
    out = tmp_path / "shards"
    manifest = build(tree, out, max_count=3)
    split = manifest["splits"]["val"]
    assert split["samples"] == 7 and split["rejected"] == 1
    assert [s["samples"] for s in split["shards"]] == [3, 3, 1]
    tars, idxs = shard_paths(out, manifest)
    epoch, samples = read_epoch(tars, idxs, [VIDEO_EXT, "cls", "json", "i32"])
    assert epoch == split["samples"]
    seen = [key_of(info) for info, _ in samples]
    keys = [k for _, k in seen]
    assert sorted(keys) == sorted(k400_stem(ROWS[y]) for y in GOOD_IDS)  # each sample exactly once
    for (tar, key), (_, (video, cls, meta_bytes, i32)) in zip(seen, samples, strict=True):
        meta = json.loads(bytes(meta_bytes))
        yid = meta["youtube_id"]
        row = ROWS[yid]
        assert key == k400_stem(row)
        source = tree / meta["source"]
        assert Path(meta["source"]).parts[:2] == ("val", row["label"])
        assert bytes(video) == source.read_bytes()  # the video bytes as DALI sees them
        label = CLASSES.index(row["label"])
        assert int(bytes(cls).decode("ascii")) == label == meta["label"]
        assert struct.unpack("<5i", bytes(i32)) == (
            label, meta["num_frames"], round(meta["fps"] * 1000), meta["width"], meta["height"],
        )  # fmt: skip
        assert tar in {Path(t).name for t in tars}


def test_our_index_reads_like_the_index_dali_makes_itself(tree, tmp_path):
    out = tmp_path / "shards"
    manifest = build(tree, out, max_count=2)
    tars, idxs = shard_paths(out, manifest)
    exts = [VIDEO_EXT, "cls", "json"]
    ours = read_epoch(tars, idxs, exts)
    theirs = read_epoch(tars, None, exts)  # DALI indexes the tars on its own
    assert ours[0] == theirs[0] == 7
    flat = [(key_of(info), [bytes(a) for a in arrays]) for info, arrays in ours[1]]
    assert flat == [(key_of(info), [bytes(a) for a in arrays]) for info, arrays in theirs[1]]


@pytest.mark.parametrize("codec", ["vp9", "mjpeg"])
def test_reencoded_shards_decode_on_cpu_to_the_recorded_frames(tree, tmp_path, codec):
    out = tmp_path / "shards"
    spec = ReencodeSpec(short_side=32, gop=8, codec=codec, fps=15 if codec == "vp9" else None)
    manifest = build(tree, out, max_count=4, reencode=spec)
    assert manifest["splits"]["val"]["samples"] == 7
    tars, idxs = shard_paths(out, manifest)
    epoch, samples = read_epoch(tars, idxs, [VIDEO_EXT, "json"], batch_size=2, decode=True)
    assert epoch == 7 and len({key_of(info)[1] for info, _ in samples}) == 7
    for _, (frames, meta_bytes) in samples:
        meta = json.loads(bytes(meta_bytes))
        assert meta["reencoded"] is True and meta["codec"] == codec
        assert tuple(frames.shape) == (meta["num_frames"], meta["height"], meta["width"], 3)
        assert min(meta["height"], meta["width"]) == 32
        if spec.fps is not None:
            assert meta["fps"] == 15.0
