"""`stts models`: every registered model name with what it is — read from the configs, nothing is built,
so it answers at once."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from cli.main import app, check_choice, console


def model_rows(family: str | None = None) -> list[dict[str, Any]]:
    """One row per registered name: family, official config, what selection keeps, input shape."""
    from stts.registry import input_shape, list_models, model_config, selection_counts, spec_of
    from stts.zoo import ZOO, official_name

    rows = []
    for name in list_models(family):
        cfg = model_config(name)
        counts = selection_counts(cfg)
        _, c, t, h, w = input_shape(cfg)
        t_sel, s_sel = counts.get("t"), counts.get("s")
        rows.append(
            {
                "name": name,
                "family": spec_of(name).name,
                "official": official_name(name),
                "kept_frames": None if t_sel is None else {"k": t_sel[1], "of": t_sel[0]},
                "kept_window": None if s_sel is None else {"k": s_sel[1], "of": s_sel[0]},
                "input": [c, t, h, w],
                "readme_top1": ZOO[name].readme_top1 if name in ZOO else None,
            }
        )
    return rows


def kept(row: dict[str, Any]) -> str:
    """``5/8 frames, 13×13 of 14×14`` (a window of side int(sqrt(k)) on each frame's token map)."""
    parts = []
    if row["kept_frames"]:
        parts.append(f"{row['kept_frames']['k']}/{row['kept_frames']['of']} frames")
    if row["kept_window"]:
        k, n = row["kept_window"]["k"], row["kept_window"]["of"]
        a, side = int(k**0.5), int(n**0.5)
        parts.append(f"{a}×{a} of {side}×{side}")
    return ", ".join(parts) or "all"


@app.command()
def models(
    family: Annotated[str | None, typer.Option(help="Only this family's names (mvit, swin).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list instead of the table.")] = False,
) -> None:
    """Every model name: family, official config, tokens kept by selection (k), input shape."""
    from stts.registry import list_families

    check_choice("--family", family, list_families())
    rows = model_rows(family)
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, title="stts models", caption="GFLOPs: stts flops NAME; in Python: "
                  "stts.build_model(NAME)")  # fmt: skip
    for col in ("name", "family", "official config", "kept (k)", "input C×T×H×W"):
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(
            row["name"], row["family"], row["official"] or "—", kept(row), "×".join(map(str, row["input"]))
        )
    # whole cells, also in a narrow terminal or a log: the table at its natural width (rich would crop it)
    Console(width=max(console.width, 160), soft_wrap=True, highlight=False).print(table)
