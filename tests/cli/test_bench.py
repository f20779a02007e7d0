"""`stts bench`: one command runs the benchmarks and writes a dated summary naming the machine."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_writes_the_summary_and_each_benchmarks_file(tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "cli", "bench", "--quick", "--only", "train,shard", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    info = common.machine()
    stem = f"{dt.date.today().isoformat()}-{{}}-{common.machine_slug(info)}"
    summary = out / (stem.format("bench") + ".md")
    assert summary.is_file(), sorted(p.name for p in out.iterdir())
    text = summary.read_text()
    assert info["cpu"] in text and f"{info['cores']} cores" in text  # names the machine
    for name in ("train", "shard"):
        detail = stem.format(name)
        assert (out / f"{detail}.md").is_file() and (out / f"{detail}.json").is_file(), name
        assert f"({detail}.md)" in text  # linked from the summary
    data = json.loads((out / (stem.format("bench") + ".json")).read_text())
    assert data["machine"] == info and data["results"]["quick"] is True
    runs = data["results"]["benchmarks"]
    assert set(runs) == {"train", "shard"} and all(r["status"] == "ok" for r in runs.values())
    assert any("mvit_debug_t0.5_s0.5" in h for h in runs["train"]["headline"])
    train = json.loads((out / (stem.format("train") + ".json")).read_text())["results"]
    pair = train["pairs"][0]
    assert (pair["baseline"], pair["stts"]) == ("mvit_debug", "mvit_debug_t0.5_s0.5")
    assert pair["stts_s"] > 0 and pair["baseline_s"] > 0 and 0 <= pair["stts_data_wait"]["share"] < 1
    assert "bench" in done.stdout and "summary:" in done.stdout


def test_bench_rejects_an_unknown_benchmark_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--only", "train,gpu", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown benchmark gpu" in result.output and "shard,loader,inference,train" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_the_gpu_rows_path_runs_stts_train_itself(tmp_path):
    """bench_train's CUDA rows are `stts train` runs read back from their own metrics; the same path on a
    CPU (a debug model, VP9 shards, DALI's CPU decoder) gives a complete row, the warm-up excluded."""
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig

    spec = importlib.util.spec_from_file_location("bench_train_t", ROOT / "benchmarks" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    synthetic = SyntheticConfig(num_classes=4, train_per_class=4, val_per_class=0, frames=16, size=64)
    build_shards(
        ShardConfig(src="synthetic", out=str(tmp_path / "s"), split="train", workers=1, synthetic=synthetic)
    )
    row = bench.real_run(
        "mvit_debug_t0.5_s0.5", tmp_path / "s", warmup=2, steps=2, window=2, decoder="dali-cpu"
    )
    assert row["steps"] == 2 and row["clips_per_step"] == 4 and row["s_per_step"] > 0
    assert row["clips_per_s"] == pytest.approx(4 / row["s_per_step"])
    assert 0 <= row["data_wait"] < 1 and row["data_wait_measured_by"] == "host" and row["precision"] == "no"
    assert len(row["losses"]) == 1 and all(math.isfinite(x) for x in row["losses"])
