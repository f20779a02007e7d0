"""Checkpoint formats round-trip and mismatches are reported (tiny stand-in model; the model files test
their own official key sets)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import stts
from stts.checkpoint import (
    CheckpointError,
    export_mmcv,
    export_pyslowfast,
    load_checkpoint,
    load_state_dict,
    read_checkpoint,
    save_checkpoint,
)


class Tiny(nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5))
        self.register_buffer("index", torch.arange(6))
        self.cls_head = nn.Linear(5, classes)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,  # bare
        lambda s: {"model_state": s, "optimizer_state": {}, "cfg": "MODEL: {}", "epoch": 3},  # pySlowFast
        lambda s: {"state_dict": s, "meta": {"epoch": 1}, "optimizer": {}},  # mmcv
        lambda s: {"model": {f"module.{k}": v for k, v in s.items()}},  # DDP-wrapped
        lambda s: {"state_dict": {f"module.module.{k}": v for k, v in s.items()}},
    ],
    ids=["bare", "pyslowfast", "mmcv", "ddp", "double-ddp"],
)
def test_every_format_loads(tmp_path, wrap):
    src, dst = Tiny(), Tiny()
    torch.save(wrap(src.state_dict()), tmp_path / "c.pth")
    report = load_checkpoint(dst, tmp_path / "c.pth")
    assert report.ok and len(report.loaded) == len(src.state_dict())
    assert _same(src, dst)


def test_round_trips_through_our_and_the_official_formats(tmp_path):
    src = Tiny()
    for save in (
        lambda p: save_checkpoint(p, src, meta={"model_name": "tiny", "classes": ["a", "b", "c", "d"]}),
        lambda p: export_pyslowfast(src, p, epoch=2),
        lambda p: export_mmcv(src, p),
    ):
        path = save(tmp_path / "x.pyth")
        dst = Tiny()
        load_checkpoint(dst, path)
        assert _same(src, dst)
        assert not list(tmp_path.glob(".*.tmp"))
    _, rest = read_checkpoint(save_checkpoint(tmp_path / "ours.pt", src, meta={"model_name": "tiny"}))
    assert rest == {"stts": {"model_name": "tiny"}}
    raw = torch.load(export_pyslowfast(src, tmp_path / "o.pyth"), weights_only=True)
    assert set(raw) == {"epoch", "model_state", "optimizer_state", "cfg"}
    raw = torch.load(export_mmcv(src, tmp_path / "o.pth"), weights_only=True)
    assert set(raw) == {"meta", "state_dict"} and "backbone.0.weight" in raw["state_dict"]


def test_strict_loading_lists_every_problem_and_copies_nothing():
    src, dst = Tiny(classes=7), Tiny()
    state = src.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["backbone.1.bias"]
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_state_dict(dst, state)
    msg = str(err.value)
    assert "1 missing: backbone.1.bias" in msg
    assert "1 unexpected: extra.weight" in msg
    assert "cls_head.weight (7, 5) vs model (4, 5)" in msg and "cls_head.bias" in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_non_strict_loads_what_matches_and_reports_the_rest():
    src, dst = Tiny(classes=7), Tiny()
    head = dst.cls_head.weight.detach().clone()
    report = load_state_dict(dst, src.state_dict(), strict=False)
    assert sorted(k for k, _, _ in report.mismatched) == ["cls_head.bias", "cls_head.weight"]
    assert torch.equal(dst.backbone[0].weight, src.backbone[0].weight)
    assert torch.equal(dst.cls_head.weight, head)  # the head (other shape) is left as it was
    assert report.missing == [] and report.unexpected == []


def test_conversion_hook(tmp_path):
    src = Tiny()
    renamed = {k.replace("backbone.", "features."): v for k, v in src.state_dict().items()}
    torch.save(renamed, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(Tiny(), tmp_path / "foreign.pth")
    dst = Tiny()
    load_checkpoint(
        dst,
        tmp_path / "foreign.pth",
        convert=lambda s: {k.replace("features.", "backbone."): v for k, v in s.items()},
    )
    assert _same(src, dst)


def _message(path) -> str:
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text
    return text


def test_unreadable_files_say_what_they_are_and_what_to_do(tmp_path):
    import argparse

    assert "no such file" in _message(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(bytes(range(256)) * 4)  # random bytes
    assert "is not a PyTorch checkpoint" in _message(tmp_path / "junk.pth")
    (tmp_path / "zero.pth").write_bytes(b"")
    assert "is empty (0 bytes)" in _message(tmp_path / "zero.pth") and "copy it again" in _message(
        tmp_path / "zero.pth"
    )
    torch.save({"model_state": {"w": torch.zeros(64, 64)}}, tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert "damaged or truncated PyTorch file" in _message(tmp_path / "cut.pth")
    torch.save({"w": torch.zeros(2), "args": argparse.Namespace(lr=1)}, tmp_path / "objects.pth")
    text = _message(tmp_path / "objects.pth")
    assert "Python objects besides tensors (argparse.Namespace)" in text and "weights_only=False" in text
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")  # Accelerate's, in a training checkpoint
    state, rest = read_checkpoint(tmp_path / "model.safetensors")
    assert torch.equal(state["w"], torch.ones(2)) and rest == {}
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:-4])
    assert "is a damaged or truncated safetensors file" in _message(tmp_path / "cut.safetensors")
    torch.save({"epoch": 1, "cfg": "x"}, tmp_path / "nostate.pth")
    assert "no state dict" in _message(tmp_path / "nostate.pth")


def test_folders_say_which_file_to_use(tmp_path):
    run = tmp_path / "run"
    step = run / "checkpoints" / "step-00000012"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text("{}")
    (run / "model.pt").write_bytes(b"x")
    (run / "best.pt").write_bytes(b"x")
    text = _message(step)
    assert "a training checkpoint folder of `stts train`" in text
    assert f"use {run / 'best.pt'} or {run / 'model.pt'}" in text and f"stts train --out {run}" in text
    assert "the checkpoints folder of a training run" in _message(run / "checkpoints")
    assert "a training run folder" in _message(run)
    (tmp_path / "other").mkdir()
    assert "is a folder; give a checkpoint file" in _message(tmp_path / "other")


def test_model_from_checkpoint_rebuilds_the_saved_config(tmp_path):
    from stts.registry import checkpoint_meta, model_from_checkpoint

    model = stts.build_model("mvit_debug_t0.5_s0.5", num_classes=5, t_ratio=0.25).eval()
    path = save_checkpoint(
        tmp_path / "m.pt", model, meta=checkpoint_meta(model, classes=list("abcde"), step=7)
    )
    again, meta = model_from_checkpoint(path)
    assert again.cfg == model.cfg and again.cfg.time_left_ratio == 0.25
    assert meta["classes"] == list("abcde") and meta["step"] == 7 and meta["model_name"] == model.model_name
    x = torch.randn(stts.input_shape(model))
    assert torch.equal(model(x), again.eval()(x))


def test_model_from_checkpoint_needs_a_name_for_official_files(tmp_path):
    from stts.checkpoint import CheckpointError, export_mmcv
    from stts.registry import model_from_checkpoint

    model = stts.build_model("swin_debug_t0.5", num_classes=3)
    path = export_mmcv(model, tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match="--model NAME"):
        model_from_checkpoint(path)
    again, meta = model_from_checkpoint(path, name="swin_debug_t0.5", num_classes=3)
    assert meta == {} and again.load_report.ok
