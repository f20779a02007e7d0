"""build_loader: the same Batch from DALI's CPU decoder and the PyAV feed, every eval (video, view) once
across ranks, training reshuffled per epoch and reproducible from the seed, lengths from the manifest."""

from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipelines import Batch, build_loader
from pipelines.augment import MVIT_AUG, SWIN_AUG
from pipelines.clip_source import EvalClipIndices, SampleMeta, TrainClipIndices, sample_id
from pipelines.decoders import choose_decoder, decode_settings
from pipelines.sampling import MVIT_CLIP, SWIN_CLIP, eval_clip_indices, sample_rng, train_clip_indices
from shards.build import ShardConfig, build_shards
from shards.synthetic import SyntheticConfig

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None,
    reason="needs nvidia-dali",
)

# small variants of the two recipes: 8 frames at stride 2, 56-pixel crops
MVIT_SMALL = replace(MVIT_CLIP, num_frames=8, sampling_rate=2, short_side=64, crop_size=56, num_clips=2)
MVIT_SMALL_AUG = replace(MVIT_AUG, clip=MVIT_SMALL, randaugment=None)  # RandAugment's graph builds slowly
SWIN_SMALL = replace(SWIN_CLIP, num_frames=8, sampling_rate=2, short_side=56, crop_size=56, num_clips=2)
SWIN_SMALL_AUG = replace(SWIN_AUG, clip=SWIN_SMALL, train_short_side=64)
MVIT = (MVIT_SMALL, MVIT_SMALL_AUG)
SWIN = (SWIN_SMALL, SWIN_SMALL_AUG)
VAL, TRAIN = 4, 6  # samples per split


def make_shards(out: Path, codec: str) -> Path:
    synthetic = SyntheticConfig(
        num_classes=2, train_per_class=3, val_per_class=2, frames=40, size=64, codec=codec
    )
    build_shards(ShardConfig(src="synthetic", out=str(out), workers=2, synthetic=synthetic))
    return out


@pytest.fixture(scope="module")
def vp9(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("vp9") / "shards", "vp9")


@pytest.fixture(scope="module")
def h264(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("h264") / "shards", "h264")


def labels_of(shards: Path, split: str) -> dict[str, int]:
    """key → class id from the shards' own .cls members (read through the .idx files)."""
    manifest = json.loads((shards / "manifest.json").read_text())
    out = {}
    for shard in manifest["splits"][split]["shards"]:
        tar = shards / shard["name"]
        lines = tar.with_suffix(".idx").read_text().splitlines()[1:]
        for line in lines:
            f = line.split()
            for j in range(0, len(f), 4):
                if f[j] == "cls":
                    with open(tar, "rb") as fh:
                        fh.seek(int(f[j + 1]))
                        out[f[j + 3].partition(".")[0]] = int(fh.read(int(f[j + 2])))
    return out


def check_batch(b: Batch, batch_size: int, frames: int = 8, crop: int = 56) -> None:
    assert isinstance(b, Batch)
    assert b.video.dtype == torch.float32 and b.video.device.type == "cpu"
    assert b.video.shape == (batch_size, 3, frames, crop, crop)
    assert b.label.dtype == torch.long and b.label.shape == (batch_size,)
    assert b.view.dtype == torch.long and b.view.shape == (batch_size,)
    assert isinstance(b.key, list) and len(b.key) == batch_size and all(isinstance(k, str) for k in b.key)
    assert torch.isfinite(b.video).all()


def test_train_batches_reproducible_and_reshuffled(vp9):
    labels = labels_of(vp9, "train")
    loader = build_loader(vp9, "train", MVIT, batch_size=2, seed=3)
    assert loader.decoder == "dali-cpu"  # auto, no CUDA, VP9 shards
    first = list(loader)
    assert len(loader) == len(first) == TRAIN // 2
    for b in first:
        check_batch(b, 2)
        assert b.label.tolist() == [labels[k] for k in b.key]
        assert b.view.tolist() == [0, 0]
    assert sorted(k for b in first for k in b.key) == sorted(labels)  # one rank: every sample once
    again = list(build_loader(vp9, "train", MVIT, batch_size=2, seed=3))  # a new loader, same seed
    assert [b.key for b in again] == [b.key for b in first]
    assert all(torch.equal(a.video, b.video) for a, b in zip(first, again, strict=True))
    loader.set_epoch(1)
    second = list(loader)
    assert len(second) == len(first)
    same_order = [b.key for b in second] == [b.key for b in first]
    same_clips = all(torch.equal(a.video, b.video) for a, b in zip(first, second, strict=True))
    assert not (same_order and same_clips)
    other_seed = list(build_loader(vp9, "train", MVIT, batch_size=2, seed=4))
    assert not all(torch.equal(a.video, b.video) for a, b in zip(first, other_seed, strict=True))


def test_train_ranks_same_number_of_batches(vp9):
    # 6 samples over 4 ranks: slices of 1 or 2 samples; every rank yields the same number of full batches
    counts = []
    for rank in range(4):
        loader = build_loader(vp9, "train", SWIN, batch_size=2, rank=rank, world_size=4, seed=1)
        batches = list(loader)
        assert len(batches) == len(loader) == 1
        check_batch(batches[0], 2)
        counts.append(len(batches))
    assert len(set(counts)) == 1


def test_eval_dali_and_pyav_same_views(vp9):
    labels = labels_of(vp9, "val")
    kw = dict(batch_size=4, train=False)
    dali_loader = build_loader(vp9, "val", SWIN, decoder="dali-cpu", **kw)
    pyav_loader = build_loader(vp9, "val", SWIN, decoder="pyav", **kw)
    assert dali_loader.frames_per_clip is None
    dali, pyav = list(dali_loader), list(pyav_loader)
    # frames decoded per clip: both from the keyframe at or before the clip's first frame (GOP cut for DALI's
    # decoder, which would otherwise decode from the video's first frame on)
    last = [min(eval_clip_indices(40, 30.0, SWIN_SMALL, t).max() + 1, 40) for t in range(2)]
    assert dali_loader.decoded_clips == VAL * 2 and dali_loader.frames_per_clip == pyav_loader.frames_per_clip
    assert 0 < dali_loader.frames_per_clip < sum(last) / 2
    assert len(dali) == len(pyav) == VAL * 2 * 3 // 4
    for a, b in zip(dali, pyav, strict=True):
        check_batch(a, 4)
        assert a.key == b.key and a.view.tolist() == b.view.tolist() and a.label.tolist() == b.label.tolist()
        assert a.label.tolist() == [labels[k] for k in a.key]
        assert (a.video - b.video).abs().mean() < 0.05  # colour conversion differs slightly
    seen = Counter((k, v) for b in dali for k, v in zip(b.key, b.view.tolist(), strict=True))
    assert seen == Counter({(k, v): 1 for k in labels for v in range(6)})
    # different views of one video differ (temporal clips and crops)
    key0 = dali[0].key[0]
    first = {
        v: b.video[i]
        for b in dali
        for i, (k, v) in enumerate(zip(b.key, b.view.tolist(), strict=True))
        if k == key0
    }
    assert len(first) == 6 and not torch.equal(first[0], first[1])


def test_eval_two_ranks_cover_every_view_once(vp9):
    labels = labels_of(vp9, "val")
    seen: Counter = Counter()
    for rank in range(2):
        loader = build_loader(
            vp9, "val", MVIT, batch_size=3, train=False, rank=rank, world_size=2, views=(3, 1)
        )
        batches = list(loader)
        assert len(loader) == len(batches) == 2  # 2 videos x 3 views = 6 per rank
        for b in batches:
            check_batch(b, len(b.key))
            assert b.label.tolist() == [labels[k] for k in b.key]
        seen.update((k, v) for b in batches for k, v in zip(b.key, b.view.tolist(), strict=True))
    assert seen == Counter({(k, v): 1 for k in labels for v in range(3)})


def test_eval_padding_never_yielded(vp9):
    # 4 videos over 3 ranks (1, 1, 2 samples) with batches of 2: the readers pad, the loader drops it
    seen: Counter = Counter()
    for rank in range(3):
        loader = build_loader(vp9, "val", MVIT, batch_size=2, train=False, rank=rank, world_size=3)
        batches = list(loader)
        assert len(batches) == len(loader)
        seen.update((k, v) for b in batches for k, v in zip(b.key, b.view.tolist(), strict=True))
    assert seen == Counter({(k, v): 1 for k in labels_of(vp9, "val") for v in range(2)})


def test_h264_auto_pyav(h264):
    loader = build_loader(h264, "train", SWIN, batch_size=3, seed=0)
    assert loader.decoder == "pyav"  # no CUDA, and DALI's CPU decoder cannot read H.264
    batches = list(loader)
    assert len(batches) == len(loader) == 2
    for b in batches:
        check_batch(b, 3)
    ev = list(build_loader(h264, "val", MVIT, batch_size=4, train=False))
    assert [len(b.key) for b in ev] == [4, 4]


def test_choose_decoder(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_decoder("auto", ["vp9"]) == "dali-cpu"
    assert choose_decoder("auto", ["mjpeg", "vp8", "vp9"]) == "dali-cpu"
    assert choose_decoder("auto", ["h264", "vp9"]) == "pyav"
    assert choose_decoder("auto", []) == "pyav"
    assert choose_decoder("pyav", ["vp9"]) == "pyav"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_decoder("auto", ["h264"]) == "dali-gpu"
    with pytest.raises(ValueError, match="decoder must be one of"):
        choose_decoder("nvdec", ["vp9"])


def test_frame_indices_are_the_sampling_functions():
    meta = SampleMeta("abc_000001_000011", 1, 40, 30.0, 64, 64, epoch=1)
    rng = sample_rng(5, 2, sample_id(meta.key))
    got = TrainClipIndices(MVIT_SMALL, 5, 2)(meta)
    assert got.tolist() == train_clip_indices(40, 30.0, MVIT_SMALL, rng).tolist()
    # eval: the decoder's reading epoch is the temporal clip
    assert EvalClipIndices(SWIN_SMALL)(meta).tolist() == eval_clip_indices(40, 30.0, SWIN_SMALL, 1).tolist()


def test_missing_manifest_and_bad_split(tmp_path, vp9):
    with pytest.raises(FileNotFoundError, match="no manifest.json in"):
        build_loader(tmp_path, "train", "mvit", batch_size=2)
    with pytest.raises(KeyError, match="no split 'test'"):
        build_loader(vp9, "test", "mvit", batch_size=2)
    with pytest.raises(ValueError, match="unknown recipe"):
        build_loader(vp9, "train", "resnet", batch_size=2)
    # named recipes give the official view layouts, lengths from the manifest alone
    assert len(build_loader(vp9, "val", "mvit", batch_size=5, train=False)) == VAL * 10 // 5
    assert len(build_loader(vp9, "val", "swin", batch_size=5, train=False)) == math.ceil(VAL * 12 / 5)


@pytest.fixture
def built_pipelines(monkeypatch) -> list:
    """Every DALI pipeline built while the test runs, once each (DALI calls ``build`` again on every run)."""
    from nvidia.dali.pipeline import Pipeline

    built: list = []
    build = Pipeline.build

    def counting_build(self, *args, **kwargs):
        if not any(p is self for p in built):
            built.append(self)
        return build(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "build", counting_build)
    return built


@pytest.mark.parametrize("decoder", ["dali-cpu", "pyav"])
@pytest.mark.parametrize("train", [True, False])
def test_one_pipeline_per_pass(vp9, built_pipelines, decoder, train):
    split = "train" if train else "val"
    loader = build_loader(vp9, split, SWIN, batch_size=2, decoder=decoder, train=train, views=(2, 3))
    for epoch in range(2):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader)
        assert len(built_pipelines) == loader.pipelines_built == epoch + 1


def test_full_mvit_recipe_with_randaugment_and_erasing(vp9, built_pipelines):
    aug = replace(MVIT_AUG, clip=MVIT_SMALL)  # RandAugment (4, 7) and erasing p 0.25, as the recipe
    assert aug.randaugment == (4, 7) and aug.erase_prob > 0
    labels = labels_of(vp9, "train")
    loader = build_loader(vp9, "train", (MVIT_SMALL, aug), batch_size=3, seed=2)
    batches = list(loader)
    assert len(batches) == len(loader) == TRAIN // 3 and loader.pipelines_built == len(built_pipelines) == 1
    for b in batches:
        check_batch(b, 3)
        assert b.label.tolist() == [labels[k] for k in b.key]
    assert sorted(k for b in batches for k in b.key) == sorted(labels)


@pytest.mark.parametrize("decoder", ["dali-cpu", "pyav"])
def test_repeated_augmentation_gives_num_sample_clips_per_video(vp9, decoder):
    labels = labels_of(vp9, "train")
    loader = build_loader(vp9, "train", MVIT, batch_size=2, seed=3, num_sample=2, decoder=decoder)
    batches = list(loader)
    assert len(loader) == len(batches) == TRAIN // 2
    for b in batches:
        check_batch(b, 4)
        assert b.key[0] == b.key[1] != b.key[2] == b.key[3]  # each video's clips side by side
        assert b.label.tolist() == [labels[k] for k in b.key]
        # two independent augmentations of the same decoded frames
        assert not torch.equal(b.video[0], b.video[1]) and not torch.equal(b.video[2], b.video[3])
    assert sorted(k for b in batches for k in b.key[::2]) == sorted(labels)
    again = list(build_loader(vp9, "train", MVIT, batch_size=2, seed=3, num_sample=2, decoder=decoder))
    assert all(torch.equal(a.video, b.video) for a, b in zip(batches, again, strict=True))
    with pytest.raises(ValueError, match="num_sample"):
        build_loader(vp9, "train", MVIT, batch_size=2, num_sample=0)


def test_host_buffers_reused_only_when_free(vp9):
    """Batch memory comes back into use once the consumer has let go of a batch, never while any tensor
    or view of it lives: held batches keep their values while later batches are made."""
    loader = build_loader(vp9, "train", MVIT, batch_size=2, seed=3)
    held, copies = [], []
    for epoch in range(3):
        loader.set_epoch(epoch)
        for i, b in enumerate(loader):
            if i == 0:  # hold the first batch of each epoch (a view of it, even), drop the others
                held.append(b.video[:1])
                copies.append(b.video[:1].clone())
    assert loader._host.reused > 0
    for h, c in zip(held, copies, strict=True):
        assert torch.equal(h, c)
    pool = loader._host
    a = pool.empty((3, 4), "float32")
    address = a.ctypes.data
    t = torch.from_numpy(a)[1:]  # a live view keeps the buffer out of the pool
    del a
    b = pool.empty((3, 4), "float32")
    assert b.ctypes.data != address
    del b
    del t
    assert pool.empty((3, 4), "float32").ctypes.data == address


def test_batches_in_the_training_precision(vp9):
    """``dtype``: the same batches, converted once on the way out of DALI (float16 by numpy while copying,
    bfloat16 by torch), labels and views unchanged."""
    full = list(build_loader(vp9, "val", MVIT, batch_size=3, train=False, views=(1, 1)))
    for dtype in (torch.float16, torch.bfloat16):
        low = list(build_loader(vp9, "val", MVIT, batch_size=3, train=False, views=(1, 1), dtype=dtype))
        assert [b.key for b in low] == [b.key for b in full]
        for a, b in zip(low, full, strict=True):
            assert a.video.dtype == dtype and a.label.dtype == torch.long and a.view.dtype == torch.long
            assert torch.equal(a.video, b.video.to(dtype))
    kw = dict(batch_size=2, seed=3, num_sample=2)  # two outputs interleaved while copying out
    train32 = next(iter(build_loader(vp9, "train", MVIT, **kw)))
    train16 = next(iter(build_loader(vp9, "train", MVIT, dtype=torch.bfloat16, **kw)))
    assert train16.key == train32.key and torch.equal(train16.video, train32.video.to(torch.bfloat16))
    with pytest.raises(ValueError, match="dtype must be one of"):
        build_loader(vp9, "val", MVIT, batch_size=3, dtype=torch.int8)


def test_decode_settings_per_device():
    h100 = decode_settings("dali-gpu", 2, engines=7)  # MViT: 2 videos per GPU
    assert (h100.num_threads, h100.decode_batch, h100.num_workers, h100.affine) == (14, 28, 7, False)
    assert decode_settings("dali-gpu", 64, engines=7).decode_batch == 64  # never below the batch
    assert decode_settings("dali-gpu", 2).num_threads == 4  # NVDEC count unknown
    cpu = decode_settings("dali-cpu", 2)
    assert (cpu.num_threads, cpu.num_workers, cpu.decode_batch, cpu.prefetch_queue_depth) == (2, 1, 4, 2)
    assert decode_settings("pyav", 8, num_threads=3).num_workers == 3  # PyAV decodes in the workers
    given = decode_settings("dali-gpu", 2, engines=7, num_threads=3, decode_batch=5, affine=True)
    assert (given.num_threads, given.decode_batch, given.affine) == (3, 5, True)
    with pytest.raises(ValueError, match="decode_batch must be >= 1"):
        decode_settings("pyav", 2, decode_batch=-1)


def test_decode_batch_does_not_change_the_batches(vp9):
    """Clips decoded 2 or 6 at a time: the same training batches (samples, clips, order), and every eval
    view once with the same pixels; the decode batch is the hardware's business. (The random augmentation
    draws of a sample depend on its slot in DALI's run, so training pixels do.)"""
    train = [list(build_loader(vp9, "train", MVIT, batch_size=2, seed=5, decode_batch=d)) for d in (2, 6)]
    assert [b.key for b in train[0]] == [b.key for b in train[1]]
    assert [b.label.tolist() for b in train[0]] == [b.label.tolist() for b in train[1]]
    views = []
    for d in (3, 8):
        loader = build_loader(vp9, "val", SWIN, batch_size=4, train=False, decode_batch=d)
        batches = list(loader)
        assert loader.decode_batch == d and len(batches) == len(loader) == VAL * 6 // 4
        views.append(
            {
                (k, v): b.video[i]
                for b in batches
                for i, (k, v) in enumerate(zip(b.key, b.view.tolist(), strict=True))
            }
        )
    assert views[0].keys() == views[1].keys() and len(views[0]) == VAL * 6
    assert all(torch.equal(views[0][kv], views[1][kv]) for kv in views[0])
