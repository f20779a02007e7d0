"""Every option of train, eval, predict, viz, flops and shard given a wrong-typed value: one line naming the
flag (and what it takes), exit code 2, no traceback. The options are read from the commands themselves, so a
new option is walked too; each bad value goes on top of a command line that would otherwise run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_video
from typer.main import get_command
from typer.testing import CliRunner

from cli.main import app

COMMANDS = ("train", "eval", "predict", "viz", "flops", "shard")
ENV = {"COLUMNS": "300"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig
    from stts.checkpoint import save_checkpoint
    from stts.registry import build_model, checkpoint_meta

    root = tmp_path_factory.mktemp("options")
    synthetic = SyntheticConfig(num_classes=2, train_per_class=2, val_per_class=1, frames=16, size=32)
    build_shards(ShardConfig(src="synthetic", out=str(root / "shards"), workers=1, synthetic=synthetic))
    classes = json.loads((root / "shards" / "manifest.json").read_text())["classes"]
    model = build_model("mvit_debug_t0.5_s0.5", num_classes=2)
    save_checkpoint(root / "model.pt", model, meta=checkpoint_meta(model, classes=classes))
    make_video(root / "clip.mp4", frames=24)
    (root / "afile").write_text("a file, not a folder\n")
    return {"root": root, "shards": root / "shards", "model": root / "model.pt", "video": root / "clip.mp4"}


def base(command: str, x: dict[str, Path], tmp: Path) -> list[str]:
    """A command line that runs (quickly) as it is."""
    s, m, v = str(x["shards"]), str(x["model"]), str(x["video"])
    return {
        "train": ["train", "--data", s, "--out", str(tmp / "run"), "--model", "mvit_debug_t0.5_s0.5",
                  "--max-steps", "1", "--epochs", "1", "--batch-size", "1", "--workers", "1",
                  "--decoder", "dali-cpu", "--quiet", "--set", "tensorboard=false", "--set", "val_split=null",
                  "--set", "num_sample=1"],
        "eval": ["eval", "--data", s, "--checkpoint", m, "--views", "1x1", "--device", "cpu",
                 "--decoder", "dali-cpu"],
        "predict": ["predict", v, "--checkpoint", m, "--views", "1x1", "--device", "cpu"],
        "viz": ["viz", v, "--checkpoint", m, "--out", str(tmp / "x.png"), "--device", "cpu"],
        "flops": ["flops", "mvit_debug"],
        "shard": ["shard", "--src", "synthetic", "--out", str(tmp / "sh"), "--num-classes", "2",
                  "--videos-per-class", "1", "--val-videos-per-class", "1", "--frames", "8", "--size", "32",
                  "--workers", "1"],
    }[command]  # fmt: skip


def options(command: str):
    """(flag, type name) of every option that takes a value; flags (booleans) take none."""
    for param in get_command(app).commands[command].params:
        if not param.opts[0].startswith("-") or getattr(param, "is_flag", False) or param.name == "help":
            continue
        annotation = param.type_descriptor.annotation
        yield max(param.opts, key=len), str(getattr(annotation, "__name__", annotation))


CASES = [(c, flag, kind) for c in COMMANDS for flag, kind in options(c)]


def wrong_value(flag: str, kind: str, x: dict[str, Path], tmp: Path) -> str:
    if kind in ("int", "float"):
        return "x"
    if "Path" in kind:  # an output folder that is a file; an input that does not exist
        return str(x["root"] / "afile") if flag == "--out" else str(tmp / "missing" / "x")
    return "bogus"  # names, choices, views, sizes, key=value


def test_every_command_has_options_to_walk():
    counts = {c: sum(1 for case in CASES if case[0] == c) for c in COMMANDS}
    assert all(n >= 1 for n in counts.values()) and len(CASES) > 60, counts


@pytest.mark.parametrize(("command", "flag", "kind"), CASES, ids=[f"{c} {f}" for c, f, _ in CASES])
def test_a_wrong_typed_value_is_one_line_naming_the_flag(inputs, tmp_path, command, flag, kind):
    bad = wrong_value(flag, kind, inputs, tmp_path)
    result = CliRunner().invoke(app, [*base(command, inputs, tmp_path), flag, bad], env=ENV)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output[-2000:]
    assert flag in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_train_decoder_nvdec_is_as_clean_as_evals(inputs, tmp_path):
    for command in ("train", "eval"):
        result = CliRunner().invoke(app, [*base(command, inputs, tmp_path), "--decoder", "nvdec"], env=ENV)
        assert result.exit_code == 2
        assert result.output.strip() == (
            "error: --decoder 'nvdec': choose one of auto, dali-gpu, dali-cpu, pyav"
        )


BAD_SETS = [
    ("grad_accum=two", "expected an integer, got 'two'"),
    ("aug.foo=1", "no such field of AugmentSpec; fields: "),
    ("clip.frames=8", "did you mean num_frames?"),
    ("bogus=1", "no such setting"),
    ("lr=abc", "expected a number, got 'abc'"),
    ("optim.lr=-1", "must be > 0"),
    ("model.t_ratio=0", "t_ratio must be in (0, 1]"),
    ("model.t_ratio=0.05", "keeps no frame"),
    ("model.foo=1", "has no such option; options: "),
    ("model.strategy=best", "selection strategy must be one of"),
    ("epochs=1.5", "expected an integer, got 1.5"),
    ("val_views=[1]", "expected a list [an integer, an integer]"),
    ("aug.randaugment=[1]", "expected a list [an integer, an integer] or null"),
    ("mixed_precision=fp8", "must be one of auto, no, bf16, fp16"),
    ("tensorboard=maybe", "expected true or false"),
    ("grad_accum", "write key=value"),
]


@pytest.mark.parametrize(("setting", "message"), BAD_SETS, ids=[s for s, _ in BAD_SETS])
def test_a_bad_set_is_one_line_naming_the_users_key(inputs, tmp_path, setting, message):
    result = CliRunner().invoke(app, [*base("train", inputs, tmp_path), "--set", setting], env=ENV)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: --set {setting}"), result.output[-2000:]
    assert message in lines[0] and "Traceback" not in result.output
