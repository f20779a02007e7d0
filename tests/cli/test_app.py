"""The `stts` app as a user meets it: help, version, and the console script itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

COMMANDS = ["shard", "models", "flops", "train", "eval", "predict", "viz", "bench", "demo"]


def test_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_every_command_has_help():
    for name in COMMANDS:
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("stts ")


def test_console_script_and_module_entry_agree():
    script = Path(sys.executable).parent / "stts"
    a = subprocess.run([str(script), "--help"], capture_output=True, text=True, env={"COLUMNS": "120"})
    b = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True, text=True,
                       env={"COLUMNS": "120"})  # fmt: skip
    assert a.returncode == b.returncode == 0
    assert "shard" in a.stdout and a.stdout == b.stdout
