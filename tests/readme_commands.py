"""The commands of README.md, checked and run as written on a CPU.

Every line of the README's ``bash`` blocks is read (continuations joined, comments dropped) and:

1. checked: each ``stts`` command (also behind ``accelerate launch ... -m cli``) goes through the real CLI
   parser — its command and options exist, its values have the right types; each ``make`` target exists
   (``make -n``);
2. run, in README order, from a sandbox folder, where the README's example inputs are replaced by small
   stand-ins — the only change made to a command:

   ==============================================  ======================================================
   in the README                                   stand-in
   ==============================================  ======================================================
   ``/data/k400``                                  a Kinetics-400 tree: real annotation rows (tests/data),
                                                   generated videos
   ``/shared/...``, ``/data/k400-shards``           the same paths under the sandbox
   ``t0_0.9_s4_0.9.pyth`` and the other official   randomly initialised models saved in that official
   checkpoint files                                format (pySlowFast .pyth, mmcv .pth)
   ``runs/mvit/best.pt``                           a checkpoint of that run's model (the README's own
                                                   1-step training writes no best.pt)
   ``clip1.mp4``, ``clip2.webm``, ``*.mp4``        small generated videos
   ``k400-shards`` (predict's --classes)           the Kinetics shards built above
   ``...``                                         the shards the command needs
   ``make demo`` / ``make eval``                   ``stts demo --quick`` / ``make eval DEMO_OUT=sandbox``
   ==============================================  ======================================================

   Trainings get ``--max-steps 1`` (their length is the recipe's 10–20 epochs). Not run, only checked:
   ``make test`` (this is part of it), the 8- and 16-GPU ``accelerate launch`` lines (the 2-process CPU
   line runs).

``--cheap`` runs what takes seconds (tests/test_readme.py, in the default suite); without it everything,
full-size models included (``python tests/readme_commands.py`` — about 15 minutes on 2 cores, under
``flock /tmp/stts-heavy.lock``).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent


@dataclass
class Command:
    line: str  # as written in the README (continuations joined)
    words: list[str]

    @property
    def kind(self) -> str:
        w = [x for x in self.words if "=" not in x or x.startswith("-")]  # drop VAR=value prefixes
        if not w:
            return "other"
        if w[0] == "stts":
            return "stts"
        if w[0] == "accelerate":
            return "accelerate"
        return w[0]  # make, python

    def stts_args(self) -> list[str]:
        """The arguments of the stts command inside (``stts X ...`` or ``accelerate launch ... -m cli X``)."""
        if self.kind == "stts":
            return self.words[self.words.index("stts") + 1 :]
        if self.kind == "accelerate":
            return self.words[self.words.index("cli") + 1 :]
        raise ValueError(self.line)


def readme_commands(text: str | None = None) -> list[Command]:
    """Every command line of the README's bash blocks, in order."""
    text = README.read_text() if text is None else text
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for raw in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", raw).strip()
            if not line or line.startswith("#"):
                continue
            commands.append(Command(line, shlex.split(line)))
    return commands


# ------------------------------------------------------------------------------------------------ check


def check(command: Command) -> None:
    """Parse without running: the command and its options exist and the values have the right types
    (placeholders — ``...``, ``$NODE_RANK`` — are filled first)."""
    if command.kind in ("stts", "accelerate"):
        from typer.main import get_command

        from cli.main import app

        args = _fill_placeholders(command.stts_args())
        group = get_command(app)
        name, rest = args[0], args[1:]
        assert name in group.commands, f"{command.line}: no command {name!r}"
        with group.make_context("stts", [name]) as ctx:
            cmd = group.commands[name]
            cmd.make_context(name, rest, parent=ctx)  # raises on an unknown option or a bad value
    elif command.kind == "make":
        targets = [w for w in command.words[1:] if "=" not in w]
        done = subprocess.run(["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"{command.line}: {done.stderr.strip()}"
    elif command.kind == "python":
        assert command.words[1] == "-c", command.line
        compile(command.words[2], "<readme>", "exec")
    else:
        raise AssertionError(f"a README command of unknown kind: {command.line}")


def _fill_placeholders(args: list[str], shards: str = "SHARDS") -> list[str]:
    """``--data ...`` → ``--data SHARDS``; a trailing ``...`` (more options) → ``--data SHARDS``."""
    out: list[str] = []
    for a in args:
        if a == "...":
            out += [shards] if out and out[-1] == "--data" else ["--data", shards]
        else:
            out.append(a)
    return out


# -------------------------------------------------------------------------------------------------- run


CHEAP = (
    "stts shard --src kinetics400",
    "make eval",
    "stts eval --checkpoint demo_out/",
    "stts viz --data demo_out/",
)
NOT_RUN = ("make test", "--num_processes 8", "--num_processes 16")


def sandbox(root: Path, *, cheap: bool) -> dict[str, Path]:
    """The stand-in inputs under ``root``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import K400_TRAIN_CSV, k400_rows, k400_stem, make_video, write_k400_csv

    k400 = root / "data" / "k400"
    for split, source, n in (("val", None, 2), ("train", K400_TRAIN_CSV, 2)):
        rows = k400_rows(source=source) if source else k400_rows()
        rows = rows[:n]
        ids = [r["youtube_id"] for r in rows]
        write_k400_csv(k400 / "annotations" / f"{split}.csv", ids, **({"source": source} if source else {}))
        for i, row in enumerate(rows):
            make_video(k400 / split / f"{k400_stem(row)}.mp4", frames=48, width=96, height=72, seed=i)
    make_video(root / "clip1.mp4", frames=48, width=96, height=72, seed=7)
    make_video(root / "clip2.webm", frames=48, width=96, height=72, codec="vp9", seed=8)
    if not cheap:
        _official_stand_ins(root)
    return {"k400": k400}


def _official_stand_ins(root: Path) -> None:
    """Randomly initialised models in the official formats, and our checkpoints where the README reads a
    run's best.pt (400 Kinetics classes)."""
    from shards.classes import kinetics400_classes
    from stts.checkpoint import export_mmcv, export_pyslowfast, save_checkpoint
    from stts.registry import build_model, checkpoint_meta

    export_pyslowfast(build_model("mvit_b_16x4_t0.9_s0.9"), root / "t0_0.9_s4_0.9.pyth")
    plain = build_model("mvit_b_16x4")
    for name in ("mvit_b_16x4_k400.pyth", "mvit_b_16x4.pyth"):
        export_pyslowfast(plain, root / name)
    export_mmcv(build_model("swin_b_32x2"), root / "swin_b_k400_22k.pth")
    model = build_model("mvit_b_16x4_t0.6_s0.9")
    meta = checkpoint_meta(model, classes=kinetics400_classes())
    for run in (root / "runs" / "mvit", root / "shared" / "runs" / "mvit_t0.6_s0.9"):
        save_checkpoint(run / "best.pt", model, meta=meta)


def localise(command: Command, root: Path) -> list[str]:
    """The command with the README's example paths replaced by the sandbox's stand-ins."""
    words = []
    for w in command.words:
        w = re.sub(r"(?<![\w.])/(data|shared)/", lambda m: f"{root}/{m[1]}/", w)  # also inside python -c
        if w == "k400-shards":
            w = str(root / "data" / "k400-shards")
        if w == "*.mp4":
            words += sorted(str(p) for p in root.glob("*.mp4"))
            continue
        words.append(w)
    words = _fill_placeholders(words, str(root / "data" / "k400-shards"))
    if command.kind == "stts" and words[1] == "train" or command.kind == "accelerate":
        words += ["--max-steps", "1"]
    if "ACCELERATE_USE_CPU=1" in words:  # the 2-process CPU line: small data, a debug model
        words = [
            w.replace(str(root / "data" / "k400-shards"), str(root / "demo_out" / "shards")) for w in words
        ]
        words += ["--out", str(root / "runs" / "ddp"), "--set", "val_split=null"]
    return words


def run(command: Command, root: Path, env: dict[str, str]) -> tuple[int, float, str]:
    words = localise(command, root)
    assigns = {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        key, value = words.pop(0).split("=", 1)
        assigns[key] = value
    cwd = root
    if words[0] == "stts":
        words[0] = str(BIN / "stts")
    elif words[0] == "accelerate":
        words[0] = str(BIN / "accelerate")
        words[words.index("launch") + 1 : words.index("launch") + 1] = ["--main_process_port", "0"]
    elif words[0] == "python":
        words[0] = sys.executable
    elif words[:2] == ["make", "demo"]:
        words = [str(BIN / "stts"), "demo", "--quick", "--out", str(root / "demo_out")]
    elif words[:2] == ["make", "eval"]:
        words = ["make", "eval", f"DEMO_OUT={root / 'demo_out'}"]
        cwd = ROOT
    t0 = time.perf_counter()
    done = subprocess.run(
        words, cwd=cwd, env={**env, **assigns}, capture_output=True, text=True, timeout=3600
    )
    return done.returncode, time.perf_counter() - t0, (done.stdout + done.stderr)[-3000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cheap", action="store_true", help="only the commands that take seconds")
    parser.add_argument("--root", type=Path, help="sandbox folder (default: a new temporary one)")
    parser.add_argument("--demo", type=Path, help="a finished `stts demo` folder to use as demo_out/")
    args = parser.parse_args()
    import tempfile

    root = args.root or Path(tempfile.mkdtemp(prefix="stts-readme-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    commands = readme_commands()
    for c in commands:
        check(c)
    print(f"checked {len(commands)} README commands (options and values parse)", flush=True)
    sandbox(root, cheap=args.cheap)
    if args.demo is not None:
        (root / "demo_out").symlink_to(args.demo.resolve(), target_is_directory=True)
    failed = 0
    # the demo first: later commands read demo_out/
    ordered = sorted(commands, key=lambda c: c.words[:2] != ["make", "demo"])
    for c in ordered:
        if any(s in c.line for s in NOT_RUN) or (args.cheap and not any(s in c.line for s in CHEAP)):
            continue
        if c.words[:2] == ["make", "demo"] and args.demo is not None:
            continue
        code, seconds, tail = run(c, root, env)
        print(f"{'ok ' if code == 0 else 'FAIL'} {seconds:6.1f}s  {c.line}", flush=True)
        if code != 0:
            failed += 1
            print(tail, flush=True)
    shutil.rmtree(root / "data" / "k400", ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
