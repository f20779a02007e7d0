"""`stts demo --quick`: the whole path (shards → three trainings → evaluation → table → picture) in small."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from cli.main import app


def _without_clips_per_s(table: str) -> str:
    """demo.md with its clips/s column (the only measured one) blanked."""
    return "\n".join(re.sub(r"^(\|[^|]*\|[^|]*\|[^|]*\|)[^|]*\|", r"\1 |", ln) for ln in table.splitlines())


def test_demo_quick_writes_every_output(quick_demo):
    out, output = quick_demo
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
    assert "demo done" in output and str(png) in output

    # run again, the demo reuses its shards and trained models and evaluates them afresh (after other
    # uses of the global RNG than the first time): the same table, clips/s aside
    again = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert again.exit_code == 0, again.output[-3000:]
    assert again.output.count("reusing") == 4  # the shards and the three models
    assert _without_clips_per_s((out / "demo.md").read_text()) == _without_clips_per_s(table)
