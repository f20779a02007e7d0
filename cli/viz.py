"""`stts viz`: a PNG of what the selectors kept in one view of a video file or a shard sample.

The view: by default the recipe's placement with one temporal clip (the centre of the video: pySlowFast
``floor(delta / 2)``, mmaction's centre offset) and the centre crop — ``--views 1x1``. With ``--views``
``CLIPSxCROPS`` the recipe's grid is laid out and ``--clip`` / ``--crop`` pick one of it (default: the
middle clip, ``CLIPS // 2``, and the crop nearest the frame's centre).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.main import app, console, fail


def centre_crop_index(boxes: list[tuple[int, int, int, int]]) -> int:
    """The crop whose centre is nearest the resized frame's centre (pySlowFast: 1 of 3, mmaction: 2)."""
    cx = (min(b[0] for b in boxes) + max(b[2] for b in boxes)) / 2
    cy = (min(b[1] for b in boxes) + max(b[3] for b in boxes)) / 2
    return min(range(len(boxes)), key=lambda i: abs((boxes[i][0] + boxes[i][2]) / 2 - cx)
               + abs((boxes[i][1] + boxes[i][3]) / 2 - cy))  # fmt: skip


@app.command()
def viz(
    video: Annotated[Path | None, typer.Argument(help="A video file (or use --data and --key).")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Model weights (stts checkpoint or official).")
    ] = None,
    out: Annotated[Path, typer.Option(help="The PNG to write.")] = Path("selection.png"),
    model: Annotated[str | None, typer.Option(help="Zoo name; needed for official files only.")] = None,
    classes: Annotated[
        Path | None, typer.Option(help="Class names, one per line, or a shards folder (its classes.txt).")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="A shards folder: draw the sample --key of it.")] = None,
    key: Annotated[str | None, typer.Option(help="With --data: the sample's key.")] = None,
    split: Annotated[str, typer.Option(help="With --data: the split holding --key.")] = "val",
    views: Annotated[str, typer.Option(help="CLIPSxCROPS grid the view is taken from.")] = "1x1",
    clip: Annotated[int | None, typer.Option(help="Temporal clip of the grid (default: the middle).")] = None,
    crop: Annotated[int | None, typer.Option(help="Spatial crop of the grid (default: the centre).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: cuda if present).")] = None,
) -> None:
    """Draw what STTS kept in one view of a video or shard sample, as a PNG.

    Default view: the centre clip, centre crop. Dropped frames dimmed, kept windows outlined, selector
    scores under the frames, ground truth for synthetic shard samples."""
    import torch

    from pipelines.sampling import eval_resize_size
    from pipelines.video_file import VideoReadError, recipe_for_model, shard_sample_views, video_file_views
    from stts.checkpoint import CheckpointError
    from stts.viz import draw_selection, select_view, truth_in_view

    from .predict import load_model, parse_views

    if checkpoint is None:
        fail("give the model weights: --checkpoint CKPT")
    if (video is None) == (data is None):
        fail("give a VIDEO file, or --data SHARDS with --key KEY")
    if data is not None and key is None:
        fail("--data needs --key: the sample to draw (keys are in the shards' .idx files)")
    if out.suffix.lower() != ".png":
        fail(f"--out {out}: the picture is a PNG; give a path ending in .png")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
        grid = parse_views(views)
        fallback = data if data is not None and (data / "classes.txt").is_file() else None
        net, family, names = load_model(checkpoint, model, classes, device, fallback_classes=fallback)
        spec, aug = recipe_for_model(net, views=grid)
    except (ValueError, RuntimeError, CheckpointError) as err:
        fail(str(err))
    try:
        if data is not None:
            vv, meta = shard_sample_views(data, key, spec, aug, split=split)
        else:
            vv, meta = video_file_views(video, spec, aug), {}
    except VideoReadError as err:
        fail(str(err), code=1)
    clip_idx = spec.num_clips // 2 if clip is None else clip
    crop_idx = centre_crop_index(vv.boxes) if crop is None else crop
    if not (0 <= clip_idx < spec.num_clips and 0 <= crop_idx < spec.num_crops):
        fail(f"--clip {clip_idx} --crop {crop_idx}: the {views} grid has clips 0..{spec.num_clips - 1} and "
             f"crops 0..{spec.num_crops - 1}")  # fmt: skip
    v = vv.view_index(clip_idx, crop_idx)
    logits, sel = select_view(net, vv.video[v])
    probs = torch.softmax(logits, -1)
    p, top1 = (float(x) for x in probs.max(-1))
    top1 = int(top1)
    indices = vv.indices[clip_idx]
    resized = eval_resize_size(vv.width, vv.height, spec)
    truth = truth_in_view(meta, indices, (vv.width, vv.height), resized, vv.boxes[crop_idx])
    source = f"{key} ({split})" if data is not None else video.name
    name = getattr(net, "model_name", None) or family
    title = (
        f"{name}  ·  top-1: {names[top1]} {p:.1%}"
        + (f"  (truth: {truth.label})" if truth is not None and truth.label else "")
        + f"  ·  {source}: clip {clip_idx + 1}/{spec.num_clips}, crop {crop_idx + 1}/{spec.num_crops}, "
        f"frames {int(indices[0])}-{int(indices[-1])} of {vv.num_frames}"
    )
    image = draw_selection(vv.pixels(v), sel, title=title, frame_indices=indices, truth=truth)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    console.print(f"wrote {out} ({image.width}x{image.height}): {title}", highlight=False, soft_wrap=True)
