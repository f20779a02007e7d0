"""Training and evaluation on CUDA (marked `gpu`, skipped without it; written for one H100/H200, the
2-process test for two GPUs): no host sync inside a training step, bf16 by default, resume, `--compile`,
data wait measured with CUDA events, bf16 evaluation against fp32, NCCL evaluation over two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = "mvit_debug_t0.5_s0.5"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig

    out = tmp_path_factory.mktemp("gpu-shards")
    synthetic = SyntheticConfig(num_classes=4, train_per_class=3, val_per_class=2, frames=16, size=64)
    build_shards(ShardConfig(src="synthetic", out=str(out), workers=2, synthetic=synthetic))
    return out


def run_cli(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    # the VP9 synthetic shards decoded by DALI's CPU decoder, batches copied to the GPU: this tests the
    # training side (the GPU decoder has its own tests in tests/pipelines)
    return [
        "train", "--model", MODEL, "--data", str(data), "--out", str(out), "--epochs", "2", "--batch-size", "2",
        "--workers", "2", "--decoder", "dali-cpu", "--seed", "3", "--quiet", "--lr", "1e-3",
        "--set", "num_sample=1", "--set", "tensorboard=false", "--set", "frozen_backbone_epochs=0",
        "--set", "val_split=null", "--set", "checkpoint_every=2", "--set", "log_every=2", *extra,
    ]  # fmt: skip


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_a_training_step_on_cuda_never_waits_for_the_gpu():
    """`torch.cuda.set_sync_debug_mode("error")` raises at any host-device synchronisation: none happens
    in a bf16 step, a skipped (NaN) step or the guard's bookkeeping; the one read is `settle`."""
    from test_guard import batch, make_run

    from stts.engine.trainer import train_step

    run = make_run(cpu=False, precision="bf16")
    assert run.accelerator.device.type == "cuda"
    batches = [batch(run.bare, seed=i, nan=(i == 2)) for i in range(4)]
    batches = [type(b)(video=b.video.cuda(), label=b.label.cuda(), key=b.key) for b in batches]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i, b in enumerate(batches):
            result = train_step(run, b)
            run.guard.update(i + 1, result.stepped, result.finite, result.loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    records, _, count = run.guard.settle()
    assert [ok for _, _, ok in records] == [True, True, False, True] and count == 3


def test_bf16_training_resumes_to_the_uninterrupted_weights(shards, tmp_path):
    """bf16 is the CUDA default; a run stopped at step 4 and resumed ends where an uninterrupted one does.
    CUDA's backward of max pooling and gathers adds with atomics (no deterministic kernel), so two
    uninterrupted runs may differ in the last bits: the resumed run must be as close to the uninterrupted
    one as a second uninterrupted run is (x10), or closer than 1e-6 of the weights' scale."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out in (a, b):
        done = run_cli(train_args(shards, out))
        assert done.returncode == 0, done.stderr[-3000:]
    first = run_cli(train_args(shards, c, "--max-steps", "4"))
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run_cli(train_args(shards, c))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step-00000004" in resumed.stdout
    config = yaml.safe_load((c / "config.yaml").read_text())
    assert config["system"]["mixed_precision"] == "auto"  # resolved to bf16 on this GPU
    wa, wb, wc = weights(a / "model.pt"), weights(b / "model.pt"), weights(c / "model.pt")
    scale = max(float(v.abs().max()) for v in wa.values())
    assert max_diff(wa, wc) <= max(10 * max_diff(wa, wb), 1e-6 * scale), (max_diff(wa, wc), max_diff(wa, wb))
    log = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in log if e["event"] == "train"]
    assert train and all(e["data_wait_measured_by"] == "cuda_events" for e in train)
    assert all(0.0 <= e["data_wait"] <= 1.0 for e in train)


def test_compile_trains(shards, tmp_path):
    """`--compile`: the model (hard and perturbed top-k included) through torch.compile; it trains and its
    checkpoint keeps the plain parameter names."""
    out = tmp_path / "compiled"
    done = run_cli(train_args(shards, out, "--compile", "--max-steps", "3"), timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    from stts.registry import model_from_checkpoint

    model, meta = model_from_checkpoint(out / "model.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert meta["train_config"]["system"]["compile"] is True


def test_bf16_eval_on_cuda_gives_the_fp32_results_on_the_hand_checked_case():
    """As the CPU test in test_evaluate, on the GPU: same selection and top-1, probabilities within 0.01."""
    from dataclasses import replace

    import test_evaluate as te

    from pipelines import build_loader
    from pipelines.augment import MVIT_AUG
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig
    from stts.evaluate import evaluate

    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"stts-gpu-eval-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    synthetic = SyntheticConfig(num_classes=2, train_per_class=0, val_per_class=2, frames=40, size=64)
    build_shards(ShardConfig(src="synthetic", out=str(out), split="val", workers=1, synthetic=synthetic))
    results = {}
    for precision in ("no", "auto"):
        loader = build_loader(out, "val", (te.SPEC, replace(MVIT_AUG, clip=te.SPEC, randaugment=None)),
                              batch_size=3, train=False, decoder="dali-cpu", device="cuda")  # fmt: skip
        torch.manual_seed(0)
        model = te.forced_model(True).cuda()
        results[precision] = evaluate(model, loader, classes=["p", "q"], count_flops=False, precision=precision,
                                      ground_truth=te.truth_for(out, (32, 32, 64, 64)))  # fmt: skip
    fp32, bf16 = results["no"], results["auto"]
    assert (bf16.selection.temporal, bf16.selection.spatial) == (
        fp32.selection.temporal,
        fp32.selection.spatial,
    )
    assert bf16.top1 == fp32.top1
    for x, y in zip(fp32.per_video, bf16.per_video, strict=True):
        assert x["top5"][0] == y["top5"][0]
        assert max(abs(p - q) for p, q in zip(x["probs"], y["probs"], strict=True)) <= 0.01
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two NCCL ranks need two GPUs")
def test_two_process_nccl_eval_covers_every_view_once(shards, tmp_path):
    """torchrun, 2 processes, NCCL: each rank on its own GPU (`stts.runtime.init_distributed`), the gather
    holds every (video, view) exactly once."""
    from stts.checkpoint import save_checkpoint
    from stts.registry import build_model, checkpoint_meta

    classes = json.loads((shards / "manifest.json").read_text())["classes"]
    model = build_model(MODEL, num_classes=len(classes))
    save_checkpoint(tmp_path / "m.pt", model, meta=checkpoint_meta(model, classes=classes))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "cli", "eval", "--checkpoint",
           str(tmp_path / "m.pt"), "--data", str(shards), "--views", "3x1", "--device", "cuda",
           "--decoder", "dali-cpu", "--out", str(tmp_path / "eval"), "--json"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    videos = json.loads((shards / "manifest.json").read_text())["splits"]["val"]["samples"]
    assert result["videos"] == videos and result["views"] == 3 * videos
    assert all(v["views"] == 3 for v in result["per_video"])
