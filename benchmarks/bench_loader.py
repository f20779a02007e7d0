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
(the same with ``--fps 7.5``, MViT 16x4's sampling rate), ``reenc-h264`` / ``reenc-h264-7.5`` (the same in
H.264, ``--reencode``'s default codec), cached under .cache/bench/. Loaders are interleaved in rounds (the
CPU is shared, so ratios within one run are what count); the first ``--warmup`` batches of every pass
(worker start, pipeline build, and the batches a loader prefetched meanwhile) are excluded.

Also measured, in the same rounds:

* ``decode-only <decoder>``: our clip source and decoder alone (`pipelines.clip_source.clip_pipeline`, the
  same clips, no augmentation), with the loader's decode settings;
* frames decoded per clip (`VideoLoader.frames_per_clip`) beside the ideal, ``GOP - 1 + span`` (a clip
  whose first frame follows a keyframe by ``GOP - 1`` frames), ``span`` the clip's last - first + 1;
* evaluation (MViT's 10 views per video) per clip on 10-s and on 2-s videos (VP9, GOP 16,
  ``--eval-videos`` each): a decoder that does not seek pays for a clip's position in the video.

With CUDA the same tables get ``dali-gpu`` rows (its per-device decode settings, batches on the GPU); no
flag is needed. Goals are checked against the previous result of this machine (``--baseline``).

    .venv/bin/python benchmarks/bench_loader.py [--quick] [--clips 192] [--rounds 2]

For other callers (`benchmarks/gpu_check.py`): ``--shards KIND=DIR,...`` measures given shard folders
instead of making the corpus; ``--only`` picks loaders, measured in the order given (what matters most
first, in case the caller's time runs out); ``--aug`` our loader's augmentations (``peers`` above, the
peers' work; ``full``: the MViT recipe with RandAugment and random erasing, rows named ``ours-X [full]``;
the peers run only with ``peers``); ``--dtype`` the batches' dtype (`build_loader`'s ``dtype``);
``--row-seconds`` starts no new pass of a row after that much wall time; ``--json FILE`` rewrites FILE with
the rows after every row (a failing row recorded with its error, the others still run; each row's timed
windows in wall-clock time, for a sampler running beside it); ``--eval-videos 0`` leaves the evaluation out.
With CUDA every timed part ends with a device synchronisation, so GPU work queued for its batches counts.
"""

from __future__ import annotations

import argparse
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
GOP = {"raw": 250}  # the keyframe interval of each kind of shard; re-encoded ones: 16


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
    from shards.format import list_samples, parse_i32, read_member, read_split

    items = []
    for s in list_samples(read_split(shards, "train").tars):
        label, n, fps, _, _ = parse_i32(read_member(s.tar, *s.members["i32"]))
        items.append((s.tar, *s.members[s.video_ext], label, n, fps))
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


AUGS = ("peers", "full")


def _recipe(aug: str = "peers"):
    """The MViT clip with our loader's augmentation: ``peers`` (the peers' work: random resized crop, flip,
    normalise) or ``full`` (the recipe's, + RandAugment and random erasing)."""
    from pipelines.augment import MVIT_AUG
    from pipelines.sampling import MVIT_CLIP

    if aug not in AUGS:
        raise ValueError(f"unknown augmentation {aug!r}; choose from {', '.join(AUGS)}")
    return MVIT_CLIP, MVIT_AUG if aug == "full" else replace(MVIT_AUG, randaugment=None, erase_prob=0.0)


def _threads(decoder: str, workers: int) -> dict:
    """CPU decoders run with the benchmark's workers; dali-gpu with its per-device defaults."""
    return {} if decoder == "dali-gpu" else {"num_threads": workers}


def ours_batches(
    shards: Path, decoder: str, batch_size: int, workers: int, epoch: int, stats: dict, aug: str = "peers",
    dtype: str = "float32",
):  # fmt: skip
    """Our loader's batches (clips per batch); its frames decoded per clip are added to ``stats``."""
    import torch

    from pipelines import build_loader

    device = "cuda" if decoder == "dali-gpu" else "cpu"
    loader = build_loader(
        shards, "train", _recipe(aug), batch_size=batch_size, decoder=decoder, epoch=epoch, device=device,
        dtype=getattr(torch, dtype), **_threads(decoder, workers),
    )  # fmt: skip
    try:
        for b in loader:
            assert b.video.shape[1:] == (3, FRAMES, CROP, CROP), b.video.shape
            yield b.video.shape[0]
    finally:
        stats["frames"] = stats.get("frames", 0) + loader.decoded_frames
        stats["clips"] = stats.get("clips", 0) + loader.decoded_clips
        stats["settings"] = loader.settings


def decode_only(
    shards: Path, decoder: str, batch_size: int, workers: int, epoch: int, stats: dict | None = None
):
    """The clip source and decoder alone (no augmentation): the same clips and decode settings as ours."""
    import torch

    from pipelines.clip_source import TrainClipIndices, clip_pipeline
    from pipelines.decoders import decode_settings
    from shards.format import read_split

    gpu = decoder == "dali-gpu"
    # DALI refuses to fork its source's workers once CUDA is up in this process (an earlier dali-gpu row)
    start = "spawn" if gpu or torch.cuda.is_initialized() else "fork"
    engines = None
    if gpu:
        from pipelines.nvdec import gpu_capabilities

        engines = gpu_capabilities().engines
    settings = decode_settings(decoder, batch_size, engines=engines, **_threads(decoder, workers))
    if stats is not None:
        stats["settings"] = settings
    cp = clip_pipeline(
        read_split(shards, "train").tars, batch_size=settings.decode_batch, decoder=decoder,
        frame_indices=TrainClipIndices(_recipe()[0], 0, epoch), random_shuffle=True, seed=epoch,
        num_threads=settings.num_threads, py_num_workers=settings.num_workers, device_id=0 if gpu else None,
        prefetch_queue_depth=settings.prefetch_queue_depth, py_start_method=start,
    )  # fmt: skip
    try:
        while True:
            cp.pipe.run()
            yield settings.decode_batch
    finally:
        del cp


def clip_span(shards: Path) -> float:
    """Mean last - first + 1 of the MViT training clips of these shards (epoch 0)."""
    from pipelines.clip_source import SampleMeta, TrainClipIndices
    from shards.format import list_samples, parse_i32, read_member, read_split

    indices = TrainClipIndices(_recipe()[0], 0, 0)
    spans = []
    for s in list_samples(read_split(shards, "train").tars):
        label, n, fps, w, h = parse_i32(read_member(s.tar, *s.members["i32"]))
        idx = indices(SampleMeta(s.key, label, n, fps, w, h, 0))
        spans.append(int(idx.max()) - int(idx.min()) + 1)
    return sum(spans) / len(spans)


def eval_per_clip(shards: Path, decoder: str, batch_size: int, workers: int) -> tuple[int, float, float]:
    """One evaluation pass (MViT's 10 clips x 1 crop per video): views timed (the first batch, which builds
    the pipeline, not), their seconds, and frames decoded per clip."""
    from pipelines import build_loader

    device = "cuda" if decoder == "dali-gpu" else "cpu"
    loader = build_loader(
        shards, "train", _recipe(), batch_size=batch_size, decoder=decoder, train=False, device=device,
        **_threads(decoder, workers),
    )  # fmt: skip
    batches = iter(loader)
    next(batches)
    t0 = time.perf_counter()
    n = sum(len(b.key) for b in batches)
    return n, time.perf_counter() - t0, loader.frames_per_clip


def previous_result(out: Path | None, info: dict) -> dict | None:
    """The newest earlier loader result of this machine (its JSON), or None."""
    import json

    from common import RESULTS, machine_slug, result_base

    folder = Path(out or RESULTS)
    today = result_base("loader", info, folder).name
    found = sorted(p for p in folder.glob(f"*-loader-{machine_slug(info)}.json") if p.stem < today)
    return json.loads(found[-1].read_text()) | {"file": found[-1].name} if found else None


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
        if sync is not None:  # the warm-up's queued GPU work is not the timed part's
            sync()
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


def write_rows(path: Path, rows: list[dict], **meta) -> None:
    """The rows so far, replacing ``path`` whole (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
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
    ap.add_argument(
        "--eval-videos", type=int, default=24, help="videos of each length in the eval measurement (0: none)"
    )
    ap.add_argument(
        "--only", default="",
        help="measure only the loaders whose name contains one of these (comma-separated), in that order, "
        "e.g. ours-dali-gpu,decode-only dali-gpu",
    )  # fmt: skip
    ap.add_argument(
        "--aug", default="peers", help=f"our loader's augmentations, comma-separated: {', '.join(AUGS)}"
    )
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="our loader's batches' dtype")  # fmt: skip
    ap.add_argument("--row-seconds", type=float, default=None, help="no new pass of a row after this many s")
    ap.add_argument("--json", type=Path, default=None, help="rewrite this file with the rows after each row")
    ap.add_argument(
        "--baseline", type=Path, default=None,
        help="an earlier loader result (JSON) for the goals (default: this machine's newest)",
    )  # fmt: skip
    return ap


def parse_shards(text: str) -> dict[str, Path]:
    """``KIND=DIR,...`` → {kind: folder}; a bad item or a folder without shards is a one-line error."""
    out = {}
    for item in text.split(","):
        kind, eq, folder = item.partition("=")
        if not eq or not kind or not folder:
            raise SystemExit(f"bench_loader: --shards item {item!r} is not KIND=DIR")
        if not (Path(folder) / "manifest.json").is_file():
            raise SystemExit(
                f"bench_loader: --shards {kind}={folder}: no manifest.json there (run `stts shard`)"
            )
        out[kind] = Path(folder)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.quick:
        args.videos, args.seconds, args.clips, args.rounds, args.batch_size, args.warmup = 8, 4.0, 8, 1, 4, 1
        args.eval_videos = min(args.eval_videos, 4)
    augs = [a for a in args.aug.split(",") if a]
    bad = [a for a in augs if a not in AUGS]
    if bad or not augs:
        raise SystemExit(f"bench_loader: --aug {args.aug!r}: choose from {', '.join(AUGS)}")

    import torch

    from shards.format import read_split

    if args.shards:
        shards = parse_shards(args.shards)
    else:
        root = make_corpus(args.videos, args.seconds)
        shards = {kind: make_shards(root, kind, args.workers) for kind in args.kinds.split(",")}
    cuda = torch.cuda.is_available()
    B, W = args.batch_size, args.workers
    decoders = ["pyav", "dali-cpu"] + (["dali-gpu"] if cuda else [])
    # row (name, kind) -> frames decoded and clips delivered by our loader (its own counters), settings
    stats: dict[tuple[str, str], dict] = {}
    loaders: dict = {}  # name -> (batches(shards, epoch, kind), our loader's decoder or None)
    for d in decoders:
        for aug in augs:
            name = f"ours-{d}" + ("" if aug == "peers" else f" [{aug}]")
            loaders[name] = (
                lambda s, e, k, d=d, a=aug, n=name: ours_batches(
                    s, d, B, W, e, stats.setdefault((n, k), {}), a, args.dtype
                ),
                d,
            )
    if "peers" in augs:
        try:
            import decord  # noqa: F401

            have_decord = True
        except ImportError:
            have_decord = False
            print("peer-decord skipped: decord is not installed (.venv/bin/pip install decord)")
        loaders["peer-pyav (pySlowFast-style)"] = (lambda s, e, k: peer_batches(s, "pyav", B, W, e), None)
        if have_decord:
            loaders["peer-decord (mmaction-style)"] = (
                lambda s, e, k: peer_batches(s, "decord", B, W, e),
                None,
            )
    for d in decoders:
        loaders[f"decode-only {d}"] = (
            lambda s, e, k, d=d: decode_only(s, d, B, W, e, stats.setdefault((f"decode-only {d}", k), {})),
            None,
        )

    wanted = [w for w in args.only.split(",") if w]
    if wanted:  # in the order given
        loaders = {n: f for w in wanted for n, f in loaders.items() if w in n}
        decoders = [d for d in decoders if any(w in f"ours-{d}" for w in wanted)]
        if not loaders:
            raise SystemExit(f"bench_loader: --only {args.only!r} matches no loader on this machine")

    def applies(name: str, kind: str) -> bool:
        # DALI's CPU decoder reads VP9 and MJPEG only
        return not ("dali-cpu" in name and (kind == "raw" or "h264" in kind))

    per_pass = {k: read_split(p, "train").samples // B for k, p in shards.items()}
    totals: dict[tuple[str, str], list[float]] = {}
    extra: dict[tuple[str, str], dict] = {}  # row -> wall seconds, timed windows, error

    def rows() -> list[dict]:
        out = []
        for (name, kind), x in extra.items():
            n, s = totals.get((name, kind), (0, 0.0))
            st = stats.get((name, kind), {})
            ds = st.get("settings")
            out.append({
                "loader": name, "shards": kind, "clips": n, "seconds": s, "clips_per_s": n / s if s else None,
                "frames_per_clip": st["frames"] / st["clips"] if st.get("clips") else None,
                "passes": len(x["windows"]),
                # clips a DALI pipeline may have made before a pass's clock starts: a pass whose timed part
                # is not much longer reads high (by up to this / the timed clips of a pass)
                "prefetch_clips": ds.prefetch_queue_depth * ds.decode_batch if ds else None,
                "wall_s": x["wall_s"], "windows": x["windows"], "error": x.get("error"),
            })  # fmt: skip
        return out

    def save_rows() -> None:
        if args.json:
            write_rows(args.json, rows(), batch_size=B, workers=W, dtype=args.dtype)

    per_round = math.ceil(args.clips / args.rounds)
    sync = torch.cuda.synchronize if cuda else None
    for r in range(args.rounds):
        for kind, path in shards.items():
            for name, (make, _) in loaders.items():
                if not applies(name, kind):
                    continue
                x = extra.setdefault((name, kind), {"windows": [], "wall_s": 0.0})
                w0 = time.perf_counter()
                try:
                    n, s = measure(
                        lambda e, m=make, p=path, r=r, k=kind: m(p, 100 * r + e, k),
                        per_round, args.warmup, per_pass[kind], args.row_seconds, x["windows"], sync,
                    )  # fmt: skip
                except Exception as err:
                    if not args.json:
                        raise
                    # the caller reads the rows: this one is recorded with its error, the others still run
                    x["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                    print(f"round {r} {kind} {name}: {x['error']}", flush=True)
                    continue
                finally:
                    x["wall_s"] += time.perf_counter() - w0
                    save_rows()
                print(
                    f"round {r} {kind:5s} {name:30s} {n:4d} clips {s:6.1f} s {n / s:6.2f} clips/s", flush=True
                )
                t = totals.setdefault((name, kind), [0, 0.0])
                t[0] += n
                t[1] += s
                save_rows()

    # evaluation per clip on long and short videos: a decoder that does not seek pays for the position
    evals: dict[tuple[str, float], list[float]] = {}  # (decoder, seconds) -> views, seconds, frames/clip
    if args.eval_videos > 0:
        eval_roots = {sec: make_corpus(args.eval_videos, sec) for sec in (2.0, args.seconds)}
        eval_shards = {sec: make_shards(root, "reenc", W) for sec, root in eval_roots.items()}
        for r in range(args.rounds):
            for sec, path in eval_shards.items():
                for d in [d for d in decoders if d != "pyav" or r == 0]:
                    n, t, fpc = eval_per_clip(path, d, B, W)
                    e = evals.setdefault((d, sec), [0, 0.0, 0.0])
                    e[0], e[1], e[2] = e[0] + n, e[1] + t, fpc
                    print(
                        f"round {r} eval {sec:g}-s {d:10s} {n:4d} views {t:6.1f} s {1000 * t / n:6.1f} ms/clip"
                    )

    rate = {k: n / s for k, (n, s) in totals.items()}
    info = machine()
    baseline = (
        json.loads(args.baseline.read_text()) | {"file": args.baseline.name}
        if args.baseline
        else previous_result(args.out, info)
    )
    spans = {k: clip_span(p) for k, p in shards.items()}
    by_decoder: dict[tuple[str, str], dict] = {}  # (decoder, kind): our rows of that decoder together
    for (name, k), v in stats.items():
        if loaders[name][1] is None:  # decode-only: no loader, no counters
            continue
        agg = by_decoder.setdefault((loaders[name][1], k), {"frames": 0, "clips": 0})
        agg["frames"] += v.get("frames", 0)
        agg["clips"] += v.get("clips", 0)
        if "settings" in v:
            agg["settings"] = v["settings"]
    per_clip = {dk: v["frames"] / v["clips"] for dk, v in by_decoder.items() if v["clips"]}
    results: dict = {
        "videos": args.videos,
        "seconds_per_video": args.seconds,
        "shards": {k: str(p) for k, p in shards.items()} if args.shards else None,
        "batch_size": B,
        "workers": W,
        "augmentations": augs,
        "dtype": args.dtype,
        "clip": f"{FRAMES} frames x stride {STRIDE}, {CROP}x{CROP}",
        "rows": [{k: v for k, v in row.items() if k != "windows"} for row in rows()],
        "clips_per_s": {f"{k[0]} | {k[1]}": v for k, v in rate.items()},
        "frames_per_clip": {f"{d} | {k}": v for (d, k), v in per_clip.items()},
        "clip_span": spans,
        "decode_settings": {
            f"{d} | {k}": vars(v["settings"]) for (d, k), v in by_decoder.items() if "settings" in v
        },
        "eval_ms_per_clip": {f"{d} | {sec:g}s": 1000 * t / n for (d, sec), (n, t, _) in evals.items()},
        "eval_frames_per_clip": {f"{d} | {sec:g}s": f for (d, sec), (_, _, f) in evals.items()},
    }
    kinds = list(shards)
    names = list(loaders)
    where = (
        "shards given: " + ", ".join(f"{k} = `{p}`" for k, p in shards.items())
        if args.shards
        else f"{args.videos} videos of {args.seconds:g} s"
    )
    lines = [
        f"{where}; clip {results['clip']}; batches of {B} ({args.dtype}); {W} workers "
        f"(DALI threads + PyAV processes for ours, DataLoader workers for the peers); {args.rounds} interleaved "
        "rounds; every pass (epoch) builds its pipeline / starts its workers afresh, not timed (nor its "
        f"first {args.warmup} batches, so that prefetched batches do not count). Loaders take turns on the "
        "same machine: compare within this run only.",
        "",
        "raw: H.264 480x360 30 fps, GOP 250 (x264 ultrafast), `--probe fast`; reenc: `--reencode --codec vp9 "
        "--short-side 256 --gop 16`; reenc7.5: the same with `--fps 7.5` (MViT 16x4's sampling rate); "
        "reenc-h264(-7.5): the same in H.264. Ours: MViT recipe minus RandAugment and random erasing (random "
        "resized crop, flip, normalise); peers: short-side jitter 256-320, random crop, flip, normalise (torch); "
        "decode-only: our clip source and decoder, no augmentation."
        + (
            " Ours [full]: the MViT recipe itself (+ RandAugment and random erasing)."
            if "full" in augs
            else ""
        ),
        "",
        "| loader | " + " | ".join(f"{k} clips/s" for k in kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    for name in names:
        cells = [f"{rate[(name, k)]:.2f}" if (name, k) in rate else "n/a" for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {n} on {k} failed: {x['error']}" for (n, k), x in extra.items() if x.get("error")]
    verdicts = {}
    for k in kinds:  # ours with the peers' work ("[full]" does more)
        ours = max(((v, n) for (n, kk), v in rate.items() if kk == k and n.startswith("ours") and "[" not in n),
                   default=None)  # fmt: skip
        peer = max(((v, n) for (n, kk), v in rate.items() if kk == k and n.startswith("peer")), default=None)
        if ours is None or peer is None:
            continue
        ratio = ours[0] / peer[0]
        verdicts[k] = ratio
        lines.append(f"- {k}: best ours {ours[1]} {ours[0]:.2f} clips/s vs best peer {peer[1]} "
                     f"{peer[0]:.2f} clips/s: **{ratio:.2f}x**")  # fmt: skip
    results["ours_vs_best_peer"] = verdicts

    lines += [
        "",
        "Frames decoded per clip (training clips of the table above) beside the ideal: a clip whose first "
        "frame follows its keyframe by GOP - 1 frames decodes at most GOP - 1 + span.",
        "",
        "| | " + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    for d in decoders:
        cells = [f"{per_clip[(d, k)]:.1f}" if (d, k) in per_clip else "n/a" for k in kinds]
        lines.append(f"| ours-{d} | " + " | ".join(cells) + " |")
    lines.append("| clip span (last - first + 1) | " + " | ".join(f"{spans[k]:.1f}" for k in kinds) + " |")
    bound = {k: GOP.get(k, 16) - 1 + spans[k] for k in kinds}
    lines.append("| ideal bound (GOP - 1 + span) | " + " | ".join(f"{bound[k]:.1f}" for k in kinds) + " |")
    results["ideal_bound"] = bound

    lines += (
        []
        if not evals
        else [
            "",
            f"Evaluation (MViT: 10 clips x 1 crop per video), {args.eval_videos} VP9 videos (GOP 16, short side "
            f"256) of each length, {args.rounds} rounds (PyAV: 1):",
            "",
            f"| decoder | ms per clip, 2-s videos | ms per clip, {args.seconds:g}-s videos | ratio | "
            f"frames/clip 2-s | frames/clip {args.seconds:g}-s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    )
    ratios = {}
    for d in decoders:
        if (d, 2.0) not in evals:
            continue
        short, long = (1000 * evals[(d, s)][1] / evals[(d, s)][0] for s in (2.0, args.seconds))
        ratios[d] = long / short
        lines.append(
            f"| {d} | {short:.1f} | {long:.1f} | {long / short:.2f} | {evals[(d, 2.0)][2]:.1f} | "
            f"{evals[(d, args.seconds)][2]:.1f} |"
        )
    results["eval_long_vs_short"] = ratios

    if args.quick:  # passes of 2 batches, 1 timed: the peers' prefetched batches dominate
        lines += ["", "(--quick: a smoke run; passes are too short for the ratios to mean anything)"]
    else:
        lines += ["", *goals(rate, verdicts, ratios, baseline)]
    md = "\n".join(lines)
    print(md)
    if args.quick:
        print("\n(--quick: no result file written)")
        return
    path = write_result("loader", info, results, md, args.out)
    print(f"\nwritten: {path}")


def goals(rate: dict, verdicts: dict, eval_ratios: dict, baseline: dict | None) -> list[str]:
    """The goal lines: against the best peer (2x on re-encoded shards), against the previous result of this
    machine (dali-cpu on VP9 >= 1.5x, not below pyav; every ratio to the peers at least as good), and the
    evaluation's long/short per-clip ratio (<= 1.5)."""
    out = []
    for k in [k for k in verdicts if k.startswith("reenc")]:
        x = verdicts[k]
        verdict = "met" if x >= 2 else f"missed ({x:.2f}x, {(1 - x / 2):.0%} short of 2x)"
        out.append(f"- >= 2x the best peer on re-encoded shards on CPU ({k}): {verdict}.")
    if baseline is not None:
        before = baseline["results"]
        old = before["clips_per_s"].get("ours-dali-cpu | reenc")
        new = rate.get(("ours-dali-cpu", "reenc"))
        if old and new:
            met = new >= 1.5 * old and new >= rate.get(("ours-pyav", "reenc"), 0)
            out.append(
                f"- dali-cpu on VP9 30-fps re-encoded shards >= 1.5x its {old:.1f} clips/s of {baseline['file']} "
                f"and not below pyav: {new:.1f} clips/s ({new / old:.2f}x; pyav {rate.get(('ours-pyav', 'reenc'), 0):.1f}): "
                f"{'met' if met else 'missed'}."
            )
        for k, x in verdicts.items():
            was = before.get("ours_vs_best_peer", {}).get(k)
            if was is not None:
                out.append(
                    f"- ours vs best peer, {k}: {x:.2f}x (was {was:.2f}x): {'met' if x >= was else 'missed'}."
                )
    for d, x in eval_ratios.items():
        if d != "pyav":
            out.append(
                f"- {d} evaluation per clip, long / short videos <= 1.5: {x:.2f}: {'met' if x <= 1.5 else 'missed'}."
            )
    return ["Goals:", "", *out]


if __name__ == "__main__":
    main()
