"""`stts train`: the official recipes on any shards, from one CPU process to many nodes (Accelerate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.main import (
    app,
    check_choice,
    check_decoder,
    check_folder,
    check_model_name,
    check_output_folder,
    console,
    fail,
)


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
    from stts.engine.config import ConfigError, apply_settings, recipe_for
    from stts.registry import family_of, family_spec, list_families, list_models

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
        plain = family_spec(backbone).recipe.plain_model
        if t_ratio is None and s_ratio is None:
            # the recipe is not a model: five MViT and five Swin configs share it, and a silent pick trains
            # one nobody asked for (pySlowFast and mmaction configs name the model, timm scripts --model)
            zoo = [n for n in list_models(backbone) if "debug" not in n and n != plain]
            raise ValueError(
                f"--backbone {backbone} picks the recipe; say the model too: --t-ratio R [--s-ratio R] "
                f"(selection added to {plain}) or --model NAME, one of {', '.join(zoo)} (`stts models`)"
            )
        model = plain
    for flag, value in (("--t-ratio", t_ratio), ("--s-ratio", s_ratio)):
        if value is not None and not 0 < value <= 1:
            raise ValueError(
                f"{flag} {value:g}: the share of {_RATIOS[flag][1]} to keep, in (0, 1]; e.g. {flag} 0.5"
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
    # every setting is checked here (the model's config included), not after the pipelines start; an error
    # names the user's own flag or --set key
    named = {**settings, "model": model, **{f"model.{k}": v for k, v in overrides.items()}}
    try:
        cfg = apply_settings(cfg, {"model": model, "model_overrides": overrides, **settings})
    except ConfigError as err:
        raise ValueError(_flag_error(err, named)) from None
    try:
        cfg = apply_settings(cfg, sets)
    except ConfigError as err:
        raise ValueError(_set_error(err, sets)) from None
    _check_selection(cfg, {"--t-ratio": t_ratio, "--s-ratio": s_ratio})
    frozen_given = any(s.split("=", 1)[0].strip().endswith("frozen_backbone_epochs") for s in sets)
    if not cfg.model.init and cfg.optim.frozen_backbone_epochs > 0 and not frozen_given:
        # from scratch there is no pretrained backbone to protect: freezing a random one for the recipe's
        # 3 epochs only wastes them (--set frozen_backbone_epochs=3 keeps the recipe's value)
        cfg = apply_settings(cfg, {"frozen_backbone_epochs": 0.0})
    return cfg


def start_notes(cfg) -> list[str]:
    """What the user should know before a run starts (printed, not errors)."""
    notes = []
    if not cfg.model.init:
        notes.append(
            f"[yellow]warning:[/] the {cfg.recipe} recipe fine-tunes a pretrained backbone (docs/SPEC.md §6); "
            "without --init this run starts from random weights and its accuracy will be far below the "
            "paper's; give --init CHECKPOINT (an official or stts checkpoint of the backbone)"
        )
        if cfg.optim.frozen_backbone_epochs == 0 and cfg.optim.lr_schedule in ("two_rate", "mvit"):
            notes.append(
                "note: from scratch the backbone trains from the first step (the recipe freezes a pretrained "
                "one for 3 epochs; --set frozen_backbone_epochs=3 keeps that)"
            )
    return notes


# TrainConfig keys → the `stts train` option that sets them (the named options of `train`)
_FLAGS = {
    "data.shards": ("--data", "data"),
    "checkpoint.out": ("--out", "out"),
    "model.init": ("--init", "init"),
    "model.name": ("--model", "model"),
    "model.t_ratio": ("--t-ratio", "model.t_ratio"),
    "model.s_ratio": ("--s-ratio", "model.s_ratio"),
    "model.strategy": ("--strategy", "model.strategy"),
    "model.num_frames": ("--frames", "model.num_frames"),
    "training.epochs": ("--epochs", "epochs"),
    "training.batch_size": ("--batch-size", "batch_size"),
    "training.seed": ("--seed", "seed"),
    "training.max_steps": ("--max-steps", "max_steps"),
    "optim.lr": ("--lr", "lr"),
    "data.num_threads": ("--workers", "num_threads"),
    "data.decoder": ("--decoder", "decoder"),
    "system.mixed_precision": ("--mixed-precision", "mixed_precision"),
    "system.deepspeed": ("--deepspeed", "deepspeed"),
    "system.zero": ("--zero", "zero"),
}


def _reason(err) -> str:
    """The error's reason in the user's words: a model option's config field (time_left_ratio) by the short
    name they wrote (t_ratio)."""
    from stts.registry import ALIASES

    key = err.key.removeprefix("model.")
    return err.reason.replace(ALIASES[key], key) if key in ALIASES else err.reason


def _flag_error(err, named: dict) -> str:
    """A `ConfigError` from the named options, said with the flag the user typed."""
    flag, key = _FLAGS.get(err.key, (None, None))
    if flag is None or named.get(key) is None:
        return str(err)
    return f"{flag} {named[key]}: {_reason(err)}"


def _set_error(err, sets: list[str]) -> str:
    """A `ConfigError` from ``--set``, said with the user's own ``key=value`` (a field's own name, a dotted
    key or ``model.…``)."""
    for text in reversed(sets):  # the last one wins, as in apply_settings
        key = text.split("=", 1)[0].strip()
        if key and (key == err.key or err.key.endswith("." + key) or err.key == f"model.{key}"):
            return f"--set {text}: {_reason(err)}"
    return f"--set: {err}"


# flag → (short name in TrainConfig.model_overrides, what its share is of, one kept item, the candidates)
_RATIOS = {
    "--t-ratio": ("t_ratio", "frames", "frame", "temporal slices"),
    "--s-ratio": ("s_ratio", "tokens of each frame", "token", "tokens per frame"),
}


def _check_selection(cfg, given: dict[str, float | None]) -> None:
    """Every selection keeps at least one candidate (a ratio's range is the model config's own check), said
    with the user's own flag: --t-ratio / --s-ratio, or the ``--set model.…`` that overrode it."""
    from stts.registry import ALIASES, selection_counts

    counts = selection_counts(cfg.model.config())
    for flag, (key, _, one, candidates) in _RATIOS.items():
        n, k = counts.get(key[0], (1, 1))
        if k >= 1:
            continue
        ratio = cfg.model.overrides[ALIASES[key]]
        name = f"{flag} {ratio:g}" if ratio == given[flag] else f"--set model.{key}={ratio:g}"
        raise ValueError(
            f"{name} keeps no {one}: {cfg.model.name} selects among {n} {candidates} and keeps "
            f"int({n} × {ratio:g}) = 0; give at least 1/{n} = {1 / n:.4g}"
        )


def _check_options(*, data, out, model, strategy, recipe, decoder, mixed_precision, deepspeed) -> None:
    """What can be checked from the options alone, before anything starts: one line naming the flag."""
    from stts.engine.config import PRECISIONS
    from stts.registry import list_families
    from stts.selection import STRATEGIES

    check_folder("--data", data, "the folder `stts shard --out` wrote (train and val splits)")
    check_output_folder("--out", out)
    check_model_name("--model", model)
    check_choice("--strategy", strategy, STRATEGIES)
    check_choice("--recipe", recipe, list_families())  # the registry now, not RECIPES' import-time copy
    check_decoder("--decoder", decoder)
    check_choice("--mixed-precision", mixed_precision, PRECISIONS)
    if deepspeed is not None and not deepspeed.is_file():
        fail(f"--deepspeed {deepspeed}: no such file; give a DeepSpeed JSON config, or use --zero 1|2")


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
        str | None, typer.Option(help="A model name instead of --backbone (`stts models` lists them).")
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
    mixed_precision: Annotated[
        str | None,
        typer.Option(
            help="auto (default: bf16 autocast on a CUDA GPU that supports it, fp32 on a CPU), no, bf16, fp16."
        ),
    ] = None,
    compile_: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the model (minutes at the first step; for long GPU runs).",
        ),
    ] = None,
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
    quiet: Annotated[
        bool,
        typer.Option(
            help="No live progress bar: plain progress lines only (what a log file, SLURM or CI gets anyway)."
        ),
    ] = False,
) -> None:
    """Train an STTS model with the official recipe of its backbone (docs/SPEC.md §6).

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
        "compile": compile_,
        "deepspeed": str(deepspeed) if deepspeed else None,
        "zero": zero,
        "seed": seed,
        "max_steps": max_steps,
    }
    named = {k: v for k, v in named.items() if v is not None}
    _check_options(data=data, out=out, model=model, strategy=strategy, recipe=recipe, decoder=decoder,
                   mixed_precision=mixed_precision, deepspeed=deepspeed)  # fmt: skip
    if init is not None:
        from stts.checkpoint import CheckpointError, checkpoint_file

        try:
            checkpoint_file(init)
        except CheckpointError as err:
            fail(f"--init: {err}")
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
    for note in start_notes(cfg):
        console.print(note, highlight=False)
    try:
        result = run_training(cfg, resume=resume, console=console, progress="lines" if quiet else "auto")
    except TrainError as err:
        fail(str(err))
    if result.stopped == "nonfinite":
        raise typer.Exit(3)
    if result.stopped == "interrupted":  # the shell's convention: 128 + the signal (130 Ctrl-C, 143 SIGTERM)
        raise typer.Exit(128 + (result.signal or 2))
    if not result.main_process:
        return
    best = f", best val top-1 {result.state.best_top1:.2%}" if result.state.best_top1 is not None else ""
    console.print(
        f"[green]done[/]: {result.state.optimizer_steps} steps, {result.state.epoch} epochs{best} → "
        f"{result.out / 'model.pt'}"
    )
