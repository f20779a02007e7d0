"""`stts train`: the official recipes on any shards, from one CPU process to many nodes (Accelerate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.main import app, console, fail


def build_config(
    *,
    backbone: str | None,
    model: str | None,
    t_ratio: float | None,
    s_ratio: float | None,
    strategy: str | None,
    frames: int | None,
    recipe: str | None,
    settings: dict,
    sets: list[str],
):
    """CLI options → `TrainConfig` (the recipe, then the named options, then ``--set``)."""
    from stts.engine.config import apply_settings, recipe_for
    from stts.registry import family_of, family_spec, list_families

    families = list_families()
    if model is None and backbone is None:
        raise ValueError(
            f"say what to train: --backbone {'|'.join(families)} (with --t-ratio/--s-ratio) or --model NAME"
        )
    if model is not None:
        family = family_of(model)
        if backbone is not None and backbone != family:
            raise ValueError(f"--model {model} is a {family} model but --backbone says {backbone}")
    else:
        if backbone not in families:
            raise ValueError(f"--backbone must be one of {', '.join(families)}, got {backbone!r}")
        family = backbone
        official = family_spec(backbone).recipe
        model = (
            official.plain_model if (t_ratio is not None or s_ratio is not None) else official.default_model
        )
    overrides: dict = {}
    if t_ratio is not None:
        overrides["t_ratio"] = t_ratio
    if s_ratio is not None:
        overrides["s_ratio"] = s_ratio
    if strategy is not None:
        overrides["strategy"] = strategy
    if frames is not None:
        overrides["num_frames"] = frames
    cfg = recipe_for(recipe or family)
    cfg = apply_settings(cfg, {"model": model, "model_overrides": overrides, **settings})
    # every setting is checked here (the model's config included), not after the pipelines start
    return apply_settings(cfg, sets)


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Shards folder made by `stts shard` (train and val splits).")],
    out: Annotated[
        Path, typer.Option(help="Run folder: config.yaml, metrics.jsonl, checkpoints/, model.pt, best.pt.")
    ] = Path("runs/stts"),
    backbone: Annotated[str | None, typer.Option(help="mvit or swin (the recipe follows).")] = None,
    t_ratio: Annotated[float | None, typer.Option(help="Share of frames kept (temporal selection).")] = None,
    s_ratio: Annotated[float | None, typer.Option(help="Share of tokens kept per frame (MViT only).")] = None,
    model: Annotated[
        str | None, typer.Option(help="A zoo name instead of --backbone (see `stts flops --all`).")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="Selection: learned (STTS), random or uniform (controls).")
    ] = None,
    init: Annotated[
        Path | None, typer.Option(help="Pretrained backbone checkpoint (selectors start fresh).")
    ] = None,
    recipe: Annotated[str | None, typer.Option(help="mvit or swin (default: the backbone's).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (recipe: MViT 20, Swin 10).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Videos per process per iteration.")] = None,
    lr: Annotated[
        float | None, typer.Option(help="Base learning rate (recipe: MViT 1e-4, Swin 3e-4).")
    ] = None,
    frames: Annotated[
        int | None, typer.Option(help="Clip length in frames (the model's num_frames).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding threads/processes per process.")] = None,
    decoder: Annotated[str | None, typer.Option(help="auto, dali-gpu, dali-cpu or pyav.")] = None,
    mixed_precision: Annotated[str | None, typer.Option(help="no, bf16 or fp16.")] = None,
    deepspeed: Annotated[
        Path | None, typer.Option(help="DeepSpeed JSON config (ZeRO through Accelerate).")
    ] = None,
    zero: Annotated[
        int | None, typer.Option(help="DeepSpeed ZeRO stage 1 or 2 with the shipped config.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of data order, clips and initialisation.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    resume: Annotated[
        bool | None,
        typer.Option(
            "--resume/--no-resume", help="Resume from --out's last checkpoint (default: if there is one)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="key=value for any TrainConfig field, e.g. --set grad_accum=4 --set aug.randaugment=null.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar (log lines only).")] = False,
) -> None:
    """Train an STTS model with the official recipe of its backbone (spec §6).

    Runs as is on one process, and under `accelerate launch` on many GPUs or nodes (every process reads its
    own shards)."""
    from stts.engine import TrainError
    from stts.engine import train as run_training

    named = {
        "data": str(data),
        "out": str(out),
        "init": str(init) if init else None,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "num_threads": workers,
        "decoder": decoder,
        "mixed_precision": mixed_precision,
        "deepspeed": str(deepspeed) if deepspeed else None,
        "zero": zero,
        "seed": seed,
        "max_steps": max_steps,
    }
    named = {k: v for k, v in named.items() if v is not None}
    if init is not None and not init.is_file():
        fail(f"--init {init}: no such file")
    try:
        cfg = build_config(
            backbone=backbone,
            model=model,
            t_ratio=t_ratio,
            s_ratio=s_ratio,
            strategy=strategy,
            frames=frames,
            recipe=recipe,
            settings=named,
            sets=list(set_ or []),
        )
    except ValueError as err:
        fail(str(err))
    try:
        result = run_training(cfg, resume=resume, console=console, progress=not quiet)
    except TrainError as err:
        fail(str(err))
    if result.stopped == "nonfinite":
        raise typer.Exit(3)
    best = f", best val top-1 {result.state.best_top1:.2%}" if result.state.best_top1 is not None else ""
    console.print(
        f"[green]done[/]: {result.state.optimizer_steps} steps, {result.state.epoch} epochs{best} → "
        f"{result.out / 'model.pt'}"
    )
