"""The GPU data path on one CUDA GPU (written for an H100/H200; skipped without CUDA): NVDEC clips equal to
PyAV's, the full recipes' batches on the device in the training precision without a host sync, every eval
view once across two ranks, a corrupt sample skipped without a hang, and a codec NVDEC cannot decode
refused before the first batch.

Tolerance for NVDEC against PyAV: each frame within a mean absolute difference of 8 (of 255) of the frame
asked for, and nearer to it than to any other frame (neighbours differ by 8-10): the two convert YUV to RGB
with different code (DALI's CUDA kernel vs swscale), so rounding and chroma upsampling differ while the
decoded pictures do not (DALI's CPU decoder is 3.4-3.7 from PyAV on such VP9 clips, measured here).
"""

from __future__ import annotations

import faulthandler
import io
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import frames_rgb, k400_rows, k400_stem, make_video, write_k400_csv

from pipelines import build_loader
from pipelines.augment import MVIT_AUG
from pipelines.clip_source import SampleMeta, clip_pipeline, key_of
from pipelines.dali_decode import DaliDecoder
from pipelines.sampling import MVIT_CLIP
from shards.build import ShardConfig, build_shards
from shards.format import list_samples, read_member, read_split
from shards.synthetic import SyntheticConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
# NVDEC decodes nothing smaller than 144x144 in HEVC, 128x128 in VP9 (its capability table; DALI refuses
# smaller videos: NVDECCache::GetDecoder)
FRAMES, SIZE = 48, (192, 160)


def _encode(path: Path, codec: str, seed: int) -> Path:
    """A moving-gradient video: H.264 with unreferenced B-frames (`shards.encode`), VP9, MJPEG, or HEVC and
    AV1 through PyAV's libx265 / SVT-AV1 (GOP 16 for all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec in ("h264", "vp9", "mjpeg"):
        return make_video(path, codec=codec, frames=FRAMES, width=SIZE[0], height=SIZE[1], seed=seed)
    encoder, options = {
        "hevc": ("libx265", {"x265-params": "keyint=16:min-keyint=16:scenecut=0:bframes=3:log-level=error"}),
        "av1": ("libsvtav1", {"preset": "12", "svtav1-params": "keyint=16"}),
    }[codec]
    with av.open(str(path), "w") as c:
        stream = c.add_stream(encoder, rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for i, img in enumerate(frames_rgb(FRAMES, *SIZE, seed=seed)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return path


def k400_shards(out: Path, codec: str, count: int = 4, rotten: int | None = None) -> Path:
    """Kinetics-layout shards of ``count`` videos of one codec; the video of sample ``rotten`` is then
    overwritten with zeros inside the tar (a file that rotted after sharding)."""
    root = out / "k400"
    rows = k400_rows()[:count]
    write_k400_csv(root / "annotations" / "val.csv", [r["youtube_id"] for r in rows])
    ext = {"vp9": "webm", "mjpeg": "mkv"}.get(codec, "mp4")
    for i, row in enumerate(rows):
        _encode(root / "val" / f"{k400_stem(row)}.{ext}", codec, seed=i)
    cfg = ShardConfig(
        src="kinetics400", root=str(root), split="val", out=str(out / "shards"), probe="fast", workers=1
    )
    build_shards(cfg)
    split = read_split(out / "shards", "val")
    assert split.codecs == {codec: count}
    if rotten is not None:
        sample = list_samples(split.tars)[rotten]
        offset, size = sample.members[sample.video_ext]
        with open(sample.tar, "r+b") as f:
            f.seek(offset)
            f.write(bytes(size))
    return out / "shards"


def pyav_all(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


class Picks:
    """Eight frames two apart at the start, the middle, or the end of the video (the last ones past it).
    Picklable."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __call__(self, meta: SampleMeta) -> np.ndarray:
        n = meta.num_frames
        start = {"start": 0, "middle": n // 2 - 5, "end": n - 10}[self.where]
        return (start + 2 * np.arange(8)).astype(np.int32)


@pytest.mark.parametrize("gop_cut", [False, True], ids=["whole", "cut"])
@pytest.mark.parametrize("codec", ["h264", "hevc", "vp9", "mjpeg"])
def test_nvdec_clips_equal_pyav(tmp_path, codec, gop_cut):
    """NVDEC's frames against PyAV's, given the whole video or the clip's GOPs only (the loader's way)."""
    shards = k400_shards(tmp_path, codec)
    split = read_split(shards, "val")
    videos = {s.key: read_member(s.tar, *s.members[s.video_ext]) for s in list_samples(split.tars)}
    decoder = DaliDecoder(device="gpu", gop_cut=gop_cut)
    for where in ("start", "middle", "end"):
        cp = clip_pipeline(split.tars, batch_size=4, decoder=decoder, device_id=0, frame_indices=Picks(where))
        frames, _, key, indices, decoded = cp.pipe.run()
        frames = frames.as_cpu()
        for i in range(4):
            clip, idx = np.asarray(frames[i]), np.asarray(indices[i])
            ref = pyav_all(videos[key_of(np.asarray(key[i]))])
            assert len(ref) == FRAMES and clip.shape == (8, SIZE[1], SIZE[0], 3)
            want = ref[np.minimum(idx, FRAMES - 1)]  # past the end: the last frame
            assert want.shape == clip.shape
            for f, j in zip(clip, np.minimum(idx, FRAMES - 1), strict=True):
                diffs = np.abs(ref.astype(np.int16) - f).mean(axis=(1, 2, 3))
                assert diffs[j] < 8, (codec, where, j, diffs[j])
                assert diffs.argmin() == j or np.array_equal(ref[diffs.argmin()], ref[j]), (codec, where)
            last, first = min(int(idx.max()), FRAMES - 1), int(idx.min())
            if gop_cut:  # from the keyframe at or before the first frame (GOP 16), B-frames decoded ahead
                assert last - first + 1 <= int(np.asarray(decoded[i])) <= last - first + 16 + 3
            else:  # from the first frame on
                assert int(np.asarray(decoded[i])) == last + 1


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu") / "shards"
    cfg = SyntheticConfig(num_classes=2, train_per_class=4, val_per_class=3, frames=48, size=96, codec="h264")
    build_shards(ShardConfig(src="synthetic", out=str(out), workers=2, synthetic=cfg))
    return out


@pytest.mark.parametrize("recipe", ["mvit", "swin"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_full_recipes_on_cuda(synthetic, recipe, dtype):
    """The official recipes as they are (RandAugment, erasing, 224² crops, MViT's 2 clips per video) through
    NVDEC: batches on the GPU, in the precision asked, finite; after the first batch no host sync in the
    loader's own torch calls (CUDA's sync debug mode raises on any)."""
    loader = build_loader(
        synthetic, "train", recipe, batch_size=2, device="cuda", num_sample=2 if recipe == "mvit" else 1,
        dtype=dtype, seed=1,
    )  # fmt: skip
    assert loader.decoder == "dali-gpu" and loader.settings.decode_batch >= 2 * loader.settings.num_threads
    frames = 16 if recipe == "mvit" else 32
    clips = 4 if recipe == "mvit" else 2
    batches = iter(loader)
    first = next(batches)
    torch.cuda.set_sync_debug_mode("error")
    try:
        rest = list(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for b in [first, *rest]:
        assert b.video.shape == (clips, 3, frames, 224, 224) and b.video.dtype == dtype
        assert b.video.device.type == "cuda" and b.label.device.type == "cuda"
        assert b.label.dtype == torch.long and len(b.key) == clips
        assert torch.isfinite(b.video.float()).all()
    assert len(rest) + 1 == len(loader)
    assert loader.frames_per_clip is not None and loader.frames_per_clip > 0


def test_float16_out_of_dali_equals_float32_cast(synthetic):
    kw = dict(batch_size=3, train=False, device="cuda", views=(2, 1))
    full = list(build_loader(synthetic, "val", "mvit", **kw))
    half = list(build_loader(synthetic, "val", "mvit", dtype=torch.float16, **kw))
    for a, b in zip(half, full, strict=True):
        assert a.key == b.key and torch.equal(a.video, b.video.half())


def test_eval_two_ranks_cover_every_view_once_on_cuda(synthetic):
    split = read_split(synthetic, "val")
    labels = {
        s.key: json.loads(read_member(s.tar, *s.members["json"]))["label"] for s in list_samples(split.tars)
    }
    seen: Counter = Counter()
    for rank in range(2):
        loader = build_loader(
            synthetic, "val", "swin", batch_size=5, train=False, rank=rank, world_size=2, device="cuda"
        )
        batches = list(loader)
        assert len(batches) == len(loader)
        for b in batches:
            assert b.video.device.type == "cuda" and b.label.tolist() == [labels[k] for k in b.key]
        seen.update((k, v) for b in batches for k, v in zip(b.key, b.view.tolist(), strict=True))
    assert seen == Counter({(k, v): 1 for k in labels for v in range(12)})  # Swin: 4 clips x 3 crops


def test_corrupt_sample_is_skipped_without_a_hang(tmp_path):
    """A video member rotted to zeros in the tar: skipped and counted, no hang, training batches full, every
    other eval view once."""
    shards = k400_shards(tmp_path, "h264", count=6, rotten=2)
    keys = [s.key for s in list_samples(read_split(shards, "val").tars)]
    small = replace(MVIT_CLIP, num_frames=8, sampling_rate=2, short_side=64, crop_size=56, num_clips=2)
    recipe = (small, replace(MVIT_AUG, clip=small, randaugment=None))
    faulthandler.dump_traceback_later(300, exit=True)  # a hang ends the test run, with every stack
    try:
        train = build_loader(shards, "val", recipe, batch_size=2, device="cuda", seed=1)
        for epoch in range(3):
            train.set_epoch(epoch)
            batches = list(train)
            assert len(batches) == len(train) == 3 and all(len(b.key) == 2 for b in batches)
            assert keys[2] not in {k for b in batches for k in b.key}
        assert train.skipped >= 1 and set(train.skipped_keys) <= {keys[2]}
        ev = build_loader(shards, "val", recipe, batch_size=4, device="cuda", train=False)
        seen = Counter((k, v) for b in ev for k, v in zip(b.key, b.view.tolist(), strict=True))
        assert seen == Counter({(k, v): 1 for k in keys if k != keys[2] for v in range(2)})
        assert ev.skipped_keys == Counter({keys[2]: 2})
    finally:
        faulthandler.cancel_dump_traceback_later()


def test_av1_refused_where_nvdec_lacks_it(tmp_path):
    from pipelines.nvdec import UnsupportedCodec, gpu_capabilities

    caps = gpu_capabilities()
    assert caps.source == "driver", "cuvidGetDecoderCaps did not answer (libnvcuvid.so.1 missing?)"
    assert {"h264", "hevc", "vp9"} <= caps.codecs and caps.engines and caps.engines >= 1
    if "H100" in caps.gpu or "H200" in caps.gpu:
        assert "av1" not in caps.codecs and caps.engines == 7  # NVIDIA's support matrix and datasheets
    if "av1" in caps.codecs:
        pytest.skip(f"{caps.gpu} decodes AV1")
    shards = k400_shards(tmp_path, "av1", count=2)
    with pytest.raises(UnsupportedCodec) as err:
        build_loader(shards, "val", "mvit", batch_size=2, device="cuda", train=False)
    message = str(err.value)
    assert "\n" not in message and "av1" in message and "--reencode --codec h264" in message
    assert build_loader(shards, "val", "mvit", batch_size=2, decoder="pyav", train=False, device="cuda")


def test_centre_clip_on_a_cpu_device_from_nvdec(synthetic):
    """dali-gpu asked for by name with the batches on the CPU: decoded on the GPU, copied back."""
    loader = build_loader(
        synthetic, "val", "mvit", batch_size=3, train=False, decoder="dali-gpu", views=(1, 1)
    )
    (b, *_) = list(loader)
    assert b.video.device.type == "cpu" and b.video.shape == (3, 3, 16, 224, 224)
