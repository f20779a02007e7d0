"""Shared test helpers: tests make their own videos (PyAV encodes H.264, VP9 and MJPEG)."""

from __future__ import annotations

import csv
import hashlib
import tarfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from shards.encode import write_video


def frames_rgb(n: int, width: int = 64, height: int = 48, seed: int = 0) -> list[np.ndarray]:
    """A moving gradient with noise: compresses like video, not like static images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for i in range(n):
        r = (xx * 4 + i * 7) % 256
        g = (yy * 4 + i * 3) % 256
        b = ((xx + yy) * 2 + i * 5) % 256
        img = np.stack([r, g, b], -1).astype(np.int16) + rng.integers(-8, 8, (height, width, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def make_video(
    path: str | Path,
    *,
    frames: int = 24,
    width: int = 64,
    height: int = 48,
    codec: str = "h264",
    fps: float = 30,
    seed: int = 0,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames_rgb(frames, width, height, seed), codec=codec, fps=fps)
    return path


def make_video_with_audio(path: str | Path, *, frames: int = 24, width: int = 64, height: int = 48) -> Path:
    """H.264 + AAC in mp4, moov at the front (like files from YouTube)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        aus = c.add_stream("aac", rate=44100)
        samples_per_frame = 44100 // 30
        apts = 0
        for i, img in enumerate(frames_rgb(frames, width, height)):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
            tone = (np.sin(np.arange(samples_per_frame) / 10.0) * 0.1).astype(np.float32)[None]
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            af.sample_rate = 44100
            af.pts = apts
            apts += samples_per_frame
            for p in aus.encode(af):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        for p in aus.encode(None):
            c.mux(p)
    return path


def make_vfr_video(path: str | Path, *, frames: int = 30, width: int = 64, height: int = 48) -> Path:
    """Variable frame rate: frame intervals alternate between 1/30 s and 1/15 s (mkv, millisecond pts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for i, img in enumerate(frames_rgb(frames, width, height)):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = t
            vf.time_base = Fraction(1, 1000)
            t += 33 if i % 2 == 0 else 67
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    return path


def make_audio_only(path: str | Path) -> Path:
    path = Path(path)
    with av.open(str(path), "w") as c:
        aus = c.add_stream("aac", rate=44100)
        for i in range(20):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate = 44100
            af.pts = i * 1024
            for p in aus.encode(af):
                c.mux(p)
        for p in aus.encode(None):
            c.mux(p)
    return path


def corrupt_middle_packet(src: Path, dst: Path | None = None) -> Path:
    """Overwrite the payload of the middle video packet: the container is intact, the bitstream is not."""
    with av.open(str(src)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    pos, size = packets[len(packets) // 2]
    data = bytearray(Path(src).read_bytes())
    data[pos + 8 : pos + size] = b"\x00" * (size - 8)
    dst = Path(dst or src)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture
def video_factory(tmp_path):
    return make_video


# ------------------------------------------------------------------------------------------------------
# Shard tests: Kinetics-400 trees built from real annotation rows (tests/data/kinetics400, copied from the
# project's shared data: public facts, no videos; SOURCES.md there says where each row comes from).
TEST_DATA = Path(__file__).resolve().parent / "data"
K400_DATA = TEST_DATA / "kinetics400"
K400_VAL_CSV = K400_DATA / "k400_val_rows.csv"
K400_TRAIN_CSV = K400_DATA / "k400_train_rows.csv"


def k400_class_names() -> list[str]:
    """The canonical alphabetical 400 names (line number - 1 = class id), from the test data's own copy
    (independent of the package's)."""
    return [
        ln.strip()
        for ln in (TEST_DATA / "kinetics400_classes.txt").read_text("utf-8").splitlines()
        if ln.strip()
    ]


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def k400_rows(ids: list[str] | None = None, source: Path = K400_VAL_CSV) -> list[dict[str, str]]:
    """Rows of a real annotation file (all, or those of `ids` in the order given)."""
    rows = read_csv_rows(source)
    if ids is None:
        return rows
    by_id = {r["youtube_id"]: r for r in rows}
    return [by_id[i] for i in ids]


def write_k400_csv(path: str | Path, ids: list[str] | None = None, source: Path = K400_VAL_CSV) -> Path:
    """An official-format annotation CSV: the header and the rows of `ids` (None: all) copied byte for byte
    from the real file, in its order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = source.read_text("utf-8").splitlines(keepends=True)
    keep = [ln for ln in lines[1:] if ids is None or next(csv.reader([ln]))[1] in ids]
    path.write_text(lines[0] + "".join(keep), "utf-8")
    return path


def k400_stem(row: dict[str, str]) -> str:
    """`{youtube_id}_{start:06d}_{end:06d}`: file stem and sample key of a Kinetics row."""
    return f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"


def make_odd_size_video(
    path: str | Path,
    *,
    frames: int = 24,
    width: int = 67,
    height: int = 49,
    codec: str = "libx264",
    pix_fmt: str = "yuv444p",
) -> Path:
    """A video whose width and height are odd (yuv444p H.264 in mp4, or yuvj444p MJPEG in mkv)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=30)
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        for i, img in enumerate(frames_rgb(frames, width, height, seed=3)):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    return path


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(folder: str | Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below `folder` (hidden ones included)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def read_tar(path: str | Path) -> list[tuple[str, bytes]]:
    """(member name, bytes) in archive order."""
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def tar_samples(path: str | Path) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes}, keys in archive order (WebDataset: the key ends at the first dot)."""
    samples: dict[str, dict[str, bytes]] = {}
    for name, data in read_tar(path):
        key, _, ext = name.partition(".")
        samples.setdefault(key, {})[ext] = data
    return samples


def shard_samples(out: str | Path, split: str) -> dict[str, dict[str, bytes]]:
    """All samples of a split's shards, in shard order."""
    samples: dict[str, dict[str, bytes]] = {}
    for tar in sorted(Path(out).glob(f"{split}-[0-9]*.tar")):
        for key, members in tar_samples(tar).items():
            assert key not in samples, f"{key} is in two shards"
            samples[key] = members
    return samples


def synthetic_shards(
    out: str | Path, *, frames: int, codec: str = "vp9"
) -> tuple[list[str], list[str], dict[str, dict[str, bytes]]]:
    """Tiny synthetic shards (2 classes, 2 train + 2 val videos each, 64x64): tars, their .idx files, and
    per key the members' bytes."""
    import json

    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig

    out = Path(out)
    synthetic = SyntheticConfig(
        num_classes=2, train_per_class=2, val_per_class=2, frames=frames, size=64, codec=codec
    )
    build_shards(ShardConfig(src="synthetic", out=str(out), workers=2, synthetic=synthetic))
    manifest = json.loads((out / "manifest.json").read_text())
    tars = [str(out / s["name"]) for split in manifest["splits"].values() for s in split["shards"]]
    samples: dict[str, dict[str, bytes]] = {}
    for t in tars:
        samples.update(tar_samples(t))
    return tars, [t[: -len(".tar")] + ".idx" for t in tars], samples


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """`stts demo --quick` run once (shards, three trainings, evaluations, table, picture): (folder, output)."""
    from typer.testing import CliRunner

    from cli.main import app

    out = tmp_path_factory.mktemp("quick-demo") / "demo_out"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    return out, result.output
