"""`stts demo --quick`: the whole path (shards → three trainings → evaluation → table → picture) in small."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app


def test_demo_quick_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    summary = json.loads((out / "demo.json").read_text())
    assert [r["run"] for r in summary["rows"]] == ["stts", "random", "baseline"]
    stts_row, random_row, baseline = summary["rows"]
    # selection costs fewer FLOPs than all tokens; only the selecting models report selection precision
    assert stts_row["gflops_per_view"] < baseline["gflops_per_view"]
    assert stts_row["selection"]["temporal_precision"] is not None and baseline["selection"] is None
    assert 0 <= random_row["top1"] <= 1 and summary["chance_top1"] == 0.25
    table = (out / "demo.md").read_text()
    assert "STTS (learned)" in table and "all tokens" in table and "chance" in table
    for run in ("stts", "random", "baseline"):
        assert (out / "runs" / run / "model.pt").is_file()
        assert (out / "runs" / run / "eval" / "eval.json").is_file()
    png = out / "selection.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "demo done" in result.output and str(png) in result.output
