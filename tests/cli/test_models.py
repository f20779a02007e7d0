"""`stts models`: every registered name with its family, official config, kept tokens and input shape, from
the configs alone; every "unknown model" error points to it; `stts flops --all` walks the same names."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import stts
from cli.main import app

ENV = {"COLUMNS": "200"}


def test_the_table_lists_every_name_with_what_it_keeps():
    result = CliRunner().invoke(app, ["models"], env=ENV)
    assert result.exit_code == 0, result.output
    rows = {ln.split()[0]: ln for ln in result.output.splitlines() if ln.strip().split()[:1]}
    for name in stts.list_models():
        assert name in rows, name
    assert rows["mvit_b_16x4_t0.6_s0.9"].split()[1:] == [
        "mvit", "t0_0.6_s4_0.9", "5/8", "frames,", "13×13", "of", "14×14", "3×16×224×224",
    ]  # fmt: skip
    assert "9/16 frames" in rows["swin_b_32x2_t0.5"] and "t0_0.5625" in rows["swin_b_32x2_t0.5"]
    assert "all" in rows["mvit_b_16x4"] and "2/4 frames, 5×5 of 8×8" in rows["mvit_debug_t0.5_s0.5"]


def test_json_and_family():
    result = CliRunner().invoke(app, ["models", "--json"])
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == stts.list_models()
    by_name = {r["name"]: r for r in rows}
    assert by_name["mvit_b_16x4_t0.9_s0.9"]["kept_frames"] == {"k": 7, "of": 8}
    assert by_name["mvit_b_16x4_t0.9_s0.9"]["kept_window"] == {"k": 169, "of": 196}
    assert by_name["swin_b_32x2"]["kept_frames"] is None and by_name["swin_b_32x2"]["input"] == [
        3,
        32,
        224,
        224,
    ]
    swin = json.loads(CliRunner().invoke(app, ["models", "--family", "swin", "--json"]).stdout)
    assert [r["name"] for r in swin] == stts.list_models("swin")


@pytest.mark.parametrize(
    "args",
    [
        ["flops", "mvit_b"],
        ["eval", "--data", ".", "--model", "mvit_b"],
        ["predict", "x.mp4", "--checkpoint", "x.pt", "--model", "mvit_b"],
        ["viz", "x.mp4", "--checkpoint", "x.pt", "--model", "mvit_b"],
        ["train", "--data", ".", "--model", "mvit_b"],
    ],
    ids=lambda a: a[0],
)
def test_every_unknown_model_error_points_to_stts_models(args):
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 2 and "`stts models` lists the" in result.output, result.output
    assert "did you mean mvit_b_16x4" in result.output
    with pytest.raises(ValueError, match="`stts models` lists the"):
        stts.build_model("mvit_b")


def test_flops_all_covers_every_registered_name(monkeypatch):
    counted = []
    monkeypatch.setattr(stts, "build_model", lambda name, **kw: torch.nn.Linear(1, 1))
    monkeypatch.setattr(stts, "input_shape", lambda model: (1, 1))
    monkeypatch.setattr("stts.flops.gflops", lambda model, shape, conv: counted.append(conv) or 1.0)
    result = CliRunner().invoke(app, ["flops", "--all", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(ln) for ln in result.stdout.splitlines()]
    assert sorted({x["model"] for x in lines}) == stts.list_models()
    assert len(lines) == 2 * len(stts.list_models())  # both conventions each
