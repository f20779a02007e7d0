"""`stts bench`: the data-pipeline, inference and training-step benchmarks in one run, with a dated summary.

The benchmarks live in the repository's ``benchmarks/`` folder (not in the installed package): this command
imports them from there by path, so it works from a clone. Each writes its own dated result file as when run
alone; then one summary ``{date}-bench-{machine}.md`` (+ ``.json``) lists their headline figures and links.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .main import app, console, fail

BENCHMARKS = ("shard", "loader", "inference", "train")
ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
QUICK_OUT = ROOT / ".cache" / "bench" / "results-quick"

# the smallest arguments each benchmark accepts (bench_loader's --quick writes no result file)
QUICK_ARGS = {
    "shard": ["--videos", "4", "--seconds", "2", "--repeats", "1"],
    "loader": ["--quick"],
    # the CPU rows on any machine: a smoke run is the same everywhere (the GPU rows: bench_*.py --device cuda)
    "inference": ["--family", "mvit", "--rounds", "1", "--device", "cpu"],
    "train": ["--quick", "--device", "cpu"],
}
WRITES_IN_QUICK = {"shard", "inference", "train"}


def load_module(name: str):
    """``benchmarks/{name}.py`` as a module (kept in sys.modules: the benchmarks import each other)."""
    if name in sys.modules:
        return sys.modules[name]
    path = BENCH_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def git_commit() -> str | None:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True,
            timeout=10,
        )  # fmt: skip
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def parse_only(text: str | None) -> list[str]:
    if text is None:
        return list(BENCHMARKS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        fail(f"--only {text!r}: unknown benchmark {', '.join(unknown) or '(none given)'}; "
             f"choose from {','.join(BENCHMARKS)}")  # fmt: skip
    return [n for n in BENCHMARKS if n in names]


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def headline(name: str, results: dict) -> list[str]:
    """The figures a reader wants first, from a benchmark's result JSON ``results``."""
    out: list[str] = []
    if name == "shard":
        out.append(f"--probe fast, 2 workers: {_pct(results.get('fast_vs_copy'))} of the copy speed "
                   f"({_pct(results.get('fast_no_fsync_vs_copy'))} with --no-fsync)")  # fmt: skip
        if results.get("full_probe_ms_per_video") is not None:
            out.append(f"full-decode probe: +{results['full_probe_ms_per_video']:.1f} ms per video")
        if results.get("gop16_vs_gop250_clip_speedup") is not None:
            out.append(f"GOP 16 vs 250 clip access: {results['gop16_vs_gop250_clip_speedup']:.1f}x")
    elif name == "loader":
        for kind, ratio in (results.get("ours_vs_best_peer") or {}).items():
            out.append(f"{kind} shards: ours {ratio:.2f}x the best peer loader")
    elif name == "inference":
        models = results.get("models") or {}
        for model, r in models.items():
            if r.get("flops_ratio", 1) > 1:
                out.append(f"{model}: {r['speedup']:.2f}x ({r['efficiency']:.0%} of the FLOPs ratio)")
    elif name == "train":
        for r in results.get("pairs") or []:
            wait = (r.get("stts_data_wait") or {}).get("share")
            mem = r.get("stts_peak_mib"), r.get("baseline_peak_mib")
            text = f"{r['stts']}: {r['stts_s']:.3f} vs {r['baseline_s']:.3f} s/step, {r['speedup']:.2f}x"
            if None not in mem:
                text += f", {mem[0]:,.0f} vs {mem[1]:,.0f} MiB"
            if wait is not None:
                text += f", data wait {wait:.0%}"
            out.append(text)
        out += [f"note: {n}" for n in results.get("notes") or []]
    return out


@app.command()
def bench(
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Smoke run: tiny corpora and the smallest settings (results in .cache/bench/...)."
        ),
    ] = False,
    only: Annotated[
        str | None, typer.Option(help=f"Comma-separated subset of {','.join(BENCHMARKS)} (default: all).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Result folder (default: benchmarks/results; with --quick .cache/bench/results-quick)."
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads for the model benchmarks (default: torch's).")
    ] = None,
) -> None:
    """Run the benchmarks (sharding, loader, inference, training step) with dated results.

    Each benchmark writes its own dated result file; a summary naming the machine and the commit goes beside
    them."""
    from rich.table import Table

    selected = parse_only(only)
    if threads is not None and threads < 1:
        fail(f"--threads must be >= 1, got {threads}")
    if not (BENCH_DIR / "common.py").is_file():
        fail(f"stts bench runs from a clone of the repository: no benchmarks/ folder at {BENCH_DIR}")
    out_dir = (out or (QUICK_OUT if quick else BENCH_DIR / "results")).resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"cannot create the result folder {out_dir}: {err.strerror}")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    common = load_module("common")
    info = common.machine()
    t_start = time.perf_counter()
    runs: dict[str, dict] = {}
    for name in selected:
        argv = [*(QUICK_ARGS[name] if quick else []), "--out", str(out_dir)]
        if name == "train" and threads is not None:
            argv += ["--threads", str(threads)]
        console.rule(f"[bold]bench {name}[/] {' '.join(argv)}")
        t0 = time.perf_counter()
        run: dict = {"args": argv}
        try:
            load_module(f"bench_{name}").main(argv)
            run["status"] = "ok"
        except KeyboardInterrupt:
            raise
        except SystemExit as err:  # argparse
            run.update(status="failed", error=f"exit {err.code}")
        except Exception as err:  # noqa: BLE001 - one failing benchmark must not lose the others
            run.update(status="failed", error=f"{type(err).__name__}: {err}".splitlines()[0][:300])
        run["seconds"] = time.perf_counter() - t0
        base = common.result_base(name, info, out_dir)
        written = base.with_suffix(".json")
        if (
            run["status"] == "ok"
            and written.is_file()
            and written.stat().st_mtime >= time.time() - run["seconds"] - 5
        ):
            run["file"] = base.with_suffix(".md").name
            with contextlib.suppress(ValueError, OSError):
                run["headline"] = headline(name, json.loads(written.read_text()).get("results", {}))
        elif run["status"] == "ok":
            run["headline"] = ["smoke run: no result file (bench_loader --quick writes none)"]
        runs[name] = run

    total = time.perf_counter() - t_start
    commit = git_commit()
    results = {"quick": quick, "only": selected, "commit": commit, "total_s": total, "benchmarks": runs}
    lines = [
        f"`stts bench{' --quick' if quick else ''} --only {','.join(selected)}` at commit `{commit or 'unknown'}`, "
        f"host `{info['host']}`; total {total:.0f} s.",
        "",
        "| benchmark | status | seconds | headline | details |",
        "|---|---|---:|---|---|",
    ]
    for name, run in runs.items():
        heads = "<br>".join(run.get("headline") or [run.get("error", "")])
        link = f"[{run['file']}]({run['file']})" if run.get("file") else "—"
        lines.append(f"| {name} | {run['status']} | {run['seconds']:.0f} | {heads} | {link} |")
    if quick:
        lines += ["", "Smoke run (`--quick`): tiny corpora, not figures to compare."]
    path = common.write_result("bench", info, results, "\n".join(lines), out_dir)

    table = Table(title=f"stts bench — {info['cpu']}, {info['cores']} cores, GPU: {info['gpu'] or 'none'}")
    for col in ("benchmark", "status", "s", "headline", "file"):
        table.add_column(col, justify="right" if col == "s" else "left")
    for name, run in runs.items():
        style = "green" if run["status"] == "ok" else "red"
        table.add_row(name, f"[{style}]{run['status']}[/]", f"{run['seconds']:.0f}",
                      "\n".join(run.get("headline") or [run.get("error", "")]), run.get("file", "—"))  # fmt: skip
    console.print(table)
    console.print(f"summary: {path} (total {total:.0f} s, commit {commit or 'unknown'})", highlight=False)
    if any(r["status"] != "ok" for r in runs.values()):
        raise typer.Exit(1)
