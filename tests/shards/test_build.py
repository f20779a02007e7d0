"""`build_shards` end to end on real (tiny) files: a Kinetics download with good and broken videos →
tars, DALI indexes, manifest, classes and rejects; the shard contract, determinism, rotation, --resume
after interruptions, --overwrite, and --reencode."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import pytest
from conftest import (
    corrupt_middle_packet,
    frames_rgb,
    k400_class_names,
    k400_rows,
    k400_stem,
    make_audio_only,
    make_odd_size_video,
    make_vfr_video,
    make_video,
    make_video_with_audio,
    read_tar,
    sha256_file,
    shard_samples,
    tar_samples,
    tree_digest,
    write_k400_csv,
)

import shards.build as build_mod
import shards.writer as writer_mod
from shards.build import I32_FIELDS, ShardConfig, build_shards
from shards.reencode import ReencodeSpec
from shards.sources import SourceError
from shards.synthetic import SyntheticConfig

CLASSES = k400_class_names()
ALL_VAL = {r["youtube_id"]: r for r in k400_rows()}
WDS2IDX = Path(sys.executable).with_name("wds2idx")
VIDEO_EXTS = {"mp4", "webm", "mkv"}


def key_of(yid: str) -> str:
    return k400_stem(ALL_VAL[yid])


def label_of(yid: str) -> tuple[int, str]:
    name = ALL_VAL[yid]["label"]
    return CLASSES.index(name), name


def truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@dataclass
class Tree:
    root: Path
    # key -> (source path relative to root, expected num_frames, width, height, codec, fps)
    good: dict[str, tuple[str, int, int, int, str, float]] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)  # key -> start of the reject reason (probe full)
    missing: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def val_tree(tmp_path_factory) -> Tree:
    """The CVDF layout with the whole real val CSV (466 rows), files for some of its rows: normal ones of
    every kind, broken ones of every kind, and files that are not rows."""
    root = tmp_path_factory.mktemp("download") / "k400"
    write_k400_csv(root / "annotations" / "val.csv")
    tree = Tree(root)
    val = root / "val"
    repl = root / "replacement" / "replacement_for_corrupted_k400"

    def good(yid, ext, maker, frames=24, width=64, height=48, codec="h264", fps=30.0, folder=val):
        path = folder / f"{key_of(yid)}.{ext}"
        maker(path)
        tree.good[key_of(yid)] = (str(path.relative_to(root)), frames, width, height, codec, fps)

    good("--nQbRBEz2s", "mp4", lambda p: make_video(p, seed=1))
    good("_DNb_6w2cZM", "mp4", lambda p: make_video_with_audio(p))
    good("-10xhPhBo0k", "webm", lambda p: make_video(p, codec="vp9", seed=2), codec="vp9")
    good("YiSAKcZsoik", "mkv", lambda p: make_video(p, codec="mjpeg", seed=3), codec="mjpeg")
    good("2BwBZ9IQzAk", "mp4", lambda p: make_odd_size_video(p), width=67, height=49)
    good("T_-aThrMoNs", "mp4", lambda p: make_video(p, width=48, height=64, seed=4), width=48, height=64)
    good("chN87Lwj4RM", "mkv", lambda p: make_vfr_video(p), frames=30, fps=29 / 1.433)
    good(
        "GuFI_K7gqwY", "mkv", lambda p: make_odd_size_video(p, codec="mjpeg", pix_fmt="yuvj444p"),
        width=67, height=49, codec="mjpeg",
    )  # fmt: skip
    # CVDF's corrupt file with a good copy in replacement/ (which is tried first)
    (val / f"{key_of('QfuO07EqYhI')}.mp4").write_text("corrupt\n")
    good("QfuO07EqYhI", "mp4", lambda p: make_video(p, seed=5), folder=repl)
    # a broken replacement: the good copy in val/ is used instead
    repl.joinpath(f"{key_of('Hm2Rlz_YafU')}.mp4").write_bytes(b"")
    good("Hm2Rlz_YafU", "mp4", lambda p: make_video(p, seed=6))

    # broken inputs
    make_audio_only(val / f"{key_of('I0luMKjIZyg')}.mp4")
    tree.bad[key_of("I0luMKjIZyg")] = "no video stream"
    (val / f"{key_of('sAA809R_u1E')}.mp4").write_bytes(b"")
    tree.bad[key_of("sAA809R_u1E")] = "empty file"
    (val / f"{key_of('_6uq-NBo3Bk')}.mp4").write_text("<html>Video unavailable</html>\n")
    tree.bad[key_of("_6uq-NBo3Bk")] = "not a readable video container"
    truncate(make_video_with_audio(val / f"{key_of('p1VKQa4N-hg')}.mp4"), 0.5)
    tree.bad[key_of("p1VKQa4N-hg")] = "truncated"
    truncate(make_video(val / f"{key_of('nU8SAk0OogA')}.webm", codec="vp9"), 0.5)
    tree.bad[key_of("nU8SAk0OogA")] = "truncated"
    corrupt_middle_packet(make_video(val / f"{key_of('9W09aRkVYC4')}.mkv", codec="mjpeg"))
    tree.bad[key_of("9W09aRkVYC4")] = "corrupt"  # only the full probe sees it
    # both copies broken: one reject naming both
    (val / f"{key_of('GzT5lLWA-kM')}.mp4").write_bytes(b"")
    repl.joinpath(f"{key_of('GzT5lLWA-kM')}.mp4").write_text("not a video")
    tree.bad[key_of("GzT5lLWA-kM")] = ""

    # files that are not this split's rows: never sharded
    part = make_video(val / f"{key_of('9aSI6RpUZRE')}.mp4")
    part.rename(part.with_name(part.name + ".part"))  # an interrupted download
    make_video(root / "train" / f"{key_of('2-OY-ICQecA')}.mp4")  # a val row, but in train/
    make_video(root / "train" / "-4GpJEw9uXs_000006_000016.mp4")  # a train row
    make_video(repl / "zzzzzzzzzzz_000000_000010.mp4")  # a replacement of no row
    make_video(val / "not_a_kinetics_name.mp4")
    tree.missing = set(map(k400_stem, ALL_VAL.values())) - set(tree.good) - set(tree.bad)
    return tree


def config(out: Path, root: Path, split: str = "val", **kw) -> ShardConfig:
    kw.setdefault("workers", 1)
    return ShardConfig(src="kinetics400", out=str(out), root=str(root), split=split, **kw)


def read_rejects(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}-rejects.jsonl").read_text().splitlines()]


def video_member(members: dict[str, bytes]) -> tuple[str, bytes]:
    [(ext, data)] = [(e, d) for e, d in members.items() if e in VIDEO_EXTS]
    return ext, data


# -------------------------------------------------------------------------------------- the contract
@pytest.fixture(scope="module")
def val_out(val_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "shards"
    report = build_shards(config(out, val_tree.root, max_count=4, workers=2))
    return out, report


def test_accepts_the_good_files_with_byte_identical_video(val_tree, val_out):
    out, report = val_out
    samples = shard_samples(out, "val")
    assert set(samples) == set(val_tree.good)
    for key, (rel, frames, width, height, codec, fps) in val_tree.good.items():
        members = samples[key]
        assert sorted(members) == sorted(["cls", "json", "i32", Path(rel).suffix[1:]])
        ext, data = video_member(members)
        source = val_tree.root / rel
        assert data == source.read_bytes()  # the source bytes, untouched
        meta = json.loads(members["json"])
        yid = key[:11]
        label, name = label_of(yid)
        row = ALL_VAL[yid]
        assert members["cls"] == str(label).encode("ascii")
        assert meta["label"] == label and meta["label_name"] == name
        assert meta["youtube_id"] == yid
        assert (meta["time_start"], meta["time_end"]) == (int(row["time_start"]), int(row["time_end"]))
        assert meta["split"] == "val"
        assert meta["source"] == rel
        assert meta["sha256"] == sha256_file(source)
        assert meta["reencoded"] is False
        assert meta["num_frames"] == frames
        assert (meta["width"], meta["height"]) == (width, height)
        assert meta["codec"] == codec
        assert meta["fps"] == pytest.approx(fps, rel=0.01)
        assert meta["duration"] == pytest.approx(frames / fps, abs=0.05)
        fixed = struct.unpack("<5i", members["i32"])
        assert len(members["i32"]) == 4 * len(I32_FIELDS) == 20
        assert fixed == (label, frames, round(meta["fps"] * 1000), width, height)
    assert report.splits["val"].samples == len(val_tree.good)


def test_rejects_every_broken_input_with_its_reason(val_tree, val_out):
    out, report = val_out
    rejects = read_rejects(out, "val")
    assert [r["key"] for r in rejects] == sorted(r["key"] for r in rejects)
    by_key = {r["key"]: r for r in rejects}
    assert set(by_key) == set(val_tree.bad) | val_tree.missing
    for key, start in val_tree.bad.items():
        rej = by_key[key]
        assert rej["reason"].startswith(start), rej
        assert rej["label"] == ALL_VAL[key[:11]]["label"]
        assert rej["path"] is not None and not Path(rej["path"]).is_absolute()
        assert (val_tree.root / rej["path"]).is_file()
    both = by_key[key_of("GzT5lLWA-kM")]["reason"]
    assert "empty file" in both and "not a readable video container" in both
    for key in val_tree.missing:
        assert by_key[key]["reason"].startswith("missing") and by_key[key]["path"] is None
    assert report.splits["val"].rejected == len(rejects)
    assert report.splits["val"].missing == len(val_tree.missing) == 466 - 10 - 7


def test_manifest_classes_and_file_set(val_tree, val_out):
    out, _ = val_out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["dataset"] == "kinetics400"
    assert manifest["classes"] == CLASSES and manifest["num_classes"] == 400
    assert (out / "classes.txt").read_text() == "".join(c + "\n" for c in CLASSES)
    split = manifest["splits"]["val"]
    tars = sorted(out.glob("val-*.tar"))
    assert [t.name for t in tars] == [f"val-{i:06d}.tar" for i in range(len(tars))]
    assert split["shards"] == [
        {"name": t.name, "samples": len(tar_samples(t)), "bytes": t.stat().st_size} for t in tars
    ]
    assert [s["samples"] for s in split["shards"]] == [4, 4, 2]  # --max-count 4
    assert split["samples"] == len(val_tree.good)
    assert split["rejected"] == len(val_tree.bad) + len(val_tree.missing)
    assert split["missing"] == len(val_tree.missing)
    opts = split["options"]
    assert opts["probe"] == "full" and opts["max_count"] == 4 and opts["seed"] == 0
    assert opts["reencode"] is None
    # nothing else: no temp names, no state left behind
    expected_files = {"manifest.json", "classes.txt", "val-rejects.jsonl"}
    expected_files |= {t.name for t in tars} | {t.with_suffix(".idx").name for t in tars}
    assert {str(p.relative_to(out)) for p in out.rglob("*")} == expected_files


def test_idx_files_equal_wds2idx_output(val_out, tmp_path):
    out, _ = val_out
    tars = sorted(out.glob("val-*.tar"))
    for tar in tars:
        ref = tmp_path / f"{tar.stem}.idx"
        subprocess.run([str(WDS2IDX), str(tar), str(ref)], check=True, capture_output=True)
        assert tar.with_suffix(".idx").read_bytes() == ref.read_bytes(), tar.name


def test_tar_layout_keys_order_and_headers(val_out):
    out, _ = val_out
    keys = []
    for tar in sorted(out.glob("val-*.tar")):
        names = [n for n, _ in read_tar(tar)]
        for name in names:
            key, _, ext = name.partition(".")
            assert "." not in ext and ext in VIDEO_EXTS | {"cls", "json", "i32"}
        # members of one sample are adjacent and sorted
        sample_keys = list(dict.fromkeys(n.partition(".")[0] for n in names))
        assert names == [n for k in sample_keys for n in sorted(x for x in names if x.startswith(k + "."))]
        keys += sample_keys
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
    assert keys == sorted(keys)  # val is not shuffled: sorted by key


def test_fast_probe_catches_all_but_bitstream_damage(val_tree, tmp_path):
    out = tmp_path / "fast"
    build_shards(config(out, val_tree.root, probe="fast"))
    samples = shard_samples(out, "val")
    corrupt = key_of("9W09aRkVYC4")
    assert set(samples) == set(val_tree.good) | {corrupt}
    rejected = {r["key"] for r in read_rejects(out, "val")}
    assert rejected == (set(val_tree.bad) - {corrupt}) | val_tree.missing
    for key, (rel, frames, *_rest) in val_tree.good.items():
        assert json.loads(samples[key]["json"])["num_frames"] == frames
        assert video_member(samples[key])[1] == (val_tree.root / rel).read_bytes()
    assert json.loads((out / "manifest.json").read_text())["splits"]["val"]["options"]["probe"] == "fast"


# -------------------------------------------------------------------------------------------- a train split
TRAIN_IDS = ["--nQbRBEz2s", "_DNb_6w2cZM", "-10xhPhBo0k", "YiSAKcZsoik", "2BwBZ9IQzAk", "T_-aThrMoNs",
             "chN87Lwj4RM", "GuFI_K7gqwY", "p1VKQa4N-hg", "nU8SAk0OogA", "9W09aRkVYC4", "BH0UDTwjHOI"]  # fmt: skip


@pytest.fixture(scope="module")
def train_tree(tmp_path_factory) -> Path:
    """Class folders (names verbatim) of a train split: 12 good videos of real ids, two broken ones."""
    root = tmp_path_factory.mktemp("train_download") / "k400"
    for i, yid in enumerate(TRAIN_IDS):
        ext, codec = [("mp4", "h264"), ("webm", "vp9"), ("mkv", "mjpeg")][i % 3]
        make_video(root / "train" / ALL_VAL[yid]["label"] / f"{key_of(yid)}.{ext}", codec=codec, seed=i)
    (root / "train" / "abseiling" / "xxxxxxxxxxx_000000_000010.mp4").write_text("not a video")
    (root / "train" / "zumba").mkdir()
    make_audio_only(root / "train" / "zumba" / "yyyyyyyyyyy_000000_000010.mp4")
    return root


def train_keys(out: Path) -> list[str]:
    return list(shard_samples(out, "train"))


def test_train_split_is_shuffled_with_the_seed(train_tree, tmp_path):
    build_shards(config(tmp_path / "a", train_tree, "train", max_count=5))
    build_shards(config(tmp_path / "b", train_tree, "train", max_count=5, workers=2))
    build_shards(config(tmp_path / "c", train_tree, "train", max_count=5, seed=1))
    a, b, c = (train_keys(tmp_path / x) for x in "abc")
    expected = sorted(key_of(y) for y in TRAIN_IDS)
    assert sorted(a) == sorted(c) == expected
    assert a != expected  # shuffled (1 chance in 12! to be sorted)
    assert a == b  # the order depends on the seed only
    assert a != c
    for key, members in shard_samples(tmp_path / "a", "train").items():
        label, name = label_of(key[:11])
        assert members["cls"] == str(label).encode()
        assert json.loads(members["json"])["label_name"] == name
    assert {r["key"] for r in read_rejects(tmp_path / "a", "train")} == {
        "xxxxxxxxxxx_000000_000010",
        "yyyyyyyyyyy_000000_000010",
    }


@pytest.mark.parametrize("split_tree", ["val", "train"])
def test_reruns_are_byte_identical_whatever_the_worker_count(split_tree, val_tree, train_tree, tmp_path):
    root = val_tree.root if split_tree == "val" else train_tree
    build_shards(config(tmp_path / "w1", root, split_tree, max_count=3, workers=1))
    build_shards(config(tmp_path / "w2", root, split_tree, max_count=3, workers=2))
    build_shards(config(tmp_path / "again", root, split_tree, max_count=3, workers=2))
    ref = tree_digest(tmp_path / "w1")
    assert len([f for f in ref if f.endswith(".tar")]) >= 3
    assert tree_digest(tmp_path / "w2") == ref
    assert tree_digest(tmp_path / "again") == ref


# ---------------------------------------------------------------------------------------------- rotation
def test_max_count_rotates_shards(train_tree, tmp_path):
    build_shards(config(tmp_path / "one", train_tree, "train", max_count=1))
    build_shards(config(tmp_path / "all", train_tree, "train"))
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())["splits"]["train"]["shards"]
    assert [s["samples"] for s in one] == [1] * len(TRAIN_IDS)
    assert train_keys(tmp_path / "one") == train_keys(tmp_path / "all")  # same order, cut differently
    assert len(list((tmp_path / "all").glob("train-*.tar"))) == 1


def test_max_size_rotates_shards(train_tree, tmp_path):
    build_shards(config(tmp_path / "all", train_tree, "train"))
    order = train_keys(tmp_path / "all")
    total = (tmp_path / "all" / "train-000000.tar").stat().st_size
    out = tmp_path / "small"
    build_shards(config(out, train_tree, "train", max_size=total // 4))
    shards = json.loads((out / "manifest.json").read_text())["splits"]["train"]["shards"]
    assert len(shards) >= 4
    assert sum(s["samples"] for s in shards) == len(TRAIN_IDS)
    assert train_keys(out) == order
    # a sample larger than the limit gets a shard alone
    build_shards(config(tmp_path / "tiny", train_tree, "train", max_size=1))
    tiny = json.loads((tmp_path / "tiny" / "manifest.json").read_text())["splits"]["train"]["shards"]
    assert [s["samples"] for s in tiny] == [1] * len(TRAIN_IDS)


def test_max_size_is_an_upper_bound_on_shard_files(train_tree, tmp_path):
    too_big = []
    for max_size in (15_000, 20_000, 25_000, 32_000, 45_000, 60_000):
        out = tmp_path / str(max_size)
        build_shards(config(out, train_tree, "train", max_size=max_size))
        for tar in sorted(out.glob("train-*.tar")):
            if len(tar_samples(tar)) > 1 and tar.stat().st_size > max_size:
                too_big.append((max_size, tar.name, tar.stat().st_size))
    assert too_big == []


# ------------------------------------------------------------------------------------ existing output
def test_existing_output_needs_resume_or_overwrite(train_tree, tmp_path):
    out = tmp_path / "out"
    build_shards(config(out, train_tree, "train", max_count=4))
    before = tree_digest(out)
    with pytest.raises(SourceError, match="already has 'train' shards.*--resume.*--overwrite"):
        build_shards(config(out, train_tree, "train", max_count=4))
    assert tree_digest(out) == before
    # --resume of a finished run: nothing to do, nothing changes
    report = build_shards(config(out, train_tree, "train", max_count=4, resume=True))
    assert report.splits["train"].already_complete
    assert report.splits["train"].samples == len(TRAIN_IDS)
    assert tree_digest(out) == before
    # ... but a finished run with other options is not silently mixed in
    with pytest.raises(SourceError, match="other options"):
        build_shards(config(out, train_tree, "train", max_count=3, resume=True))
    assert tree_digest(out) == before


def test_overwrite_starts_again(train_tree, tmp_path):
    ref = tmp_path / "ref"
    build_shards(config(ref, train_tree, "train", max_count=3))
    out = tmp_path / "out"
    build_shards(config(out, train_tree, "train", max_count=5, seed=7))
    build_shards(config(out, train_tree, "train", max_count=3, overwrite=True))
    assert tree_digest(out) == tree_digest(ref)


def test_overwrite_replaces_an_interrupted_run(train_tree, train_ref, tmp_path, monkeypatch):
    out = tmp_path / "out"
    interrupt_when_shard_opens(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        build_shards(config(out, train_tree, "train", max_count=3, seed=5))
    monkeypatch.undo()
    build_shards(config(out, train_tree, "train", max_count=2, overwrite=True))
    assert tree_digest(out) == train_ref


def test_overwrite_removes_temp_files_of_a_killed_run(train_tree, train_ref, tmp_path):
    """The hidden partial shard of a killed run (up to --max-size bytes) goes with --overwrite too."""
    out = tmp_path / "out"
    build_shards(config(out, train_tree, "train", max_count=5, seed=7))
    (out / ".train-000009.tar.tmp").write_bytes(b"partial shard of a killed run")
    (out / ".train-000009.idx.tmp").write_bytes(b"v1.2 1\n")
    build_shards(config(out, train_tree, "train", max_count=2, overwrite=True))
    assert tree_digest(out) == train_ref


# ------------------------------------------------------------------------------------------------ resume
def visible(out: Path) -> dict[str, str]:
    return {k: v for k, v in tree_digest(out).items() if not any(p.startswith(".") for p in Path(k).parts)}


def hidden(out: Path) -> set[str]:
    return set(tree_digest(out)) - set(visible(out))


@pytest.fixture(scope="module")
def train_ref(train_tree, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("ref") / "shards"
    build_shards(config(out, train_tree, "train", max_count=2))
    digest = tree_digest(out)
    assert len([f for f in digest if f.endswith(".tar")]) == 6
    return digest


def interrupt_when_shard_opens(monkeypatch, n: int):
    """KeyboardInterrupt when the n-th shard (1-based) is about to be opened: n-1 shards are complete."""
    original = writer_mod._OpenShard.__init__
    calls = {"n": 0}

    def init(self, out, name, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        original(self, out, name, *args, **kwargs)

    monkeypatch.setattr(writer_mod._OpenShard, "__init__", init)


def check_interrupted_state(out: Path, ref: dict[str, str], complete: int):
    """Every visible file is a complete shard of the uninterrupted run, byte for byte; partial files
    only have hidden names."""
    vis = visible(out)
    assert set(vis) <= set(ref)
    assert all(vis[name] == ref[name] for name in vis)
    assert "manifest.json" not in vis and "train-rejects.jsonl" not in vis
    assert sorted(n for n in vis if n.endswith(".tar")) == [f"train-{i:06d}.tar" for i in range(complete)]
    for name in hidden(out):
        assert name.startswith(".stts-shard/") or (name.startswith(".") and name.endswith(".tmp")), name


def test_resume_after_keyboard_interrupt(train_tree, train_ref, tmp_path, monkeypatch):
    out = tmp_path / "out"
    interrupt_when_shard_opens(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        build_shards(config(out, train_tree, "train", max_count=2, workers=2))
    monkeypatch.undo()
    check_interrupted_state(out, train_ref, complete=2)
    with pytest.raises(SourceError, match="--resume"):  # not without --resume
        build_shards(config(out, train_tree, "train", max_count=2))
    report = build_shards(config(out, train_tree, "train", max_count=2, resume=True))
    assert report.splits["train"].resumed_shards == 2
    assert report.splits["train"].processed < len(TRAIN_IDS) + 2
    assert tree_digest(out) == train_ref


def test_resume_after_a_kill_inside_a_shard(train_tree, train_ref, tmp_path, monkeypatch):
    """A hard kill runs no cleanup: simulated by a discard() that does nothing and an interrupt while the
    3rd shard holds one sample."""
    out = tmp_path / "out"
    add = writer_mod._OpenShard.add
    calls = {"n": 0}

    def dying_add(self, key, members):
        calls["n"] += 1
        if calls["n"] == 6:  # 2 samples per shard: the 6th is the 3rd shard's second
            raise KeyboardInterrupt
        add(self, key, members)

    monkeypatch.setattr(writer_mod._OpenShard, "add", dying_add)
    monkeypatch.setattr(writer_mod._OpenShard, "discard", lambda self: None)
    with pytest.raises(KeyboardInterrupt):
        build_shards(config(out, train_tree, "train", max_count=2))
    monkeypatch.undo()
    check_interrupted_state(out, train_ref, complete=2)
    assert ".train-000002.tar.tmp" in hidden(out)
    report = build_shards(config(out, train_tree, "train", max_count=2, workers=2, resume=True))
    assert report.splits["train"].resumed_shards == 2
    assert tree_digest(out) == train_ref
    assert not hidden(out)


def test_resume_after_a_kill_before_the_tar_is_renamed(train_tree, train_ref, tmp_path, monkeypatch):
    """The window between the `.idx` and the `.tar` renames of the 3rd shard."""
    out = tmp_path / "out"

    class DyingOs:
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            if Path(dst).name == "train-000002.tar":
                raise KeyboardInterrupt
            os.replace(src, dst)

    monkeypatch.setattr(writer_mod, "os", DyingOs())
    monkeypatch.setattr(writer_mod._OpenShard, "discard", lambda self: None)
    with pytest.raises(KeyboardInterrupt):
        build_shards(config(out, train_tree, "train", max_count=2))
    monkeypatch.undo()
    check_interrupted_state(out, train_ref, complete=2)
    assert ".train-000002.tar.tmp" in hidden(out)
    report = build_shards(config(out, train_tree, "train", max_count=2, resume=True))
    assert report.splits["train"].resumed_shards == 2
    assert tree_digest(out) == train_ref


def test_resume_when_a_shard_finished_but_its_journal_was_not_written(
    train_tree, train_ref, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    original = build_mod.atomic_write_text

    def write(path, text):
        if path.name == "train-000002.tar.json":  # the 3rd shard's journal entry
            raise KeyboardInterrupt
        original(path, text)

    monkeypatch.setattr(build_mod, "atomic_write_text", write)
    with pytest.raises(KeyboardInterrupt):
        build_shards(config(out, train_tree, "train", max_count=2))
    monkeypatch.undo()
    check_interrupted_state(out, train_ref, complete=3)
    report = build_shards(config(out, train_tree, "train", max_count=2, resume=True))
    assert report.splits["train"].resumed_shards == 2  # the unjournaled shard is written again
    assert tree_digest(out) == train_ref


def test_resume_before_any_shard_and_with_other_options(train_tree, train_ref, tmp_path, monkeypatch):
    out = tmp_path / "out"
    interrupt_when_shard_opens(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        build_shards(config(out, train_tree, "train", max_count=2))
    monkeypatch.undo()
    before = tree_digest(out)
    with pytest.raises(SourceError, match="other options.*seed"):
        build_shards(config(out, train_tree, "train", max_count=2, seed=3, resume=True))
    assert tree_digest(out) == before
    build_shards(config(out, train_tree, "train", max_count=2, resume=True))
    assert tree_digest(out) == train_ref


def test_two_splits_share_one_output(val_tree, train_tree, tmp_path):
    out = tmp_path / "out"
    build_shards(config(out, train_tree, "train", max_count=5))
    train_files = {k: v for k, v in tree_digest(out).items() if k.startswith("train-")}
    build_shards(config(out, val_tree.root, "val", max_count=5))
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["splits"]) == ["train", "val"]
    assert manifest["splits"]["train"]["samples"] == len(TRAIN_IDS)
    assert manifest["splits"]["val"]["samples"] == len(val_tree.good)
    assert manifest["splits"]["train"]["layout"] == "class-folders"
    assert manifest["splits"]["val"]["layout"] == "annotations"
    # starting val again leaves train alone
    build_shards(config(out, val_tree.root, "val", max_count=3, overwrite=True))
    assert {k: v for k, v in tree_digest(out).items() if k.startswith("train-")} == train_files
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["samples"] for s in manifest["splits"]["val"]["shards"]] == [3, 3, 3, 1]
    assert manifest["splits"]["train"]["samples"] == len(TRAIN_IDS)


SYNTH = SyntheticConfig(
    num_classes=2, train_per_class=3, val_per_class=2, frames=8, size=32, informative_frames=2, grid=1
)


@pytest.mark.parametrize("stop_at", [2, 5], ids=["in-train", "in-val"])
def test_resume_a_multi_split_run(tmp_path, monkeypatch, stop_at):
    """Synthetic data has train and val in one run: an interrupt in either split, then --resume."""

    def cfg(out, **kw):
        return ShardConfig(src="synthetic", out=str(out), synthetic=SYNTH, max_count=2, workers=1, **kw)

    build_shards(cfg(tmp_path / "ref"))
    ref = tree_digest(tmp_path / "ref")
    out = tmp_path / "out"
    interrupt_when_shard_opens(monkeypatch, stop_at)  # train has 3 shards, val 2
    with pytest.raises(KeyboardInterrupt):
        build_shards(cfg(out))
    monkeypatch.undo()
    report = build_shards(cfg(out, resume=True))
    assert report.splits["train"].already_complete == (stop_at > 3)
    assert tree_digest(out) == ref
    samples = shard_samples(out, "train")
    assert len(samples) == 6 and all("informative_frames" in json.loads(m["json"]) for m in samples.values())


# ------------------------------------------------------------------------------------------------ reencode
@pytest.fixture(scope="module")
def list_tree(tmp_path_factory) -> Path:
    """A list-file layout (`relative/path label_id`) of odd-size, portrait, VFR and audio videos."""
    root = tmp_path_factory.mktemp("list_download") / "k400"
    makers = {
        "2BwBZ9IQzAk": ("mp4", lambda p: make_odd_size_video(p)),
        "T_-aThrMoNs": ("mp4", lambda p: make_video(p, width=48, height=64)),
        "chN87Lwj4RM": ("mkv", lambda p: make_vfr_video(p)),
        "_DNb_6w2cZM": ("mp4", lambda p: make_video_with_audio(p)),
        "GuFI_K7gqwY": ("mkv", lambda p: make_odd_size_video(p, codec="mjpeg", pix_fmt="yuvj444p")),
    }
    lines = []
    for yid, (ext, maker) in makers.items():
        rel = f"clips/{key_of(yid)}.{ext}"
        maker(root / rel)
        lines.append(f"{rel} {label_of(yid)[0]}\n")
    (root / "lists").mkdir()
    (root / "lists" / "k400_val.txt").write_text("".join(lines))
    return root


def decoded_frames(data: bytes, path: Path) -> tuple[int, int, int, str]:
    path.write_bytes(data)
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return len(frames), frames[0].width, frames[0].height, c.streams.video[0].codec_context.name


@pytest.mark.parametrize(
    "spec",
    [
        ReencodeSpec(short_side=32, gop=8, codec="h264"),
        ReencodeSpec(short_side=32, gop=4, codec="vp9", fps=15),
        ReencodeSpec(short_side=None, codec="mjpeg"),
    ],
    ids=["h264", "vp9-15fps", "mjpeg-keep-size"],
)
def test_reencode_output_decodes_with_the_recorded_frame_count(list_tree, tmp_path, spec):
    out = tmp_path / "out"
    lst = list_tree / "lists" / "k400_val.txt"
    report = build_shards(config(out, list_tree, list_file=str(lst), reencode=spec, workers=2))
    samples = shard_samples(out, "val")
    assert len(samples) == 5 and report.splits["val"].rejected == 0
    for key, members in samples.items():
        ext, data = video_member(members)
        assert ext == {"h264": "mp4", "vp9": "webm", "mjpeg": "mkv"}[spec.codec]
        meta = json.loads(members["json"])
        source = list_tree / meta["source"]
        assert meta["reencoded"] is True
        assert meta["sha256"] == sha256_file(source)  # the SOURCE file's hash
        assert data != source.read_bytes()
        n, width, height, codec = decoded_frames(data, tmp_path / f"{key}.{ext}")
        assert n == meta["num_frames"]
        assert (width, height) == (meta["width"], meta["height"])
        assert codec == meta["codec"] == spec.codec
        src = meta["source_video"]  # what the original held
        if spec.short_side is not None:
            assert min(width, height) == spec.short_side
        else:
            assert (width, height) == (src["width"] - src["width"] % 2, src["height"] - src["height"] % 2)
        assert (width > height) == (src["width"] > src["height"])  # orientation kept
        if spec.fps is not None:
            assert meta["fps"] == pytest.approx(spec.fps)
            if key != VFR_KEY:  # (variable frame rate: see test_reencode_keeps_the_duration_of_vfr_video)
                assert n == pytest.approx(src["num_frames"] * spec.fps / src["fps"], abs=1)
        elif key != VFR_KEY:
            assert n == src["num_frames"]
        else:  # constant rate at the measured average: one frame more or less than the source
            assert n == pytest.approx(src["num_frames"], abs=1)
        label, name = label_of(key[:11])
        assert struct.unpack("<5i", members["i32"]) == (
            label, n, round(meta["fps"] * 1000), width, height,
        )  # fmt: skip
        assert members["cls"] == str(label).encode()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["val"]["options"]["reencode"] == spec.to_dict()
    assert manifest["splits"]["val"]["layout"] == "list"


VFR_KEY = key_of("chN87Lwj4RM")


@pytest.mark.parametrize("fps", [None, 15.0])
def test_reencode_keeps_the_duration_of_vfr_video(list_tree, tmp_path, fps):
    """The header says 30 fps, the frames average 20.2: frames picked by index at the header's rate
    would play 1.47x too fast (1.0 s instead of 1.47 s)."""
    out = tmp_path / "out"
    lst = list_tree / "lists" / "k400_val.txt"
    build_shards(config(out, list_tree, list_file=str(lst), reencode=ReencodeSpec(short_side=32, fps=fps)))
    meta = json.loads(shard_samples(out, "val")[VFR_KEY]["json"])
    src = meta["source_video"]
    assert src["fps"] == pytest.approx(29 / 1.433, rel=0.02)  # what the probe measured
    assert meta["duration"] == pytest.approx(src["duration"], abs=1.5 / meta["fps"])
    assert meta["num_frames"] / meta["fps"] == pytest.approx(src["num_frames"] / src["fps"], rel=0.1)


def test_reencode_is_deterministic(list_tree, tmp_path):
    lst = list_tree / "lists" / "k400_val.txt"
    spec = ReencodeSpec(short_side=32, codec="vp9")
    build_shards(config(tmp_path / "a", list_tree, list_file=str(lst), reencode=spec, workers=1))
    build_shards(config(tmp_path / "b", list_tree, list_file=str(lst), reencode=spec, workers=2))
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


def test_reencode_rejects_what_cannot_be_read(val_tree, tmp_path):
    out = tmp_path / "out"
    build_shards(config(out, val_tree.root, reencode=ReencodeSpec(short_side=32), max_count=100))
    samples = shard_samples(out, "val")
    assert set(samples) == set(val_tree.good)
    assert all(json.loads(m["json"])["sha256"] == sha256_file(val_tree.root / val_tree.good[k][0])
               for k, m in samples.items())  # fmt: skip
    assert {r["key"] for r in read_rejects(out, "val")} == set(val_tree.bad) | val_tree.missing


def test_reencode_spec_validation():
    with pytest.raises(ValueError, match="unknown codec"):
        ReencodeSpec(codec="av1")
    with pytest.raises(ValueError, match="too small"):
        ReencodeSpec(short_side=8)
    with pytest.raises(ValueError, match="gop"):
        ReencodeSpec(gop=0)
    with pytest.raises(ValueError, match="fps"):
        ReencodeSpec(fps=0)


# ------------------------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize(
    "kw, match",
    [
        ({"src": "kinetics700"}, "unknown source"),
        ({"probe": "slow"}, "unknown probe mode"),
        ({"max_count": 0}, "--max-count"),
        ({"max_size": 0}, "--max-size"),
        ({"workers": 0}, "--workers"),
        ({"split": "dev"}, "unknown split"),
        ({"split": None}, "needs --split"),
        ({"root": None}, "needs --root"),
    ],
)
def test_bad_config_raises_source_error(val_tree, tmp_path, kw, match):
    args = {"src": "kinetics400", "out": str(tmp_path / "out"), "root": str(val_tree.root), "split": "val"}
    args.update({"workers": 1, **kw})
    with pytest.raises(SourceError, match=match):
        build_shards(ShardConfig(**args))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_out_must_be_a_writable_folder(val_tree, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SourceError, match="is a file"):
        build_shards(config(afile, val_tree.root))
    with pytest.raises(SourceError, match="cannot write"):
        build_shards(config(afile / "sub", val_tree.root))
    assert afile.read_text() == "x"


def test_only_contract_containers_are_stored(tmp_path):
    """A list file may name any container: an .avi is rejected with a reason (DALI's reader, told
    ext=['mp4;webm;mkv', ...], could not read it), and stored as .mp4 with --reencode."""
    root = tmp_path / "k400"
    (root / "clips").mkdir(parents=True)
    with av.open(str(root / "clips" / "a.avi"), "w") as c:
        stream = c.add_stream("mjpeg", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for i, img in enumerate(frames_rgb(24)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in stream.encode(frame):
                c.mux(p)
        for p in stream.encode(None):
            c.mux(p)
    make_video(root / "clips" / "b.mp4")
    (root / "list.txt").write_text("clips/a.avi 3\nclips/b.mp4 4\n")
    out = tmp_path / "out"
    build_shards(config(out, root, list_file=str(root / "list.txt")))
    samples = shard_samples(out, "val")
    assert list(samples) == ["b"]
    assert set(samples["b"]) == {"mp4", "cls", "json", "i32"}
    [reject] = read_rejects(out, "val")
    assert reject["key"] == "a" and reject["path"] == "clips/a.avi"
    assert ".avi" in reject["reason"] and "--reencode" in reject["reason"]
    out = tmp_path / "reencoded"
    build_shards(config(out, root, list_file=str(root / "list.txt"), reencode=ReencodeSpec(short_side=None)))
    samples = shard_samples(out, "val")
    assert sorted(samples) == ["a", "b"]
    assert all(set(m) == {"mp4", "cls", "json", "i32"} for m in samples.values())
    assert json.loads(samples["a"]["json"])["num_frames"] == 24


def test_a_run_where_nothing_is_accepted_is_an_error_with_its_rejects(tmp_path):
    root = tmp_path / "k400"
    write_k400_csv(root / "annotations" / "val.csv", ["--nQbRBEz2s", "_DNb_6w2cZM"])
    (root / "val").mkdir()
    (root / "val" / f"{key_of('--nQbRBEz2s')}.mp4").write_text("text")
    out = tmp_path / "out"
    with pytest.raises(SourceError, match="no 'val' video could be used"):
        build_shards(config(out, root))
    assert [r["reason"].split(":")[0] for r in read_rejects(out, "val")] == [
        "not a readable video container",
        "missing",
    ]
    assert not (out / "manifest.json").exists()
    assert not list(out.glob("val-*.tar")) and not list(out.glob("val-*.idx"))


def test_resume_of_a_finished_run_checks_its_shards(tmp_path):
    synth = SyntheticConfig(
        num_classes=2, train_per_class=2, val_per_class=1, frames=8, size=32, codec="mjpeg"
    )
    cfg = ShardConfig(src="synthetic", out=str(tmp_path / "out"), split="train", synthetic=synth, workers=1)
    build_shards(cfg)
    again = build_shards(replace(cfg, resume=True))
    assert again.splits["train"].already_complete
    (tmp_path / "out" / "train-000000.tar").unlink()
    with pytest.raises(SourceError, match="missing or changed"):
        build_shards(replace(cfg, resume=True))


def test_no_fsync_writes_the_same_bytes_without_flushing(tmp_path, monkeypatch):
    synth = SyntheticConfig(
        num_classes=2, train_per_class=3, val_per_class=1, frames=8, size=32, codec="mjpeg"
    )
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(writer_mod.os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    outs = {}
    for fsync in (True, False):
        calls.clear()
        out = tmp_path / f"out-{fsync}"
        build_shards(ShardConfig(src="synthetic", out=str(out), split="train", synthetic=synth, max_count=2,
                                 workers=1, fsync=fsync))  # fmt: skip
        assert len(calls) == (3 if fsync else 0)  # one per shard: 6 samples, 2 per shard
        outs[fsync] = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    assert outs[True] == outs[False]


def test_fast_probe_in_chunks_keeps_the_order(tmp_path):
    """Fast probes go to the workers 16 at a time: results must still come back in plan order."""
    root = tmp_path / "k400"
    classes = k400_class_names()
    for i in range(40):
        path = root / "train" / classes[i % 5] / f"chunk{i:05d}xx_000000_000010.mp4"
        if i == 17:  # a reject in the second chunk
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("not a video")
        else:
            make_video(path, frames=4, width=32, height=32, seed=i)
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        build_shards(config(out, root, "train", probe="fast", max_count=7, workers=workers))
        digests.append(tree_digest(out))
    assert digests[0] == digests[1]
    assert len(read_rejects(tmp_path / "w2", "train")) == 1
