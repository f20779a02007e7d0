"""`stts demo` (`make demo`): the whole idea on a laptop CPU in minutes.

Builds the synthetic dataset, trains a debug-size STTS-MViT, the same model with random selection and its
all-token baseline (same recipe, same seed, same number of steps), evaluates all three on the val split,
prints one table (top-1, GFLOPs per view, clips/s, selection precision against the ground truth and
against what random selection of the same k gets), draws the STTS model's selection on a val sample, and
says where every output is.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.main import app, console, fail


@dataclass(frozen=True)
class DemoRun:
    name: str  # run folder under OUT/runs
    label: str  # row label of the table
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoPlan:
    """Everything the demo does, as data (tuned so that the comparison is clear on 2 CPU cores)."""

    synthetic: dict[str, Any]
    runs: tuple[DemoRun, ...]
    train: dict[str, Any]  # TrainConfig fields on top of the MViT recipe
    eval_views: tuple[int, int] = (2, 1)
    eval_batch: int = 16


# What makes a debug-size model learn in a minute on 2 cores (measured, see README "make demo"): the
# colour-coded synthetic events (the class is seen at once when the event is kept, so accuracy is decided
# by what the selectors keep), objects of 0.3 cell, 12 informative frames of 32 (every window holds at
# least two clip frames), lr 3e-4 (1e-3 diverges from scratch), no head dropout or drop path, and no
# augmentation that could cut the event or change its colour.
_SYNTHETIC = {
    "num_classes": 4,
    "train_per_class": 40,
    "val_per_class": 16,
    "frames": 32,
    "size": 64,
    "informative_frames": 12,
    "grid": 2,
    "cue": "color",
    "object_size": 0.3,
}
_MODEL = {"head_dropout": 0.0, "drop_path_rate": 0.0}
_TRAIN = {
    "epochs": 15,
    "batch_size": 8,
    "num_sample": 1,
    "lr": 3e-4,
    "min_lr": 1e-5,
    "lr_schedule": "cosine",
    "warmup_epochs": 1.0,
    "mixup": False,
    "label_smoothing": 0.0,
    "aug": {"randaugment": None, "erase_prob": 0.0, "rrc_scale": (1.0, 1.0), "rrc_ratio": (1.0, 1.0)},
    "eval_every": 5,
    "log_every": 20,
}
DEMO = DemoPlan(
    synthetic=_SYNTHETIC,
    runs=(
        DemoRun("stts", "STTS (learned)", "mvit_debug_t0.5_s0.5", _MODEL),
        DemoRun("random", "random selection", "mvit_debug_t0.5_s0.5", {**_MODEL, "strategy": "random"}),
        DemoRun("baseline", "all tokens", "mvit_debug", _MODEL),
    ),
    train=_TRAIN,
)
QUICK = replace(
    DEMO,
    synthetic={**_SYNTHETIC, "train_per_class": 4, "val_per_class": 2, "frames": 16},
    train={**_TRAIN, "epochs": 1, "eval_every": 0},
    eval_views=(1, 1),
)


def _shards(out: Path, plan: DemoPlan) -> Path:
    """The synthetic shards; reused when a finished build with the same options is already there."""
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig

    synthetic = SyntheticConfig(**plan.synthetic)
    stamp = out / ".demo-synthetic.json"
    wanted = json.dumps(synthetic.__dict__, sort_keys=True)
    if (out / "manifest.json").is_file() and stamp.is_file() and stamp.read_text() == wanted:
        console.print(f"shards: reusing {out}")
        return out
    console.rule("[bold]1. synthetic dataset → shards")
    build_shards(ShardConfig(src="synthetic", out=str(out), workers=2, synthetic=synthetic, overwrite=True))
    stamp.write_text(wanted)
    return out


def _train(run: DemoRun, data: Path, runs: Path, plan: DemoPlan, seed: int):
    from stts.engine import apply_settings, recipe_for, train
    from stts.registry import family_of

    settings = {
        "model": run.model,
        "model_overrides": dict(run.overrides),
        "data": str(data),
        "out": str(runs / run.name),
        "seed": seed,
        "tensorboard": False,
        **plan.train,
    }
    cfg = apply_settings(recipe_for(family_of(run.model)), settings)
    if (runs / run.name / "model.pt").is_file() and (runs / run.name / "config.yaml").is_file():
        from stts.engine import load_config

        if load_config(runs / run.name / "config.yaml").to_dict() == cfg.to_dict():
            console.print(f"{run.label}: reusing {runs / run.name / 'model.pt'}")
            return runs / run.name / "model.pt"
        import shutil

        shutil.rmtree(runs / run.name)
    t0 = time.perf_counter()
    train(cfg, console=console, resume=False)
    console.print(f"{run.label}: trained in {time.perf_counter() - t0:.0f} s")
    return runs / run.name / "model.pt"


def _evaluate(checkpoint: Path, data: Path, plan: DemoPlan, out: Path):
    from pipelines import build_loader
    from stts.data import shard_classes
    from stts.evaluate import eval_specs, evaluate, write_results
    from stts.registry import model_from_checkpoint

    classes = shard_classes(data, "val")
    model, _ = model_from_checkpoint(checkpoint)
    clip, aug = eval_specs(model, views=plan.eval_views)
    loader = build_loader(data, "val", (clip, aug), batch_size=plan.eval_batch, train=False)
    result = evaluate(model, loader, classes=classes)
    write_results(result, out)
    return result


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _table(rows: list[tuple[DemoRun, Any]], chance: float):
    from rich.table import Table

    table = Table(
        title="stts demo · synthetic val split",
        title_justify="left",
        caption="frames/windows in event: share of the kept frames inside the informative frames and of the "
        "kept windows centred on the event's region; chance: what a random choice of the same k gets",
        caption_justify="left",
    )
    for col in ("model", "top-1", "GFLOPs/view", "clips/s", "frames in event", "windows on event"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for run, res in rows:
        sel = res.selection
        table.add_row(
            run.label,
            _pct(res.top1),
            f"{res.gflops_per_view:.3f}" if res.gflops_per_view is not None else "—",
            f"{res.clips_per_second:.1f}",
            _pct(sel.temporal if sel else None),
            _pct(sel.spatial if sel else None),
        )
    stts_sel = rows[0][1].selection
    table.add_row(
        "chance",
        f"{100 * chance:.1f} %",
        "",
        "",
        _pct(stts_sel.temporal_random if stts_sel else None),
        _pct(stts_sel.spatial_random if stts_sel else None),
        style="dim",
    )
    return table


def _markdown(rows: list[tuple[DemoRun, Any]], chance: float) -> str:
    lines = [
        "| model | top-1 | GFLOPs/view | clips/s | kept frames in the event | kept windows on the event |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run, res in rows:
        sel = res.selection
        lines.append(
            f"| {run.label} | {_pct(res.top1)} | {res.gflops_per_view:.3f} | {res.clips_per_second:.1f} | "
            f"{_pct(sel.temporal if sel else None)} | {_pct(sel.spatial if sel else None)} |"
        )
    sel = rows[0][1].selection
    lines.append(
        f"| chance | {100 * chance:.1f} % | | | {_pct(sel.temporal_random if sel else None)} | "
        f"{_pct(sel.spatial_random if sel else None)} |"
    )
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _viz_sample(result) -> str:
    """A val sample the STTS model classifies correctly (the first one), else the first one."""
    for video in result.per_video:
        if video["top5"] and video["top5"][0] == video["label"]:
            return video["key"]
    return result.per_video[0]["key"]


def run_demo(out: Path, *, plan: DemoPlan = DEMO, seed: int = 0) -> dict:
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = _shards(out / "shards", plan)
    runs = out / "runs"
    checkpoints = {}
    for i, run in enumerate(plan.runs, start=2):
        console.rule(f"[bold]{i}. train: {run.label} ({run.model})")
        checkpoints[run.name] = _train(run, data, runs, plan, seed)
    console.rule(f"[bold]{len(plan.runs) + 2}. evaluate on the val split")
    rows = []
    for run in plan.runs:
        res = _evaluate(checkpoints[run.name], data, plan, runs / run.name / "eval")
        rows.append((run, res))
        console.print(f"{run.label}: top-1 {_pct(res.top1)}")
    from stts.data import shard_classes

    chance = 1.0 / len(shard_classes(data, "val"))
    console.print(_table(rows, chance))
    _write(out / "demo.md", _markdown(rows, chance))
    summary = {
        "rows": [{"run": r.name, "label": r.label, "model": r.model, **res.to_dict()} for r, res in rows],
        "chance_top1": chance,
        "seconds": time.perf_counter() - t_start,
    }
    for row in summary["rows"]:
        row.pop("per_video", None)
        row.pop("per_class", None)
    _write(out / "demo.json", json.dumps(summary, indent=1))

    from .viz import viz

    key = _viz_sample(rows[0][1])
    png = out / "selection.png"
    viz(video=None, checkpoint=checkpoints[plan.runs[0].name], out=png, data=data, key=key, split="val")
    minutes = (time.perf_counter() - t_start) / 60
    console.print(f"\n[bold green]demo done[/] in {minutes:.1f} min. Outputs:")
    for what, path in [
        ("shards", data),
        ("runs (config.yaml, metrics.jsonl, checkpoints/, model.pt)", runs),
        ("evaluations (eval.json, per_class.csv)", runs / "*" / "eval"),
        ("the table", out / "demo.md"),
        ("all figures", out / "demo.json"),
        ("the selection picture", png),
    ]:
        console.print(f"  {what}: {path}")
    return summary


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for every output of the demo.")] = Path("demo_out"),
    seed: Annotated[int, typer.Option(help="Seed of the trainings.")] = 0,
    quick: Annotated[bool, typer.Option(help="A tiny version (seconds; for smoke tests).")] = False,
) -> None:
    """The whole idea in a few minutes on a CPU: train STTS and two controls, compare, draw.

    Builds the synthetic dataset, trains STTS, random selection and the all-token baseline, evaluates them,
    prints one table and draws the learned selection (about 3 minutes on 2 CPU cores)."""
    from stts.engine import TrainError

    try:
        run_demo(out, plan=QUICK if quick else DEMO, seed=seed)
    except (TrainError, ValueError) as err:
        fail(str(err))
