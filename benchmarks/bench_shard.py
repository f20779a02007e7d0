"""Sharding throughput: `stts shard` with 1 and 2 workers beside copying the same bytes into a tar.

The copy is the I/O limit (read every file, write it into one tar). Goal: plain sharding with
`--probe fast` at >= 50 % of the copy speed. Also reports the full-decode probe's cost per video and the
re-encode cost. Videos are made once (Kinetics-like: 480x360, 30 fps, ~1 MB per 10 s, H.264 + AAC, class folders) and
cached under .cache/bench/.

    python benchmarks/bench_shard.py [--videos 96] [--seconds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, write_result  # noqa: E402

from shards.build import ShardConfig, build_shards  # noqa: E402
from shards.classes import kinetics400_classes  # noqa: E402
from shards.reencode import ReencodeSpec, reencode  # noqa: E402

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench"


LEGACY_SIZE = (480, 360)


def make_corpus(n: int, seconds: float, size: tuple[int, int] = LEGACY_SIZE, workers: int = 1) -> Path:
    """``n`` Kinetics-like videos of ``seconds`` (H.264 + AAC, 30 fps, x264's default GOP of 250, class
    folders) of ``size`` (width, height), cached under .cache/bench/. The 480x360 corpus is drawn from one
    random stream, video after video (as the cached corpora and past results were made), so it is made
    in one process; other sizes draw each video from its own stream and are made by ``workers``
    processes."""
    root = CACHE / (
        f"kinetics_like_{n}x{seconds:g}s" + ("" if size == LEGACY_SIZE else f"_{size[0]}x{size[1]}")
    )
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    classes = kinetics400_classes()
    paths = []
    for i in range(n):
        label = classes[i % 20]
        paths.append(root / "train" / label / f"bench{i:06d}x_{i:06d}_{i + 10:06d}.mp4")
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
    if size == LEGACY_SIZE:
        import numpy as np

        rng = np.random.default_rng(0)
        for path in paths:
            _write_video(path, seconds, size, rng)
    else:
        import concurrent.futures as cf

        with cf.ProcessPoolExecutor(max(1, min(workers, n))) as pool:
            list(pool.map(_write_video, paths, [seconds] * n, [size] * n, [(0, i) for i in range(n)]))
    done.touch()
    return root


def _write_video(path: Path, seconds: float, size: tuple[int, int], rng) -> None:
    """One video; ``rng`` a numpy Generator, or a seed for a new one."""
    import av
    import numpy as np

    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    frames = int(seconds * 30)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as c:
        vs = c.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "21"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = c.add_stream("aac", rate=44100)
        apts = 0
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack(
            [
                128 + 100 * np.sin(xx / 17 + phase[0]),
                128 + 100 * np.sin(yy / 13 + phase[1]),
                128 + 100 * np.sin((xx + yy) / 23 + phase[2]),
            ],
            -1,
        )
        noise = rng.normal(0, 3, (8, h, w, 3))
        for t in range(frames):
            # a drifting pattern plus grain: about the bitrate of a Kinetics clip (~1 Mbit/s)
            img = np.roll(base, (t // 2, t), axis=(0, 1)) + noise[t % 8]
            vf = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            vf.pts = t
            for p in vs.encode(vf):
                c.mux(p)
            af = av.AudioFrame.from_ndarray(
                rng.normal(0, 0.05, (1, 1470)).astype(np.float32), format="fltp", layout="mono"
            )
            af.sample_rate, af.pts = 44100, apts
            apts += 1470
            for p in aus.encode(af):
                c.mux(p)
        for s in (vs, aus):
            for p in s.encode(None):
                c.mux(p)


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.mp4"))


def copy_into_tar(files: list[Path], out: Path, fsync: bool = False) -> float:
    """The I/O limit: read every file and write it into a tar (the same work minus probing). With
    `fsync`, the tar is also flushed to disk at the end, as `stts shard` does for every shard before
    renaming it (a shard that looks complete must survive a power cut)."""
    t0 = time.perf_counter()
    with open(out, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for p in files:
                data = p.read_bytes()
                info = tarfile.TarInfo(p.name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return time.perf_counter() - t0


def run_shard(root: Path, out: Path, **kw) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cfg = ShardConfig(src="kinetics400", root=str(root), split="train", out=str(out), **kw)
    t0 = time.perf_counter()
    report = build_shards(cfg)
    dt = time.perf_counter() - t0
    assert report.splits["train"].rejected == 0, report.splits["train"].reasons
    return dt


def clip_access_ms(paths: list[Path], clips_per_video: int = 6, length: int = 16, seed: int = 0) -> float:
    """Mean time to decode one random 16-frame clip with PyAV (seek to the keyframe before the start,
    decode up to the clip's end), the way pySlowFast-style loaders read videos."""
    import random

    import av

    rng = random.Random(seed)
    t0 = time.perf_counter()
    clips = 0
    for path in paths:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            n, tb, fps = s.frames, s.time_base, float(s.average_rate)
            for _ in range(clips_per_video):
                start = rng.randrange(0, n - length)
                c.seek(int(start / fps / tb), stream=s, backward=True)
                got = 0
                for frame in c.decode(s):
                    if frame.time is not None and frame.time * fps + 0.5 >= start:
                        got += 1
                        if got == length:
                            break
                clips += 1
    return (time.perf_counter() - t0) / clips * 1000


def gop_of(path: Path) -> int:
    """The longest distance between two keyframes, in frames (the whole video if it has one)."""
    import av

    with av.open(str(path)) as c:
        flags = [p.is_keyframe for p in c.demux(video=0) if p.size]
    keys = [i for i, k in enumerate(flags) if k] + [len(flags)]
    return max(b - a for a, b in zip(keys, keys[1:], strict=False))


def best(fn, repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="result folder (default: benchmarks/results)")
    args = ap.parse_args(argv)

    root = make_corpus(args.videos, args.seconds)
    files = files_of(root)
    total = sum(p.stat().st_size for p in files)
    for p in files:  # warm the page cache so that every variant reads from memory
        hashlib.sha256(p.read_bytes())
    rows = []
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tmp = Path(tmp)
        copy_s = best(lambda: copy_into_tar(files, tmp / "copy.tar"), args.repeats)
        rows.append(("copy into a tar (I/O limit)", 1, copy_s))
        copy_sync_s = best(lambda: copy_into_tar(files, tmp / "copy.tar", fsync=True), args.repeats)
        rows.append(("copy into a tar + fsync (durable I/O limit)", 1, copy_sync_s))
        for probe in ("fast", "full"):
            for workers in (1, 2):
                s = best(
                    lambda p=probe, w=workers: run_shard(root, tmp / "out", probe=p, workers=w), args.repeats
                )
                rows.append((f"stts shard --probe {probe}", workers, s))
        for workers in (1, 2):
            s = best(
                lambda w=workers: run_shard(root, tmp / "out", probe="fast", workers=w, fsync=False),
                args.repeats,
            )
            rows.append(("stts shard --probe fast --no-fsync", workers, s))
        spec = ReencodeSpec(short_side=160, gop=16, codec="h264")
        s = run_shard(root, tmp / "out", probe="fast", workers=2, reencode=spec)
        rows.append(("stts shard --probe fast --reencode (h264, short side 160)", 2, s))

        # random clip access: the source, and re-encodes that differ only in their GOP
        sample = files[:12]
        access = {"source": {"gop": gop_of(sample[0]), "ms_per_clip": clip_access_ms(sample)}}
        for gop in (250, 16):
            made = []
            for p in sample:
                dst = tmp / f"{p.stem}.gop{gop}.mp4"
                reencode(p, dst, ReencodeSpec(short_side=None, gop=gop, codec="h264"))
                made.append(dst)
            access[f"gop{gop}"] = {"gop": gop_of(made[0]), "ms_per_clip": clip_access_ms(made)}

    n = len(files)
    results = {
        "videos": n,
        "bytes": total,
        "mean_video_bytes": total / n,
        "video": f"480x360 H.264 + AAC, 30 fps, {args.seconds:g} s",
        "rows": [
            {"variant": name, "workers": w, "seconds": s, "videos_per_s": n / s, "mb_per_s": total / s / 1e6}
            for name, w, s in rows
        ],
    }
    copy_mbps = total / copy_s / 1e6
    sync_mbps = total / copy_sync_s / 1e6
    fast2 = next(r for r in results["rows"] if r["variant"].endswith("fast") and r["workers"] == 2)
    nosync2 = next(r for r in results["rows"] if r["variant"].endswith("--no-fsync") and r["workers"] == 2)
    full1 = next(r for r in results["rows"] if r["variant"].endswith("full") and r["workers"] == 1)
    fast1 = next(r for r in results["rows"] if r["variant"].endswith("fast") and r["workers"] == 1)
    results["fast_vs_copy"] = fast2["mb_per_s"] / copy_mbps
    results["fast_vs_durable_copy"] = fast2["mb_per_s"] / sync_mbps
    results["fast_no_fsync_vs_copy"] = nosync2["mb_per_s"] / copy_mbps
    results["full_probe_ms_per_video"] = (full1["seconds"] - fast1["seconds"]) / n * 1000
    results["clip_access"] = access
    speedup = access["gop250"]["ms_per_clip"] / access["gop16"]["ms_per_clip"]
    results["gop16_vs_gop250_clip_speedup"] = speedup

    lines = [
        f"{n} videos, {total / 1e6:.1f} MB ({total / n / 1e3:.0f} KB each; {results['video']}), "
        f"best of {args.repeats}, page cache warm.",
        "",
        "| variant | workers | videos/s | MB/s | vs copy | vs copy + fsync |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['variant']} | {r['workers']} | {r['videos_per_s']:.1f} | {r['mb_per_s']:.1f} | "
            f"{r['mb_per_s'] / copy_mbps:.0%} | {r['mb_per_s'] / sync_mbps:.0%} |"
        )

    def verdict(x: float) -> str:
        return "met" if x >= 0.5 else f"missed by {(0.5 - x) * 100:.0f} points"

    nosync = results["fast_no_fsync_vs_copy"]
    lines += [
        "",
        "Goal: `--probe fast` sharding >= 50 % of the copy speed (2 workers). "
        f"With `--no-fsync`: {nosync:.0%} of the copy ({verdict(nosync)}). "
        f"Default (each shard fsynced before its rename): {results['fast_vs_copy']:.0%} of the copy "
        f"({verdict(results['fast_vs_copy'])}) and {results['fast_vs_durable_copy']:.0%} of the copy + fsync. "
        "The page cache holds the whole corpus here, so the plain copy never waits for the disk; the "
        "default's extra cost is the flush to disk, nothing else.",
        f"Full-decode probe: {results['full_probe_ms_per_video']:.1f} ms per video more than fast "
        f"(1 worker; {results['video']}).",
        "",
        "Random 16-frame clip access with PyAV (seek to the keyframe before the clip, decode to its end; "
        "6 clips in each of 12 videos; same frame size):",
        "",
        "| file | longest GOP (frames) | ms per clip |",
        "|---|---:|---:|",
        f"| source (x264 ultrafast, default keyint) | {access['source']['gop']} | "
        f"{access['source']['ms_per_clip']:.1f} |",
    ]
    for gop in (250, 16):
        a = access[f"gop{gop}"]
        lines.append(
            f"| `--reencode --gop {gop} --short-side 360` (h264) | {a['gop']} | {a['ms_per_clip']:.1f} |"
        )
    lines += [
        "",
        f"With the same encoder settings, GOP 16 makes random clip access {speedup:.1f}x cheaper than GOP 250.",
    ]
    md = "\n".join(lines)
    path = write_result("shard", machine(), results, md, args.out)
    print(md)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
