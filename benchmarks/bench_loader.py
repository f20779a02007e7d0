"""Training loader throughput (clips/s): our `build_loader` beside two peer loaders, on the same shards.

Clip: the MViT recipe's, 16 frames at stride 4, 224x224 (our loader: random resized crop, flip,
normalisation; RandAugment and random erasing off, so that every loader does about the peers' work). Batches of 8, one process per core for every loader.

* ours-pyav / ours-dali-cpu: `pipelines.build_loader` (DALI's CPU decoder only on VP9 shards);
  ours-dali-gpu only with CUDA.
* peer-pyav (pySlowFast-style): a torch ``DataLoader`` with worker processes; each sample reads the
  video bytes from the tar by the ``.idx`` offsets, PyAV seeks to the keyframe before a random clip and
  decodes to its end, then torch transforms (short-side jitter resize 256-320, random 224 crop, flip,
  normalise).
* peer-decord (mmaction-style): the same ``DataLoader`` and transforms, decord's ``VideoReader`` +
  ``get_batch`` instead of PyAV (skipped with a message when decord is not installed: it is not a
  dependency; ``.venv/bin/pip install decord`` for the benchmark).

Shards: ``raw`` (the Kinetics-like corpus of bench_shard.py: H.264 480x360, 30 fps, 10 s, GOP 250, sharded
with ``--probe fast``), ``reenc`` (``--reencode --codec vp9 --short-side 256 --gop 16``) and ``reenc7.5``
(the same with ``--fps 7.5``, MViT 16x4's sampling rate), cached under .cache/bench/. Loaders are interleaved in rounds (the CPU is shared, so ratios within one run are what
count); the first ``--warmup`` batches of every pass (worker start, pipeline build, and the batches a
loader prefetched meanwhile) are excluded.

    .venv/bin/python benchmarks/bench_loader.py [--quick] [--clips 192] [--rounds 2]

For other callers (`benchmarks/gpu_check.py`): ``--shards KIND=DIR,...`` measures given shard folders
instead of making the corpus, ``--loaders`` picks loaders, ``--aug`` our loader's augmentation (``peers``
above; ``full``: the MViT recipe with RandAugment and random erasing; ``decode``: no random
augmentation, the centre crop resized to 224² and normalised), ``--dtype`` the batch's dtype,
``--row-seconds`` caps each row's wall time and ``--json`` rewrites a file after every row (timed windows
in wall-clock time, frames decoded per clip where the loader counts them).
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_shard import CACHE, make_corpus  # noqa: E402
from common import machine, write_result  # noqa: E402

FRAMES, STRIDE, CROP = 16, 4, 224
MEAN, STD = 0.45 * 255, 0.225 * 255


# ------------------------------------------------------------------------------------------ shards


def make_shards(root: Path, kind: str, workers: int) -> Path:
    from shards.build import ShardConfig, build_shards
    from shards.reencode import ReencodeSpec

    out = CACHE / "loader_shards" / f"{root.name}-{kind}"
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    spec = {
        "reenc": ReencodeSpec(short_side=256, gop=16, codec="vp9"),
        # stored at MViT 16x4's sampling rate (ARCHITECTURE: a clip then needs 4x fewer decoded frames)
        "reenc7.5": ReencodeSpec(short_side=256, gop=16, codec="vp9", fps=7.5),
        # the default codec of --reencode (H.264 with unreferenced B-frames)
        "reenc-h264": ReencodeSpec(short_side=256, gop=16, codec="h264"),
        "reenc-h264-7.5": ReencodeSpec(short_side=256, gop=16, codec="h264", fps=7.5),
    }.get(kind)
    cfg = ShardConfig(
        src="kinetics400", root=str(root), split="train", out=str(out), probe="fast", workers=workers,
        reencode=spec, fsync=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    report = build_shards(cfg)
    print(f"sharded {kind}: {report.splits['train'].samples} videos in {time.perf_counter() - t0:.0f} s")
    (out / ".complete").touch()
    return out


def shard_items(shards: Path) -> list[tuple[str, int, int, int, int, float]]:
    """``(tar, offset, size, label, num_frames, fps)`` per sample, from the ``.idx`` files and ``.i32``."""
    from pipelines.pyav_feed import list_samples, parse_i32, read_member

    tars = sorted(str(p) for p in shards.glob("train-*.tar"))
    idxs = [t[: -len(".tar")] + ".idx" for t in tars]
    items = []
    for s in list_samples(tars, idxs):
        label, n, fps, _, _ = parse_i32(read_member(s.tar, *s.members["i32"]))
        ext = s.video.partition(".")[2]
        items.append((s.tar, *s.members[ext], label, n, fps))
    return items


# ------------------------------------------------------------------------------------------- peers


def clip_indices(n: int, fps: float, rng: random.Random) -> list[int]:
    """pySlowFast's training clip: FRAMES frames spread over STRIDE * FRAMES frames of a 30-fps time base,
    rescaled to the video's fps, at a random start."""
    size = STRIDE * FRAMES * fps / 30.0
    start = rng.uniform(0, max(n - size, 0))
    end = start + size - 1
    return [min(max(int(start + (end - start) * i / (FRAMES - 1)), 0), n - 1) for i in range(FRAMES)]


def pyav_clip(data: bytes, indices: list[int], fps: float):
    """pySlowFast-style: seek to the keyframe before the first frame, decode up to the last."""
    import av
    import numpy as np

    wanted = set(indices)
    got = {}
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        c.seek(int(indices[0] / fps / s.time_base), stream=s, backward=True, any_frame=False)
        for frame in c.decode(s):
            i = round(frame.time * fps) if frame.time is not None else -1
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= indices[-1]:
                break
    last = got[max(got)] if got else None
    return np.stack([got.get(i, last) for i in indices])


def decord_clip(data: bytes, indices: list[int], fps: float):
    import decord

    vr = decord.VideoReader(io.BytesIO(data), num_threads=1)
    return vr.get_batch(indices).asnumpy()


def torch_transform(frames, rng: random.Random):
    """uint8 (T, H, W, C) → float (C, T, 224, 224): short-side jitter, random crop, flip, normalise."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # T C H W
    h, w = x.shape[-2:]
    short = rng.randint(256, 320)
    size = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = rng.randint(0, size[0] - CROP), rng.randint(0, size[1] - CROP)
    x = x[:, :, top : top + CROP, left : left + CROP]
    if rng.random() < 0.5:
        x = x.flip(-1)
    x = (x - MEAN) / STD
    return x.permute(1, 0, 2, 3).contiguous()


class PeerDataset:
    """One random training clip per sample, read from the tar by offset (what a peer loader does)."""

    def __init__(self, items, backend: str, seed: int = 0) -> None:
        self.items, self.backend, self.seed = items, backend, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch

        tar, offset, size, label, n, fps = self.items[i]
        rng = random.Random((self.seed, i, time.perf_counter_ns()).__hash__())
        with open(tar, "rb") as f:
            data = os.pread(f.fileno(), size, offset)
        indices = clip_indices(n, fps, rng)
        frames = (pyav_clip if self.backend == "pyav" else decord_clip)(data, indices, fps)
        return torch_transform(frames, rng), torch.tensor(label)


def _worker_init(_):
    import torch

    torch.set_num_threads(1)


def peer_batches(shards: Path, backend: str, batch_size: int, workers: int, epoch: int):
    import torch
    from torch.utils.data import DataLoader

    ds = PeerDataset(shard_items(shards), backend, seed=epoch)
    g = torch.Generator().manual_seed(epoch)
    dl = DataLoader(
        ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
        worker_init_fn=_worker_init, generator=g, prefetch_factor=2,
    )  # fmt: skip
    for video, _ in dl:
        yield video.shape[0]


def aug_spec(aug: str):
    """Our loader's augmentation: ``peers`` (the peers' work: random resized crop, flip, normalise),
    ``full`` (the MViT recipe: + RandAugment and random erasing) or ``decode`` (no random augmentation:
    the centre crop resized to 224², normalised; a square box of the whole frame's area never fits, so the
    crop takes its centre-crop fallback)."""
    from pipelines.augment import MVIT_AUG

    return {
        "peers": replace(MVIT_AUG, randaugment=None, erase_prob=0.0),
        "full": MVIT_AUG,
        "decode": replace(MVIT_AUG, randaugment=None, erase_prob=0.0, flip_prob=0.0, rrc_scale=(1.0, 1.0),
                          rrc_ratio=(1.0, 1.0)),
    }[aug]  # fmt: skip


def ours_batches(
    shards: Path, decoder: str, batch_size: int, workers: int, epoch: int, aug: str = "peers",
    dtype: str = "float32", stats: dict | None = None,
):  # fmt: skip
    """Our loader's batch sizes; ``stats`` (if given) gets the clips yielded and, where the loader counts
    them (``frames_decoded``), the frames decoded for them."""
    import torch

    from pipelines import build_loader
    from pipelines.sampling import MVIT_CLIP

    device = "cuda" if decoder == "dali-gpu" else "cpu"
    kw = {}
    want = getattr(torch, dtype)
    if want != torch.float32 and "dtype" in inspect.signature(build_loader).parameters:
        kw["dtype"] = want
    loader = build_loader(
        shards, "train", (MVIT_CLIP, aug_spec(aug)), batch_size=batch_size, decoder=decoder,
        num_threads=workers, epoch=epoch, device=device, **kw,
    )  # fmt: skip
    seen = 0
    for b in loader:
        assert b.video.shape[1:] == (3, FRAMES, CROP, CROP), b.video.shape
        video = b.video if b.video.dtype == want else b.video.to(want)  # what training would do with it
        if stats is not None:
            stats["clips"] = stats.get("clips", 0) + video.shape[0]
            frames = getattr(loader, "frames_decoded", None)
            if frames is not None:
                stats["frames"] = stats.get("frames", 0) + frames - seen
                seen = frames
        yield video.shape[0]


def measure(
    make_iter, clips: int, warmup: int, per_pass: int, max_seconds: float | None = None,
    windows: list | None = None, sync=None,
) -> tuple[int, float]:  # fmt: skip
    """Clips and seconds for at least ``clips`` clips, ``per_pass`` batches a pass, the first ``warmup``
    of each pass excluded (every pass restarts the iterator: a new pipeline / new workers, as in
    training; their start and shutdown are not timed). ``max_seconds``: no new pass once this much wall
    time (untimed parts included) has gone. ``windows`` gets each pass's timed ``[start, end]`` in
    wall-clock seconds (``time.time()``), for samplers running beside the benchmark. ``sync`` (e.g.
    ``torch.cuda.synchronize``) ends each timed part, so that GPU work queued for its batches counts."""
    done, seconds, epoch = 0, 0.0, 0
    began = time.perf_counter()
    while done < clips and (max_seconds is None or epoch == 0 or time.perf_counter() - began < max_seconds):
        it = make_iter(epoch)
        epoch += 1
        for _ in range(warmup):
            next(it)
        t0, w0 = time.perf_counter(), time.time()
        n = 0
        for _ in range(per_pass - warmup):
            n += next(it)
            if done + n >= clips:
                break
        if sync is not None:
            sync()
        seconds += time.perf_counter() - t0
        if windows is not None:
            windows.append([w0, time.time()])
        done += n
        it.close()
    return done, seconds


# -------------------------------------------------------------------------------------------- rows


def rows_of(totals: dict, extra: dict) -> list[dict]:
    rows = []
    for (name, kind), x in extra.items():
        n, s = totals.get((name, kind), (0, 0.0))
        st = x.get("stats", {})
        per_clip = st["frames"] / st["clips"] if st.get("frames") is not None and st.get("clips") else None
        rows.append({
            "loader": name, "shards": kind, "clips": n, "seconds": s, "clips_per_s": n / s if s else None,
            "wall_s": x.get("wall_s"), "windows": x.get("windows", []), "frames_per_clip": per_clip,
            "error": x.get("error"),
        })  # fmt: skip
    return rows


def write_rows(path: Path, totals: dict, extra: dict, batch_size: int, workers: int, dtype: str) -> None:
    """The rows so far, replacing ``path`` whole (a reader never sees half a file)."""
    payload = {"batch_size": batch_size, "workers": workers, "dtype": dtype, "rows": rows_of(totals, extra)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=192)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clips", type=int, default=320, help="measured clips per loader and shard kind")
    ap.add_argument(
        "--warmup", type=int, default=4,
        help="batches of each pass not timed: at least the deepest prefetch queue (the peers' DataLoader: "
        "2 workers x prefetch 2), so that no loader is timed on batches it made while the others waited",
    )  # fmt: skip
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (clips split across them)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 8 videos of 4 s, 16 clips, no file")
    ap.add_argument("--out", type=Path, default=None, help="result folder (default: benchmarks/results)")
    ap.add_argument(
        "--kinds", default="raw,reenc,reenc7.5,reenc-h264,reenc-h264-7.5", help="shard kinds to measure"
    )
    ap.add_argument("--shards", default=None, help="KIND=DIR,...: measure these shard folders (no corpus)")
    ap.add_argument("--loaders", default=None, help="comma list of loaders (ours-pyav, ours-dali-cpu, "
                    "ours-dali-gpu, peer-pyav, peer-decord; default: all that apply)")  # fmt: skip
    ap.add_argument("--aug", default="peers", help="comma list of our loader's augmentations: peers, full, "
                    "decode (see the module docstring)")  # fmt: skip
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--row-seconds", type=float, default=None, help="wall seconds per row at most")
    ap.add_argument("--json", type=Path, default=None, help="rewrite this file with the rows after each row")
    args = ap.parse_args(argv)
    if args.quick:
        args.videos, args.seconds, args.clips, args.rounds, args.batch_size, args.warmup = 8, 4.0, 8, 1, 4, 1

    import torch

    if args.shards:
        shards = {k: Path(d) for k, _, d in (item.partition("=") for item in args.shards.split(","))}
    else:
        root = make_corpus(args.videos, args.seconds)
        shards = {kind: make_shards(root, kind, args.workers) for kind in args.kinds.split(",")}
    augs = args.aug.split(",")
    try:
        import decord  # noqa: F401

        have_decord = True
    except ImportError:
        have_decord = False
        print("peer-decord skipped: decord is not installed (.venv/bin/pip install decord)")
    cuda = torch.cuda.is_available()
    B, W = args.batch_size, args.workers
    loaders = {}
    for decoder in ("pyav", "dali-cpu") + (("dali-gpu",) if cuda else ()):
        for aug in augs:
            name = f"ours-{decoder}" + ("" if aug == "peers" else f" [{aug}]")
            loaders[name] = lambda s, e, st=None, d=decoder, a=aug: ours_batches(
                s, d, B, W, e, a, args.dtype, st
            )
    if "peers" in augs:
        loaders["peer-pyav (pySlowFast-style)"] = lambda s, e, st=None: peer_batches(s, "pyav", B, W, e)
        if have_decord:
            loaders["peer-decord (mmaction-style)"] = lambda s, e, st=None: peer_batches(s, "decord", B, W, e)
    if args.loaders:  # in the order given (what matters most first, in case the caller's time runs out)
        loaders = {n: f for w in args.loaders.split(",") for n, f in loaders.items() if n.split(" ")[0] == w}

    def applies(name: str, kind: str) -> bool:
        # DALI's CPU decoder reads VP9 and MJPEG only
        return not (name.startswith("ours-dali-cpu") and (kind == "raw" or "h264" in kind))

    totals: dict[tuple[str, str], list[float]] = {}
    extra: dict[tuple[str, str], dict] = {}
    per_round = math.ceil(args.clips / args.rounds)
    for r in range(args.rounds):
        for kind, path in shards.items():
            for name, make in loaders.items():
                if not applies(name, kind):
                    continue
                x = extra.setdefault((name, kind), {"windows": [], "stats": {}, "wall_s": 0.0})
                w0 = time.perf_counter()
                try:
                    per_pass = (len(shard_items(path)) if args.shards else args.videos) // B
                    n, s = measure(
                        lambda e, m=make, p=path, r=r, st=x["stats"]: m(p, 100 * r + e, st), per_round,
                        args.warmup, per_pass, args.row_seconds, x["windows"],
                        torch.cuda.synchronize if cuda else None,
                    )  # fmt: skip
                except Exception as err:  # noqa: BLE001 - with --json, a failing row is recorded, the others run
                    if not args.json:
                        raise
                    x["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                    print(f"round {r} {kind} {name}: {x['error']}", flush=True)
                    write_rows(args.json, totals, extra, B, W, args.dtype)
                    continue
                finally:
                    x["wall_s"] += time.perf_counter() - w0
                print(
                    f"round {r} {kind:5s} {name:30s} {n:4d} clips {s:6.1f} s {n / s:6.2f} clips/s", flush=True
                )
                t = totals.setdefault((name, kind), [0, 0.0])
                t[0] += n
                t[1] += s
                if args.json:
                    write_rows(args.json, totals, extra, B, W, args.dtype)

    rate = {k: n / s for k, (n, s) in totals.items()}
    if args.shards:  # measured for another caller (gpu_check): its file has the rows, no dated result here
        if not args.json:
            print(json.dumps(rows_of(totals, extra)))
        return
    results: dict = {
        "videos": args.videos,
        "seconds_per_video": args.seconds,
        "batch_size": B,
        "workers": W,
        "clip": f"{FRAMES} frames x stride {STRIDE}, {CROP}x{CROP}",
        "rows": [{"loader": k[0], "shards": k[1], "clips": v[0], "seconds": v[1]} for k, v in totals.items()],
        "clips_per_s": {f"{k[0]} | {k[1]}": v for k, v in rate.items()},
    }
    kinds = list(shards)
    names = list(loaders)
    lines = [
        f"{args.videos} videos of {args.seconds:g} s; clip {results['clip']}; batches of {B}; {W} workers "
        f"(DALI threads + PyAV processes for ours, DataLoader workers for the peers); {args.rounds} interleaved "
        "rounds; every pass (epoch) builds its pipeline / starts its workers afresh, not timed (nor its "
        f"first {args.warmup} batches, so that prefetched batches do not count). Loaders take turns on the "
        "same machine: compare within this run only.",
        "",
        "raw: H.264 480x360 30 fps, GOP 250 (x264 ultrafast), `--probe fast`; reenc: `--reencode --codec vp9 "
        "--short-side 256 --gop 16`; reenc7.5: the same with `--fps 7.5` (MViT 16x4's sampling rate). Ours: MViT recipe minus RandAugment and random erasing (random "
        "resized crop, flip, normalise); peers: short-side jitter 256-320, random crop, flip, normalise (torch).",
        "",
        "| loader | " + " | ".join(f"{k} clips/s" for k in kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    for name in names:
        cells = [f"{rate[(name, k)]:.2f}" if (name, k) in rate else "n/a" for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    verdicts = {}
    for k in kinds:
        ours = max((v, n) for (n, kk), v in rate.items() if kk == k and n.startswith("ours"))
        peer = max(((v, n) for (n, kk), v in rate.items() if kk == k and n.startswith("peer")), default=None)
        if peer is None:
            continue
        ratio = ours[0] / peer[0]
        verdicts[k] = ratio
        lines.append(f"- {k}: best ours {ours[1]} {ours[0]:.2f} clips/s vs best peer {peer[1]} "
                     f"{peer[0]:.2f} clips/s: **{ratio:.2f}x**")  # fmt: skip
    results["ours_vs_best_peer"] = verdicts
    if args.quick:  # passes of 2 batches, 1 timed: the peers' prefetched batches dominate
        lines += ["", "(--quick: a smoke run; passes are too short for the ratios to mean anything)"]
    for k in [k for k in verdicts if k.startswith("reenc") and not args.quick]:
        x = verdicts[k]
        verdict = "met" if x >= 2 else f"missed ({x:.2f}x, {(1 - x / 2):.0%} short of 2x)"
        lines += ["", f"Goal: >= 2x the best peer on re-encoded shards on CPU ({k}): {verdict}."]
    md = "\n".join(lines)
    print(md)
    if args.quick:
        print("\n(--quick: no result file written)")
        return
    path = write_result("loader", machine(), results, md, args.out)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
