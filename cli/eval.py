"""`stts eval --checkpoint CKPT --data SHARDS`: multi-view evaluation of a model on a split of shards.

The clip geometry comes from the model (frames and crop size of `stts.registry.input_shape`) and the
recipe (mvit or swin by default from the model's family: sampling, views, resize, normalisation,
aggregation). Prints top-1, top-5, mean class accuracy, GFLOPs per view, clips/s and, where the shards
carry ground truth (the synthetic dataset), the selectors' precision beside random selection's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.main import (
    app,
    check_choice,
    check_decoder,
    check_device,
    check_folder,
    check_model_name,
    check_output_folder,
    console,
    err_console,
    fail,
    parse_views,
)


def shard_classes(data: Path, split: str) -> list[str]:
    """The class names of a shards folder (manifest.json, else classes.txt); checks the split exists."""
    manifest_path = data / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(
            f"no manifest.json in {data}: give the folder `stts shard --out` wrote (or build it first)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        raise ValueError(f"{manifest_path} is not valid JSON: rebuild the shards with `stts shard`") from None
    splits = manifest.get("splits", {})
    if split not in splits:
        raise ValueError(
            f"{data} has no split {split!r} (it has {', '.join(sorted(splits)) or 'none'}); pick --split"
        )
    classes = manifest.get("classes")
    if not classes and (data / "classes.txt").is_file():
        classes = [ln.strip() for ln in (data / "classes.txt").read_text().splitlines() if ln.strip()]
    if not classes:
        raise ValueError(f"{data}: no class list in manifest.json or classes.txt; rebuild the shards")
    return list(classes)


def load_eval_model(
    checkpoint: Path | None, model_name: str | None, classes: list[str], strategy: str | None
):
    """(model, meta) for the shards' classes; ValueError / CheckpointError with a one-line reason."""
    from stts.checkpoint import checkpoint_file
    from stts.registry import build_model, family_of, model_from_checkpoint

    overrides: dict[str, Any] = {"strategy": strategy} if strategy else {}
    if model_name is not None:
        family_of(model_name)  # an unknown name fails before any file is read
    if checkpoint is None:
        if model_name is None:
            raise ValueError(
                "give --checkpoint PATH (an stts checkpoint, or an official file with --model NAME)"
            )
        return build_model(model_name, num_classes=len(classes), **overrides), {}
    checkpoint_file(checkpoint)  # says what a folder or a missing path is
    if model_name is not None:
        overrides["num_classes"] = len(classes)
    model, meta = model_from_checkpoint(checkpoint, name=model_name, **overrides)
    saved = meta.get("classes")
    if saved is not None and len(saved) != len(classes):
        raise ValueError(
            f"{checkpoint} was trained on {len(saved)} classes, the shards have {len(classes)}: "
            "evaluate on shards of the same dataset"
        )
    if model.cfg.num_classes != len(classes):
        raise ValueError(
            f"{checkpoint} predicts {model.cfg.num_classes} classes, the shards have {len(classes)}: "
            "evaluate on shards of the same dataset"
        )
    return model, meta


def eval_recipe(model, recipe: str, views: tuple[int, int] | None):
    """(ClipSpec, AugmentSpec) of ``recipe`` fitted to the model's input (`pipelines.recipes`)."""
    from pipelines.recipes import recipe_for_model

    return recipe_for_model(model, family=recipe, views=views)


def _distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) — joins the process group when launched by torchrun / accelerate."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        if device.startswith("cuda") and ":" not in device:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, device


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
    seed: Annotated[
        int,
        typer.Option(help="Seed of random selection (--strategy random): the same seed, the same result."),
    ] = 0,
) -> None:
    """Multi-view evaluation: top-1/top-5, mean class accuracy, GFLOPs per view, clips/s, selection precision."""

    from pipelines import build_loader
    from pipelines.sampling import CLIP_SPECS
    from stts.checkpoint import CheckpointError
    from stts.evaluate import evaluate, write_results
    from stts.models.swin import VideoSwin
    from stts.selection import STRATEGIES

    check_decoder("--decoder", decoder)
    check_choice("--recipe", recipe, CLIP_SPECS)
    check_choice("--strategy", strategy, STRATEGIES)
    check_model_name("--model", model)
    check_folder("--data", data, "the folder `stts shard --out` wrote")
    check_output_folder("--out", out)
    device = check_device("--device", device)
    if batch_size < 1:
        fail(f"--batch-size must be >= 1, got {batch_size}")
    try:
        view_counts = parse_views(views)
        classes = shard_classes(data, split)
        net, _ = load_eval_model(checkpoint, model, classes, strategy)
    except CheckpointError as err:
        fail(f"--checkpoint: {err}")
    except ValueError as err:
        fail(str(err))
    if checkpoint is None and not as_json:
        err_console.print(f"[yellow]warning:[/] no --checkpoint: {model} has untrained weights")
    recipe = recipe or ("swin" if isinstance(net, VideoSwin) else "mvit")
    rank, world, device = _distributed(device)
    try:
        clip, aug = eval_recipe(net, recipe, view_counts)
        loader = build_loader(data, split, (clip, aug), batch_size=batch_size, device=device, rank=rank,
                              world_size=world, decoder=decoder, train=False, seed=seed)  # fmt: skip
    except (ValueError, KeyError, FileNotFoundError) as err:
        fail(str(err).strip("'\""))
    net = net.to(device)
    show = rank == 0  # on stderr: --json's stdout stays one JSON object
    result = _run(evaluate, net, loader, classes, recipe, show, seed)
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


def _run(evaluate, net, loader, classes, recipe, show, seed):
    """``evaluate`` with progress on stderr (rank 0): a bar on a terminal, plain lines in a log."""
    from stts.progress import ProgressLog

    total = loader.rank_samples * len(loader.views)
    mode = "auto" if show else "none"
    with ProgressLog("eval", total, console=err_console, mode=mode, unit="views", transient=True) as progress:
        return evaluate(
            net,
            loader,
            classes=classes,
            recipe_aggregation=recipe,
            on_batch=lambda n: progress.update(advance=n),
            seed=seed,
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
