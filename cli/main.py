"""The `stts` command line: thin Typer commands over the library."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="stts",
    help="STTS: spatial-temporal token selection for efficient video transformers. "
    "Shard a dataset once, then train and evaluate from the shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"stts {version('stts')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """STTS: spatial-temporal token selection for efficient video transformers."""


def fail(message: str, code: int = 2) -> None:
    """One line that says what is wrong and what to do; no traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """'1GB', '500M', '2GiB' or a number of bytes."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"cannot read size {text!r}; write e.g. 1GB, 500MB or 1048576")
    unit = (m[2] or "").lower()
    base = 1024 if "i" in unit else 1000
    power = "kmgt".find(unit[:1]) + 1 if unit[:1] in "kmgt" and unit else 0
    return int(float(m[1]) * base**power)


_VIEWS = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_views(text: str | None) -> tuple[int, int] | None:
    """'10x1' → (10, 1): temporal clips × spatial crops (eval, predict, viz)."""
    if text is None:
        return None
    m = _VIEWS.match(text)
    if not m or int(m[1]) < 1 or int(m[2]) not in (1, 3):
        raise ValueError(
            f"--views {text!r}: write CLIPSxCROPS with CLIPS >= 1 and CROPS 1 or 3, e.g. 10x1 or 4x3"
        )
    return int(m[1]), int(m[2])


@app.command()
def shard(
    src: Annotated[
        str, typer.Option(help="Dataset: kinetics400 (a download on disk) or synthetic (generated).")
    ],
    out: Annotated[
        Path, typer.Option(help="Output folder for tars, .idx, manifest.json, classes.txt, rejects.")
    ],
    root: Annotated[Path | None, typer.Option(help="Folder of the download (kinetics400).")] = None,
    split: Annotated[
        str | None, typer.Option(help="train, val or test (required for kinetics400; synthetic: all).")
    ] = None,
    annotations: Annotated[
        Path | None,
        typer.Option(help="Official annotation CSV (label,youtube_id,time_start,time_end,split)."),
    ] = None,
    list_file: Annotated[
        Path | None, typer.Option("--list", help="List file of 'relative/path label_id' (or comma) lines.")
    ] = None,
    classes: Annotated[
        Path | None, typer.Option(help="Class names, one per line; overrides the 400 Kinetics classes.")
    ] = None,
    probe: Annotated[str, typer.Option(help="full: decode every frame; fast: demux only.")] = "full",
    max_count: Annotated[
        int | None, typer.Option(help="Samples per shard at most (default: no limit).")
    ] = None,
    max_size: Annotated[str, typer.Option(help="Bytes per shard at most, e.g. 1GB, 500MB.")] = "1GB",
    workers: Annotated[int, typer.Option(help="Processes probing and re-encoding.")] = os.cpu_count() or 1,
    seed: Annotated[
        int, typer.Option(help="Seed of the train split's shuffle (and of synthetic videos).")
    ] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Keep complete shards of an interrupted run; write the rest.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace this split's existing shards.")
    ] = False,
    fsync: Annotated[
        bool,
        typer.Option(
            help="Flush each shard to disk before naming it complete (--no-fsync: faster, not power-cut safe)."
        ),
    ] = True,
    reencode: Annotated[
        bool,
        typer.Option("--reencode", help="Re-encode videos (short side, GOP, codec) for fast random access."),
    ] = False,
    short_side: Annotated[int, typer.Option(help="--reencode: short side in pixels (never upscales).")] = 320,
    gop: Annotated[int, typer.Option(help="--reencode: keyframe interval in frames.")] = 16,
    codec: Annotated[
        str | None,
        typer.Option(
            help="--reencode: h264 (default), vp9 (DALI decodes it on CPU) or mjpeg; synthetic: vp9."
        ),
    ] = None,
    fps: Annotated[
        float | None, typer.Option(help="--reencode: store at this frame rate (default: keep).")
    ] = None,
    num_classes: Annotated[int | None, typer.Option(help="synthetic: number of classes.")] = None,
    videos_per_class: Annotated[int | None, typer.Option(help="synthetic: train videos per class.")] = None,
    val_videos_per_class: Annotated[int | None, typer.Option(help="synthetic: val videos per class.")] = None,
    frames: Annotated[int | None, typer.Option(help="synthetic: frames per video.")] = None,
    size: Annotated[int | None, typer.Option(help="synthetic: frame width and height in pixels.")] = None,
    informative_frames: Annotated[
        int | None, typer.Option(help="synthetic: frames that show the event (the class).")
    ] = None,
    grid: Annotated[
        int | None, typer.Option(help="synthetic: the event stays in one cell of a GRIDxGRID split.")
    ] = None,
    cue: Annotated[str | None, typer.Option(help="synthetic: the class is shape_motion or color.")] = None,
    object_size: Annotated[
        float | None, typer.Option(help="synthetic: object radius as a fraction of a grid cell (0.14).")
    ] = None,
) -> None:
    """Turn a dataset into WebDataset shards: probe every video, reject the broken ones with a reason."""
    from dataclasses import replace

    from shards.build import ShardConfig, build_shards
    from shards.reencode import ReencodeSpec
    from shards.sources import SourceError
    from shards.synthetic import SyntheticConfig

    from .progress import ShardProgress, print_shard_summary

    try:
        spec = None
        if reencode:
            spec = ReencodeSpec(short_side=short_side, gop=gop, codec=codec or "h264", fps=fps)
        synth = SyntheticConfig()
        overrides = {
            "num_classes": num_classes,
            "train_per_class": videos_per_class,
            "val_per_class": val_videos_per_class,
            "frames": frames,
            "size": size,
            "informative_frames": informative_frames,
            "grid": grid,
            "cue": cue,
            "object_size": object_size,
            "codec": codec if not reencode else None,
        }
        if src == "synthetic":
            synth = replace(synth, seed=seed, **{k: v for k, v in overrides.items() if v is not None})
        elif any(v is not None for k, v in overrides.items() if k != "codec") or (codec and not reencode):
            fail("--num-classes, --videos-per-class, --frames, --size, --informative-frames, --grid, --cue, "
                 "--object-size and "
                 "--codec without --reencode are options of --src synthetic")  # fmt: skip
        cfg = ShardConfig(
            src=src,
            out=str(out),
            split=split,
            root=str(root) if root is not None else None,
            annotations=str(annotations) if annotations is not None else None,
            list_file=str(list_file) if list_file is not None else None,
            classes_file=str(classes) if classes is not None else None,
            probe=probe,
            max_count=max_count,
            max_size=parse_size(max_size),
            workers=workers,
            seed=seed,
            resume=resume,
            overwrite=overwrite,
            fsync=fsync,
            reencode=spec,
            synthetic=synth,
        )
        with ShardProgress(console) as progress:
            report = build_shards(cfg, progress)
    except (SourceError, ValueError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted:[/] complete shards are kept; run the same command with --resume to finish"
        )
        raise typer.Exit(130) from None
    print_shard_summary(console, report)


def main() -> None:  # pragma: no cover - console entry for `python -m cli`
    sys.exit(app())


@app.command()
def flops(
    name: Annotated[str | None, typer.Argument(help="Model name (see --all for the zoo).")] = None,
    convention: Annotated[
        str | None,
        typer.Option(
            help="fvcore (MViT's README) or mmcv (Video Swin's README); default: the README's for the family."
        ),
    ] = None,
    frames: Annotated[int | None, typer.Option(help="Input frames (default: the model's).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every zoo entry, both conventions.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per model and convention.")
    ] = False,
) -> None:
    """GFLOPs of one view (batch 1, eval mode), beside the official README's figure."""
    import json

    from rich.table import Table

    import stts
    from stts.flops import CONVENTIONS, gflops
    from stts.zoo import ZOO, default_convention

    if all_ == (name is not None):
        fail("give a model name or --all")
    if convention is not None and convention not in CONVENTIONS:
        fail(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    names = list(ZOO) if all_ else [name]
    rows = []
    for model_name in names:
        try:
            overrides = {"num_frames": frames} if frames is not None else {}
            model = stts.build_model(model_name, **overrides)
        except ValueError as err:
            fail(str(err))
        params = sum(p.numel() for p in model.parameters())
        conventions = (
            [convention] if convention else (list(CONVENTIONS) if all_ else [default_convention(model_name)])
        )
        for conv in conventions:
            value = gflops(model, stts.input_shape(model), conv)
            rows.append((model_name, conv, value, params))
            if as_json:
                print(
                    json.dumps(
                        {"model": model_name, "convention": conv, "gflops": round(value, 4), "params": params}
                    )
                )
    if as_json:
        return
    table = Table(title="GFLOPs per view (batch 1, eval)")
    for col in ("model", "convention", "GFLOPs", "config (spec)", "README", "vs README", "params"):
        table.add_column(
            col, justify="left" if col in ("model", "convention") else "right", no_wrap=col == "model"
        )
    for model_name, conv, value, params in rows:
        ref = ZOO.get(model_name)
        expected = getattr(ref, conv, None) if ref else None
        readme = ref.readme_gflops if ref and conv == default_convention(model_name) else None
        table.add_row(
            model_name,
            conv,
            f"{value:.2f}",
            "—" if expected is None else f"{expected:.2f}",
            "—" if readme is None else f"{readme:.1f}",
            "—" if readme is None else f"{value - readme:+.2f}",
            f"{params / 1e6:.2f}M",
        )
    console.print(table)


from cli import bench as _bench  # noqa: E402, F401 - registers `stts bench`
from cli import demo as _demo  # noqa: E402, F401 - registers `stts demo`
from cli import eval as _eval  # noqa: E402, F401 - registers `stts eval`
from cli import predict, viz  # noqa: E402, F401 - importing a command module registers its command
from cli import train as _train  # noqa: E402, F401 - registers `stts train`
