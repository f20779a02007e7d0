"""Where the videos are: dataset layouts → an ordered plan of records.

A source turns a download (or the synthetic generator) into `Record`s — one per row that will be probed
and written — and `Reject`s for rows that can already be refused (unknown label, no file, duplicate).
Nothing here opens a video.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .classes import ClassMap, kinetics400_classes, read_class_file

VIDEO_EXTS = (".mp4", ".webm", ".mkv")
SPLITS = ("train", "val", "test")
# How split folders and split columns are spelled in the wild.
SPLIT_ALIASES = {
    "train": {"train", "training"},
    "val": {"val", "valid", "validate", "validation"},
    "test": {"test", "testing"},
}
ANNOTATION_HEADER = ["label", "youtube_id", "time_start", "time_end", "split"]
# `{youtube_id}_{start}_{end}`: youtube ids are 11 characters and may start with '-' or contain '_'.
KINETICS_STEM = re.compile(r"^(?P<id>[\w-]{11})_(?P<start>\d+(?:\.\d+)?)_(?P<end>\d+(?:\.\d+)?)$")
_KEY_UNSAFE = re.compile(r"[^\w-]+")


class SourceError(Exception):
    """The input cannot be sharded as given; the message says what to do."""


@dataclass
class Record:
    key: str
    split: str
    label: int
    label_name: str
    candidates: tuple[str, ...]  # absolute paths, most preferred first; the first that probes well wins
    meta: dict[str, Any] = field(default_factory=dict)  # youtube_id, time_start, time_end, ...
    generate: Any = None  # synthetic samples: (config, sample) rendered by the worker


@dataclass
class Reject:
    key: str
    reason: str
    path: str | None = None
    label: str | None = None

    def to_dict(self) -> dict:
        return {"key": self.key, "reason": self.reason, "path": self.path, "label": self.label}


@dataclass
class SourcePlan:
    dataset: str
    layout: str
    classes: list[str]
    records: list[Record]
    rejects: list[Reject]
    missing: int = 0
    root: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def kinetics_key(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def safe_key(stem: str) -> str:
    """Sample keys must not contain dots (WebDataset splits the extension at the first dot)."""
    return _KEY_UNSAFE.sub("_", stem) or "video"


def _tokens(name: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", name.lower()))


def _is_split_dir(name: str, split: str) -> bool:
    return bool(_tokens(name) & SPLIT_ALIASES[split])


def normalise_split(value: str) -> str | None:
    value = value.strip().lower()
    for split, aliases in SPLIT_ALIASES.items():
        if value in aliases:
            return split
    return None


def _walk(root: Path, max_depth: int | None = None):
    """Sorted, deterministic walk that skips hidden folders; yields (dirpath, dirnames, filenames)."""
    root_depth = len(root.parts)
    seen: set[str] = set()
    # split folders are often symlinks to other disks; a folder reached twice (a link loop) is skipped
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if max_depth is not None and len(Path(dirpath).parts) - root_depth >= max_depth:
            dirnames[:] = []
        yield Path(dirpath), dirnames, sorted(filenames)


def _video_files(root: Path) -> list[Path]:
    return [
        d / f
        for d, _, files in _walk(root)
        for f in files
        if f.lower().endswith(VIDEO_EXTS) and not f.startswith(".")
    ]


def _int_time(value: str) -> int:
    return int(float(value))


# ----------------------------------------------------------------------------------------------- Kinetics
def read_annotation_header(path: Path) -> list[str] | None:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError):
        return None
    if header is None:
        return None
    header = [h.strip().lower() for h in header]
    return header if header[: len(ANNOTATION_HEADER)] == ANNOTATION_HEADER else None


def find_annotation_csvs(root: Path, split: str) -> list[Path]:
    found = [
        d / f
        for d, _, files in _walk(root, max_depth=3)
        for f in files
        if f.lower().endswith(".csv") and read_annotation_header(d / f)
    ]
    named = [p for p in found if _is_split_dir(p.stem, split)]
    return named or found


def _parse_list_line(line: str) -> tuple[str, int] | None:
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    if "," in line:
        path, _, label = line.rpartition(",")
    else:
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            return None
        path, label = parts
    path, label = path.strip().strip('"'), label.strip()
    if not path or not re.fullmatch(r"-?\d+", label):
        return None
    return path, int(label)


def find_list_file(root: Path, split: str) -> Path | None:
    for d, _, files in _walk(root, max_depth=2):
        for f in files:
            p = d / f
            if p.suffix.lower() not in (".csv", ".txt") or not _is_split_dir(p.stem, split):
                continue
            if read_annotation_header(p):
                continue
            try:
                with open(p, encoding="utf-8") as fh:
                    first = next((ln for ln in fh if ln.strip()), "")
            except (OSError, UnicodeDecodeError):
                continue
            parsed = _parse_list_line(first)
            if parsed and parsed[0].lower().endswith(VIDEO_EXTS):
                return p
    return None


class _VideoIndex:
    """All videos under the root, findable by youtube id; ranks the copies of one row."""

    def __init__(self, root: Path, split: str):
        self.root = root
        self.split = split
        self.by_id: dict[str, list[Path]] = {}
        for path in _video_files(root):
            stem = path.name.rsplit(".", 1)[0]
            m = KINETICS_STEM.match(stem)
            if m:
                self.by_id.setdefault(m["id"], []).append(path)
            elif len(stem) == 11:
                self.by_id.setdefault(stem, []).append(path)

    def _rank(self, path: Path) -> int | None:
        folders = path.relative_to(self.root).parts[:-1]
        if any(_tokens(f) & {"replacement", "replacements"} for f in folders):
            return 0  # the mirrors' fixed copies of broken files
        in_split = any(_is_split_dir(f, self.split) for f in folders)
        other = [s for s in SPLITS if s != self.split and any(_is_split_dir(f, s) for f in folders)]
        if in_split:
            return 1
        if other:
            return None  # another split's video is never this split's
        return 2

    def find(self, youtube_id: str, start: int, end: int) -> tuple[str, ...]:
        ranked = []
        for path in self.by_id.get(youtube_id, ()):
            m = KINETICS_STEM.match(path.name.rsplit(".", 1)[0])
            if m and (_int_time(m["start"]), _int_time(m["end"])) != (start, end):
                continue  # another segment of the same youtube video
            rank = self._rank(path)
            if rank is not None:
                ranked.append((rank, str(path)))
        return tuple(p for _, p in sorted(ranked))


def _load_classes(classes_file: str | Path | None, default: list[str]) -> ClassMap:
    if classes_file is None:
        return ClassMap(default)
    path = Path(classes_file)
    if not path.is_file():
        raise SourceError(f"--classes {path}: no such file; give a text file with one class name per line")
    try:
        return ClassMap(read_class_file(path))
    except ValueError as err:
        raise SourceError(f"--classes {path}: {err}") from None


def kinetics_source(
    root: str | Path,
    split: str,
    *,
    annotations: str | Path | None = None,
    list_file: str | Path | None = None,
    classes_file: str | Path | None = None,
    dataset: str = "kinetics400",
) -> SourcePlan:
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise SourceError(
            f"--root {root}: no such directory; point it at the folder of your Kinetics download"
        )
    if split not in SPLITS:
        raise SourceError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if annotations is not None and list_file is not None:
        raise SourceError("give either --annotations or --list, not both")
    classes = _load_classes(classes_file, kinetics400_classes())

    if list_file is not None:
        path = Path(list_file).expanduser()
        if not path.is_file():
            raise SourceError(f"--list {path}: no such file; give a file of 'relative/path label_id' lines")
        return _from_list(root, split, path, classes, dataset)
    if annotations is not None:
        path = Path(annotations).expanduser()
        if not path.is_file():
            raise SourceError(f"--annotations {path}: no such file")
        if not read_annotation_header(path):
            raise SourceError(
                f"--annotations {path} is not a Kinetics annotation CSV "
                f"(expected the header {','.join(ANNOTATION_HEADER)}[,is_cc])"
            )
        return _from_annotations(root, split, [path.resolve()], classes, dataset)
    csvs = find_annotation_csvs(root, split)
    if csvs:
        return _from_annotations(root, split, csvs, classes, dataset)
    split_dir = _find_class_folder_root(root, split)
    if split_dir is not None:
        return _from_class_folders(root, split, split_dir, classes, dataset)
    found = find_list_file(root, split)
    if found is not None:
        return _from_list(root, split, found, classes, dataset)
    if any(_is_split_dir(p.name, split) for p in root.iterdir() if p.is_dir()):
        raise SourceError(
            f"found a '{split}' folder under {root} but no annotation CSV "
            f"({','.join(ANNOTATION_HEADER)}) or class folders; pass --annotations CSV or --list FILE"
        )
    raise SourceError(
        f"no Kinetics '{split}' videos found under {root}: expected {split}/<class name>/<video>, "
        f"{split}/<video> with an annotation CSV, or a list file (--list)"
    )


def _from_annotations(
    root: Path, split: str, csvs: list[Path], classes: ClassMap, dataset: str
) -> SourcePlan:
    index = _VideoIndex(root, split)
    records: list[Record] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    missing = 0
    for csv_path in csvs:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader)]
            col = {name: header.index(name) for name in ANNOTATION_HEADER}
            for row in reader:
                if not row or len(row) < len(ANNOTATION_HEADER):
                    continue
                if normalise_split(row[col["split"]]) != split:
                    continue
                label, youtube_id = row[col["label"]].strip(), row[col["youtube_id"]].strip()
                try:
                    start, end = _int_time(row[col["time_start"]]), _int_time(row[col["time_end"]])
                except ValueError:
                    rejects.append(Reject(youtube_id, f"bad annotation row: {','.join(row)}", label=label))
                    continue
                key = kinetics_key(youtube_id, start, end)
                if key in seen:
                    rejects.append(Reject(key, f"duplicate annotation row in {csv_path.name}", label=label))
                    continue
                seen.add(key)
                label_id = classes.lookup(label)
                if label_id is None:
                    rejects.append(
                        Reject(key, f"unknown label {label!r}: not in the class list", label=label)
                    )
                    continue
                candidates = index.find(youtube_id, start, end)
                if not candidates:
                    missing += 1
                    rejects.append(Reject(key, "missing: no video file for this row", label=label))
                    continue
                meta = {"youtube_id": youtube_id, "time_start": start, "time_end": end}
                records.append(Record(key, split, label_id, classes.names[label_id], candidates, meta))
    if not records and not rejects:
        names = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in csvs)
        raise SourceError(f"the annotation CSV ({names}) has no rows for split '{split}'")
    return SourcePlan(
        dataset, "annotations", classes.names, records, rejects, missing, str(root),
        {"annotations": [str(p) for p in csvs]},
    )  # fmt: skip


def _find_class_folder_root(root: Path, split: str) -> Path | None:
    """The folder whose sub-folders are classes: ROOT/{split} (or videos_val, val_256 ...), or ROOT itself
    when it is already a split folder."""
    candidates = [root] if _is_split_dir(root.name, split) else []
    candidates += [d for d, _, _ in _walk(root, max_depth=2) if d != root and _is_split_dir(d.name, split)]
    for folder in candidates:
        subdirs = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        if any(any(f.suffix.lower() in VIDEO_EXTS for f in sub.iterdir()) for sub in subdirs[:50]):
            return folder
    return None


def _file_record(path: Path, split: str, label_id: int, classes: ClassMap) -> tuple[str, Record]:
    stem = path.name.rsplit(".", 1)[0]
    m = KINETICS_STEM.match(stem)
    if m:
        start, end = _int_time(m["start"]), _int_time(m["end"])
        key = kinetics_key(m["id"], start, end)
        meta = {"youtube_id": m["id"], "time_start": start, "time_end": end}
    else:
        key, meta = safe_key(stem), {}
    return key, Record(key, split, label_id, classes.names[label_id], (str(path),), meta)


def _from_class_folders(
    root: Path, split: str, split_dir: Path, classes: ClassMap, dataset: str
) -> SourcePlan:
    records: dict[str, Record] = {}
    rejects: list[Reject] = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label_id = classes.lookup(class_dir.name)
        for path in _video_files(class_dir):
            if label_id is None:
                rejects.append(
                    Reject(safe_key(path.stem), f"unknown label {class_dir.name!r}: not in the class list",
                           str(path.relative_to(root)), class_dir.name)
                )  # fmt: skip
                continue
            key, record = _file_record(path, split, label_id, classes)
            if key in records:
                rejects.append(Reject(key, "duplicate key: another file has the same name",
                                      str(path.relative_to(root)), class_dir.name))  # fmt: skip
                continue
            records[key] = record
    if not records and not rejects:
        raise SourceError(f"no videos ({', '.join(VIDEO_EXTS)}) in the class folders of {split_dir}")
    return SourcePlan(
        dataset, "class-folders", classes.names, list(records.values()), rejects, 0, str(root),
        {"split_dir": str(split_dir)},
    )  # fmt: skip


def _from_list(root: Path, split: str, list_path: Path, classes: ClassMap, dataset: str) -> SourcePlan:
    records: dict[str, Record] = {}
    rejects: list[Reject] = []
    missing = 0
    with open(list_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parsed = _parse_list_line(line)
        if parsed is None:
            rejects.append(
                Reject(f"line{lineno}", f"{list_path.name}:{lineno}: not 'path label_id': {line!r}")
            )
            continue
        rel, label_id = parsed
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        if not path.exists() and not Path(rel).is_absolute() and (list_path.parent / rel).exists():
            path = list_path.parent / rel
        if not 0 <= label_id < len(classes):
            rejects.append(
                Reject(safe_key(path.stem), f"label id {label_id} out of range (there are {len(classes)} classes)",
                       rel, str(label_id))
            )  # fmt: skip
            continue
        key, record = _file_record(path, split, label_id, classes)
        if key in records:
            rejects.append(Reject(key, f"duplicate key: {list_path.name}:{lineno} repeats a video", rel))
            continue
        if not path.is_file():
            missing += 1
            rejects.append(Reject(key, "missing: no video file for this row", rel, classes.names[label_id]))
            continue
        records[key] = record
    if not records and not rejects:
        raise SourceError(f"--list {list_path} has no 'path label_id' lines")
    return SourcePlan(
        dataset, "list", classes.names, list(records.values()), rejects, missing, str(root),
        {"list": str(list_path)},
    )  # fmt: skip
