"""The README's commands run as written (tests/readme_commands.py): all of them parse with the real CLI
(options exist, values have the right types; make targets exist), and the ones that take seconds on a CPU
run, from a sandbox with small stand-ins for the README's example inputs. The full set (full-size models,
1 training step each) is `python tests/readme_commands.py`, about 15 minutes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_commands import ROOT, check, readme_commands  # noqa: E402


def test_every_readme_command_parses():
    commands = readme_commands()
    kinds = {c.kind for c in commands}
    assert {"stts", "accelerate", "make", "python"} <= kinds and len(commands) >= 20
    for command in commands:
        check(command)


def test_a_readme_option_that_does_not_exist_is_caught():
    (bad,) = readme_commands("```bash\nstts eval --checkpoint a.pt --data x --view 5x1\n```\n")
    with pytest.raises(Exception, match="--view"):
        check(bad)


def test_the_cheap_readme_commands_run(quick_demo, tmp_path):
    demo, _ = quick_demo
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tests" / "readme_commands.py"), "--cheap", "--root", str(tmp_path),
           "--demo", str(demo)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    ran = [ln for ln in done.stdout.splitlines() if ln.startswith("ok ")]
    assert len(ran) == 7, done.stdout  # 4 shard commands, eval --strategy random, make eval, viz --data
    assert (demo / "runs" / "stts" / "make-eval" / "eval.json").is_file() and (tmp_path / "sel.png").is_file()
