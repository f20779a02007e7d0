"""`stts eval --checkpoint CKPT --data SHARDS`: multi-view evaluation of a model on a split of shards.

The clip geometry comes from the model (frames and crop size of `stts.registry.input_shape`) and the
recipe (mvit or swin by default from the model's family: sampling, views, resize, normalisation,
aggregation). Prints top-1, top-5, mean class accuracy, GFLOPs per view, clips/s and, where the shards
carry ground truth (the synthetic dataset), the selectors' precision beside random selection's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.main import app, console, err_console, fail, parse_views


@app.command("eval")
def eval_cmd(
    data: Annotated[Path, typer.Option(help="Shards folder (manifest.json, tars) written by `stts shard`.")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="An stts checkpoint; or an official file together with --model.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Zoo name (needed for official checkpoints).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split of the shards to evaluate.")] = "val",
    views: Annotated[
        str | None, typer.Option(help="CLIPSxCROPS, e.g. 10x1 or 4x3 (default: the recipe's).")
    ] = None,
    recipe: Annotated[
        str | None, typer.Option(help="mvit or swin: sampling, views and aggregation (default: the model's).")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="Override the selection: learned, random or uniform (a control).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Views per batch.")] = 8,
    decoder: Annotated[str, typer.Option(help="auto, dali-gpu, dali-cpu or pyav.")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 (default: cuda when available).")] = "auto",
    out: Annotated[
        Path | None, typer.Option(help="Write eval.json and per_class.csv into this folder.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON only (without the per-video list).")
    ] = False,
) -> None:
    """Multi-view evaluation: top-1/top-5, mean class accuracy, GFLOPs per view, clips/s, selection precision."""
    import torch

    from pipelines import build_loader
    from pipelines.loader import DECODERS
    from stts.checkpoint import CheckpointError
    from stts.data import shard_classes
    from stts.evaluate import eval_specs, evaluate, load_eval_model, write_results
    from stts.registry import list_families, spec_of
    from stts.runtime import init_distributed

    if decoder not in DECODERS:
        fail(f"unknown --decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if recipe is not None and recipe not in list_families():
        fail(f"unknown --recipe {recipe!r}; choose one of {', '.join(list_families())}")
    if batch_size < 1:
        fail(f"--batch-size must be >= 1, got {batch_size}")
    try:
        view_counts = parse_views(views)
        classes = shard_classes(data, split)
        net, _ = load_eval_model(checkpoint, model, classes, strategy)
    except (ValueError, CheckpointError) as err:
        fail(str(err))
    if checkpoint is None and not as_json:
        err_console.print(f"[yellow]warning:[/] no --checkpoint: {model} has untrained weights")
    recipe = recipe or spec_of(net).name
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rank, world, device = init_distributed(device)
    try:
        clip, aug = eval_specs(net, recipe, view_counts)
        loader = build_loader(data, split, (clip, aug), batch_size=batch_size, device=device, rank=rank,
                              world_size=world, decoder=decoder, train=False)  # fmt: skip
    except (ValueError, KeyError, FileNotFoundError) as err:
        fail(str(err).strip("'\""))
    net = net.to(device)
    show = not as_json and rank == 0
    result = _run(evaluate, net, loader, classes, recipe, show)
    if rank != 0:
        return
    if out is not None:
        write_results(result, out)
    if as_json:
        summary = result.to_dict()
        summary.pop("per_video")
        summary.update(recipe=recipe, views=result.views, clip=f"{clip.num_clips}x{clip.num_crops}")
        print(json.dumps(summary))
        return
    _print(result, recipe, clip, out)


def _run(evaluate, net, loader, classes, recipe, show):
    if not show:
        return evaluate(net, loader, classes=classes, recipe_aggregation=recipe)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("views", total=loader.rank_samples * len(loader.views))
        return evaluate(
            net,
            loader,
            classes=classes,
            recipe_aggregation=recipe,
            on_batch=lambda n: progress.advance(task, n),
        )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _print(result, recipe: str, clip, out: Path | None) -> None:
    from rich.table import Table

    table = Table(title=f"stts eval · {result.model or 'model'} · {recipe} recipe", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("top-1", _pct(result.top1))
    table.add_row("top-5", _pct(result.top5))
    table.add_row("mean class accuracy", _pct(result.mean_class_accuracy))
    flops = (
        "—" if result.gflops_per_view is None else f"{result.gflops_per_view:.2f} ({result.flops_convention})"
    )
    table.add_row("GFLOPs / view", flops)
    table.add_row("clips/s", f"{result.clips_per_second:.1f}")
    table.add_row("videos", str(result.videos))
    table.add_row(
        "views", f"{result.views} ({clip.num_clips}x{clip.num_crops} per video, {result.aggregation})"
    )
    if result.skipped:
        table.add_row("skipped samples", str(result.skipped))
    sel = result.selection
    if sel is not None:
        if sel.temporal is not None:
            table.add_row(f"temporal precision ({sel.strategy})", _pct(sel.temporal))
            table.add_row("  random selection", _pct(sel.temporal_random))
        if sel.spatial is not None:
            table.add_row(f"spatial precision ({sel.strategy})", _pct(sel.spatial))
            table.add_row("  random selection", _pct(sel.spatial_random))
    console.print(table)
    if out is not None:
        console.print(f"wrote {out / 'eval.json'} and {out / 'per_class.csv'}")
