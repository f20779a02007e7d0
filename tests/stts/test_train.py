"""`stts train` end to end on tiny synthetic shards: outputs, resume after SIGKILL, non-finite losses, two CPU
processes (DDP over gloo) and DeepSpeed ZeRO-2 through Accelerate."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stts.engine import RECIPES, Trainer, apply_settings, load_config
from stts.registry import model_from_checkpoint

ROOT = Path(__file__).resolve().parents[2]
MODEL = "mvit_debug_t0.5_s0.5"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig

    out = tmp_path_factory.mktemp("train-shards")
    synthetic = SyntheticConfig(num_classes=4, train_per_class=3, val_per_class=1, frames=16, size=64)
    build_shards(ShardConfig(src="synthetic", out=str(out), workers=2, synthetic=synthetic))
    return out


def base_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--model", MODEL, "--data", str(data), "--out", str(out), "--epochs", "2", "--batch-size", "2",
        "--workers", "1", "--decoder", "dali-cpu", "--seed", "3", "--quiet",
        "--set", "num_sample=1", "--set", "tensorboard=false", "--set", "frozen_backbone_epochs=0",
        *extra,
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run_cli(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_a_complete_run(shards, tmp_path):
    out = tmp_path / "run"
    # the MViT recipe's repeated augmentation and mixup included
    done = run_cli(
        base_args(
            shards, out, "--set", "checkpoint_every=2", "--set", "eval_every=1", "--set", "num_sample=2",
            "--set", "log_every=3",
        )
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "done" in done.stdout and "val top-1" in done.stdout
    # not a terminal, --quiet: a plain line per log record (iterations 3, 6, 9, 12; more when 30 s pass
    # between them), whole, with the bar's fields; none of DALI's RandAugment deprecation warnings
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("train ")]
    for step in (3, 6, 9):
        assert any(ln.startswith(f"train {step}/12 steps ({step / 12:.0%}) · ep ") for ln in lines), lines
    assert lines[-1].startswith("train 12/12 steps (100%) · ep 2.00 loss ")
    records = lines[next(i for i, ln in enumerate(lines) if ln.startswith("train 3/12")) :]
    for field in ("lr ", "σ ", "step/s", "clips/s", "data wait", "elapsed"):
        assert all(field in ln for ln in records), (field, lines)
    assert "ETA" in lines[-2] and max(map(len, lines)) > 100  # no cut at 80 columns
    assert f"→ {out / 'model.pt'}" in done.stdout  # the done: line whole too
    assert "DeprecationWarning" not in done.stderr, done.stderr[-2000:]
    assert "Setting accelerator" not in done.stdout + done.stderr  # DeepSpeed's accelerator probe
    # the start: no --init is worth a warning; the first line says what trains and what its files weigh
    assert "warning: the mvit recipe fine-tunes a pretrained backbone" in done.stdout
    assert f"train {MODEL} (0.16 M parameters) from random weights (no --init); 2 epochs × 6 iterations" in (
        done.stdout
    )
    assert "a checkpoint ≈ 1.9 MB" in done.stdout
    for name in ("config.yaml", "metrics.jsonl", "model.pt", "best.pt"):
        assert (out / name).is_file(), name
    cfg = load_config(out / "config.yaml")
    assert cfg.model.name == MODEL and cfg.training.epochs == 2 and cfg.training.num_sample == 2
    assert cfg.training.seed == 3
    # 12 train videos, batch 2 → 6 iterations per epoch; keep_last 2 checkpoints (the two epoch ends)
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step-00000010", "step-00000012"]
    state = json.loads((out / "checkpoints" / "step-00000012" / "trainer_state.json").read_text())
    assert (state["iteration"], state["epoch"], state["epoch_iter"]) == (12, 2, 0)
    log = events(out)
    train = [e for e in log if e["event"] == "train"]
    assert train and {"loss", "lr", "sigma", "clips_per_s", "data_wait"} <= set(train[0])
    assert train[0]["sigma"] < 0.1 and train[-1]["sigma"] < train[0]["sigma"]  # decays (MViT recipe)
    assert [e["epoch"] for e in log if e["event"] == "val"] == [1, 2]
    model, meta = model_from_checkpoint(out / "model.pt")
    assert meta["model_name"] == MODEL and len(meta["classes"]) == 4 and meta["epoch"] == 2
    assert model.cfg.num_classes == 4 and meta["train_config"]["model"]["name"] == MODEL


def test_sigkill_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(shards, tmp_path):
    extra = ("--set", "checkpoint_every=2", "--set", "val_split=null")
    straight = tmp_path / "straight"
    done = run_cli(base_args(shards, straight, *extra))
    assert done.returncode == 0, done.stderr[-2000:]

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cli", *base_args(shards, killed, *extra)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while not (killed / "checkpoints" / "step-00000004" / "trainer_state.json").is_file():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not any(e["event"] == "end" for e in events(killed))

    resumed = run_cli(base_args(shards, killed, *extra))  # same command: resumes by default
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step-" in resumed.stdout
    a, b = weights(straight / "model.pt"), weights(killed / "model.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def _interrupt(cmd: list[str], out: Path, sig: int, after_records: int) -> tuple[int, str]:
    """Run ``cmd`` in its own process group and send ``sig`` to the whole group (as a terminal's Ctrl-C
    does: the decoding workers get it too) once metrics.jsonl has ``after_records`` train lines."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().count('"event": "train"') >= after_records):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no progress within 240 s"
            time.sleep(0.05)
        os.killpg(proc.pid, sig)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, output


def test_sigint_and_sigterm_stop_after_the_step_with_a_checkpoint(shards, tmp_path):
    out = tmp_path / "run"
    # the PyAV decoder runs in worker processes: they must not die of the terminal's Ctrl-C
    args = base_args(shards, out, "--set", "val_split=null", "--set", "log_every=1", "--decoder", "pyav")
    cmd = [sys.executable, "-m", "cli", *args]
    code, output = _interrupt(cmd, out, signal.SIGINT, after_records=2)
    assert code == 130, output[-3000:]
    assert "SIGINT: stopping after this step, with a checkpoint" in output
    step = int(output.split("interrupted (SIGINT) at step ")[1].split(",")[0])
    assert f"checkpoint {out / 'checkpoints' / f'step-{step:08d}'}; run the same command to resume" in output
    state = json.loads((out / "checkpoints" / f"step-{step:08d}" / "trainer_state.json").read_text())
    assert state["reason"] == "interrupt" and state["optimizer_steps"] == step >= 2
    assert "Traceback" not in output

    code, output = _interrupt(cmd, out, signal.SIGTERM, after_records=step + 2)  # the same command resumes
    assert code == 143, output[-3000:]
    assert f"resumed from step-{step:08d}" in output and "interrupted (SIGTERM) at step " in output
    later = int(output.split("interrupted (SIGTERM) at step ")[1].split(",")[0])
    assert later > step and (out / "checkpoints" / f"step-{later:08d}" / "trainer_state.json").is_file()


def test_resume_with_other_settings_is_refused_and_a_run_of_the_previous_version_resumes(shards, tmp_path):
    out = tmp_path / "run"
    extra = ("--set", "val_split=null", "--set", "checkpoint_every=2")
    first = run_cli(base_args(shards, out, "--max-steps", "2", *extra))
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_cli(base_args(shards, out, "--max-steps", "4", *extra, "--lr", "0.5"))
    assert again.returncode == 2
    assert (
        "other settings" in again.stderr
        and "optim.lr" in again.stderr
        and len(again.stderr.strip().splitlines()) == 1
    )
    # The run folder as version 0.1 left it (its flat config.yaml and trainer state, kept in
    # tests/fixtures from a real run of this command): the same command resumes it.
    fixture = ROOT / "tests" / "fixtures" / "run-0.1"
    text = (fixture / "config.yaml").read_text()
    text = text.replace("/tmp/i12old/shards", str(shards)).replace("/tmp/i12old/run", str(out))
    (out / "config.yaml").write_text(text)
    step = out / "checkpoints" / "step-00000002"
    shutil.copy(fixture / "trainer_state.json", step / "trainer_state.json")
    # 0.1's AdamW was not fused: its saved param groups say fused=None, which loading would carry over
    state = torch.load(step / "optimizer.bin", weights_only=True)
    assert all(g["fused"] for g in state["param_groups"])
    for g in state["param_groups"]:
        g["fused"] = g["foreach"] = None
    torch.save(state, step / "optimizer.bin")
    resumed = run_cli(base_args(shards, out, "--max-steps", "4", *extra))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step-00000002" in resumed.stdout
    state = json.loads((out / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())
    assert (state["iteration"], state["optimizer_steps"]) == (4, 4)
    saved = torch.load(out / "checkpoints" / "step-00000004" / "optimizer.bin", weights_only=True)
    assert all(g["fused"] for g in saved["param_groups"])  # this version's AdamW again after the resume
    assert load_config(out / "config.yaml").training.max_steps == 4  # rewritten in today's layout
    # a config.yaml this version cannot read: one line saying so
    (out / "config.yaml").write_text(text + "frobnicate: 3\n")
    bad = run_cli(base_args(shards, out, "--max-steps", "6", *extra))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "cannot be resumed by this version" in bad.stderr and "frobnicate" in bad.stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p: p.write_bytes(bytes(range(9, 250)) * 4), "is not a PyTorch checkpoint"),
        (lambda p: p.mkdir(), "is a folder; give a checkpoint file"),
    ],
)
def test_a_bad_init_checkpoint_is_one_line_saying_what_it_is(shards, tmp_path, make, message):
    from typer.testing import CliRunner

    from cli.main import app

    init = tmp_path / "pretrained.pyth"
    make(init)
    done = CliRunner().invoke(app, base_args(shards, tmp_path / "run", "--init", str(init)))
    assert done.exit_code == 2, done.output
    assert f"--init: checkpoint {init} " in done.output and message in done.output
    assert "Traceback" not in done.output and len(done.output.strip().splitlines()) == 1, done.output


class _NaNTrainer(Trainer):
    """Makes the logits non-finite on the forward calls listed in ``bad`` (1-based)."""

    bad: set[int] = set()

    def _build_model(self):
        model = super()._build_model()
        original, calls = model.forward, [0]

        def forward(x):
            calls[0] += 1
            out = original(x)
            return out * float("nan") if calls[0] in self.bad else out

        model.forward = forward
        return model


def _nan_config(shards, out, **changes):
    return apply_settings(
        RECIPES["mvit"],
        {"model": MODEL, "data": str(shards), "out": str(out), "epochs": 1, "batch_size": 2, "num_sample": 1,
         "num_threads": 1, "decoder": "dali-cpu", "val_split": None, "tensorboard": False,
         "frozen_backbone_epochs": 0.0, "checkpoint_every": 2, **changes},
    )  # fmt: skip


def test_a_checkpoint_every_checkpoint_minutes(shards, tmp_path):
    """The time-based cadence (default 30 min; here a checkpoint is due at every optimizer step). The clock
    is read where the host settles the steps, at every logging window (here every iteration)."""
    cfg = _nan_config(
        shards, tmp_path / "run", checkpoint_every=0, checkpoint_minutes=1e-9, keep_last=10, log_every=1
    )
    assert RECIPES["mvit"].checkpoint.checkpoint_minutes == 30
    Trainer(cfg, progress=False).fit()
    reasons = {
        p.name: json.loads((p / "trainer_state.json").read_text())["reason"]
        for p in sorted((tmp_path / "run" / "checkpoints").iterdir())
    }
    assert reasons == {f"step-{i:08d}": "time" for i in range(1, 6)} | {"step-00000006": "epoch"}


def test_a_nonfinite_loss_skips_its_step(shards, tmp_path):
    trainer = _NaNTrainer(_nan_config(shards, tmp_path / "run"), progress=False)
    trainer.bad = {3}
    result = trainer.fit()
    assert result.stopped is None and result.state.skipped_steps == 1
    assert result.state.iteration == 6 and result.state.optimizer_steps == 5
    assert [e["iteration"] for e in events(tmp_path / "run") if e["event"] == "nonfinite"] == [3]
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "run" / "model.pt").values())


def test_repeated_nonfinite_losses_stop_the_run_with_the_last_good_checkpoint(shards, tmp_path, capsys):
    out = tmp_path / "run"
    trainer = _NaNTrainer(_nan_config(shards, out, max_bad_steps=2), progress=False)
    trainer.bad = {3, 4, 5, 6}
    result = trainer.fit()
    assert result.stopped == "nonfinite" and result.state.skipped_steps == 2
    assert "non-finite losses in a row" in capsys.readouterr().out
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    assert not (out / "model.pt").exists()
    good = weights_from_state(out / "checkpoints" / "step-00000002")
    assert all(torch.isfinite(v).all() for v in good.values())


def weights_from_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _launch(args: list[str], processes: int = 2, timeout: int = 480) -> subprocess.CompletedProcess:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    cmd = [
        accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", "-m", "cli", *args,
    ]  # fmt: skip
    run_env = {
        **env(),
        "ACCELERATE_USE_CPU": "1",
        "TORCH_EXTENSIONS_DIR": str(ROOT / ".cache" / "torch_extensions"),
    }
    return subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout)


def _check_ranks(out: Path, samples: int) -> None:
    logs = [[json.loads(x) for x in (out / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    for epoch in (0, 1):
        keys = [[k for rec in log if rec.get("epoch") == epoch for k in rec["keys"]] for log in logs]
        assert not set(keys[0]) & set(keys[1]), f"ranks share samples in epoch {epoch}"
        assert len(keys[0]) == len(keys[1]) == samples // 2  # equal batches per rank, every sample once
    sums = [next(rec["checksum"] for rec in log if rec.get("event") == "end") for log in logs]
    assert sums[0] == sums[1], f"replicas drifted apart: {sums}"


def test_two_cpu_processes_train_in_sync_on_disjoint_shards(shards, tmp_path):
    out = tmp_path / "ddp"
    # every default on, TensorBoard included: its tracker is closed before the process group goes
    args = base_args(shards, out)
    at = args.index("tensorboard=false")
    del args[at - 1 : at + 1]
    done = _launch([*args, "--set", "rank_logs=true", "--set", "val_split=null"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Default process group has not been initialized" not in done.stderr
    _check_ranks(out, samples=12)
    assert (out / "model.pt").is_file()
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert len([line for line in done.stdout.splitlines() if line.startswith("done")]) == 1, done.stdout


def test_deepspeed_zero2_two_cpu_processes(shards, tmp_path):
    out = tmp_path / "zero2"
    done = _launch(
        base_args(shards, out, "--zero", "2", "--set", "rank_logs=true", "--set", "val_split=null")
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _check_ranks(out, samples=12)
    model, _ = model_from_checkpoint(out / "model.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_autocast_on_cpu(shards, tmp_path):
    cfg = _nan_config(shards, tmp_path / "run", mixed_precision="bf16", max_steps=2)
    result = Trainer(cfg, progress=False).fit()
    assert result.stopped == "max_steps" and result.state.optimizer_steps == 2
    weights_after = weights(tmp_path / "run" / "model.pt")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights_after.values())
