"""`stts shard` from the command line: bad input is one line on stderr and exit 2 with nothing written;
good runs, existing output, Ctrl-C and a killed process followed by --resume, --overwrite, --reencode and
the synthetic dataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import pytest
from conftest import (
    K400_TRAIN_CSV,
    k400_class_names,
    k400_rows,
    k400_stem,
    make_audio_only,
    make_odd_size_video,
    make_video,
    make_video_with_audio,
    sha256_file,
    shard_samples,
    tree_digest,
    write_k400_csv,
)
from typer.testing import CliRunner

import cli.main as cli_main
import shards.writer as writer_mod
from cli.main import app

STTS = Path(sys.executable).with_name("stts")
CLASSES = k400_class_names()
ROWS = {r["youtube_id"]: r for r in k400_rows()}
GOOD = [
    "--nQbRBEz2s",
    "_DNb_6w2cZM",
    "-10xhPhBo0k",
    "YiSAKcZsoik",
    "2BwBZ9IQzAk",
    "T_-aThrMoNs",
    "GuFI_K7gqwY",
]
BROKEN = {"I0luMKjIZyg": "no video stream", "_6uq-NBo3Bk": "not a readable video container"}


def key(yid: str) -> str:
    return k400_stem(ROWS[yid])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """CVDF layout, the whole real val CSV, 7 good videos (mp4 with and without audio, webm, mkv, odd size,
    portrait) and 2 broken ones."""
    root = tmp_path_factory.mktemp("cli_download") / "k400"
    write_k400_csv(root / "annotations" / "val.csv")
    val = root / "val"
    make_video(val / f"{key('--nQbRBEz2s')}.mp4", seed=1)
    make_video_with_audio(val / f"{key('_DNb_6w2cZM')}.mp4")
    make_video(val / f"{key('-10xhPhBo0k')}.webm", codec="vp9", seed=2)
    make_video(val / f"{key('YiSAKcZsoik')}.mkv", codec="mjpeg", seed=3)
    make_odd_size_video(val / f"{key('2BwBZ9IQzAk')}.mp4")
    make_video(val / f"{key('T_-aThrMoNs')}.mp4", width=48, height=64, seed=4)
    make_odd_size_video(val / f"{key('GuFI_K7gqwY')}.mkv", codec="mjpeg", pix_fmt="yuvj444p")
    make_audio_only(val / f"{key('I0luMKjIZyg')}.mp4")
    (val / f"{key('_6uq-NBo3Bk')}.mp4").write_text("<html>This video is no longer available</html>\n")
    return root


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """The summary table as a wide terminal shows it (CliRunner's default is 80 columns)."""
    monkeypatch.setattr(cli_main.console, "width", 200)


def invoke(*args: str | Path):
    return CliRunner().invoke(app, ["shard", *map(str, args)])


def kinetics_args(root: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["--src", "kinetics400", "--root", root, "--split", "val", "--out", out, "--workers", "1", *extra]


def assert_one_line_error(result, code: int = 2, match: str = "") -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert match in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    return lines[0]


# ---------------------------------------------------------------------------------------------- bad input
def _case(tmp_path: Path, root: Path, case: str) -> tuple[list, str]:
    """Arguments of a bad command line (with --out OUT where OUT is the placeholder 'OUT') and the words
    its error must contain."""
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder\n")
    if case == "missing --root":
        return ["--src", "kinetics400", "--split", "val", "--out", "OUT"], "--root"
    if case == "--root not found":
        return kinetics_args(tmp_path / "nope", "OUT"), "no such directory"
    if case == "unknown --split":
        return ["--src", "kinetics400", "--root", root, "--split", "validation-set", "--out", "OUT"], "split"
    if case == "unknown --src":
        return [
            "--src",
            "kinetics700",
            "--root",
            root,
            "--split",
            "val",
            "--out",
            "OUT",
        ], "--src 'kinetics700'"
    if case == "no rows for the split":
        other = tmp_path / "k400_train_only"
        write_k400_csv(other / "annotations" / "train.csv", source=K400_TRAIN_CSV)
        for row in k400_rows(source=K400_TRAIN_CSV):
            make_video(other / "train" / f"{k400_stem(row)}.mp4", frames=4)
        return kinetics_args(other, "OUT"), "no rows for split 'val'"
    if case == "train folder without videos":
        other = tmp_path / "k400_empty"
        (other / "train").mkdir(parents=True)
        args = kinetics_args(other, "OUT")
        args[args.index("val")] = "train"
        return args, "train"
    if case == "--out under a file":
        return kinetics_args(root, afile / "shards"), "--out"
    if case == "--out is a file":
        return kinetics_args(root, afile), "--out"
    if case == "--annotations not a CSV":
        notes = tmp_path / "notes.txt"
        notes.write_text("these are not annotations\n")
        return kinetics_args(root, "OUT", "--annotations", notes), "not a Kinetics annotation CSV"
    if case == "--annotations not found":
        return kinetics_args(root, "OUT", "--annotations", tmp_path / "nope.csv"), "--annotations"
    if case == "--list not found":
        return kinetics_args(root, "OUT", "--list", tmp_path / "nope.txt"), "--list"
    if case == "--classes not found":
        return kinetics_args(root, "OUT", "--classes", tmp_path / "nope.txt"), "--classes"
    if case == "bad --max-size":
        return kinetics_args(root, "OUT", "--max-size", "1XB"), "size"
    if case == "bad --probe":
        return kinetics_args(root, "OUT", "--probe", "slow"), "probe"
    if case == "bad --workers":
        return kinetics_args(root, "OUT", "--workers", "0"), "--workers"
    if case == "bad --short-side":
        return kinetics_args(root, "OUT", "--reencode", "--short-side", "8"), "short side"
    if case == "synthetic option":
        return kinetics_args(root, "OUT", "--frames", "8"), "synthetic"
    raise AssertionError(case)


BAD_CASES = [
    "missing --root", "--root not found", "unknown --split", "unknown --src", "no rows for the split",
    "train folder without videos", "--out under a file", "--out is a file", "--annotations not a CSV",
    "--annotations not found", "--list not found", "--classes not found", "bad --max-size", "bad --probe",
    "bad --workers", "bad --short-side", "synthetic option",
]  # fmt: skip
OUT_IS_GIVEN = {"--out under a file", "--out is a file"}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_exit_2(tmp_path, root, case):
    args, words = _case(tmp_path, root, case)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("was here before")
    args = [out if a == "OUT" else a for a in args]
    before = tree_digest(tmp_path)
    result = invoke(*args)
    assert_one_line_error(result, 2, words)
    assert tree_digest(tmp_path) == before  # nothing written anywhere, --out included


@pytest.mark.parametrize("case", [c for c in BAD_CASES if c not in OUT_IS_GIVEN])
def test_bad_input_does_not_create_out(tmp_path, root, case):
    args, words = _case(tmp_path, root, case)
    out = tmp_path / "new" / "shards"
    result = invoke(*[out if a == "OUT" else a for a in args])
    assert_one_line_error(result, 2, words)
    assert not out.exists() and not out.parent.exists()


def test_nothing_accepted_is_exit_2_with_the_reasons(tmp_path):
    other = tmp_path / "k400"
    ids = ["I0luMKjIZyg", "_6uq-NBo3Bk", "QfuO07EqYhI"]
    write_k400_csv(other / "annotations" / "val.csv", ids)
    (other / "val").mkdir()
    make_audio_only(other / "val" / f"{key('I0luMKjIZyg')}.mp4")
    (other / "val" / f"{key('_6uq-NBo3Bk')}.mp4").write_text("not a video")
    out = tmp_path / "out"
    line = assert_one_line_error(invoke(*kinetics_args(other, out)), 2, "rejects")
    assert "3 rejected" in line and "1 of them missing" in line
    rejects = [json.loads(x) for x in (out / "val-rejects.jsonl").read_text().splitlines()]
    assert {r["key"]: r["reason"].split(":")[0] for r in rejects} == {
        key("I0luMKjIZyg"): "no video stream",
        key("_6uq-NBo3Bk"): "not a readable video container",
        key("QfuO07EqYhI"): "missing",
    }
    assert not (out / "manifest.json").exists() and not list(out.glob("*.tar"))


def test_help():
    result = CliRunner().invoke(app, ["shard", "--help"])
    assert result.exit_code == 0
    for option in ("--src", "--root", "--split", "--annotations", "--list", "--classes", "--resume", "--overwrite",
                   "--reencode", "--max-count", "--max-size", "--probe", "--workers"):  # fmt: skip
        assert option in result.output


# ---------------------------------------------------------------------------------------------- good runs
def summary_row(output: str, split: str) -> list[str]:
    [line] = [ln for ln in output.splitlines() if ln.strip().startswith(split + " ")]
    return line.split()


def test_shard_kinetics_download(tmp_path, root):
    out = tmp_path / "out"
    result = invoke(*kinetics_args(root, out, "--max-count", "3"))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    missing = len(ROWS) - len(GOOD) - len(BROKEN)
    row = summary_row(result.stdout, "val")
    assert row[1:5] == [str(len(GOOD)), str(len(BROKEN) + missing), str(missing), "3"]
    assert "annotations" in result.stdout  # the layout that was recognised
    for reason in ("missing", "no video stream", "not a readable video container"):
        assert reason in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    split = manifest["splits"]["val"]
    assert [s["samples"] for s in split["shards"]] == [3, 3, 1]
    assert split["samples"] == len(GOOD) and split["missing"] == missing
    assert (out / "classes.txt").read_text().splitlines() == CLASSES
    samples = shard_samples(out, "val")
    assert sorted(samples) == sorted(key(y) for y in GOOD)
    for k, members in samples.items():
        meta = json.loads(members["json"])
        [ext] = [e for e in members if e in ("mp4", "webm", "mkv")]
        assert members[ext] == (root / meta["source"]).read_bytes()
        assert members["cls"] == str(CLASSES.index(ROWS[k[:11]]["label"])).encode()
    rejects = {
        json.loads(x)["key"]: json.loads(x) for x in (out / "val-rejects.jsonl").read_text().splitlines()
    }
    for yid, reason in BROKEN.items():
        assert rejects[key(yid)]["reason"].startswith(reason)


def test_existing_output_then_overwrite(tmp_path, root):
    out = tmp_path / "out"
    assert invoke(*kinetics_args(root, out, "--max-count", "3")).exit_code == 0
    first = tree_digest(out)
    line = assert_one_line_error(invoke(*kinetics_args(root, out, "--max-count", "3")), 2, "--resume")
    assert "--overwrite" in line
    assert tree_digest(out) == first
    result = invoke(*kinetics_args(root, out, "--max-count", "2", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("val-*.tar"))) == 4
    result = invoke(*kinetics_args(root, out, "--max-count", "3", "--overwrite", "--workers", "2"))
    assert result.exit_code == 0, result.output
    assert tree_digest(out) == first


def test_annotations_classes_and_fast_probe_options(tmp_path, root):
    csv_path = write_k400_csv(tmp_path / "meta" / "subset.csv", GOOD[:4])
    classes = tmp_path / "meta" / "classes.txt"
    classes.write_text("answering questions\narm wrestling\nair drumming\n")
    out = tmp_path / "out"
    result = invoke(
        *kinetics_args(root, out, "--annotations", csv_path, "--classes", classes, "--probe", "fast")
    )
    assert result.exit_code == 0, result.output
    assert (out / "classes.txt").read_text() == classes.read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["answering questions", "arm wrestling", "air drumming"]
    assert manifest["splits"]["val"]["options"]["probe"] == "fast"
    got = {k: int(m["cls"]) for k, m in shard_samples(out, "val").items()}
    assert got == {key("YiSAKcZsoik"): 0, key("-10xhPhBo0k"): 1, key("--nQbRBEz2s"): 2, key("_DNb_6w2cZM"): 2}


def test_reencode_from_the_command_line(tmp_path, root):
    out = tmp_path / "out"
    args = kinetics_args(
        root, out, "--reencode", "--short-side", "32", "--gop", "4", "--codec", "vp9", "--fps", "15"
    )
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["val"]["options"]["reencode"] == {
        "short_side": 32, "gop": 4, "codec": "vp9", "fps": 15.0, "crf": None,
    }  # fmt: skip
    samples = shard_samples(out, "val")
    assert len(samples) == len(GOOD)
    for k, members in samples.items():
        assert set(members) == {"webm", "cls", "json", "i32"}
        meta = json.loads(members["json"])
        assert meta["reencoded"] is True and meta["codec"] == "vp9" and meta["fps"] == 15.0
        path = tmp_path / f"{k}.webm"
        path.write_bytes(members["webm"])
        with av.open(str(path)) as c:
            frames = list(c.decode(video=0))
        assert len(frames) == meta["num_frames"] == 12  # 24 frames at 30 fps -> 12 at 15 fps
        assert min(frames[0].width, frames[0].height) == 32
        assert meta["sha256"] == sha256_file(root / meta["source"])  # the source's, not the shard's


# ------------------------------------------------------------------------------------ interrupt and resume
def reference(tmp_path: Path, root: Path) -> dict[str, str]:
    ref = tmp_path / "ref"
    assert invoke(*kinetics_args(root, ref, "--max-count", "2")).exit_code == 0
    digest = tree_digest(ref)
    assert len([f for f in digest if f.endswith(".tar")]) == 4
    return digest


def check_partial(out: Path, ref: dict[str, str], complete: int) -> None:
    """After an interruption: visible files are complete shards of the full run, byte for byte; anything
    partial has a hidden name."""
    digest = tree_digest(out)
    vis = {k: v for k, v in digest.items() if not k.startswith(".")}
    assert vis == {k: ref[k] for k in vis}
    assert sorted(k for k in vis if k.endswith(".tar")) == [f"val-{i:06d}.tar" for i in range(complete)]
    assert "manifest.json" not in vis
    for name in set(digest) - set(vis):
        assert name.startswith(".stts-shard/") or name.endswith(".tmp"), name


def test_ctrl_c_then_resume(tmp_path, root, monkeypatch):
    ref = reference(tmp_path, root)
    out = tmp_path / "out"
    original = writer_mod._OpenShard.__init__
    calls = {"n": 0}

    def init(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(self, *args)

    monkeypatch.setattr(writer_mod._OpenShard, "__init__", init)
    result = invoke(*kinetics_args(root, out, "--max-count", "2"))
    monkeypatch.setattr(writer_mod._OpenShard, "__init__", original)
    assert result.exit_code == 130
    assert "interrupted" in result.stderr and "--resume" in result.stderr
    assert "Traceback" not in result.output
    check_partial(out, ref, complete=2)
    assert_one_line_error(invoke(*kinetics_args(root, out, "--max-count", "2")), 2, "--resume")
    result = invoke(*kinetics_args(root, out, "--max-count", "2", "--resume", "--workers", "2"))
    assert result.exit_code == 0, result.output
    assert "resumed after 2 shards" in result.stdout
    assert tree_digest(out) == ref


KILLER = r"""
import os, signal, sys
import shards.writer as w
calls = {"n": 0}
add = w._OpenShard.add
def dying_add(self, key, members):
    calls["n"] += 1
    if calls["n"] == int(os.environ["STTS_TEST_KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    add(self, key, members)
w._OpenShard.add = dying_add
from cli.main import app
app(args=sys.argv[1:], prog_name="stts")
"""


@pytest.mark.parametrize("kill_at", [3, 6])
def test_killed_process_then_resume(tmp_path, root, kill_at):
    ref = reference(tmp_path, root)
    out = tmp_path / "out"
    args = [str(a) for a in kinetics_args(root, out, "--max-count", "2")]
    env = {**os.environ, "STTS_TEST_KILL_AT": str(kill_at)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, "shard", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    complete = (kill_at - 1) // 2
    check_partial(out, ref, complete=complete)
    assert any(name.endswith(".tar.tmp") for name in tree_digest(out))  # the shard being written
    result = invoke(*kinetics_args(root, out, "--max-count", "2", "--resume"))
    assert result.exit_code == 0, result.output
    assert tree_digest(out) == ref


# --------------------------------------------------------------------------------------------- synthetic
def test_synthetic_dataset_through_the_stts_entry_point(tmp_path):
    out = tmp_path / "syn"
    args = ["shard", "--src", "synthetic", "--out", str(out), "--videos-per-class", "2",
            "--val-videos-per-class", "1", "--num-classes", "2", "--frames", "16", "--size", "64"]  # fmt: skip
    proc = subprocess.run([str(STTS), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == "synthetic" and manifest["num_classes"] == 2
    assert {s: manifest["splits"][s]["samples"] for s in manifest["splits"]} == {"train": 4, "val": 2}
    assert len((out / "classes.txt").read_text().splitlines()) == 2
    for split, n in (("train", 4), ("val", 2)):
        samples = shard_samples(out, split)
        assert len(samples) == n
        for k, members in samples.items():
            assert "." not in k
            assert set(members) == {"webm", "cls", "json", "i32"}
            meta = json.loads(members["json"])
            assert {"informative_frames", "region"} <= set(meta)
            start, end = meta["informative_frames"]
            assert 0 <= start < end <= 16
            x0, y0, x1, y1 = meta["region"]
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            assert int(members["cls"]) == meta["label"]
            assert meta["num_frames"] == 16 and (meta["width"], meta["height"]) == (64, 64)
            assert meta["split"] == split
    # same command again, with --resume: already complete, nothing changes
    before = tree_digest(out)
    proc = subprocess.run(
        [str(STTS), *args, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "already complete" in proc.stdout
    assert tree_digest(out) == before


def test_synthetic_colour_cue_options(tmp_path):
    out = tmp_path / "syn"
    args = ["shard", "--src", "synthetic", "--out", str(out), "--videos-per-class", "1", "--val-videos-per-class",
            "1", "--num-classes", "2", "--frames", "16", "--size", "64", "--cue", "color", "--informative-frames",
            "6", "--grid", "1", "--object-size", "0.3"]  # fmt: skip
    proc = subprocess.run([str(STTS), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "classes.txt").read_text().splitlines() == ["red object", "cyan object"]
    options = json.loads((out / "manifest.json").read_text())["splits"]["val"]["options"]["synthetic"]
    assert (options["cue"], options["grid"], options["informative_frames"], options["object_size"]) == (
        "color",
        1,
        6,
        0.3,
    )
    for members in shard_samples(out, "val").values():
        meta = json.loads(members["json"])
        start, end = meta["informative_frames"]
        assert end - start == 6 and meta["region"] == [0, 0, 64, 64] and meta["cue"] == "color"
    bad = subprocess.run(
        [str(STTS), *args[:4], str(tmp_path / "bad"), "--cue", "sound"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 2 and "--cue 'sound': choose one of" in bad.stderr and "Traceback" not in bad.stderr
    )
