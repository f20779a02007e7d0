"""`stts predict`: top-k per video over every evaluation view (H.264, VP9, MJPEG), one error line per
unreadable file and exit 1, JSON output equal to the recipe's reduction of a direct model call."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import stts
from cli.main import app
from pipelines.video_file import recipe_for_model, video_file_views
from shards.encode import extension_for
from stts.checkpoint import export_mmcv, save_checkpoint
from stts.registry import checkpoint_meta

pytest.importorskip("nvidia.dali")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_video  # noqa: E402

CLASSES = ["archery", "bowling", "cooking egg", "dancing", "eating", "fencing", "golf driving"]
ROW = re.compile(r"^  [1-5]\.\s+\d+\.\d\d%  (.+)$")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    mvit = stts.build_model("mvit_debug_t0.5_s0.5", num_classes=len(CLASSES))
    swin = stts.build_model("swin_debug_t0.5", num_classes=5)
    out = {
        "mvit": save_checkpoint(d / "mvit.pt", mvit, meta=checkpoint_meta(mvit, classes=CLASSES)),
        "swin_official": export_mmcv(swin, d / "swin_official.pth"),
        "bad": d / "broken.mp4",
    }
    for i, codec in enumerate(("h264", "vp9", "mjpeg")):
        out[codec] = make_video(d / f"clip_{codec}.{extension_for(codec)}", frames=64, codec=codec, seed=i)
    out["bad"].write_text("this is a text file, not a video\n")
    (d / "shards").mkdir()
    (d / "shards" / "classes.txt").write_text("".join(f"swin class {i}\n" for i in range(5)))
    out["shards"] = d / "shards"
    return out


def invoke(*args):
    return CliRunner().invoke(app, ["predict", *map(str, args)], env={"COLUMNS": "100"})


def expected_probs(model, path: Path, views=None) -> torch.Tensor:
    """The recipe's reduction done by hand: softmax of each view's logits, averaged (MViT's sum,
    normalised, is the same)."""
    clip, aug = recipe_for_model(model, views=views)
    vv = video_file_views(path, clip, aug)
    with torch.no_grad():
        return torch.softmax(model.eval()(vv.video), -1).mean(0)


def test_top5_per_video_and_one_line_per_unreadable_file(files):
    videos = [files["h264"], files["bad"], files["vp9"], files["mjpeg"]]
    result = invoke(*videos, "--checkpoint", files["mvit"])
    assert result.exit_code == 1, (result.output, result.exception)
    errors = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "broken.mp4" in errors[0] and "not a readable video" in errors[0]
    lines = result.stdout.splitlines()
    for path in (files["h264"], files["vp9"], files["mjpeg"]):
        at = next(i for i, ln in enumerate(lines) if ln.startswith(str(path)))
        assert "10 views: 10 clips × 1 crops, 64 frames at 30 fps" in lines[at]
        names = [ROW.match(ln)[1] for ln in lines[at + 1 : at + 6]]
        assert len(set(names)) == 5 and set(names) <= set(CLASSES)
    assert sum(bool(ROW.match(ln)) for ln in lines) == 15


def test_json_probabilities_are_the_views_aggregate(files):
    result = invoke(
        files["h264"], files["mjpeg"], "--checkpoint", files["mvit"], "--json", "--top", "7", "--views", "3x1"
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [e["file"] for e in out] == [str(files["h264"]), str(files["mjpeg"])]
    model, _ = stts.registry.model_from_checkpoint(files["mvit"])
    for entry in out:
        assert entry["views"] == 3 and len(entry["top_k"]) == 7
        probs = expected_probs(model, Path(entry["file"]), views=(3, 1))
        got = torch.zeros(len(CLASSES))
        for row in entry["top_k"]:
            assert row["name"] == CLASSES[row["class_id"]]
            got[row["class_id"]] = row["prob"]
        torch.testing.assert_close(got, probs, atol=2e-6, rtol=0)
        assert [r["prob"] for r in entry["top_k"]] == sorted(
            (r["prob"] for r in entry["top_k"]), reverse=True
        )


def test_official_file_needs_the_model_name(files):
    result = invoke(files["vp9"], "--checkpoint", files["swin_official"])
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--model" in lines[0]
    # with the name, classes from a shards folder's classes.txt, 2 clips x 3 crops
    result = invoke(files["vp9"], "--checkpoint", files["swin_official"], "--model", "swin_debug_t0.5",
                    "--classes", files["shards"], "--views", "2x3", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    assert entry["views"] == 6 and len(entry["top_k"]) == 5
    assert {r["name"] for r in entry["top_k"]} == {f"swin class {i}" for i in range(5)}
    model = stts.build_model("swin_debug_t0.5", num_classes=5, checkpoint=files["swin_official"])
    probs = expected_probs(model, files["vp9"], views=(2, 3))
    for row in entry["top_k"]:
        assert row["prob"] == pytest.approx(float(probs[row["class_id"]]), abs=2e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--views", "2x2"], "CLIPSxCROPS"),
        (["--top", "0"], "--top 0"),
        (["--classes", "missing.txt"], "cannot read it"),
        (["--model", "no_such_model"], "unknown model"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(files, extra, message):
    result = invoke(files["h264"], "--checkpoint", files["mvit"], *extra)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], lines


def test_class_count_must_match(files, tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("a\nb\n")
    result = invoke(files["h264"], "--checkpoint", files["mvit"], "--classes", names)
    assert result.exit_code == 2
    assert "2 class names for a model with 7 classes" in result.stderr
