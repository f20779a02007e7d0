"""`stts predict VIDEO... --checkpoint CKPT`: top-k classes of video files, every evaluation view.

Each file goes through `pipelines.video_file.video_file_views` (the evaluation loader's sampling and DALI
graph, on the CPU), the model scores every view (hard top-k selection, eval mode) and the views are
reduced as the recipe says (spec §7.1): MViT sums the per-view softmax, Swin averages it. Either way the
reported probabilities are that score divided by its total, i.e. the mean of the per-view softmax.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.main import app, console, err_console, fail, parse_views


def read_classes(path: Path) -> list[str]:
    """Class names, one per line (blank lines skipped); a folder means its classes.txt (a shards folder)."""
    if path.is_dir():
        path = path / "classes.txt"
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as err:
        raise ValueError(
            f"--classes {path}: cannot read it ({err.strerror}); give a file of names, one per line"
        ) from None
    if not names:
        raise ValueError(f"--classes {path}: no class names in it; give one name per line")
    return names


def load_model(
    checkpoint: Path,
    model_name: str | None,
    classes_file: Path | None,
    device: str,
    *,
    fallback_classes: Path | None = None,
) -> tuple[Any, str, list[str]]:
    """(model in eval mode on ``device``, its family's name, class names). Names come from ``classes_file``, else the
    checkpoint, else ``fallback_classes`` (if the count fits), else "class i". Raises ValueError / CheckpointError with a
    one-line reason."""
    from stts.registry import family_of, model_from_checkpoint, spec_of

    names = read_classes(classes_file) if classes_file is not None else None
    if model_name is None:
        model, meta = model_from_checkpoint(checkpoint)
    else:
        family_of(model_name)  # an unknown name fails before the file is read
        num_classes = len(names) if names is not None else 400
        model, meta = model_from_checkpoint(checkpoint, name=model_name, num_classes=num_classes)
    num_classes = model.cfg.num_classes
    if names is None and meta.get("classes"):
        names = list(meta["classes"])
    if names is None and fallback_classes is not None:
        fallback = read_classes(fallback_classes)
        names = fallback if len(fallback) == num_classes else None
    if names is None:
        names = [f"class {i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(
            f"{len(names)} class names for a model with {num_classes} classes; give the matching --classes file"
        )
    return model.to(device).eval(), spec_of(model).name, names


def aggregate(logits, family: str):
    """Per-class probabilities of one video from its views' logits ``(V, num_classes)``: the reduction of the
    per-view softmax of the family's recipe (MViT: sum, Swin: mean), normalised to sum to one."""
    import torch

    from stts.evaluate import aggregation_of

    probs = torch.softmax(logits.float(), dim=-1)
    score = probs.sum(0) if aggregation_of(family) == "sum" else probs.mean(0)
    return score / score.sum()


def view_logits(model, video, device: str, batch_size: int = 8):
    """Logits ``(V, num_classes)`` of the views ``video`` ``(V, 3, T, H, W)``, ``batch_size`` at a time."""
    import torch

    with torch.inference_mode():
        return torch.cat([model(chunk.to(device)).float().cpu() for chunk in video.split(batch_size)])


def predict_file(path: Path, model, family: str, device: str, views: tuple[int, int] | None):
    """(probabilities (num_classes,), the file's `VideoViews`)."""
    from pipelines.video_file import recipe_for_model, video_file_views

    clip, aug = recipe_for_model(model, views=views)  # the recipe the model's family spec names
    vv = video_file_views(path, clip, aug)
    return aggregate(view_logits(model, vv.video, device), family), vv


@app.command()
def predict(
    videos: Annotated[list[Path], typer.Argument(help="Video files (any container/codec PyAV reads).")],
    checkpoint: Annotated[Path, typer.Option(help="Model weights: an stts checkpoint or an official file.")],
    model: Annotated[
        str | None,
        typer.Option(help="Zoo name; needed for official files only (stts checkpoints know their model)."),
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(
            help="Class names, one per line, or a shards folder (its classes.txt); default: the checkpoint's."
        ),  # fmt: skip
    ] = None,
    views: Annotated[
        str | None, typer.Option(help="CLIPSxCROPS, e.g. 5x1 (default: the recipe's, MViT 10x1, Swin 4x3).")
    ] = None,
    top: Annotated[int, typer.Option(help="How many classes to show per video.")] = 5,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON list (the readable videos) instead of tables.")
    ] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: cuda if present).")] = None,
) -> None:
    """Top-k classes of each video, averaged over the recipe's evaluation views."""
    import torch
    from rich.markup import escape

    from pipelines.video_file import VideoReadError
    from stts.checkpoint import CheckpointError

    if top < 1:
        fail(f"--top {top}: give a number >= 1")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
        view_grid = parse_views(views)
        net, family, names = load_model(checkpoint, model, classes, device)
    except (ValueError, RuntimeError, CheckpointError) as err:
        fail(str(err))
    k = min(top, len(names))
    results, failed = [], 0
    for path in videos:
        try:
            probs, vv = predict_file(path, net, family, device, view_grid)
        except VideoReadError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            failed += 1
            continue
        values, ids = probs.topk(k)
        entry = {
            "file": str(path),
            "top_k": [
                {"class_id": int(i), "name": names[int(i)], "prob": round(float(p), 6)}
                for p, i in zip(values, ids, strict=True)
            ],
            "views": len(vv.views),
        }
        results.append(entry)
        if not as_json:
            console.print(
                f"[bold]{escape(str(path))}[/]  ({len(vv.views)} views: {vv.clip.num_clips} clips × {vv.clip.num_crops} "
                f"crops, {vv.num_frames} frames at {vv.fps:g} fps)",
                highlight=False,
                soft_wrap=True,
            )
            for rank, row in enumerate(entry["top_k"], 1):
                console.print(
                    f"  {rank}. {row['prob']:7.2%}  {escape(row['name'])}", highlight=False, soft_wrap=True
                )
    if as_json:
        print(json.dumps(results, indent=1))
    if failed:
        raise typer.Exit(1)
