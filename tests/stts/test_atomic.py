"""Outputs are written whole (temporary name, then rename) with the mode the user's umask gives a new file,
not mkstemp's private 0600 (unreadable to a team on shared storage)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from stts.atomic import atomic_path, current_umask, write_text


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_writer_gives_the_umasks_mode(umask, tmp_path):
    from stts.checkpoint import export_mmcv, export_pyslowfast, save_checkpoint
    from stts.engine.config import RECIPES, save_config
    from stts.evaluate import ClassRow, EvalResult, write_results

    assert current_umask() == umask
    plain = tmp_path / "plain"
    plain.write_text("x")  # what open() gives: the reference
    assert mode(plain) == 0o666 & ~umask

    model = torch.nn.Linear(2, 2)
    result = EvalResult(
        model="m", aggregation="sum", videos=1, views=1, skipped=0, top1=1.0, top5=1.0,
        mean_class_accuracy=1.0, per_class=[ClassRow(0, "a", 1, 1, 1.0)], seconds=1.0,
        clips_per_second=1.0, gflops_per_view=None, flops_convention=None,
    )  # fmt: skip
    written = [
        save_checkpoint(tmp_path / "model.pt", model),
        export_pyslowfast(model, tmp_path / "export.pyth"),
        export_mmcv(model, tmp_path / "export.pth"),
        save_config(RECIPES["mvit"], tmp_path / "config.yaml"),
        *write_results(result, tmp_path / "eval"),
        write_text(tmp_path / "demo.md", "| table |\n"),
    ]
    for path in written:
        assert mode(path) == mode(plain), (path.name, oct(mode(path)))
    assert not list(tmp_path.rglob(".*.tmp"))


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["model.pt"]
