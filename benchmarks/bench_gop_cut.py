"""GOP cutting (`pipelines.gop_cut`): what a cut costs, and what it saves DALI's CPU decoder.

1. Cut cost per clip on 10-s Kinetics-like videos: the source (480x360 H.264 + AAC, x264 ultrafast, GOP
   250) and its `--reencode` forms (H.264 GOP 16 with B-frames in MP4; VP9 GOP 16 in WebM), with our own
   readers/writers (MP4 sample tables, Matroska clusters) and with PyAV (demux + remux into Matroska).
   Per clip: reading the video's packet index (done once per video when several clips are cut) and
   writing the cut. MViT 16x4 training clips (random starts).
2. DALI's CPU decoder (``fn.decoders.video(frames=...)``, batch 1, 1 thread) on a 16x4 clip at the start,
   middle and end of the 10-s VP9 GOP-16 videos (MViT evaluation clips 0, 5 and 9 of 10): the whole
   video against the cut (decode time, and decode + cut), and the frames decoded per clip beside the
   ideal (GOP - 1 + span).

Videos are made once under .cache/bench/ (the corpus of bench_shard.py, re-encoded).

    python benchmarks/bench_gop_cut.py [--videos 4] [--clips 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_shard import CACHE, files_of, make_corpus  # noqa: E402
from common import machine, write_result  # noqa: E402

from pipelines.gop_cut import cut_clip, index_video  # noqa: E402
from pipelines.sampling import MVIT_CLIP, eval_clip_indices, sample_rng, train_clip_indices  # noqa: E402
from shards.probe import probe  # noqa: E402
from shards.reencode import ReencodeSpec, reencode  # noqa: E402

KINDS = {
    "source": "source MP4 (H.264 + AAC, GOP 250, no B-frames)",
    "h264": "`--reencode` MP4 (H.264 GOP 16, 3 B-frames)",
    "vp9": "`--reencode --codec vp9` WebM (VP9 GOP 16)",
}


def corpus(n: int) -> dict[str, list[Path]]:
    root = make_corpus(max(n, 4), 10.0)
    sources = files_of(root)[:n]
    out: dict[str, list[Path]] = {"source": sources}
    for codec in ("h264", "vp9"):
        spec = ReencodeSpec(codec=codec, gop=16)
        folder = CACHE / f"gop_cut_{codec}"
        folder.mkdir(parents=True, exist_ok=True)
        made = []
        for src in sources:
            dst = folder / f"{src.stem}.{spec.extension}"
            if not dst.exists():
                tmp = dst.with_suffix(".part" + dst.suffix)
                reencode(src, tmp, spec)
                tmp.rename(dst)
            made.append(dst)
        out[codec] = made
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (ms) and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000, result


def cut_costs(videos: list[Path], clips: int, repeats: int) -> dict:
    """Mean ms per video to index and per clip to write the cut, ours and PyAV's."""
    rows = {}
    for demuxer in ("auto", "pyav"):
        index_ms, write_ms, sizes = [], [], []
        for v, path in enumerate(videos):
            data = path.read_bytes()
            n = probe(path, "fast").num_frames
            ext = path.suffix[1:]
            ms, index = timed(lambda d=data, e=ext, m=demuxer: index_video(d, e, demuxer=m), repeats)
            index_ms.append(ms)
            rng = sample_rng(0, 0, v)
            for _ in range(clips):
                idx = train_clip_indices(n, 30.0, MVIT_CLIP, rng)
                ms, cut = timed(lambda i=idx, d=data, x=index: cut_clip(d, "", i, index=x), repeats)
                write_ms.append(ms)
                sizes.append(len(cut.data) / len(data))
        rows[demuxer] = {
            "container": index.container,
            "index_ms_per_video": statistics.mean(index_ms),
            "cut_ms_per_clip": statistics.mean(write_ms),
            "cut_bytes_share": statistics.mean(sizes),
        }
    return rows


def dali_decoder():
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def pipe():
        video = fn.external_source(name="video", dtype=types.UINT8, ndim=1)
        frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
        return fn.decoders.video(video, device="cpu", frames=frames, pad_mode="edge")

    p = pipe()
    p.build()

    def decode(data: bytes, indices: np.ndarray) -> np.ndarray:
        p.feed_input("video", [np.frombuffer(data, np.uint8)])
        p.feed_input("frames", [np.asarray(indices, np.int32)])
        (out,) = p.run()
        return np.array(out.at(0))

    return decode


def dali_positions(videos: list[Path], repeats: int) -> dict:
    decode = dali_decoder()
    positions = {"start": 0, "middle": 5, "end": 9}
    rows = {}
    for name, clip in positions.items():
        whole_ms, cut_ms, cutting_ms, decoded_whole, decoded_cut, ideal = [], [], [], [], [], []
        for path in videos:
            data = path.read_bytes()
            n = probe(path, "fast").num_frames
            idx = eval_clip_indices(n, 30.0, MVIT_CLIP, clip, num_clips=10)
            index = index_video(data, "webm")
            cutting, cut = timed(lambda i=idx, d=data, x=index: cut_clip(d, "", i, index=x), repeats)
            whole = cut_clip(data, "", idx, index=index)
            decode(data, idx)  # warm: the first run of a pipeline allocates
            ms_whole, frames_whole = timed(lambda i=idx, d=data: decode(d, i), repeats)
            ms_cut, frames_cut = timed(lambda c=cut: decode(c.data, c.indices), repeats)
            assert np.array_equal(frames_whole, frames_cut), f"{path.name}: the cut decodes to other frames"
            whole_ms.append(ms_whole)
            cut_ms.append(ms_cut)
            cutting_ms.append(cutting)
            decoded_whole.append(int(index.reach[int(idx.max())]) + 1)
            decoded_cut.append(cut.frames_decoded)
            ideal.append(16 - 1 + int(idx.max() - idx.min()) + 1)
            assert whole.start == 0 or clip > 0
        rows[name] = {
            "first_frame": int(idx.min()),
            "whole_ms": statistics.mean(whole_ms),
            "cut_ms": statistics.mean(cut_ms),
            "cutting_ms": statistics.mean(cutting_ms),
            "frames_decoded_whole": statistics.mean(decoded_whole),
            "frames_decoded_cut": statistics.mean(decoded_cut),
            "ideal_bound": statistics.mean(ideal),
        }
    return rows


def frames_per_clip(videos: dict[str, list[Path]], clips: int) -> dict:
    """Mean frames decoded per MViT training clip, whole vs cut, beside GOP - 1 + span."""
    out = {}
    for kind, paths in videos.items():
        whole, cut, ideal = [], [], []
        for v, path in enumerate(paths):
            data = path.read_bytes()
            index = index_video(data, path.suffix[1:])
            keys = [int(k) for k in index.candidates if index.cut_point(data, int(k)) == k]
            gop = max(b - a for a, b in zip(keys, keys[1:] + [index.num_frames], strict=True))
            rng = sample_rng(1, 0, v)
            for _ in range(clips):
                idx = train_clip_indices(index.num_frames, 30.0, MVIT_CLIP, rng)
                whole.append(int(index.reach[int(idx.max())]) + 1)
                cut.append(cut_clip(data, "", idx, index=index).frames_decoded)
                ideal.append(gop - 1 + int(idx.max() - idx.min()) + 1)
        out[kind] = {
            "gop": gop,
            "whole": statistics.mean(whole),
            "cut": statistics.mean(cut),
            "ideal": statistics.mean(ideal),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--clips", type=int, default=40, help="random training clips per video (cut cost)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="result folder (default: benchmarks/results)")
    args = ap.parse_args(argv)

    videos = corpus(args.videos)
    costs = {kind: cut_costs(paths, args.clips, args.repeats) for kind, paths in videos.items()}
    frames = frames_per_clip(videos, args.clips)
    dali = dali_positions(videos["vp9"], args.repeats)
    info = probe(videos["vp9"][0], "fast")
    results = {
        "videos_per_kind": args.videos,
        "clips_per_video": args.clips,
        "repeats": args.repeats,
        "vp9_size": [info.width, info.height],
        "cut_cost": costs,
        "frames_per_training_clip": frames,
        "dali_cpu_16x4": dali,
    }

    lines = [
        f"{args.videos} videos of each kind, 10 s at 30 fps (the bench_shard corpus, 480x360, and its "
        f"re-encodes at short side 320: {info.width}x{info.height}); MViT 16x4 clips; best of "
        f"{args.repeats} per measurement, means over clips and videos.",
        "",
        f"Cut cost ({args.clips} random training clips per video): index = reading the packet structure "
        "(once per video; per clip when not kept), cut = writing the clip's container from it.",
        "",
        "| video | reader/writer | index ms/video | cut ms/clip | index + cut ms | cut size / video |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for kind, rows in costs.items():
        for demuxer, r in rows.items():
            who = "PyAV demux + remux (Matroska)" if demuxer == "pyav" else f"own ({r['container']})"
            lines.append(
                f"| {KINDS[kind]} | {who} | {r['index_ms_per_video']:.2f} | {r['cut_ms_per_clip']:.2f} | "
                f"{r['index_ms_per_video'] + r['cut_ms_per_clip']:.2f} | {r['cut_bytes_share']:.0%} |"
            )
    lines += [
        "",
        "Frames decoded per training clip (a decoder that never seeks: from the container's first packet to "
        "the last one the clip needs), whole video vs cut, beside the ideal GOP - 1 + span:",
        "",
        "| video | GOP | whole | cut | GOP - 1 + span |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, r in frames.items():
        lines.append(f"| {KINDS[kind]} | {r['gop']} | {r['whole']:.1f} | {r['cut']:.1f} | {r['ideal']:.1f} |")
    lines += [
        "",
        "DALI 2.4 CPU decoder, one 16x4 evaluation clip (batch 1, 1 thread), VP9 GOP 16, "
        f"{info.width}x{info.height}, 300 frames:",
        "",
        "| clip | first frame | whole video ms | cut ms | cut + cutting ms | speed-up | frames decoded whole | "
        "cut | GOP - 1 + span |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in dali.items():
        total = r["cut_ms"] + r["cutting_ms"]
        lines.append(
            f"| {name} | {r['first_frame']} | {r['whole_ms']:.1f} | {r['cut_ms']:.1f} | {total:.1f} | "
            f"{r['whole_ms'] / total:.2f}x | {r['frames_decoded_whole']:.0f} | {r['frames_decoded_cut']:.0f} | "
            f"{r['ideal_bound']:.0f} |"
        )
    late = (dali["end"]["cut_ms"] + dali["end"]["cutting_ms"]) / dali["start"]["whole_ms"]
    results["end_cut_vs_start_whole"] = late
    lines += [
        "",
        f"The last clip of a 10-s video, cut, costs {late:.2f}x the first clip (which needs no cut); "
        f"uncut it cost {dali['end']['whole_ms'] / dali['start']['whole_ms']:.2f}x. Frames of the cut equal "
        "the whole video's (checked in every measurement).",
    ]
    md = "\n".join(lines)
    path = write_result("gop_cut", machine(), results, md, args.out)
    print(md)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
