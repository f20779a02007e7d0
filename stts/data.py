"""What `stts` itself reads of a shards folder: its class names (the loader, `pipelines`, reads the rest)."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["DataError", "shard_classes"]


class DataError(ValueError):
    """A shards folder that cannot be used; the message says what to do."""


def shard_classes(data: str | os.PathLike, split: str | None = None) -> list[str]:
    """The class names of a shards folder (``manifest.json``, else ``classes.txt``), in class-id order;
    with ``split``, checks that the folder has it."""
    data = Path(data)
    manifest_path = data / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(
            f"no manifest.json in {data}: give the folder `stts shard --out` wrote (or build it first)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        raise DataError(f"{manifest_path} is not valid JSON: rebuild the shards with `stts shard`") from None
    splits = manifest.get("splits", {})
    if split is not None and split not in splits:
        raise DataError(
            f"{data} has no split {split!r} (it has {', '.join(sorted(splits)) or 'none'}); pick --split"
        )
    classes = manifest.get("classes")
    if not classes and (data / "classes.txt").is_file():
        classes = [ln.strip() for ln in (data / "classes.txt").read_text().splitlines() if ln.strip()]
    if not classes:
        raise DataError(f"{data}: no class list in manifest.json or classes.txt; rebuild the shards")
    return list(classes)
