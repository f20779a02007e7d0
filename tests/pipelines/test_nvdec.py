"""What NVDEC decodes per GPU generation (NVIDIA's support matrix), the one-line refusal of a codec it cannot
decode, and ``auto`` honouring the device: all on the CPU, with CUDA reported present where needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import k400_rows, k400_stem, make_video, write_k400_csv

from pipelines import build_loader
from pipelines.decoders import choose_decoder
from pipelines.nvdec import (
    ARCH_CODECS,
    UnsupportedCodec,
    architecture,
    check_codecs,
    table_capabilities,
)
from shards.build import ShardConfig, build_shards
from shards.format import read_split

needs_dali = pytest.mark.skipif(
    importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None,
    reason="needs nvidia-dali",
)
H100 = ("NVIDIA H100 80GB HBM3", 9, 0)
H200 = ("NVIDIA H200", 9, 0)
A100 = ("NVIDIA A100-SXM4-80GB", 8, 0)
L4 = ("NVIDIA L4", 8, 9)
A10 = ("NVIDIA A10", 8, 6)


def test_architectures_and_their_codecs():
    assert [architecture(*cc) for cc in [(5, 0), (5, 2), (6, 1), (7, 0), (7, 5), (8, 0), (8, 6), (8, 9)]] == [
        "maxwell1", "maxwell2", "pascal", "volta", "turing", "turing", "ampere", "ada",
    ]  # fmt: skip
    assert architecture(9, 0) == "turing"  # Hopper's NVDEC is Turing's (NVDEC application note)
    assert architecture(10, 0) == architecture(12, 0) == "blackwell"
    for gpu in (H100, H200, A100):  # no AV1 decoding on A100, H100, H200
        caps = table_capabilities(*gpu)
        assert "av1" not in caps.codecs and {"h264", "hevc", "vp9", "vp8", "mjpeg"} <= caps.codecs
    assert table_capabilities(*H100).engines == table_capabilities(*H200).engines == 7
    assert table_capabilities(*A100).engines == 5
    for gpu in (L4, A10):
        assert "av1" in table_capabilities(*gpu).codecs and table_capabilities(*gpu).engines is None
    assert "hevc" not in ARCH_CODECS["maxwell1"] and "vp9" not in ARCH_CODECS["maxwell2"]


def test_check_codecs_says_which_codec_and_what_to_do():
    h100 = table_capabilities(*H100)
    check_codecs({"h264", "hevc", "vp9"}, h100)
    with pytest.raises(UnsupportedCodec) as err:
        check_codecs({"h264", "av1"}, h100, where="the 'train' shards of /data/k400")
    message = str(err.value)
    assert "\n" not in message and "av1" in message and "h264," not in message and "H100" in message
    assert "--reencode --codec h264" in message and "decoder='pyav'" in message
    assert isinstance(err.value, ValueError)


def test_auto_honours_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_decoder("auto", ["h264"], "cuda") == "dali-gpu"
    assert choose_decoder("auto", ["h264"], torch.device("cuda", 1)) == "dali-gpu"
    assert choose_decoder("auto", ["h264"], "cpu") == "pyav"  # CUDA present, CPU batches: never dali-gpu
    assert choose_decoder("auto", ["vp9"], torch.device("cpu")) == "dali-cpu"
    assert choose_decoder("dali-gpu", ["vp9"], "cpu") == "dali-gpu"  # asked for by name: as given
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_decoder("auto", ["vp9"], "cuda") == "dali-cpu"


def make_av1_shards(out: Path) -> Path:
    """Two AV1 videos (PyAV's SVT-AV1 encoder) sharded with the fast probe (read from the MP4 tables)."""
    import av
    import numpy as np

    root = out / "k400"
    rows = k400_rows()[:2]
    write_k400_csv(root / "annotations" / "val.csv", [r["youtube_id"] for r in rows])
    for row in rows:
        path = root / "val" / f"{k400_stem(row)}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w") as c:
            stream = c.add_stream("libsvtav1", rate=30, options={"preset": "12"})
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for i in range(8):
                frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 * i, np.uint8), format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    c.mux(packet)
            for packet in stream.encode(None):
                c.mux(packet)
    cfg = ShardConfig(src="kinetics400", root=str(root), split="val", out=str(out / "shards"), workers=1)
    build_shards(cfg)
    return out / "shards"


@pytest.mark.skipif("libsvtav1" not in __import__("av").codecs_available, reason="no AV1 encoder in PyAV")
def test_an_av1_shard_is_refused_before_the_first_batch(tmp_path, monkeypatch):
    shards = make_av1_shards(tmp_path)
    assert read_split(shards, "val").codecs == {"av1": 2}  # the codec's name, not FFmpeg's decoder's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("pipelines.nvdec.gpu_capabilities", lambda device=None: table_capabilities(*H100))
    with pytest.raises(UnsupportedCodec, match=r"hold av1 video, which this GPU's NVDEC \(NVIDIA H100"):
        build_loader(shards, "val", "mvit", batch_size=2, device="cuda", train=False)
    with pytest.raises(UnsupportedCodec, match="decoder='pyav'"):
        build_loader(shards, "val", "mvit", batch_size=2, decoder="dali-gpu", train=False)
    # the same shards on an Ada GPU, or with PyAV: accepted
    monkeypatch.setattr("pipelines.nvdec.gpu_capabilities", lambda device=None: table_capabilities(*L4))
    assert build_loader(shards, "val", "mvit", batch_size=2, device="cuda", train=False).decoder == "dali-gpu"
    assert build_loader(shards, "val", "mvit", batch_size=2, decoder="pyav", train=False).decoder == "pyav"


@needs_dali
def test_cpu_loader_on_a_cuda_machine(tmp_path, monkeypatch):
    """CUDA reported present, batches wanted on the CPU (build_loader's default): no dali-gpu, no CUDA
    stream asked for; the batches come."""
    root = tmp_path / "k400"
    rows = k400_rows()[:2]
    write_k400_csv(root / "annotations" / "val.csv", [r["youtube_id"] for r in rows])
    for i, row in enumerate(rows):
        make_video(root / "val" / f"{k400_stem(row)}.webm", codec="vp9", frames=16, seed=i)
    build_shards(
        ShardConfig(src="kinetics400", root=str(root), split="val", out=str(tmp_path / "s"), workers=1)
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loader = build_loader(tmp_path / "s", "val", "mvit", batch_size=2, views=(1, 1), train=False)
    assert loader.decoder == "dali-cpu"
    (batch,) = list(loader)
    assert batch.video.device.type == "cpu" and batch.video.shape == (2, 3, 16, 224, 224)
