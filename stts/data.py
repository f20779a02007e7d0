"""What `stts` itself reads of a shards folder: its class names (the loader, `pipelines`, reads the rest)."""

from __future__ import annotations

import os

__all__ = ["DataError", "shard_classes"]


class DataError(ValueError):
    """A shards folder that cannot be used; the message says what to do."""


def shard_classes(data: str | os.PathLike, split: str | None = None) -> list[str]:
    """The class names of a shards folder (``manifest.json``, else ``classes.txt``), in class-id order;
    with ``split``, checks that the folder has it (`shards.format.shard_classes`, the format's one reader)."""
    from shards.format import shard_classes as read

    try:
        return read(data, split)
    except ValueError as err:
        raise DataError(str(err)) from None
