"""Class lists and label normalisation.

Kinetics-400 class ids are the index in the canonical alphabetical list of 400 names (shipped in this
package) so that any subset of a download gets the standard ids, the ones official checkpoints use.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise_label(name: str) -> str:
    """A comparison key that survives the ways downloads spell labels: '_' for spaces (mmaction's
    rename script), case, quotes, stripped parentheses or apostrophes."""
    return _NON_WORD.sub(" ", name.replace("_", " ").replace("'", "").lower()).strip()


def kinetics400_classes() -> list[str]:
    text = resources.files("shards").joinpath("data/kinetics400_classes.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_class_file(path: str | Path) -> list[str]:
    """One class name per line (line number - 1 = class id); `id name` or `name` lines both work."""
    names = []
    for line in Path(path).read_text("utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        names.append(rest.strip() if head.isdigit() and rest.strip() else line)
    return names


class ClassMap:
    """Maps labels as they appear in a download (any spelling) to class ids."""

    def __init__(self, names: list[str]):
        if not names:
            raise ValueError("the class list is empty")
        self.names = list(names)
        self._ids: dict[str, int] = {}
        for i, name in enumerate(self.names):
            key = normalise_label(name)
            if key in self._ids:
                raise ValueError(
                    f"class names {self.names[self._ids[key]]!r} and {name!r} are the same label"
                )
            self._ids[key] = i

    def __len__(self) -> int:
        return len(self.names)

    def lookup(self, label: str) -> int | None:
        return self._ids.get(normalise_label(label))
