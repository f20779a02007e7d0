"""Makefile targets that write: `make eval` has its own output folder (the demo's eval/ is the source of
the demo's table and must stay as the demo wrote it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_eval_writes_beside_the_demos_eval_not_over_it():
    def out_of(*args: str) -> str:
        done = subprocess.run(["make", "-n", "eval", *args], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        (line,) = [ln for ln in done.stdout.splitlines() if " eval --checkpoint " in ln]
        return line.split(" --out ")[1].split()[0]

    assert out_of() == "demo_out/runs/stts/make-eval"
    assert out_of("EVAL_CKPT=/runs/a/best.pt") == "/runs/a/make-eval"
    assert out_of("EVAL_OUT=/tmp/x") == "/tmp/x"
