"""`stts eval` end to end on a tiny synthetic shard with a saved debug checkpoint, and its one-line errors."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from shards.build import ShardConfig, build_shards
from shards.synthetic import SyntheticConfig
from stts.checkpoint import save_checkpoint
from stts.registry import build_model, checkpoint_meta

needs_dali = pytest.mark.skipif(
    importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None,
    reason="needs nvidia-dali",
)
ENV = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    synthetic = SyntheticConfig(num_classes=2, train_per_class=0, val_per_class=2, frames=40, size=64)
    build_shards(
        ShardConfig(src="synthetic", out=str(root / "shards"), split="val", workers=1, synthetic=synthetic)
    )
    model = build_model("mvit_debug_t0.5_s0.5", num_classes=2)
    classes = json.loads((root / "shards" / "manifest.json").read_text())["classes"]
    save_checkpoint(root / "model.pt", model, meta=checkpoint_meta(model, classes=classes))
    wrong = build_model("swin_debug_t0.5", num_classes=3)
    save_checkpoint(root / "three.pt", wrong, meta=checkpoint_meta(wrong, classes=["a", "b", "c"]))
    (root / "empty.pt").write_bytes(b"")
    (root / "random.pt").write_bytes(bytes(range(7, 256)) * 8)
    step = root / "run" / "checkpoints" / "step-00000004"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text("{}")
    (root / "run" / "model.pt").write_bytes((root / "model.pt").read_bytes())
    return root


@needs_dali
def test_eval_json_and_files(setup):
    out = setup / "eval"
    args = ["eval", "--checkpoint", str(setup / "model.pt"), "--data", str(setup / "shards"),
            "--views", "2x1", "--batch-size", "3", "--device", "cpu", "--out", str(out), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["videos"] == 4 and data["views"] == 8 and data["aggregation"] == "sum"
    assert data["recipe"] == "mvit" and data["flops_convention"] == "fvcore" and data["gflops_per_view"] > 0
    assert 0 <= data["top1"] <= 1 and data["top5"] == 1.0  # 2 classes: always in the top 5
    sel = data["selection"]
    assert sel["views"] == 8 and sel["temporal_kept"] == 8 * 4 and sel["spatial_kept"] == 8 * 4
    assert 0 <= sel["temporal_precision"] <= 1 and 0 <= sel["spatial_random"] <= 1
    saved = json.loads((out / "eval.json").read_text())
    assert saved["top1"] == data["top1"] and len(saved["per_video"]) == 4
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    assert [r["class_id"] for r in rows] == ["0", "1"] and sum(int(r["videos"]) for r in rows) == 4


@needs_dali
def test_eval_table(setup):
    args = ["eval", "--checkpoint", str(setup / "model.pt"), "--data", str(setup / "shards"),
            "--views", "1x1", "--device", "cpu", "--strategy", "random"]  # fmt: skip
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 0, result.output
    for text in ("top-1", "mean class accuracy", "GFLOPs / view", "clips/s", "temporal precision (random)"):
        assert text in result.output


@needs_dali
def test_random_selection_is_the_same_on_every_run_and_follows_seed(setup, tmp_path):
    import torch

    def run(*extra: str) -> dict:
        out = tmp_path / f"eval{len(list(tmp_path.iterdir()))}"
        args = ["eval", "--checkpoint", str(setup / "model.pt"), "--data", str(setup / "shards"),
                "--views", "2x1", "--batch-size", "3", "--device", "cpu", "--strategy", "random",
                "--out", str(out), "--json", *extra]  # fmt: skip
        result = CliRunner().invoke(app, args, env=ENV)
        assert result.exit_code == 0, result.output
        saved = json.loads((out / "eval.json").read_text())
        for timing in ("seconds", "clips_per_second"):
            saved.pop(timing)
        return saved

    first = run()
    torch.rand(1000)  # whatever used the global RNG in between (training, FLOP counting) changes nothing
    again = run("--seed", "0")
    assert first == again and first["seed"] == 0
    other = run("--seed", "1")
    assert other["seed"] == 1 and other["per_video"] != first["per_video"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--checkpoint", "three.pt"], "trained on 3 classes, the shards have 2"),
        (["--checkpoint", "model.pt", "--views", "3x2"], "--views '3x2'"),
        (["--checkpoint", "missing.pt"], "no such file"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--checkpoint", "model.pt", "--split", "train"], "has no split 'train'"),
        (["--checkpoint", "model.pt", "--data", "."], "no manifest.json"),  # the later --data wins
        (["--checkpoint", "empty.pt"], "is empty (0 bytes): an interrupted copy or download; copy it again"),
        (["--checkpoint", "random.pt"], "is not a PyTorch checkpoint"),
        (
            ["--checkpoint", "run/checkpoints/step-00000004"],
            "is a training checkpoint folder of `stts train`",
        ),
        (["--checkpoint", "run/checkpoints/step-00000004"], "run/model.pt, or continue training"),
    ],
)
def test_eval_bad_input_one_line(setup, extra, message):
    extra = [str(setup / e) if e.endswith(".pt") or e in (".", "run/checkpoints/step-00000004") else e
             for e in extra]  # fmt: skip
    args = ["eval", "--data", str(setup / "shards"), *extra]
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@needs_dali
def test_two_processes_cover_every_view_once(setup, tmp_path):
    """torchrun, 2 CPU processes over gloo (the NCCL twin is in tests/stts/test_gpu_train.py): each rank
    evaluates its slice; the gathered result has every (video, view) exactly once, as one process has."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    args = ["eval", "--checkpoint", str(setup / "model.pt"), "--data", str(setup / "shards"), "--views", "3x1",
            "--device", "cpu", "--batch-size", "2", "--json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "cli", *args,
                          "--out", str(tmp_path / "two")], cwd=root, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")], env=ENV)
    assert one.exit_code == 0, one.output
    a, b = (json.loads((tmp_path / n / "eval.json").read_text()) for n in ("one", "two"))
    assert (b["videos"], b["views"]) == (4, 12) and all(v["views"] == 3 for v in b["per_video"])
    assert [v["key"] for v in b["per_video"]] == [v["key"] for v in a["per_video"]]
    assert b["top1"] == a["top1"]
    for x, y in zip(a["per_video"], b["per_video"], strict=True):
        assert x["top5"] == y["top5"] and x["probs"] == pytest.approx(y["probs"], abs=1e-5)
