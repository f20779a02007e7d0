"""DALI's own RandAugment uses its deprecated ``fn.experimental`` aliases: the MViT training graph must not
print DALI's DeprecationWarnings (16-32 per run in a log before), and other warnings must still show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nvidia.dali")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import dataclasses, warnings
from nvidia.dali import fn, pipeline_def, types
from pipelines.augment import MVIT_AUG, train_transform, _without_dali_experimental_alias_warnings

spec = dataclasses.replace(MVIT_AUG, clip=dataclasses.replace(MVIT_AUG.clip, short_side=40, crop_size=32))

@pipeline_def(batch_size=2, num_threads=1, device_id=None, seed=0, enable_conditionals=True)
def pipe():
    frames = fn.random.uniform(range=[0, 255], shape=[4, 48, 64, 3], dtype=types.UINT8)
    return train_transform(fn.reshape(frames, layout="FHWC"), spec, route="dali")

pipe().build()
with _without_dali_experimental_alias_warnings():
    warnings.warn("our own deprecation", DeprecationWarning)  # not DALI's: still shown
    warnings.warn("a user warning", UserWarning)
print("built")
"""


def test_mvit_training_graph_prints_no_dali_alias_deprecations(tmp_path):
    script = tmp_path / "graph.py"  # a file: DALI's conditionals convert the pipeline from its source
    script.write_text(SCRIPT)
    # -W default: show every DeprecationWarning, as a user running with warnings on would see them
    done = subprocess.run(
        [sys.executable, "-W", "default", str(script)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "built" in done.stdout
    assert "fn.experimental" not in done.stderr, done.stderr[-2000:]
    assert "our own deprecation" in done.stderr and "a user warning" in done.stderr
